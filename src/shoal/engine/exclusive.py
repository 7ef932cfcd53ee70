"""One engine per store, until engines share work (roles and leases).

Two engines on one store would each take the other's running jobs for their
own after a restart, and sweep each other's attempt files: the second one
to start refuses, with a message that says what to do instead. The lock is
the kernel's (flock on the data directory's `engine.lock`) for SQLite, and a
session advisory lock for PostgreSQL; both go with the process, `kill -9`
included, so a restarted engine takes it at once.
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


def hold(data_dir: Path, store_url: str | None) -> Callable[[], None]:
    """Take the engine lock for this process; returns what releases it."""
    if store_url is None:
        return _hold_file(data_dir / "engine.lock")
    return _hold_postgres(store_url)


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


def _hold_postgres(url: str) -> Callable[[], None]:
    import psycopg  # loaded only when PostgreSQL is used

    conn = psycopg.connect(url, autocommit=True)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (_PG_KEY,)).fetchone()
    if not row or not row[0]:
        conn.close()
        raise EngineLocked(
            "another shoal engine uses this PostgreSQL database, and engines do not share "
            "one database yet. Start this server with --no-engine to serve the API only."
        )

    def release() -> None:
        with contextlib.suppress(Exception):
            conn.close()

    return release
