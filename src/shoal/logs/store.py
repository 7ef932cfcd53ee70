"""Log groups and streams as append-only files.

One file per stream, one line per event: `<epoch ms>\\t<message>\\n`. Messages
are single lines (output is split on newlines), so the format needs no
escaping, and reading any page is a seek plus a bounded read: a job that
prints a gigabyte costs disk, never server memory.

Tokens are byte offsets into the stream file (`f/<offset>` forward,
`b/<offset>` backward), which makes them stable across server restarts.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

from shoal.domain.errors import InvalidRequest, NotFound

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    timestamp: int
    message: str


@dataclass(frozen=True, slots=True)
class Page:
    events: list[Event]
    start: int  # byte offset of the first event (or where the read began)
    end: int  # byte offset just after the last event


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    creation_time: int
    first_event: int | None
    last_event: int | None
    stored_bytes: int


def _encode(name: str) -> str:
    return quote(name, safe="") or "%00"


def _parse(line: bytes) -> Event:
    stamp, _, message = line.rstrip(b"\n").partition(b"\t")
    return Event(int(stamp), message.decode("utf-8", "replace"))


class LogStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # Names that `_encode` never makes ('%' is always followed by two hex
        # digits there), so they can share the root with the group directories.
        self._empty = root / "%empty"
        self._root, self._empty_s = str(root), str(self._empty)  # for paths built per stream
        self._new = root / f"%new-{os.getpid()}"
        self._lock = threading.Lock()
        self._groups: set[str] = set()  # group directories known to exist

    # -- writing --------------------------------------------------------------
    def _path(self, group: str, stream: str) -> Path:
        return Path(self._file(group, stream))

    def _file(self, group: str, stream: str) -> str:
        # (a string: made on the path of every launch)
        return f"{self._root}/{_encode(group)}/{_encode(stream)}"

    def stream_path(self, group: str, stream: str) -> Path:
        """The file of an existing stream (NotFound otherwise)."""
        return self._existing(group, stream)

    def _ensure_group(self, group: str) -> None:
        if group not in self._groups:
            (self.root / _encode(group)).mkdir(parents=True, exist_ok=True)
            self._groups.add(group)

    def create_stream(self, group: str, stream: str) -> None:
        """Make an empty stream (an existing one is left as it is).

        A new inode costs 0.1-0.5 ms of CPU on the ext4 volumes of small VMs,
        and most jobs print nothing: so an empty stream is a hard link to one
        shared empty file, and gets a file of its own at its first write."""
        path = self._file(group, stream)
        with self._lock:
            self._ensure_group(group)
            for _ in range(2):
                try:
                    os.link(self._empty_s, path)
                    return
                except FileExistsError:
                    return  # the stream exists
                except FileNotFoundError:
                    self._renew_empty()  # the shared file is not made yet
                except OSError as e:
                    if e.errno != errno.EMLINK:
                        break  # no hard links here: a file of its own
                    self._renew_empty()  # the shared file has all the links it can hold
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)

    def _renew_empty(self) -> None:
        fd = os.open(self._new, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(self._new, self._empty)

    def append(self, group: str, stream: str, events: Iterable[Event]) -> None:
        data = b"".join(f"{e.timestamp}\t{e.message}\n".encode("utf-8", "replace") for e in events)
        self._write(group, stream, data)

    def append_lines(self, group: str, stream: str, timestamp: int, text: str) -> None:
        """Append each line of `text` (lines separated by newlines) as one event
        at `timestamp`: `append` without an Event per line, for bulk output."""
        prefix = f"{timestamp}\t"
        data = prefix + text.replace("\n", "\n" + prefix) + "\n"
        self._write(group, stream, data.encode("utf-8", "replace"))

    def _write(self, group: str, stream: str, data: bytes) -> None:
        if not data:
            return
        path = self._path(group, stream)
        with self._lock:
            self._ensure_group(group)
            with path.open("ab") as f:
                if os.fstat(f.fileno()).st_nlink == 1:
                    f.write(data)
                    return
            # Still the shared empty file: the stream gets a file of its own,
            # whole or not at all (a crash leaves it empty, never half-written).
            with self._new.open("wb") as f:
                f.write(data)
            os.replace(self._new, path)

    # -- reading --------------------------------------------------------------
    def _existing(self, group: str, stream: str) -> Path:
        if not (self.root / _encode(group)).is_dir():
            raise NotFound("The specified log group does not exist.")
        path = self._path(group, stream)
        if not path.is_file():
            raise NotFound("The specified log stream does not exist.")
        return path

    def read_forward(
        self, group: str, stream: str, offset: int, limit: int, *, before: int | None = None
    ) -> Page:
        """Up to `limit` events starting at byte `offset`."""
        path = self._existing(group, stream)
        events: list[Event] = []
        with path.open("rb") as f:
            f.seek(offset)
            position = offset
            while len(events) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # end of file, or a line still being written
                event = _parse(line)
                if before is not None and event.timestamp >= before:
                    break
                events.append(event)
                position += len(line)
        return Page(events, offset, position)

    def read_backward(self, group: str, stream: str, end: int | None, limit: int) -> Page:
        """Up to `limit` events ending just before byte `end` (None: the end)."""
        path = self._existing(group, stream)
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            stop = size if end is None else min(end, size)
            window = 0
            data = b""
            while stop:
                window = min(stop, max(window * 2, _CHUNK))
                f.seek(stop - window)
                data = f.read(window)
                if data.count(b"\n") > limit or window == stop:
                    break
        # A line still being written at the end is not an event yet.
        cut = data.rfind(b"\n") + 1
        end_offset = stop - (len(data) - cut)
        lines = data[:cut].split(b"\n")[:-1]
        if window < stop:
            lines = lines[1:]  # the first piece may start mid-line
        chosen = lines[-limit:] if limit else []
        start = end_offset - sum(len(line) + 1 for line in chosen)
        return Page([_parse(line) for line in chosen], start, end_offset)

    def stream_names(self, group: str, prefix: str | None = None) -> list[str]:
        """The group's stream names in name order (cheap: no file is read)."""
        group_dir = self.root / _encode(group)
        if not group_dir.is_dir():
            raise NotFound("The specified log group does not exist.")
        names = (unquote(p.name) for p in group_dir.iterdir())
        return sorted(n for n in names if not prefix or n.startswith(prefix))

    def stream_info(self, group: str, name: str) -> StreamInfo:
        return self._info(self._existing(group, name), name)

    def streams(self, group: str, prefix: str | None = None) -> Iterator[StreamInfo]:
        for name in self.stream_names(group, prefix):
            yield self.stream_info(group, name)

    def _info(self, path: Path, name: str) -> StreamInfo:
        stat = path.stat()
        first = self.read_forward_path(path, 0, 1)
        last = self.last_event(path)
        return StreamInfo(
            name=name,
            # Files have no creation time that survives appends here: the
            # first event stands in for it (a stream is made as its job starts).
            creation_time=first[0].timestamp if first else int(stat.st_mtime * 1000),
            first_event=first[0].timestamp if first else None,
            last_event=last.timestamp if last else None,
            stored_bytes=stat.st_size,
        )

    @staticmethod
    def read_forward_path(path: Path, offset: int, limit: int) -> list[Event]:
        events: list[Event] = []
        with path.open("rb") as f:
            f.seek(offset)
            while len(events) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                events.append(_parse(line))
        return events

    @staticmethod
    def last_event(path: Path) -> Event | None:
        """The last complete event of a stream's file."""
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            step = min(size, 4096)
            while step:
                f.seek(size - step)
                tail = f.read(step)
                trimmed = tail[: tail.rfind(b"\n")] if b"\n" in tail else b""
                if b"\n" in trimmed or step == size:
                    line = trimmed.rsplit(b"\n", 1)[-1]
                    return _parse(line) if line else None
                step = min(size, step * 2)
        return None

    def groups(self, prefix: str | None = None) -> Iterator[tuple[str, int, int]]:
        """(name, creation time ms, stored bytes) of each group."""
        for path in sorted(self.root.iterdir()):
            if not path.is_dir():
                continue  # the shared empty file
            name = unquote(path.name)
            if prefix and not name.startswith(prefix):
                continue
            size = sum(p.stat().st_size for p in path.iterdir())
            yield name, int(path.stat().st_ctime * 1000), size


def check_limit(limit: int | None, default: int, maximum: int) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= maximum:
        raise InvalidRequest(f"limit must be between 1 and {maximum}; got {limit}.")
    return limit
