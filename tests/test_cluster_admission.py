"""How much the engine places on a cluster that queues work itself (Ray):
its total, and more waiting in the cluster's queue; deeper while the
compute environment's jobs run short, so that the cluster does not run dry
between the engine's rounds. A real engine and a real SQLite store, on a
manual clock; the executor only reports the cluster's capacity and ends
each job when the test moves the clock past its end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from test_fairshare import WORK, Timed

from shoal.config import Settings
from shoal.domain.clock import ManualClock
from shoal.engine.capacity import Capacity, Limits
from shoal.engine.engine import Engine
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


def _world(tmp_path: Path) -> tuple[Engine, Cluster, Context]:
    clock = ManualClock(1_767_225_600_000)
    ctx = Context(
        store=SqliteStore(tmp_path / "shoal.db"), clock=clock, settings=Settings(data_dir=tmp_path)
    )
    cluster = Cluster(clock)
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
