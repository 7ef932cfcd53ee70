"""One engine dispatches per store.

SQLite: a second engine on one data directory refuses to start, with a
message that says what to do instead (the lock is the kernel's: flock on
`engine.lock`). PostgreSQL: engines elect a dispatcher with a session
advisory lock; the others stand by (serving the API) and the first to get
the lock after the dispatcher dies takes over, reattaching to its jobs. Both
locks go with their process, `kill -9` included.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path

_PG_KEY = 0x73686F616C02  # "shoal\2": the engine's advisory lock


class EngineLocked(Exception):
    """Another engine holds this store."""


def hold(data_dir: Path) -> Callable[[], None]:
    """Take a SQLite data directory's engine lock for this process; returns
    what releases it. EngineLocked if another engine holds it."""
    return _hold_file(data_dir / "engine.lock")


def _hold_file(path: Path) -> Callable[[], None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise EngineLocked(
            f"another shoal engine (pid {holder}) runs on {path.parent}: SQLite allows one "
            "engine per data directory. Start this server with --no-engine to serve the API "
            "only, next to it."
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return lambda: os.close(fd)


def try_hold_postgres(url: str) -> Callable[[], None] | None:
    """Take a PostgreSQL database's engine lock if it is free: what releases
    it, or None (another engine dispatches; try again later)."""
    import psycopg  # loaded only when PostgreSQL is used

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.Error:
        return None
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_PG_KEY,)).fetchone()
    if not row or not row[0]:
        conn.close()
        return None

    def release() -> None:
        with contextlib.suppress(Exception):
            conn.close()

    return release
