"""`shutil.which`, remembered for a moment.

A PATH search is a stat per directory, on the path of every launch, and most
jobs run the same few programs. Used by the launcher and by the ray
executor's tasks (shipped to the cluster by value: the standard library only).
"""

from __future__ import annotations

import os
import shutil
import time


class CachedWhich:
    """Answers for `seconds`; a remembered answer is checked with one access()."""

    def __init__(self, seconds: float = 1.0, size: int = 1024) -> None:
        self._seconds = seconds
        self._size = size
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}

    def __call__(self, name: str, path: str) -> str | None:
        now = time.monotonic()
        key = (name, path)
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self._seconds and os.access(cached[0], os.X_OK):
            return cached[0]
        found = shutil.which(name, path=path)
        if found is None:
            self._cache.pop(key, None)
        else:
            if len(self._cache) >= self._size:
                self._cache.clear()
            self._cache[key] = (found, now)
        return found
