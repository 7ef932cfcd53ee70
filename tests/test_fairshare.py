"""Fair-share scheduling in the engine, on a simulated clock: a real engine
and a real SQLite store, an executor whose jobs run for a set time of a
manual clock. Two shares weighted 1 and 0.25 on a saturated compute
environment split its vCPU-time 1:4; schedulingPriority orders jobs within a
share; computeReservation keeps room for shares not active yet. Also the
queue's jobStateTimeLimitActions, which need the same simulated time."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from test_store_contract import Backend, backend, make_job, pg_database  # noqa: F401

from shoal.config import Settings
from shoal.domain.clock import ManualClock
from shoal.domain.records import JobStatus
from shoal.engine.engine import Engine
from shoal.executors.base import Exit, Handle, LaunchSpec
from shoal.logs.store import LogStore
from shoal.service import compute_environments, job_definitions, job_queues, scheduling_policies
from shoal.service import submit as submit_uc
from shoal.service.context import Context
from shoal.store.sqlite import SqliteStore

SECOND = 1000
# The job definition of the jobs these tests submit (`SHOAL_TEST_RUN_MS` says
# how long each runs).
WORK: dict[str, Any] = {
    "jobDefinitionName": "work",
    "type": "container",
    "containerProperties": {
        "image": "busybox",
        "command": ["work"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "64"},
        ],
    },
}
POLICY_ARN = "arn:aws:batch:us-east-1:123456789012:scheduling-policy/fair"


class Timed:
    """Runs nothing: each job 'runs' for its `SHOAL_TEST_RUN_MS` of the
    manual clock, and ends when the test moves the clock past its end."""

    name = "process"

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.ends: list[tuple[int, str]] = []  # (end ms, task), a heap
        self.done: dict[str, asyncio.Event] = {}
        self.runs: list[tuple[str, str, int]] = []  # (job id, share, start ms), in order

    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        async def go() -> Handle:
            now = self.clock.now_ms()
            run_ms = int(spec.environment["SHOAL_TEST_RUN_MS"])
            heapq.heappush(self.ends, (now + run_ms, spec.task_id))
            self.done[spec.task_id] = asyncio.Event()
            self.runs.append((spec.job_id, spec.environment["SHARE"], now))
            return {"task": spec.task_id}

        return go()

    async def wait(self, handle: Handle) -> Exit:
        await self.done[handle["task"]].wait()
        return Exit(exit_code=0)

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        self.done[handle["task"]].set()

    def home(self) -> dict[str, str]:
        return {}

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        return None

    def release(self, handle: Handle) -> None:
        pass

    def running(self) -> int:
        return sum(1 for event in self.done.values() if not event.is_set())

    def advance_to_next_end(self) -> None:
        end, task = heapq.heappop(self.ends)
        if end > self.clock.now_ms():
            self.clock.advance(end - self.clock.now_ms())
        self.done[task].set()
        while self.ends and self.ends[0][0] <= self.clock.now_ms():
            self.done[heapq.heappop(self.ends)[1]].set()


class World:
    def __init__(
        self,
        tmp_path: Path,
        fairshare: dict[str, Any] | None,
        max_vcpus: int,
        *,
        time_limits: list[dict[str, Any]] | None = None,
    ) -> None:
        self.clock = ManualClock(1_767_225_600_000)
        self.store = SqliteStore(tmp_path / "shoal.db")
        self.ctx = Context(store=self.store, clock=self.clock, settings=Settings(data_dir=tmp_path))
        self.executor = Timed(self.clock)
        self.engine = Engine(
            self.ctx, {"process": self.executor}, LogStore(tmp_path / "logs"), host=None
        )
        self.ctx.notifier.on_wake.append(self.engine.wake)
        self.ctx.notifier.on_submit.append(self.engine.submitted)
        self.ctx.notifier.on_front.append(self.engine.front_of)
        compute_environments.create(
            self.ctx,
            {
                "computeEnvironmentName": "ce",
                "type": "MANAGED",
                "computeResources": {"type": "EC2", "maxvCpus": max_vcpus},
            },
        )
        queue: dict[str, Any] = {
            "jobQueueName": "q",
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}],
            "jobStateTimeLimitActions": time_limits or [],
        }
        if fairshare is not None:
            scheduling_policies.create(self.ctx, {"name": "fair", "fairsharePolicy": fairshare})
            queue["schedulingPolicyArn"] = POLICY_ARN
        job_queues.create(self.ctx, queue)
        job_definitions.register(self.ctx, WORK)

    def submit(
        self, share: str | None, run_seconds: int, *, priority: int | None = None, vcpus: int = 1
    ) -> str:
        req: dict[str, Any] = {
            "jobName": f"{share or 'plain'}-job",
            "jobQueue": "q",
            "jobDefinition": "work",
            "containerOverrides": {
                "environment": [
                    {"name": "SHOAL_TEST_RUN_MS", "value": str(run_seconds * SECOND)},
                    {"name": "SHARE", "value": share or ""},
                ],
                "resourceRequirements": [{"type": "VCPU", "value": str(vcpus)}],
            },
        }
        if share is not None:
            req["shareIdentifier"] = share
        if priority is not None:
            req["schedulingPriorityOverride"] = priority
        job_id: str = submit_uc.submit(self.ctx, req, payload_size=0, token=None)["jobId"]
        return job_id

    async def settle(self, expected_running: int, deadline_s: float = 5.0) -> None:
        """Let the engine run until `expected_running` jobs run, or until the
        deadline (jobs submitted while every queue is blocked are looked at
        a real moment later: the engine batches them)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline_s
        turns = 0
        while self.executor.running() < expected_running and loop.time() < until:
            turns += 1
            await asyncio.sleep(0 if turns % 200 else 0.005)

    def runnable(self) -> int:
        with self.store.read() as tx:
            return len(tx.queued_jobs("q", (JobStatus.RUNNABLE,), 100_000))


def test_two_shares_weighted_1_and_a_quarter_split_the_vcpu_time_1_to_4(tmp_path: Path) -> None:
    fair = {
        "shareDecaySeconds": 600,
        "shareDistribution": [
            {"shareIdentifier": "small", "weightFactor": 1.0},
            {"shareIdentifier": "big", "weightFactor": 0.25},
        ],
    }
    world = World(tmp_path, fair, max_vcpus=4)

    async def scenario() -> dict[str, float]:
        await world.engine.start()
        # Queued in the least fair order: all of one share first.
        # More work than three hours of the compute environment can do.
        for _ in range(400):
            world.submit("small", 60)
        for _ in range(800):
            world.submit("big", 60)
        await world.settle(4)
        assert world.executor.running() == 4  # saturated
        horizon = world.clock.now_ms() + 3 * 3600 * SECOND
        settled = world.clock.now_ms() + 3600 * SECOND  # measured after an hour
        while world.clock.now_ms() < horizon:
            world.executor.advance_to_next_end()
            await world.settle(4)
            assert world.executor.running() == 4, "the compute environment is kept full"
        used = {"small": 0.0, "big": 0.0}
        for _, share, start in world.executor.runs:
            if settled <= start < horizon - 60 * SECOND:
                used[share] += 60.0
        await world.engine.stop()
        return used

    used = asyncio.run(scenario())
    share_of_small = used["small"] / (used["small"] + used["big"])
    # 1:4 is 20% for the share weighted 1; within 10% of that.
    assert abs(share_of_small - 0.2) <= 0.02, used


def test_scheduling_priority_orders_jobs_within_a_share(tmp_path: Path) -> None:
    world = World(tmp_path, {"shareDistribution": [{"shareIdentifier": "a"}]}, max_vcpus=1)

    async def scenario() -> list[str]:
        await world.engine.start()
        blocker = world.submit("a", 10)
        await world.settle(1)
        low = world.submit("a", 10, priority=1)
        high = world.submit("a", 10, priority=9)
        middle = world.submit("a", 10, priority=5)
        plain = world.submit("a", 10)
        for _ in range(4):
            world.executor.advance_to_next_end()
            await world.settle(1)
        world.executor.advance_to_next_end()
        await world.engine.stop()
        order = [job for job, _, _ in world.executor.runs]
        assert order[0] == blocker
        names = {low: "low", high: "high", middle: "middle", plain: "plain"}
        return [names[j] for j in order[1:]]

    assert asyncio.run(scenario()) == ["high", "middle", "low", "plain"]


def test_compute_reservation_keeps_room_for_shares_not_active_yet(tmp_path: Path) -> None:
    # 50% reserved with one active share: it gets at most half of the 4 vCPUs.
    world = World(tmp_path, {"computeReservation": 50}, max_vcpus=4)

    async def scenario() -> tuple[int, int]:
        await world.engine.start()
        for _ in range(10):
            world.submit("first", 60)
        # (Given a moment to start more than it may.)
        await world.settle(4, deadline_s=0.5)
        alone = world.executor.running()
        # A second share arrives: it starts at once, in the reserved room
        # (with two active shares, 25% stays reserved: 3 of 4 vCPUs in use).
        world.submit("second", 60)
        await world.settle(3)
        return alone, world.executor.running()

    assert asyncio.run(scenario()) == (2, 3)


def test_share_heads_on_every_store(backend: Backend) -> None:  # noqa: F811
    # The store query a fair-share queue is placed from: the oldest RUNNABLE
    # jobs of each share, however many of one share come first.
    store = backend.store()
    with store.transaction() as tx:
        for i in range(6):
            share = "deep" if i < 5 else "late"
            tx.insert_job(
                make_job(f"j{i}", queue="q", status=JobStatus.RUNNABLE, share_identifier=share)
            )
        tx.insert_job(make_job("other", queue="q2", status=JobStatus.RUNNABLE))
    with store.read() as tx:
        heads = tx.share_heads("q", 2)
    assert [(j.job_id, j.share_identifier) for j in heads] == [
        ("j0", "deep"),
        ("j1", "deep"),
        ("j5", "late"),
    ]


# -- jobStateTimeLimitActions (any queue) -------------------------------------------


def test_a_job_blocked_at_the_head_past_its_time_limit_is_cancelled(tmp_path: Path) -> None:
    limits = [
        {
            "reason": "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
            "state": "RUNNABLE",
            "maxTimeSeconds": 600,
            "action": "CANCEL",
        },
        {
            "reason": "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY",
            "state": "RUNNABLE",
            "maxTimeSeconds": 3600,
            "action": "CANCEL",
        },
    ]
    world = World(tmp_path, None, max_vcpus=2, time_limits=limits)

    def job(job_id: str) -> Any:
        with world.store.read() as tx:
            return tx.get_jobs([job_id])[job_id]

    async def scenario() -> None:
        await world.engine.start()
        never = world.submit(None, 60, vcpus=4)  # more than the environment holds
        running = world.submit(None, 4000, vcpus=2)
        waiting = world.submit(None, 60, vcpus=1)  # blocked behind the running one
        await world.settle(1)
        world.clock.advance(SECOND)  # past the moment before a reason is given
        world.engine.wake()
        await world.settle(2, deadline_s=0.2)
        assert job(never).status is JobStatus.RUNNABLE
        assert job(never).status_reason.startswith("MISCONFIGURATION:")
        assert job(waiting).status_reason.startswith("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY")
        world.clock.advance(598 * SECOND)  # its reason was given at 0 s
        world.engine.wake()
        await world.settle(2, deadline_s=0.2)
        assert job(never).status is JobStatus.RUNNABLE  # 599 s: not yet
        world.clock.advance(2 * SECOND)
        world.engine.wake()
        await world.settle(2, deadline_s=0.2)
        gone = job(never)
        assert (gone.status, gone.status_reason, gone.is_cancelled) == (
            JobStatus.FAILED,
            "Canceled by JobStateTimeLimit action due to reason: "
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE",
            True,
        )
        assert job(waiting).status is JobStatus.RUNNABLE  # its limit is an hour
        world.clock.advance(3000 * SECOND)
        world.engine.wake()
        await world.settle(2, deadline_s=0.2)
        assert job(waiting).status is JobStatus.FAILED
        assert job(running).status is JobStatus.RUNNING  # never the running ones
        await world.engine.stop()

    asyncio.run(scenario())


def test_waiting_jobs_of_a_fair_share_queue_say_why(tmp_path: Path) -> None:
    world = World(tmp_path, {"shareDistribution": [{"shareIdentifier": "b", "weightFactor": 2}]}, 1)

    async def scenario() -> dict[str, str]:
        await world.engine.start()
        world.submit("a", 60)
        for share in ("a", "b", "a", "b"):
            world.submit(share, 60)
        await world.settle(1)
        world.clock.advance(30 * SECOND)
        world.engine.wake()
        await world.settle(2, deadline_s=0.3)
        with world.store.read() as tx:
            waiting = tx.share_heads("q", 1)
        await world.engine.stop()
        return {job.share_identifier or "": job.status_reason or "" for job in waiting}

    reasons = asyncio.run(scenario())
    # "a" has run 30 s (weight 1), "b" nothing (weight 2): b is served first
    # and waits for capacity; a's next job waits for its turn.
    assert reasons["b"].startswith("CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - "), reasons
    assert reasons["a"] == (
        "FAIR_SHARE:WAITING_FOR_SHARE - Share a (weight 1) is number 2 of 2 in line by recent "
        "vCPU-time; share b is served first when capacity frees."
    ), reasons


def test_the_queue_snapshot_of_a_fair_share_queue_is_in_dispatch_order(tmp_path: Path) -> None:
    world = World(
        tmp_path, {"shareDistribution": [{"shareIdentifier": "b", "weightFactor": 0.25}]}, 1
    )

    async def scenario() -> tuple[list[str], list[str]]:
        await world.engine.start()
        world.submit("a", 600)  # runs: share a has used capacity
        await world.settle(1)
        waiting = [world.submit(share, 60) for share in ("a", "a", "b", "b")]
        loop = asyncio.get_running_loop()
        until = loop.time() + 5
        while world.runnable() < 4 and loop.time() < until:
            await asyncio.sleep(0.01)  # new jobs on a full queue are looked at in a moment
        world.clock.advance(30 * SECOND)
        front = job_queues.snapshot(world.ctx, {"jobQueue": "q"})["frontOfQueue"]["jobs"]
        await world.engine.stop()
        return waiting, [j["jobArn"].rsplit("/", 1)[1] for j in front]

    (a1, a2, b1, b2), front = asyncio.run(scenario())
    # Submitted a, a, b, b; share a has run for 30 s, b not at all: b's go first.
    assert front == [b1, b2, a1, a2]
