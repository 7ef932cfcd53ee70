"""Versioned schema migrations, shared by every SQL store.

A store's schema is an ordered list of migrations numbered 1, 2, 3, ...; the
database records the number of the last one applied (SQLite in `PRAGMA
user_version`, PostgreSQL in a table). Opening a store applies the missing
steps in order, all of them in one transaction with the new version, so a
crash mid-way leaves the database at its old version, unchanged.

Released migrations are never edited: a change to the schema is a new step.
A database newer than the code is refused rather than guessed at, since an
older shoal cannot know what a newer one's columns mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shoal.store.base import StoreError


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    # Run in order. One statement each: drivers run one at a time, so that the
    # steps stay inside the store's own transaction (SQLite's executescript
    # would commit it).
    statements: tuple[str, ...]


def latest(steps: Sequence[Migration]) -> int:
    return steps[-1].version if steps else 0


def pending(steps: Sequence[Migration], current: int) -> list[Migration]:
    """The steps a database at version `current` still needs, in order.

    Raises StoreError if the database is newer than the newest step.
    """
    if [m.version for m in steps] != list(range(1, len(steps) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3, ... in order")
    if current > latest(steps):
        raise StoreError(
            f"the store was written by a newer shoal (schema {current} > {latest(steps)})"
        )
    return [m for m in steps if m.version > current]
