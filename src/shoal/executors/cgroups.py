"""Memory limits through the kernel's cgroups (v2, or v1's memory controller).

A job over its MEMORY requirement is killed by the kernel's OOM killer
(exit 137), and the cgroup's oom_kill counter tells shoal why it died.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("shoal.cgroups")

_V1 = Path("/sys/fs/cgroup/memory")
_V2 = Path("/sys/fs/cgroup")


class MemoryCgroups:
    """Creates one cgroup per attempt under a `shoal` parent, when it can.

    `sweep`: also remove the parents that killed servers left behind."""

    def __init__(self, name: str = "shoal", *, sweep: bool = True) -> None:
        self.root: Path | None = None
        self.v2 = False
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

    def create(self, task_id: str, memory_mib: int) -> Path | None:
        if self.root is None:
            return None
        path = self.root / task_id
        limit = str(memory_mib * 1024 * 1024)
        try:
            try:
                path.mkdir(exist_ok=True)
            except FileNotFoundError:
                self._ensure_root()  # removed by another server's clean-up
                path.mkdir(exist_ok=True)
            if self.v2:
                (path / "memory.max").write_text(limit)
                swap = path / "memory.swap.max"
                if swap.exists():
                    swap.write_text("0")
            else:
                (path / "memory.limit_in_bytes").write_text(limit)
                memsw = path / "memory.memsw.limit_in_bytes"
                if memsw.exists():
                    memsw.write_text(limit)
        except OSError as e:
            log.warning("cannot set a memory limit for %s: %s", task_id, e)
            return None
        return path

    def oom_killed(self, path: Path | None) -> bool:
        if path is None:
            return False
        name = "memory.events" if self.v2 else "memory.oom_control"
        try:
            for line in (path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        """Remove the parent cgroup if no attempt is left in it."""
        if self.root is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self.root)

    def remove(self, path: Path | None) -> None:
        if path is None:
            return
        with contextlib.suppress(OSError):
            os.rmdir(path)
