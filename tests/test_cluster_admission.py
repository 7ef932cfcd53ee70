"""How much the engine places on a cluster that queues work itself (Ray):
its total, and more waiting in the cluster's queue; deeper while the
compute environment's jobs run short, so that the cluster does not run dry
between the engine's rounds. A real engine and a real SQLite store, on a
manual clock; the executor only reports the cluster's capacity and ends
each job when the test moves the clock past its end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from test_fairshare import WORK, Timed

from shoal.config import Settings
from shoal.domain.clock import ManualClock
from shoal.domain.records import JobStatus
from shoal.engine.capacity import Capacity, Limits
from shoal.engine.engine import Engine
from shoal.executors.base import Handle, LaunchSpec
from shoal.logs.store import LogStore
from shoal.service import compute_environments, job_definitions, job_queues
from shoal.service import submit as submit_uc
from shoal.service.context import Context
from shoal.store.sqlite import SqliteStore

TOTAL, QUEUED, QUEUED_SHORT = 4.0, 20.0, 60.0


class Cluster(Timed):
    """A cluster of 4 vCPUs that admits 20 more, or 60 more for short jobs."""

    name = "ray"

    def capacity(self, tags: dict[str, str]) -> Capacity:
        def limits(vcpus: float) -> Limits:
            return Limits(vcpus=vcpus, memory_mib=None, gpus=None)

        return Capacity(
            total=limits(TOTAL),
            biggest=limits(2.0),
            admit=limits(TOTAL + QUEUED),
            admit_short=limits(TOTAL + QUEUED_SHORT),
        )


class QueueingCluster(Cluster):
    """Starts at most TOTAL jobs at once, the rest when jobs end; a launch
    returns once its job has started, as the ray executor's does for an
    attempt that waits in the cluster's queue."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.slots: asyncio.Semaphore | None = None

    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        async def go() -> Handle:
            if self.slots is None:
                self.slots = asyncio.Semaphore(int(TOTAL))
            await self.slots.acquire()
            handle = await Cluster.launch(self, spec)
            ended = self.done[spec.task_id]
            asyncio.get_running_loop().create_task(self._free(ended))
            return handle

        return go()

    async def _free(self, ended: asyncio.Event) -> None:
        await ended.wait()
        assert self.slots is not None
        self.slots.release()


def _world(tmp_path: Path, kind: type[Cluster] = Cluster) -> tuple[Engine, Cluster, Context]:
    clock = ManualClock(1_767_225_600_000)
    ctx = Context(
        store=SqliteStore(tmp_path / "shoal.db"), clock=clock, settings=Settings(data_dir=tmp_path)
    )
    cluster = kind(clock)
    engine = Engine(ctx, {"process": cluster, "ray": cluster}, LogStore(tmp_path / "logs"))
    ctx.notifier.on_wake.append(engine.wake)
    ctx.notifier.on_submit.append(engine.submitted)
    compute_environments.create(
        ctx,
        {"computeEnvironmentName": "ce", "type": "UNMANAGED", "tags": {"shoal:executor": "ray"}},
    )
    job_queues.create(
        ctx,
        {
            "jobQueueName": "q",
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}],
        },
    )
    job_definitions.register(ctx, WORK)
    return engine, cluster, ctx


def _submit(ctx: Context, run_ms: int, count: int) -> None:
    for _ in range(count):
        req: dict[str, Any] = {
            "jobName": "j",
            "jobQueue": "q",
            "jobDefinition": "work",
            "containerOverrides": {
                "environment": [
                    {"name": "SHOAL_TEST_RUN_MS", "value": str(run_ms)},
                    {"name": "SHARE", "value": ""},
                ]
            },
        }
        submit_uc.submit(ctx, req, payload_size=0, token=None)


async def _placed(cluster: Cluster, expected: int, deadline_s: float = 5.0) -> int:
    """How many jobs the cluster has been given and not ended, once that is
    `expected`, or at the deadline (the engine places in rounds)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline_s
    while cluster.running() < expected and loop.time() < until:
        await asyncio.sleep(0.005)
    return cluster.running()


async def _end_all(cluster: Cluster) -> None:
    while cluster.ends:
        cluster.advance_to_next_end()
    await asyncio.sleep(0)


def _admitted_after_runs_of(tmp_path: Path, run_ms: int) -> tuple[int, int]:
    """(placed before any job ran, placed once 30 jobs of `run_ms` have run)."""
    engine, cluster, ctx = _world(tmp_path)

    async def scenario() -> tuple[int, int]:
        await engine.start()
        try:
            # (where fewer than asked for are placed, the deadline is what
            # shows that no more will be)
            _submit(ctx, run_ms, 30)
            first = await _placed(cluster, 30, deadline_s=1.0)
            await _end_all(cluster)
            await _placed(cluster, 30 - first)  # the rest of the 30
            await _end_all(cluster)
            _submit(ctx, run_ms, 200)
            then = await _placed(cluster, int(TOTAL + QUEUED_SHORT), deadline_s=1.0)
            return first, then
        finally:
            await engine.stop()

    return asyncio.run(scenario())


def test_a_cluster_running_short_jobs_gets_a_deeper_queue(tmp_path: Path) -> None:
    first, then = _admitted_after_runs_of(tmp_path, run_ms=5)
    assert first == TOTAL + QUEUED  # no run time known yet
    assert then == TOTAL + QUEUED_SHORT


def test_a_cluster_running_long_jobs_keeps_the_shallow_queue(tmp_path: Path) -> None:
    first, then = _admitted_after_runs_of(tmp_path, run_ms=60_000)
    assert first == TOTAL + QUEUED
    assert then == TOTAL + QUEUED


def test_jobs_that_end_are_recorded_while_those_placed_with_them_wait_in_the_cluster(
    tmp_path: Path,
) -> None:
    """The engine places 24 jobs in one pass; the cluster starts 4 and
    queues 20. The first 4 end: they are recorded SUCCEEDED (and their
    room given to more jobs) then, not once the last of the 24 has started."""
    engine, cluster, ctx = _world(tmp_path, QueueingCluster)

    async def scenario() -> int:
        await engine.start()
        try:
            _submit(ctx, 5, int(TOTAL + QUEUED))
            assert await _placed(cluster, int(TOTAL)) == TOTAL
            cluster.advance_to_next_end()  # (all 4: they began together)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5.0
            while _succeeded(ctx) < TOTAL and loop.time() < deadline:
                await asyncio.sleep(0.005)
            return _succeeded(ctx)
        finally:
            await engine.stop()

    assert asyncio.run(scenario()) == TOTAL


def _succeeded(ctx: Context) -> int:
    with ctx.store.read() as tx:
        return len(tx.jobs_in_status((JobStatus.SUCCEEDED,), 1000))
