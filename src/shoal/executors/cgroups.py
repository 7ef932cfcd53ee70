"""Memory limits through the kernel's cgroups (v2, or v1's memory controller).

A job over its MEMORY requirement is killed by the kernel's OOM killer
(exit 137), and the cgroup's oom_kill counter tells shoal why it died.

Making a memory cgroup costs the kernel a tenth of a millisecond, on the path
of every launch; an emptied one is renamed in a few microseconds. So a
process that makes and removes many (the launcher) keeps the clean ones it is
done with, by memory limit, as `.spare-<pid>-<n>`, and renames one into place
for the next attempt with that limit. Clean: no process left, never OOM-killed
(its counter cannot be reset) and next to no memory still charged to it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("shoal.cgroups")

_V1 = Path("/sys/fs/cgroup/memory")
_V2 = Path("/sys/fs/cgroup")
_SPARES = 64  # clean cgroups kept for reuse, per memory limit, per process
# A reused cgroup starts with what its last job left charged to it (page
# cache of files it wrote): more than this, and it is removed instead.
_REUSE_CHARGED_BYTES = 4 << 20


class OverLimit(Exception):
    """A job spawned without its memory limit was over it once it was set."""


class MemoryCgroups:
    """Creates one cgroup per attempt under a `shoal` parent, when it can.

    `sweep`: also remove the parents that killed servers left behind."""

    def __init__(self, name: str = "shoal", *, sweep: bool = True) -> None:
        self.root: Path | None = None
        self.v2 = False
        self._spares: dict[int, list[str]] = {}  # by limit in bytes
        self._limits: dict[str, int] = {}  # cgroups this process made: their limits
        self._spare_serial = 0
        self._raised: set[str] = set()  # made without a limit, limited since
        self._home: str | None = None
        self._pid = os.getpid()
        for candidate, is_v2 in ((_V1, False), (_V2, True)):
            marker = "memory.limit_in_bytes" if not is_v2 else "cgroup.subtree_control"
            if not (candidate / marker).exists():
                continue
            if is_v2 and "memory" not in (candidate / "cgroup.controllers").read_text():
                continue
            try:
                self.root, self.v2 = candidate / name, is_v2
                self._ensure_root()
                if sweep:
                    self._remove_empty_siblings()
                self._remove_dead_spares()
                break
            except OSError as e:
                self.root = None
                log.info("cgroup %s not usable: %s", candidate, e)
        if self.root is None:
            log.warning("no writable memory cgroup: MEMORY limits are not enforced")

    def _ensure_root(self) -> None:
        assert self.root is not None
        self.root.mkdir(exist_ok=True)
        if self.v2:
            (self.root / "cgroup.subtree_control").write_text("+memory")

    def _remove_empty_siblings(self) -> None:
        """Parents left by servers that were killed (one per data directory):
        their long-empty attempt cgroups go, then the parent if nothing is left;
        a live server makes its parent again when it needs it."""
        assert self.root is not None
        stale = time.time() - 60  # never race a live server's fresh cgroup
        for sibling in self.root.parent.glob("shoal-*"):
            if sibling == self.root:
                continue
            with contextlib.suppress(OSError):
                for child in sibling.iterdir():
                    if (
                        child.is_dir()
                        and child.stat().st_mtime < stale
                        and not (child / "cgroup.procs").read_text().strip()
                    ):
                        os.rmdir(child)
                if not any(p.is_dir() for p in sibling.iterdir()):
                    os.rmdir(sibling)

    def _remove_dead_spares(self) -> None:
        """Spares of processes that are gone (a launcher killed with some)."""
        assert self.root is not None
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.root):
                if entry.name.startswith(".spare-"):
                    owner = entry.name.split("-")[1]
                    if not os.path.exists(f"/proc/{owner}"):
                        with contextlib.suppress(OSError):
                            os.rmdir(entry.path)

    @property
    def threads_movable(self) -> bool:
        """Whether one thread of a process can join a cgroup (v1: v2 moves
        whole processes)."""
        return self.root is not None and not self.v2

    def create(self, task_id: str, memory_mib: int | None) -> Path | None:
        """The attempt's cgroup, limited to `memory_mib`, or with no limit
        yet (None: see `spawn_in`)."""
        if self.root is None:
            return None
        path = f"{self.root}/{task_id}"
        limit = 0 if memory_mib is None else memory_mib * 1024 * 1024
        spares = self._spares.get(limit)
        while spares:
            try:
                os.rename(spares.pop(), path)
            except OSError:
                continue  # swept away by a server's clean-up
            self._limits[path] = limit
            return Path(path)
        try:
            try:
                os.mkdir(path)
            except FileNotFoundError:
                self._ensure_root()  # removed by another server's clean-up
                os.mkdir(path)
            except FileExistsError:
                pass
            if limit:
                self._set_limit(path, limit)
        except OSError as e:
            log.warning("cannot set a memory limit for %s: %s", task_id, e)
            return None
        self._limits[path] = limit
        return Path(path)

    def _set_limit(self, path: str, limit: int) -> None:
        value = str(limit).encode()
        if self.v2:
            _write(f"{path}/memory.max", value)
            with contextlib.suppress(FileNotFoundError):  # no swap accounting
                _write(f"{path}/memory.swap.max", b"0")
        else:
            # (memsw may not be below the limit: raised first, lowered last)
            _write(f"{path}/memory.limit_in_bytes", value)
            with contextlib.suppress(FileNotFoundError):
                _write(f"{path}/memory.memsw.limit_in_bytes", value)

    @contextlib.contextmanager
    def spawn_in(self, path: Path | str, memory_mib: int) -> Iterator[None]:
        """Spawn in the body into `path`, a cgroup made without a limit: this
        thread alone (v1) is in it meanwhile, so that the child starts in it,
        with no `sh` to join it from inside (a third of a short job's cost).

        The limit is set once the thread is back: while a thread of this
        process is in the cgroup, an OOM kill there would pick this process
        (the largest in it). The job runs unlimited for that moment; if it is
        over its limit by then, OverLimit is raised (the child is running:
        kill it, as the OOM killer would have). If this thread leads its
        process, what the process touches meanwhile is charged to the cgroup
        (v1 charges a process's memory where its leader is): a few KiB."""
        tid = str(threading.get_native_id()).encode()
        home = self._home_tasks()  # (found while this thread is there)
        try:
            _write(f"{path}/tasks", tid)
        except OSError as e:
            raise OSError(e.errno, f"cannot join memory cgroup {path}: {e.strerror}") from e
        try:
            yield
        finally:
            try:
                _write(home, tid)
            except OSError as e:
                raise RuntimeError(f"cannot leave memory cgroup {path}: {e}") from e
        self._raised.add(str(path))
        try:
            self._set_limit(str(path), memory_mib * 1024 * 1024)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise OverLimit(str(path)) from e
            log.warning("cannot set a memory limit in %s: %s", path, e)

    def _home_tasks(self) -> str:
        """The `tasks` file of this thread's memory cgroup (the process's:
        looked up once, outside `spawn_in`)."""
        if self._home is None:
            assert self.root is not None
            home = ""
            for line in _read("/proc/thread-self/cgroup", 65536).decode().splitlines():
                _, controllers, rel = line.split(":", 2)
                if "memory" in controllers.split(","):
                    home = rel
            self._home = f"{self.root.parent}{home.rstrip('/')}/tasks"
        return self._home

    def release(self, path: Path | str | None) -> None:
        """An attempt's cgroup is done with: kept for reuse if this process
        made it and it is clean, else removed."""
        if path is None:
            return
        name = str(path)
        limit = self._limits.pop(name, None)
        spares = self._spares.setdefault(limit, []) if limit is not None else None
        if spares is None or len(spares) >= _SPARES or not self._clean(name):
            self._raised.discard(name)
            self.remove(Path(name))
            return
        if name in self._raised:  # limited after its spawn: a spare has none
            self._raised.discard(name)
            try:
                for file in ("memory.memsw.limit_in_bytes", "memory.limit_in_bytes"):
                    with contextlib.suppress(FileNotFoundError):
                        _write(f"{name}/{file}", b"-1")
            except OSError:
                self.remove(Path(name))
                return
        assert self.root is not None
        self._spare_serial += 1
        spare = f"{self.root}/.spare-{self._pid}-{self._spare_serial}"
        try:
            os.rename(name, spare)
        except OSError:
            self.remove(Path(name))
            return
        spares.append(spare)

    def _clean(self, path: str) -> bool:
        charged = "memory.current" if self.v2 else "memory.usage_in_bytes"
        try:
            if _read(f"{path}/cgroup.procs", 1):
                return False
            if int(_read(f"{path}/{charged}")) > _REUSE_CHARGED_BYTES:
                return False
        except (OSError, ValueError):
            return False
        return not self.oom_killed(path)

    def _drop_spares(self) -> None:
        """Remove the spares this process keeps (before it exits)."""
        spares, self._spares = self._spares, {}
        for paths in spares.values():
            for spare in paths:
                with contextlib.suppress(OSError):
                    os.rmdir(spare)

    def oom_killed(self, path: Path | str | None) -> bool:
        if path is None:
            return False
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            text = _read(f"{path}/{name}").decode()
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        """Remove the parent cgroup if no attempt is left in it."""
        self._drop_spares()
        if self.root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.root)

    def remove(self, path: Path | None) -> None:
        if path is None:
            return
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _write(path: str, value: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value)
    finally:
        os.close(fd)


def _read(path: str, size: int = 4096) -> bytes:
    """A small kernel file's text: without Python's file objects, whose
    open costs three system calls more (fstat, ioctl, lseek)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, size)
    finally:
        os.close(fd)


def oom_kill_logged(memcg_name: str) -> bool:
    """Whether the kernel's log holds an OOM kill in a memory cgroup whose
    path names `memcg_name` (a container's id: `/docker/<id>` with cgroupfs,
    `docker-<id>.scope` with systemd).

    For containers, whose cgroups are not shoal's: dockerd learns of an OOM
    kill from containerd's event, which can come after the exit (then 20.10
    never sets State.OOMKilled) or never (the shim drops it once the cgroup
    is gone). The kernel writes its record before the process dies. False
    where the log cannot be read (no CAP_SYSLOG), or has lost the record:
    the kernel keeps a bounded ring, and logs at most ten OOM kills' details
    in five seconds."""
    needle = memcg_name.encode()
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)  # one record per read
            except BlockingIOError:
                return False  # read to the end
            except BrokenPipeError:
                continue  # the ring overwrote the record at our position: go on
            if not record:
                return False
            if b"oom-kill:" in record and needle in record:
                return True
    except OSError:
        return False
    finally:
        os.close(fd)
