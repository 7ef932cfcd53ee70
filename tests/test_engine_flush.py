"""The engine's careful path for recording exits: when a transaction that
carries several exits fails, they are recorded one at a time, and one that
fails again is retried, not dropped (it would leave its job RUNNING and its
capacity held for good). The store's failure is injected above a real
SQLite store, at the engine's write of the exits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from shoal.config import Settings
from shoal.domain.clock import ManualClock
from shoal.domain.container import Resources
from shoal.engine.engine import Attempt, Engine
from shoal.executors.base import Exit
from shoal.logs.store import LogStore
from shoal.service.context import Context
from shoal.store.sqlite import SqliteStore


class Released:
    """An executor of which only `release` is asked here."""

    name = "process"

    def __init__(self) -> None:
        self.released: list[str] = []

    def release(self, handle: Any) -> None:
        self.released.append(str(handle["task"]))


def test_an_exit_that_fails_again_alone_is_retried_not_dropped(tmp_path: Path) -> None:
    async def go() -> None:
        store = SqliteStore(tmp_path / "shoal.db")
        ctx = Context(store=store, clock=ManualClock(), settings=Settings(data_dir=tmp_path))
        executor = Released()
        engine = Engine(ctx, {"process": executor}, LogStore(tmp_path / "logs"))  # type: ignore[dict-item]
        need = Resources(vcpus=1.0, memory_mib=64, gpus=0)
        bad = Attempt("job-bad", "t-bad", "ce", executor, need, handle={"task": "t-bad"})  # type: ignore[arg-type]
        good = Attempt("job-good", "t-good", "ce", executor, need, handle={"task": "t-good"})  # type: ignore[arg-type]
        for attempt in (bad, good):
            engine._attempts[attempt.job_id] = attempt
            engine._reserve(attempt, attempt.executor)
        failures = 0

        def write_flush(tx: Any, marks: Any, exits: Any, now: int) -> None:
            # The store refuses `bad`'s write twice (e.g. locked), then takes it.
            nonlocal failures
            if any(a is bad for a, _, _ in exits) and failures < 2:
                failures += 1
                raise RuntimeError("database is locked")

        engine._write_flush = write_flush  # type: ignore[method-assign]
        engine._exits = [(bad, Exit(exit_code=0), 1), (good, Exit(exit_code=0), 1)]
        engine._flush_exits()
        assert good.over and executor.released == ["t-good"]
        deadline = time.monotonic() + 10
        while not bad.over and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the retry comes on a timer of its own
        assert bad.over, "the exit of job-bad was dropped, not retried"
        assert executor.released == ["t-good", "t-bad"]
        assert engine._ce_used["ce"].vcpus == 0, engine._ce_used["ce"]
        store.close()

    asyncio.run(go())
