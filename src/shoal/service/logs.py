"""CloudWatch Logs reads over the log store: GetLogEvents, FilterLogEvents,
DescribeLogStreams, DescribeLogGroups."""

from __future__ import annotations

import base64
import heapq
import re
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson

from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.records import Json
from shoal.logs.store import Event, LogStore, check_limit

_TOKEN = re.compile(r"^([fb])/([0-9]{1,18})$")
_SCAN_PER_CALL = 200_000
_MAX_NAME = 512  # AWS: log group and log stream names have 1 to 512 characters
_MAX_FILE_NAME = 255  # bytes, on the file systems the log store lives on


def _check_name(name: str, what: str) -> None:
    """A group or stream name the log store can look up.

    The store keeps each name as a file name (percent-encoded, which leaves
    '.' alone): '.' and '..' would name directories around the store, and a
    name longer than a file name can be was never stored: as far as the
    caller can tell, neither exists."""
    if len(name) > _MAX_NAME:
        raise InvalidRequest(f"{what} must be at most {_MAX_NAME} characters; got {len(name)}.")
    if name in (".", "..") or len(quote(name, safe="").encode()) > _MAX_FILE_NAME:
        raise NotFound(f"The specified {what} does not exist.")


def _group(req: Json) -> str:
    name, ident = req.get("logGroupName"), req.get("logGroupIdentifier")
    if (name is None) == (ident is None):
        raise InvalidRequest("Give exactly one of logGroupName and logGroupIdentifier.")
    if ident is not None and ident.startswith("arn:"):
        # arn:aws:logs:<region>:<account>:log-group:<name>[:*]
        ident = ident.split(":log-group:", 1)[-1].removesuffix(":*")
    group = str(name if name is not None else ident)
    _check_name(group, "log group")
    return group


def _wire(event: Event) -> Json:
    return {
        "timestamp": event.timestamp,
        "message": event.message,
        "ingestionTime": event.timestamp,
    }


def _window_page(
    logs: LogStore,
    group: str,
    stream: str,
    limit: int,
    start: int | None,
    end: int | None,
    *,
    from_head: bool,
    offset: int,
    stop: int | None = None,
) -> tuple[list[Event], int, int]:
    """Events inside [start, end) before `limit` is applied: the first `limit`
    from byte `offset` (from_head), or the last `limit` before byte `stop`.
    Returns (events, first offset, offset after the last)."""
    path = logs.stream_path(group, stream)
    chosen: deque[tuple[Event, int, int]] = deque(maxlen=None if from_head else limit)
    with path.open("rb") as f:
        f.seek(offset)
        position = offset
        for line in f:
            if not line.endswith(b"\n") or (stop is not None and position >= stop):
                break
            begin, position = position, position + len(line)
            event = _parse_line(line)
            if end is not None and event.timestamp >= end:
                break
            if start is not None and event.timestamp < start:
                continue
            chosen.append((event, begin, position))
            if from_head and len(chosen) == limit:
                break
    if not chosen:
        return [], position, position
    return [e for e, _, _ in chosen], chosen[0][1], chosen[-1][2]


def get_log_events(logs: LogStore, req: Json) -> Json:
    group, stream = _group(req), req["logStreamName"]
    _check_name(stream, "log stream")
    limit = check_limit(req.get("limit"), 10_000, 10_000)
    start, end = req.get("startTime"), req.get("endTime")
    token = req.get("nextToken")
    if token:
        m = _TOKEN.match(token)
        if m is None:
            raise InvalidRequest(f"The specified nextToken is invalid: {token!r}.")
        direction, offset = m.group(1), int(m.group(2))
    else:
        direction, offset = ("f", 0) if req.get("startFromHead") else ("b", -1)
    if start is not None or end is not None:
        # A time window is applied before the limit; this scans the stream.
        if direction == "f":
            events, first, after = _window_page(
                logs, group, stream, limit, start, end, from_head=True, offset=offset
            )
        else:
            events, first, after = _window_page(
                logs,
                group,
                stream,
                limit,
                start,
                end,
                from_head=False,
                offset=0,
                stop=None if offset < 0 else offset,
            )
    elif direction == "f":
        page = logs.read_forward(group, stream, offset, limit)
        events, first, after = page.events, page.start, page.end
    else:
        page = logs.read_backward(group, stream, None if offset < 0 else offset, limit)
        events, first, after = page.events, page.start, page.end
    # The forward token repeats when there is nothing new: that is how readers
    # know they reached the end.
    return {
        "events": [_wire(e) for e in events],
        "nextForwardToken": f"f/{after}",
        "nextBackwardToken": f"b/{first}",
    }


def _parse_line(line: bytes) -> Event:
    stamp, _, message = line.rstrip(b"\n").partition(b"\t")
    return Event(int(stamp), message.decode("utf-8", "replace"))


def _matcher(pattern: str | None) -> re.Pattern[str] | None:
    """CloudWatch's simple term syntax: every term (or "quoted phrase") must occur."""
    if not pattern or not pattern.strip():
        return None
    terms = re.findall(r'"([^"]*)"|(\S+)', pattern)
    words = [quoted or bare for quoted, bare in terms]
    return re.compile("".join(f"(?=.*{re.escape(w)})" for w in words), re.DOTALL)


def _read_stream(path: Path, name: str, offset: int) -> Iterator[tuple[int, str, str, int]]:
    with path.open("rb") as f:
        f.seek(offset)
        for line in f:
            if not line.endswith(b"\n"):
                return
            offset += len(line)
            stamp, _, message = line.rstrip(b"\n").partition(b"\t")
            yield int(stamp), name, message.decode("utf-8", "replace"), offset


def filter_log_events(logs: LogStore, req: Json) -> Json:
    group = _group(req)
    names, prefix = req.get("logStreamNames"), req.get("logStreamNamePrefix")
    if names and prefix:
        raise InvalidRequest("Give logStreamNames or logStreamNamePrefix, not both.")
    limit = check_limit(req.get("limit"), 10_000, 10_000)
    start, end = req.get("startTime"), req.get("endTime")
    match = _matcher(req.get("filterPattern"))
    streams = logs.stream_names(group, prefix)
    if names:
        streams = [s for s in streams if s in set(names)]
    offsets: dict[str, int] = {s: 0 for s in streams}
    if req.get("nextToken"):
        offsets.update(_offsets_token(req["nextToken"]))
    readers = [_read_stream(logs.stream_path(group, s), s, offsets[s]) for s in streams]
    events: list[Json] = []
    more = False
    scanned = 0
    for stamp, stream, message, after in heapq.merge(*readers):
        # Bounded work per call: a pattern that matches nothing in a huge
        # stream returns an empty page with a nextToken, as CloudWatch does.
        if len(events) == limit or scanned == _SCAN_PER_CALL:
            more = True
            break
        scanned += 1
        offsets[stream] = after
        if end is not None and stamp >= end:
            continue
        if start is not None and stamp < start:
            continue
        if match is not None and not match.match(message):
            continue
        events.append(
            {
                "logStreamName": stream,
                "timestamp": stamp,
                "message": message,
                "ingestionTime": stamp,
                "eventId": f"{stamp:020d}{zlib.crc32(stream.encode()):010d}{after:016d}",
            }
        )
    out: Json = {
        "events": events,
        "searchedLogStreams": [
            {"logStreamName": s, "searchedCompletely": not more} for s in streams
        ],
    }
    if more:
        out["nextToken"] = base64.urlsafe_b64encode(orjson.dumps(offsets)).decode()
    return out


def describe_log_streams(logs: LogStore, req: Json, arn_prefix: str) -> Json:
    group = _group(req)
    limit = check_limit(req.get("limit"), 50, 50)
    order = req.get("orderBy", "LogStreamName")
    prefix = req.get("logStreamNamePrefix")
    if prefix and order == "LastEventTime":
        raise InvalidRequest("logStreamNamePrefix cannot be used with orderBy LastEventTime.")
    start = _index_token(req.get("nextToken"))
    if order == "LastEventTime":
        infos = sorted(logs.streams(group), key=lambda i: i.last_event or 0)
        if req.get("descending"):
            infos.reverse()
        total = len(infos)
        page = infos[start : start + limit]
    else:
        # Name order pages on names alone; only the page's streams are read.
        names = logs.stream_names(group, prefix)
        if req.get("descending"):
            names.reverse()
        total = len(names)
        page = [logs.stream_info(group, n) for n in names[start : start + limit]]
    out: Json = {
        "logStreams": [
            {
                k: v
                for k, v in {
                    "logStreamName": i.name,
                    "creationTime": i.creation_time,
                    "firstEventTimestamp": i.first_event,
                    "lastEventTimestamp": i.last_event,
                    "lastIngestionTime": i.last_event,
                    "arn": f"{arn_prefix}:log-group:{group}:log-stream:{i.name}",
                    "storedBytes": i.stored_bytes,
                }.items()
                if v is not None
            }
            for i in page
        ]
    }
    if start + limit < total:
        out["nextToken"] = str(start + limit)
    return out


def describe_log_groups(logs: LogStore, req: Json, arn_prefix: str) -> Json:
    limit = check_limit(req.get("limit"), 50, 50)
    groups = list(logs.groups(req.get("logGroupNamePrefix")))
    pattern = req.get("logGroupNamePattern")
    if pattern:
        groups = [g for g in groups if pattern.lower() in g[0].lower()]
    start = _index_token(req.get("nextToken"))
    page = groups[start : start + limit]
    out: Json = {
        "logGroups": [
            {
                "logGroupName": name,
                "creationTime": created,
                "arn": f"{arn_prefix}:log-group:{name}:*",
                "logGroupArn": f"{arn_prefix}:log-group:{name}",
                "storedBytes": size,
            }
            for name, created, size in page
        ]
    }
    if start + limit < len(groups):
        out["nextToken"] = str(start + limit)
    return out


def _offsets_token(token: str) -> dict[str, int]:
    """FilterLogEvents' token: each stream's byte offset, as it made them."""
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, orjson.JSONDecodeError):
        doc = None
    if not isinstance(doc, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63 for v in doc.values()
    ):
        raise InvalidRequest("The specified nextToken is invalid.")
    return doc


def _index_token(token: str | None) -> int:
    if not token:
        return 0
    # isdigit alone would take '²' and other digits int() does not (nor
    # more than 4300 of them).
    if not (token.isascii() and token.isdigit() and len(token) <= 18):
        raise InvalidRequest("The specified nextToken is invalid.")
    return int(token)


__all__ = [
    "describe_log_groups",
    "describe_log_streams",
    "filter_log_events",
    "get_log_events",
]
