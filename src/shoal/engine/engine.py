"""The engine: moves jobs SUBMITTED -> ... -> SUCCEEDED/FAILED.

It runs on the server's event loop and is driven by wake-ups (a submit, an
exit, a terminate), never by polling delays. Each cycle:

1. SUBMITTED jobs are evaluated: dependencies decide PENDING, RUNNABLE or FAILED;
2. queues are visited by priority (higher first), each in FIFO order: a job
   goes to the first compute environment of its queue (in `order`) that is
   ENABLED, VALID and has room; it becomes STARTING, then its executor starts
   it and it becomes RUNNING;
3. an attempt's exit goes through the retry rules: SUCCEEDED, FAILED, or
   RUNNABLE again for the next attempt.

Placement policy (AWS leaves it open): within a queue, strict FIFO among jobs
that could ever fit — the first one that does not fit now blocks the queue
(its statusReason says what it needs and what is free); a job that can never
fit (more than any of its compute environments holds) stays RUNNABLE with a
MISCONFIGURATION reason and does not block the jobs behind it. Lower-priority
queues may use capacity a blocked higher-priority queue cannot.

Streams of short jobs are pipelined: on a full compute environment whose
recent attempts averaged under _FOLLOW_BELOW_MS, a job may be placed behind a
running attempt on its slot (`_to_follow`), and an executor that can
(`Follower`: the process executor's launcher) starts it the moment that
attempt ends, without the round trip through this loop. It holds no capacity
until its predecessor's exit is recorded (`_hand_over`); one that waits
_FOLLOW_WAIT_SECONDS is called off and RUNNABLE again (`_withdrawn`).

Every state change is a compare-and-set in the store, committed before the
next step, so a job is never started twice for one attempt: an attempt is
recorded STARTING before it launches, and after a restart the executor
either reattaches to it or guarantees it never starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import math
import random
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from shoal.domain.arns import new_task_id
from shoal.domain.container import Resources, resources_of
from shoal.domain.records import (
    ComputeEnvironment,
    Job,
    JobQueue,
    JobStatus,
    Json,
    ResourceStatus,
)
from shoal.domain.retry import AttemptOutcome, Decision, decide
from shoal.engine import fairshare, multinode
from shoal.engine.capacity import (
    Capacity,
    Limits,
    Usage,
    ce_limits,
    describe_free,
    describe_need,
)
from shoal.engine.pending import Pending
from shoal.executors.base import (
    ESSENTIAL_EXITED,
    FAILED_TO_START,
    Executor,
    Exit,
    Follower,
    Handle,
    LaunchError,
    LaunchSpec,
    LaunchWithdrawn,
)
from shoal.logs.store import LogStore
from shoal.metrics import EngineMetrics
from shoal.secrets import SecretStore
from shoal.service.context import Context
from shoal.store.base import Transaction

log = logging.getLogger("shoal.engine")

TIMEOUT_REASON = "Job attempt duration exceeded timeout"
_TOPOLOGY_TTL = 1.0
_ENV_TAG = "shoal:env:"
_SUBMIT_BATCH_SECONDS = 0.05  # new jobs wait at most this long while nothing could start
# How long a launch waits to be recorded RUNNING (startedAt is the launch
# time all the same): a job that ends within it is written once, from
# STARTING to how it ended.
_MARK_SECONDS = 0.003
_POLL_SECONDS = 1.0  # how soon work from other processes on the store is seen
SPOT_RATE_TAG = "shoal:spot-interruption-rate"  # per instance-hour, on SPOT environments
_FULL_POLL = 10  # every this many polls, everything is looked at again
_ON_HOST = frozenset({"process", "docker"})  # executors whose jobs use this host
_REASON_AFTER_MS = 500  # a RUNNABLE job blocked this long gets a CAPACITY statusReason
_HEAD = 256  # at most this many RUNNABLE jobs are read per step when placing a queue
_SHARE_HEAD = 64  # RUNNABLE jobs read per share of a fair-share queue per pass
# A compute environment whose attempts have lately run for less than this
# (a moving average) is a stream of short jobs: a job that finds it full may
# be placed to follow one of its attempts on that attempt's slot (see
# `_place_job`). Longer jobs are not: the round trip saved is nothing to
# them, and a job placed early would hold its place ahead of jobs of
# higher-priority queues that come meanwhile.
_FOLLOW_BELOW_MS = 50.0
_RUN_MS_WEIGHT = 0.25  # of the newest attempt in that average
_FOLLOW_DEPTH = 2  # at most this many attempts wait on one slot
# An attempt still waiting on a slot after this long is called off and its
# job is RUNNABLE again: so a misjudged stream (a long job among short ones)
# holds a job STARTING (where CancelJob does nothing) ahead of others only
# this long.
_FOLLOW_WAIT_SECONDS = 0.5


@dataclass(slots=True)
class Attempt:
    """An attempt this engine has launched (or reattached to)."""

    job_id: str
    task_id: str
    ce: str
    executor: Executor
    need: Resources
    handle: dict[str, Any] | None = None
    # The job as last committed by this engine (STARTING, then RUNNING): while
    # the attempt runs only the engine changes the columns it writes back.
    job: Job | None = None
    stop_reason: str | None = None  # set by timeout or TerminateJob
    terminated: bool = False  # by TerminateJob
    retryable: bool = True
    # Its timeout's; before it launches, for one waiting on a slot, its call-off.
    timer: asyncio.TimerHandle | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # (queue, shareIdentifier, decay ms) of a job of a fair-share queue: its
    # vCPUs count towards that share's usage while it runs.
    share: tuple[str, str, int] | None = None
    placed_at: int = 0
    interrupted: bool = False  # ended as a reclaimed Spot instance is
    ended: Job | None = None  # the job as its recorded exit left it (for metrics)
    # Holds its capacity. One placed to follow another (`follows`) takes it
    # over when that one's exit is recorded; `over` once its own is.
    held: bool = True
    follows: Attempt | None = field(default=None, repr=False)
    before: Json | None = field(default=None, repr=False)  # the job's runtime before it
    successor: Attempt | None = field(default=None, repr=False)
    over: bool = False
    marked_at: float = 0.0  # (loop time) launched, to be recorded RUNNING


def _covers(held: Resources, need: Resources) -> bool:
    """Does capacity `held` hold `need`?"""
    return (
        (held.vcpus or 0.0) >= (need.vcpus or 0.0) - 1e-9
        and (need.memory_mib is None or (held.memory_mib or 0) >= need.memory_mib)
        and held.gpus >= need.gpus
    )


def _reason_code(reason: str) -> str:
    """`CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY` of `CAPACITY:... - text`."""
    return reason.split(" - ", 1)[0]


def _outcome(future: asyncio.Future[Handle]) -> Handle | BaseException:
    """A finished launch's handle, or what it raised."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


async def _raise(error: Exception) -> Handle:
    raise error


def _need(spec: Json) -> Resources:
    """What a job holds while it runs: a multinode job, all its nodes at once
    (a gang, placed on one compute environment)."""
    if multinode.is_multinode(spec):
        return multinode.need(spec["nodeProperties"])
    return resources_of(spec.get("container") or {})


class Engine:
    def __init__(
        self,
        ctx: Context,
        executors: dict[str, Executor],
        logs: LogStore,
        *,
        default_executor: str = "process",
        host: Limits | None = None,
        kill_grace_seconds: float = 30.0,
        follow_wait_seconds: float = _FOLLOW_WAIT_SECONDS,
        follow_below_ms: float = _FOLLOW_BELOW_MS,
        job_environment: dict[str, str] | None = None,
        spot_interruption_rate: float = 0.0,
        rng: random.Random | None = None,
        metrics: EngineMetrics | None = None,
    ) -> None:
        """`spot_interruption_rate`: interruptions per instance-hour of SPOT
        and FARGATE_SPOT compute environments without their own
        `shoal:spot-interruption-rate` tag (each attempt counts as an
        instance)."""
        self.ctx = ctx
        self.secrets = SecretStore(ctx.settings.data_dir / "secrets")
        self.metrics = metrics if metrics is not None else EngineMetrics()
        self.spot_interruption_rate = spot_interruption_rate
        self._rng = rng or random.Random()
        self._last_spot_draw: int | None = None
        self.job_environment = job_environment or {}
        self.executors = executors
        self.logs = logs
        self.default_executor = default_executor
        self.host = host
        self.kill_grace_seconds = kill_grace_seconds
        self.follow_wait_seconds = follow_wait_seconds
        self.follow_below_ms = follow_below_ms
        self._cycle_requested = False
        self._running = False
        self._deferred: asyncio.TimerHandle | None = None
        self._mark_timer: asyncio.TimerHandle | None = None
        self._poll_timer: asyncio.TimerHandle | None = None
        self._polls = 0
        self._attempts: dict[str, Attempt] = {}
        self._ce_used: dict[str, Usage] = {}
        self._run_ms: dict[str, float] = {}  # moving average of attempts' run time, by CE
        self._followers: dict[str, bool] = {}
        self._shares = fairshare.ShareUsage()
        self._host_used = Usage()
        self._background: set[asyncio.Task[None]] = set()
        self._exits: list[tuple[Attempt, Exit, int | None]] = []
        self._marks: list[tuple[Job, Attempt, LaunchSpec, int]] = []
        # Cheap cycles: a queue whose head could not be placed stays blocked
        # until the epoch moves (capacity freed, control plane changed); the
        # queues and compute environments are re-read when it moves or after
        # _TOPOLOGY_TTL seconds (another process may have changed them).
        self._epoch = 0
        self._topology_version = 0
        self._reason_timer: asyncio.TimerHandle | None = None
        self._new_jobs = True
        self._pending = Pending()
        self._blocked: dict[str, int] = {}
        self._topology: tuple[int, float, list[JobQueue], dict[str, ComputeEnvironment]] | None = (
            None
        )

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        await self._reconcile()
        keep = {a.task_id for a in self._attempts.values()}
        keep |= {t for a in self._attempts.values() for t in multinode.task_ids(a.handle)}
        for executor in self.executors.values():
            sweep = getattr(executor, "sweep", None)
            if sweep is not None:
                sweep(keep)
        self._running = True
        self.wake()
        self._poll_timer = asyncio.get_running_loop().call_later(_POLL_SECONDS, self._poll)

    def _poll(self) -> None:
        """What other processes on this store did (API-only servers submit,
        cancel, terminate and change queues without waking us): new jobs and
        terminate requests every tick, everything every _FULL_POLL ticks."""
        self._polls += 1
        try:
            self._draw_spot_interruptions(self.ctx.clock.now_ms())
        except Exception:
            log.exception("drawing Spot interruptions failed")
        if self._polls % _FULL_POLL == 0:
            self.wake()
        else:
            self._new_jobs = True
            self._request_cycle()
        try:
            with self.ctx.store.read() as tx:
                live = tx.jobs_in_status((JobStatus.STARTING, JobStatus.RUNNING), 10_000)
            for _, job in live:
                if job.terminate_requested:
                    self.terminate(job.job_id, job.terminate_requested)
        except Exception:
            log.exception("looking for terminate requests failed")
        if self._running:
            self._poll_timer = asyncio.get_running_loop().call_later(_POLL_SECONDS, self._poll)

    async def stop(self) -> None:
        """Stop dispatching. Running jobs keep running; a restart reattaches."""
        self._running = False
        if self._poll_timer is not None:
            self._poll_timer.cancel()
        if self._deferred is not None:
            self._deferred.cancel()
        if self._mark_timer is not None:
            self._mark_timer.cancel()
        tasks = [a.task for a in self._attempts.values() if a.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for executor in self.executors.values():
            close = getattr(executor, "close", None)
            if close is not None:
                close()

    def wake(self) -> None:
        """Something placement depends on changed (the control plane, a job's
        state): read queues and compute environments again, look at every queue."""
        self._topology_version += 1
        self._pending.changed_elsewhere()
        self._capacity_changed()

    def _capacity_changed(self) -> None:
        """Capacity was freed: queues blocked so far may move."""
        self._epoch += 1
        self._request_cycle()

    def submitted(self) -> None:
        """New jobs only: queues already blocked stay blocked. While every
        queue is blocked (all capacity in use) new jobs could not start
        anyway: they are evaluated together a moment later, or by the cycle
        an exit brings, instead of one transaction per SubmitJob."""
        self._new_jobs = True
        cached = self._topology
        all_blocked = cached is not None and all(
            self._blocked.get(q.name) == self._epoch for q in cached[2]
        )
        if not all_blocked:
            self._request_cycle()
        elif self._deferred is None and self._running:
            self._deferred = asyncio.get_running_loop().call_later(
                _SUBMIT_BATCH_SECONDS, self._deferred_cycle
            )

    def _deferred_cycle(self) -> None:
        self._deferred = None
        self._request_cycle()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` in the background, keeping a reference until it ends."""
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def terminate(self, job_id: str, reason: str) -> None:
        """TerminateJob on a STARTING/RUNNING job: stop its attempt, never retry it."""
        attempt = self._attempts.get(job_id)
        if attempt is None and (node := multinode.split_node_id(job_id)) is not None:
            self._terminate_node(*node, reason)
            return
        if attempt is None or attempt.stop_reason is not None:
            return
        attempt.stop_reason = reason
        attempt.terminated = True
        attempt.retryable = False
        if attempt.handle is not None:
            self._spawn(self._stop(attempt))
        elif attempt.follows is not None:
            self._call_off(attempt)  # it never starts: it ends as terminated

    def interrupt(self, job_id: str | None = None, ce: str | None = None) -> list[str]:
        """End running attempts as AWS ends those on a reclaimed Spot
        instance (`Host EC2 (instance i-...) terminated.`, no exit code): of
        the job `job_id`, or of every job on compute environment `ce`. Retry
        rules then decide, as for a real reclaim. The ids interrupted."""
        chosen = [
            a
            for a in self._attempts.values()
            if (job_id is None or a.job_id == job_id) and (ce is None or a.ce == ce)
        ]
        done: list[str] = []
        for attempt in chosen:
            if attempt.stop_reason is not None:
                continue  # already being stopped
            attempt.stop_reason = f"Host EC2 (instance i-{attempt.task_id[:17]}) terminated."
            attempt.interrupted = True
            if attempt.handle is not None:
                self._spawn(self._stop(attempt))
            done.append(attempt.job_id)
        return done

    def _draw_spot_interruptions(self, now: int) -> None:
        """Interrupt running attempts on Spot compute environments at their
        rate: each attempt-hour is interrupted with probability
        1 - e^(-rate), drawn every poll for the time since the last."""
        last, self._last_spot_draw = self._last_spot_draw, now
        cached = self._topology
        if last is None or cached is None or now <= last:
            return
        ces: dict[str, ComputeEnvironment] = cached[3]
        for attempt in list(self._attempts.values()):
            ce = ces.get(attempt.ce)
            rate = self._spot_rate(ce) if ce is not None else 0.0
            if rate <= 0 or attempt.handle is None or attempt.stop_reason is not None:
                continue
            if self._rng.random() < 1 - math.exp(-rate * (now - last) / 3_600_000):
                log.info("Spot interruption of job %s (rate %g per hour)", attempt.job_id, rate)
                self.interrupt(job_id=attempt.job_id)

    def _spot_rate(self, ce: ComputeEnvironment) -> float:
        kind = (ce.compute_resources or {}).get("type")
        if kind not in ("SPOT", "FARGATE_SPOT"):
            return 0.0
        tagged = ce.tags.get(SPOT_RATE_TAG)
        if tagged is None:
            return self.spot_interruption_rate
        try:
            return max(0.0, float(tagged))
        except ValueError:
            return 0.0

    def _terminate_node(self, parent_id: str, index: int, reason: str) -> None:
        """TerminateJob on node `index` of a running multinode job: the main
        node is the job (the whole job is terminated); another node is
        stopped alone, as if it had died."""
        attempt = self._attempts.get(parent_id)
        if attempt is None or not isinstance(attempt.executor, multinode.Gang):
            return
        if index == attempt.executor.main:
            self.terminate(parent_id, reason)
        else:
            attempt.executor.terminate_node(index, reason)

    # -- the loop -------------------------------------------------------------
    def _request_cycle(self) -> None:
        """Run a cycle soon: once per turn of the event loop at most, so the
        API is served between cycles however busy the engine is."""
        if not self._cycle_requested and self._running:
            self._cycle_requested = True
            asyncio.get_running_loop().call_soon(self._run_cycle)

    def _run_cycle(self) -> None:
        self._cycle_requested = False
        if not self._running:
            return
        try:
            if self._cycle():
                self._request_cycle()
        except Exception:
            log.exception("engine cycle failed; retrying in 0.5 s")
            asyncio.get_running_loop().call_later(0.5, self._request_cycle)

    def _cycle(self) -> bool:
        """One pass in one transaction: record launches and exits queued since
        the last pass, evaluate new jobs, place what fits; True if there is
        more to do at once."""
        now = self.ctx.clock.now_ms()
        placed: list[tuple[Job, Attempt]] = []
        marks, exits = self._due_marks(), self._exits
        cached = self._topology
        if (
            not marks
            and not exits
            and not self._new_jobs
            and not self._pending.busy()
            and cached is not None
            and cached[0] == self._topology_version
            and all(self._blocked.get(q.name) == self._epoch for q in cached[2])
        ):
            return False  # nothing new, and every queue is still blocked
        self._exits = []
        before = [(attempt, attempt.job) for _, attempt, _, _ in marks]
        freed = False
        moved: list[tuple[Attempt, int]] = []  # capacity held and let go, to undo
        try:
            with self.ctx.store.transaction() as tx:
                self._write_flush(tx, marks, exits, now)
                if exits:
                    # Their capacity is free for this same pass (or their
                    # successors' now).
                    for attempt, exit_, started_at in exits:
                        self._hand_over(attempt, moved)
                        if started_at is not None:
                            self._ran(attempt.ce, (exit_.ended_at or now) - started_at)
                    freed = True
                    self._epoch += 1
                more = False
                if self._new_jobs or self._pending.busy():
                    new_jobs, self._new_jobs = self._new_jobs, False
                    more = self._pending.step(tx, now, new_jobs=new_jobs)
                    self._new_jobs = new_jobs and more
                    for queue in self._pending.new_runnable:
                        # An older job may now head the queue: look again.
                        self._blocked.pop(queue, None)
                self._place(tx, placed, now)
        except BaseException:
            self._pending.forget_step()
            self._unclaim(placed)
            for attempt, previous in before:
                attempt.job = previous
            if freed:
                for attempt, sign in reversed(moved):
                    self._hold(attempt, -sign)
                for attempt, _, _ in exits:
                    attempt.over = False
            if marks or exits:
                self._marks, self._exits = marks + self._marks, exits + self._exits
                asyncio.get_running_loop().call_soon(self._flush_exits)
            raise
        self._forget(exits)
        # Launches begin now (an executor may send its request at once); the
        # rest waits for them in a task, one for those that start at once and
        # one for each that waits on a slot.
        now_placed = [(job, attempt) for job, attempt in placed if attempt.follows is None]
        if now_placed:
            self._launch(now_placed)
        for job, attempt in placed:
            if attempt.follows is not None:
                self._launch([(job, attempt)])
        return more

    def _launch(self, placed: list[tuple[Job, Attempt]]) -> None:
        specs: list[LaunchSpec | None] = []
        launches: list[Awaitable[Handle]] = []
        for job, attempt in placed:
            self.metrics.job_placed(job, attempt.placed_at)
            try:
                spec = self._launch_spec(job, attempt, int(job.runtime.get("attemptNumber", 0)) + 1)
                launches.append(attempt.executor.launch(spec))
                specs.append(spec)
            except Exception as e:  # recorded as a failed launch, never left STARTING
                log.exception("launching job %s failed", job.job_id)
                launches.append(_raise(e))
                specs.append(None)
        self._spawn(self._start(placed, specs, launches))

    def _unclaim(self, placed: list[tuple[Job, Attempt]]) -> None:
        """Undo the in-memory side of claims whose transaction did not commit."""
        for _, attempt in placed:
            if attempt.held:
                self._reserve(attempt, attempt.executor, sign=-1)
                self._share_ended(attempt, ran=False)
            if attempt.follows is not None:
                attempt.follows.successor = None
            if attempt.timer is not None:
                attempt.timer.cancel()
            self._attempts.pop(attempt.job_id, None)
        self._blocked.clear()
        self._new_jobs = True

    def _executor_for(self, ce: ComputeEnvironment) -> Executor:
        name = ce.tags.get("shoal:executor", self.default_executor)
        return self.executors.get(name) or self.executors[self.default_executor]

    # -- placement ------------------------------------------------------------
    def _read_topology(
        self, tx: Transaction, now: int
    ) -> tuple[list[JobQueue], dict[str, ComputeEnvironment]]:
        cached = self._topology
        fresh = cached is not None and cached[0] == self._topology_version
        if cached is not None and fresh and time.monotonic() - cached[1] < _TOPOLOGY_TTL:
            return cached[2], cached[3]
        queues = sorted(
            (q for q in tx.list_job_queues(None, 10_000) if not q.lifecycle.gone(now)),
            key=lambda q: (-q.priority, q.name),
        )
        ces = {
            ce.name: ce
            for ce in tx.list_compute_environments(None, 10_000)
            if not ce.lifecycle.gone(now)
        }
        self._topology = (self._topology_version, time.monotonic(), queues, ces)
        lifecycles = [q.lifecycle for q in queues] + [c.lifecycle for c in ces.values()]
        settling = [lc.settles_at for lc in lifecycles if lc.settles_at > now]
        if settling:
            # CREATING/UPDATING become VALID by the clock alone: look again then.
            delay = (min(settling) - now) / 1000
            asyncio.get_running_loop().call_later(delay, self.wake)
        return queues, ces

    def _place(self, tx: Transaction, placed: list[tuple[Job, Attempt]], now: int) -> None:
        queues, ces = self._read_topology(tx, now)
        for queue in queues:
            if self._blocked.get(queue.name) == self._epoch:
                continue
            usable = [
                ces[o.compute_environment]
                for o in sorted(queue.compute_environment_order, key=lambda o: o.order)
                if o.compute_environment in ces
            ]
            usable = [
                ce
                for ce in usable
                if ce.state == "ENABLED" and ce.lifecycle.effective(now) is ResourceStatus.VALID
            ]
            policy = self._share_policy(tx, queue)
            if policy is None:
                self._place_queue(tx, queue.name, usable, placed, now)
            else:
                self._place_fair(tx, queue.name, policy, usable, placed, now)

    def capacity_vcpus(self) -> list[tuple[str, float, float | None]]:
        """(compute environment, vCPUs in use, most it holds or None if not
        known) for each compute environment in use or known to placement:
        what the metrics report."""
        cached = self._topology
        found: list[tuple[str, float, float | None]] = []
        for ce in cached[3].values() if cached is not None else ():
            used = self._ce_used.get(ce.name)
            # A cluster is asked only once placement has (asking may connect);
            # hence no _limits() here, which would mark the CE as looked at.
            cluster = self._cluster(ce) if used is not None else None
            on_host = self._executor_for(ce).name in _ON_HOST
            limits = ce_limits(ce, self.host if on_host else None)
            most: float | None = limits.vcpus if math.isfinite(limits.vcpus) else None
            if cluster is not None:
                most = cluster.total.vcpus if isinstance(cluster, Capacity) else None
            found.append((ce.name, used.vcpus if used is not None else 0.0, most))
        return found

    def _limits(self, ce: ComputeEnvironment) -> tuple[Limits, Usage, bool]:
        executor = self._executor_for(ce)
        on_host = getattr(executor, "name", "") in _ON_HOST
        limits = ce_limits(ce, self.host if on_host else None)
        return limits, self._ce_used.setdefault(ce.name, Usage()), on_host

    def _most_vcpus(self, ce: ComputeEnvironment) -> float:
        """The most vCPUs one job can have in `ce`."""
        cluster = self._cluster(ce)
        if isinstance(cluster, Capacity):
            return cluster.biggest.vcpus
        return self._limits(ce)[0].vcpus

    def _cluster(self, ce: ComputeEnvironment) -> Capacity | str | None:
        """For an UNMANAGED compute environment whose executor runs on a
        cluster (Ray): the cluster's resources as nodes join and leave, or why
        they are unknown. None for every other compute environment."""
        capacity = getattr(self._executor_for(ce), "capacity", None)
        if capacity is None or ce.compute_resources is not None:
            return None
        found: Capacity | str = capacity(ce.tags)
        return found

    def _place_queue(
        self,
        tx: Transaction,
        queue: str,
        ces: list[ComputeEnvironment],
        placed: list[tuple[Job, Attempt]],
        now: int,
    ) -> None:
        # Read the head of the queue a little at a time: placed jobs leave
        # RUNNABLE, so a re-read skips them; only jobs that can never fit are
        # read again (and passed over). A blocked queue costs one short read.
        never_fit: set[str] = set()
        step = 1  # usually one slot is free: read one job, then 2, 8, 32, ...
        self._blocked.pop(queue, None)
        while True:
            limit = len(never_fit) + step
            step = min(step * 4 if step > 1 else 2, _HEAD)
            head = tx.queued_jobs(queue, (JobStatus.RUNNABLE,), limit)
            for job in head:
                if job.job_id in never_fit:
                    continue
                verdict = self._place_job(tx, job, ces, placed, now, follow=True)
                if verdict == "blocked":
                    self._blocked[queue] = self._epoch
                    return
                if verdict == "never":
                    never_fit.add(job.job_id)
            if len(head) < limit:
                return

    def front_of(self, queue_name: str, limit: int) -> list[str] | None:
        """A fair-share queue's RUNNABLE jobs in the order they would start
        (None for a FIFO queue: the store's order is the dispatch order)."""
        now = self.ctx.clock.now_ms()
        with self.ctx.store.read() as tx:
            queue = tx.get_job_queue(queue_name)
            policy = self._share_policy(tx, queue) if queue is not None else None
            if policy is None:
                return None
            heads: dict[str, list[Job]] = {}
            for job in tx.share_heads(queue_name, limit):
                heads.setdefault(job.share_identifier or "", []).append(job)
        heads = {share: fairshare.priority_order(jobs) for share, jobs in heads.items()}
        order = fairshare.dispatch_order(heads, queue_name, policy, self._shares, now, limit)
        return [job.job_id for job in order]

    def _share_policy(self, tx: Transaction, queue: JobQueue) -> fairshare.SharePolicy | None:
        if queue.scheduling_policy is None:
            return None
        policy = tx.get_scheduling_policy(queue.scheduling_policy)
        if policy is None or policy.fairshare_policy is None:
            return None
        return fairshare.SharePolicy.of(policy.fairshare_policy)

    def _place_fair(
        self,
        tx: Transaction,
        queue: str,
        policy: fairshare.SharePolicy,
        ces: list[ComputeEnvironment],
        placed: list[tuple[Job, Attempt]],
        now: int,
    ) -> None:
        """Place a fair-share queue's jobs: the least-used share (by weight)
        first, its highest schedulingPriority job first (fairshare.py)."""
        self._blocked.pop(queue, None)
        heads: dict[str, list[Job]] = {}
        for job in tx.share_heads(queue, _SHARE_HEAD):
            heads.setdefault(job.share_identifier or "", []).append(job)
        heads = {share: fairshare.priority_order(jobs) for share, jobs in heads.items()}
        # computeReservation: part of the queue's vCPUs is kept for shares
        # that are not active yet.
        total = sum(self._limits(ce)[0].vcpus for ce in ces)
        cap = total * (1 - policy.reserved_fraction(len(heads)))
        while heads:
            share = fairshare.next_share(heads, queue, policy, self._shares, now)
            job = heads[share][0]
            need = _need(job.spec)
            after = self._shares.running(queue) + (need.vcpus or 0.0)
            if cap + 1e-9 < after <= total + 1e-9:
                # Room there is, but it is kept for shares to come.
                self._blocked[queue] = self._epoch
                reserved = total - cap
                reason = (
                    f"CAPACITY:FAIR_SHARE_RESERVATION - computeReservation keeps {reserved:g} "
                    f"of the queue's {total:g} vCPU for shares not active yet; share {share} "
                    "is next."
                )
                self._say_share_waits(tx, heads, share, reason, policy, now)
                return
            before = len(placed)
            verdict = self._place_job(tx, job, ces, placed, now)
            if verdict == "blocked":
                self._blocked[queue] = self._epoch
                self._say_share_waits(tx, heads, share, None, policy, now)
                return
            heads[share].pop(0)
            if not heads[share]:
                del heads[share]
            if verdict == "placed" and len(placed) > before:
                attempt = placed[-1][1]
                attempt.share = (queue, share, policy.decay_ms)  # placed_at set by _claim
                self._shares.change((queue, share), need.vcpus or 0.0, now, policy.decay_ms)

    def _say_share_waits(
        self,
        tx: Transaction,
        heads: dict[str, list[Job]],
        chosen: str,
        reason: str | None,
        policy: fairshare.SharePolicy,
        now: int,
    ) -> None:
        """A blocked fair-share queue: the next job of each share says why it
        waits (the chosen share's says what it needs, or `reason`)."""
        queue = heads[chosen][0].queue
        order = [chosen]
        rest = {k: v for k, v in heads.items() if k != chosen}
        while rest:
            following = fairshare.next_share(rest, queue, policy, self._shares, now)
            order.append(following)
            del rest[following]
        for place, share in enumerate(order):
            job = heads[share][0]
            if now - int(job.runtime.get("runnableAt", now)) < _REASON_AFTER_MS:
                continue
            if place == 0:
                if reason is not None:
                    self._set_reason(tx, job, reason, now)
                continue
            self._set_reason(
                tx,
                job,
                f"FAIR_SHARE:WAITING_FOR_SHARE - Share {share or '(none)'} (weight "
                f"{policy.weight(share):g}) is number {place + 1} of {len(order)} in line by "
                f"recent vCPU-time; share {chosen} is served first when capacity frees.",
                now,
            )

    def _place_job(
        self,
        tx: Transaction,
        job: Job,
        ces: list[ComputeEnvironment],
        placed: list[tuple[Job, Attempt]],
        now: int,
        *,
        follow: bool = False,
    ) -> str:
        """'placed', 'never' (can never fit: skipped) or 'blocked' (must wait).

        With `follow`, a job that finds a compute environment full may be
        placed on the slot of an attempt there, to start when it ends (see
        `_FOLLOW_BELOW_MS`)."""
        need = _need(job.spec)
        if not ces:
            reason = (
                "ACTION_REQUIRED - CE(s) associated with the job queue are invalid or disabled."
            )
            return "never" if self._set_reason(tx, job, reason, now) else "blocked"
        blocked_by: str | None = None
        for ce in ces:
            limits, used, on_host = self._limits(ce)
            cluster = self._cluster(ce)
            if isinstance(cluster, str):
                blocked_by = blocked_by or (
                    f"CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - compute environment {ce.name} "
                    f"has no capacity known: {cluster}."
                )
                continue
            if cluster is not None:
                props = job.spec.get("nodeProperties")
                unit = multinode.largest_node(props) if props is not None else need
                if not cluster.biggest.ever_holds(unit):
                    continue  # no node of the cluster could ever hold it
                limits = cluster.admit
                if (
                    cluster.admit_short is not None
                    and self._run_ms.get(ce.name, math.inf) <= self.follow_below_ms
                ):
                    limits = cluster.admit_short
            if not limits.ever_holds(need):
                continue
            host_ok = not on_host or self.host is None or self.host.holds(self._host_used, need)
            if limits.holds(used, need) and host_ok:
                attempt = self._claim(tx, job, ce, need, now)
                if attempt is not None:
                    placed.append((job, attempt))
                return "placed"
            ahead = (
                self._to_follow(ce, need)
                if follow and cluster is None and not multinode.is_multinode(job.spec)
                else None
            )
            if ahead is not None:
                attempt = self._claim(tx, job, ce, need, now, follows=ahead)
                if attempt is not None:
                    placed.append((job, attempt))
                return "placed"
            if blocked_by is None:
                free = describe_free(limits, used)
                if isinstance(cluster, Capacity) and limits != cluster.total:
                    queued = limits.vcpus - cluster.total.vcpus
                    free = (
                        f"{free} (its cluster's {cluster.total.vcpus:g} vCPU, and {queued:g} "
                        "more waiting in the cluster's queue)"
                    )
                if on_host and self.host is not None and not host_ok:
                    free = f"{free}; this host has {describe_free(self.host, self._host_used)}"
                blocked_by = (
                    f"CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - The job needs "
                    f"{describe_need(need)}; compute environment {ce.name} has {free}."
                )
        if blocked_by is not None:
            waited = now - int(job.runtime.get("runnableAt", now))
            if waited >= _REASON_AFTER_MS:
                if self._set_reason(tx, job, blocked_by, now):
                    return "never"  # cancelled by the queue's time limit
            else:
                # Most waits last a moment: say why only if it lasts.
                self._look_again_in((_REASON_AFTER_MS - waited) / 1000)
            return "blocked"
        biggest = max((self._most_vcpus(ce) for ce in ces), default=0.0)
        self._set_reason(
            tx,
            job,
            "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE - The job needs "
            f"{describe_need(need)}, more than any compute environment of the queue can "
            f"hold (at most {biggest:g} vCPU).",
            now,
        )
        return "never"

    def _look_again_in(self, seconds: float) -> None:
        if self._reason_timer is None or self._reason_timer.cancelled():
            loop = asyncio.get_running_loop()

            def again() -> None:
                self._reason_timer = None
                self._capacity_changed()

            self._reason_timer = loop.call_later(seconds, again)

    def _set_reason(self, tx: Transaction, job: Job, reason: str, now: int) -> bool:
        """Say why a RUNNABLE job waits. True if, having waited so for its
        queue's `jobStateTimeLimitActions` limit, it was cancelled instead."""
        code = _reason_code(reason)
        since = int(job.runtime.get("reasonSince", now))
        if job.status_reason is None or _reason_code(job.status_reason) != code:
            since = now
        action = self._time_limit(job.queue, code)
        if action is not None and now - since >= int(action["maxTimeSeconds"]) * 1000:
            cancelled = dataclasses.replace(
                job,
                status=JobStatus.FAILED,
                status_reason=(
                    f"Canceled by JobStateTimeLimit action due to reason: {action['reason']}"
                ),
                stopped_at=now,
                is_cancelled=True,
            )
            if tx.update_job(cancelled, JobStatus.RUNNABLE):
                # Its dependents fail with it: look at the waiting jobs again.
                asyncio.get_running_loop().call_soon(self.wake)
                return True
        if action is not None:
            self._look_again_in((since + int(action["maxTimeSeconds"]) * 1000 - now) / 1000)
        if job.status_reason != reason or job.runtime.get("reasonSince") != since:
            runtime = {**job.runtime, "reasonSince": since}
            changed = dataclasses.replace(job, status_reason=reason, runtime=runtime)
            tx.update_job(changed, JobStatus.RUNNABLE)
        return False

    def _time_limit(self, queue: str, code: str) -> Json | None:
        """The queue's jobStateTimeLimitAction for a RUNNABLE job blocked with
        reason `code`, if it has one."""
        cached = self._topology
        for candidate in cached[2] if cached is not None else []:
            if candidate.name == queue:
                for action in candidate.job_state_time_limit_actions:
                    if action.get("state", "RUNNABLE") == "RUNNABLE" and action["reason"] == code:
                        return action
        return None

    def _claim(
        self,
        tx: Transaction,
        job: Job,
        ce: ComputeEnvironment,
        need: Resources,
        now: int,
        follows: Attempt | None = None,
    ) -> Attempt | None:
        number = int(job.runtime.get("attemptNumber", 0)) + 1
        task_id = new_task_id()
        executor = self._executor_for(ce)
        runtime = {
            **job.runtime,
            "attemptNumber": number,
            "taskId": task_id,
            "ce": ce.name,
            "executor": executor.name,
            "home": executor.home(),
            "container": {"taskArn": self._task_arn(ce.name, task_id)},
        }
        runtime.pop("handle", None)
        if multinode.is_multinode(job.spec):
            # Fixed before the launch, so that a restart finds every node.
            runtime[multinode.NODE_TASKS] = multinode.node_tasks(
                job.spec["nodeProperties"], task_id
            )
        starting = dataclasses.replace(
            job,
            status=JobStatus.STARTING,
            status_reason=None,
            runtime=runtime,
            terminate_requested=None,
        )
        if not tx.update_job(starting, JobStatus.RUNNABLE):
            return None
        attempt = Attempt(
            job_id=job.job_id,
            task_id=task_id,
            ce=ce.name,
            executor=self._gang(executor, job.job_id, job.spec, ce.name),
            need=need,
            job=starting,
            placed_at=now,
        )
        if follows is None:
            self._reserve(attempt, executor)
        else:
            attempt.held = False
            attempt.follows = follows
            attempt.before = job.runtime
            follows.successor = attempt
            attempt.timer = asyncio.get_running_loop().call_later(
                self.follow_wait_seconds, self._call_off, attempt
            )
            self.metrics.attempt_followed()
        self._attempts[job.job_id] = attempt
        return attempt

    def _call_off(self, attempt: Attempt) -> None:
        """An attempt has waited on its slot too long (or its job was
        terminated meanwhile): withdraw its launch, if it has not begun."""
        attempt.timer = None
        waiting = attempt.handle is None and not attempt.held and not attempt.over
        if waiting and self._follower(attempt.executor):
            cast(Follower, attempt.executor).withdraw(attempt.task_id)

    def _gang(self, executor: Executor, job_id: str, spec: Json, ce: str) -> Executor:
        """The executor of one attempt: a multinode job's runs its nodes through
        the compute environment's executor."""
        if not multinode.is_multinode(spec):
            return executor
        return multinode.Gang(
            executor,
            job_id,
            spec,
            store=self.ctx.store,
            clock=self.ctx.clock,
            grace_seconds=self.kill_grace_seconds,
            task_arn=lambda task_id: self._task_arn(ce, task_id),
        )

    def _task_arn(self, ce: str, task_id: str) -> str:
        s = self.ctx.settings
        return f"arn:aws:ecs:{s.region}:{s.account_id}:task/{ce}_Batch/{task_id}"

    def _share_started(self, attempt: Attempt) -> None:
        if attempt.share is not None:
            queue, share, decay = attempt.share
            vcpus = attempt.need.vcpus or 0.0
            self._shares.change((queue, share), vcpus, self.ctx.clock.now_ms(), decay)

    def _share_ended(self, attempt: Attempt, *, ran: bool = True) -> None:
        if attempt.share is not None:
            queue, share, decay = attempt.share
            vcpus = attempt.need.vcpus or 0.0
            now = self.ctx.clock.now_ms()
            self._shares.change((queue, share), -vcpus, now, decay)
            if ran:
                self._shares.finished((queue, share), now - attempt.placed_at)

    def _reserve(self, attempt: Attempt, executor: Executor, sign: int = 1) -> None:
        self._ce_used.setdefault(attempt.ce, Usage()).add(attempt.need, sign)
        if executor.name in _ON_HOST:
            self._host_used.add(attempt.need, sign)

    def _hold(self, attempt: Attempt, sign: int) -> None:
        """Take (+1) or let go of (-1) the capacity an attempt holds."""
        self._reserve(attempt, attempt.executor, sign)
        if sign > 0:
            self._share_started(attempt)
        else:
            self._share_ended(attempt)
        attempt.held = sign > 0

    def _hand_over(self, attempt: Attempt, moved: list[tuple[Attempt, int]]) -> None:
        """An attempt's exit is recorded: its capacity goes, to the attempt
        that followed it if there is one (already started by the executor,
        or about to be). One that ended before it had the slot (its launch
        failed or was withdrawn) passes its place in line on instead."""
        attempt.over = True
        if attempt.held:
            self._hold(attempt, -1)
            moved.append((attempt, -1))
        elif attempt.follows is not None and not attempt.follows.over:
            self._splice(attempt)
            return
        successor = attempt.successor
        if successor is not None and not successor.over and not successor.held:
            self._hold(successor, +1)
            moved.append((successor, +1))

    @staticmethod
    def _splice(attempt: Attempt) -> None:
        """Take a waiting attempt out of its slot's line: what waits behind it
        now waits for what it waited for (as its executor does)."""
        ahead, behind = attempt.follows, attempt.successor
        if ahead is not None:
            ahead.successor = behind
        if behind is not None:
            behind.follows = ahead
        attempt.follows = attempt.successor = None

    def _follower(self, executor: Executor) -> bool:
        # isinstance on a Protocol is slow: asked once per executor.
        known = self._followers.get(executor.name)
        if known is None:
            known = self._followers[executor.name] = isinstance(executor, Follower)
        return known

    def _ran(self, ce: str, ms: float) -> None:
        average = self._run_ms.get(ce)
        self._run_ms[ce] = ms if average is None else average + _RUN_MS_WEIGHT * (ms - average)

    def _to_follow(self, ce: ComputeEnvironment, need: Resources) -> Attempt | None:
        """An attempt on `ce` whose slot a job needing `need` can follow it on
        (see `_FOLLOW_BELOW_MS`), if there is one: of those with the fewest
        waiting ahead, the first placed."""
        if self._run_ms.get(ce.name, math.inf) > self.follow_below_ms:
            return None
        executor = self._executor_for(ce)
        if not self._follower(executor):
            return None
        follower = cast(Follower, executor)
        best: Attempt | None = None
        best_depth = _FOLLOW_DEPTH
        for attempt in self._attempts.values():
            if (
                attempt.ce != ce.name
                or attempt.successor is not None
                or attempt.over
                or attempt.executor is not executor
                or not _covers(attempt.need, need)
                or not follower.can_follow(attempt.task_id)
            ):
                continue
            depth, ahead = 0, attempt
            while not ahead.held and ahead.follows is not None:
                depth, ahead = depth + 1, ahead.follows
            if depth < best_depth and ahead.held:
                best, best_depth = attempt, depth
                if depth == 0:
                    break
        return best

    # -- one attempt ----------------------------------------------------------
    def _launch_spec(
        self, job: Job, attempt: Attempt, number: int, node: int | None = None
    ) -> LaunchSpec:
        """The attempt's spec; for a multinode job, the gang's (its main
        node's, carrying every node's: `node` is the one being made)."""
        props: Json | None = job.spec.get("nodeProperties")
        if props is not None and node is None:
            nodes = [self._launch_spec(job, attempt, number, i) for i in range(props["numNodes"])]
            return multinode.gang_spec(nodes, int(props["mainNode"]))
        container: Json = job.spec.get("container") or {}
        job_id, task_id, need = job.job_id, attempt.task_id, attempt.need
        if props is not None and node is not None:
            container = multinode.node_container(props, node)
            job_id = multinode.node_id(job.job_id, node)
            tasks = (attempt.job or job).runtime.get(multinode.NODE_TASKS) or {}
            if node != props["mainNode"]:
                task_id = tasks.get(str(node)) or new_task_id()
            need = resources_of(container)
        options = (container.get("logConfiguration") or {}).get("options") or {}
        prefix = options.get("awslogs-stream-prefix") or job.definition_name[:200]
        # Endpoint settings and the like, injected so that jobs reach AWS
        # services (or a local S3) unchanged: the server's, then the compute
        # environment's (`shoal:env:NAME` tags), under what the job sets.
        env = dict(self.job_environment)
        cached = self._topology
        ce = cached[3].get(attempt.ce) if cached is not None else None
        for key, value in (ce.tags if ce is not None else {}).items():
            if key.startswith(_ENV_TAG):
                env[key[len(_ENV_TAG) :]] = value
        env.update({e["name"]: e.get("value", "") for e in container.get("environment") or []})
        env.update(
            {
                "AWS_BATCH_JOB_ID": job_id,
                "AWS_BATCH_JQ_NAME": job.queue,
                "AWS_BATCH_CE_NAME": attempt.ce,
                "AWS_BATCH_JOB_ATTEMPT": str(number),
            }
        )
        if "arrayIndex" in job.spec:
            env["AWS_BATCH_JOB_ARRAY_INDEX"] = str(job.spec["arrayIndex"])
            # Not set by AWS (a long-standing feature request); harmless to add.
            env["AWS_BATCH_JOB_ARRAY_SIZE"] = str(job.spec.get("arraySize", ""))
        for secret in container.get("secrets") or []:
            # Resolved at launch, into the environment only: never stored.
            secret_value = self.secrets.resolve(str(secret.get("valueFrom", "")))
            if secret_value is None:
                raise LaunchError(
                    "ResourceInitializationError: unable to pull secrets: "
                    f"{secret.get('valueFrom')} is not in this server's secret store "
                    "(shoal secrets put NAME)"
                )
            env[str(secret["name"])] = secret_value
        extra: Json = {}
        if props is not None and node is not None:
            env.update(multinode.node_environment(props, node))
            extra["multinode"] = multinode.node_options(job.job_id, number, props, node)
        return LaunchSpec(
            job_id=job_id,
            attempt=number,
            task_id=task_id,
            command=list(container.get("command") or []),
            environment=env,
            image=container.get("image"),
            vcpus=need.vcpus or 1.0,
            memory_mib=need.memory_mib,
            gpus=need.gpus,
            user=container.get("user"),
            log_group=options.get("awslogs-group") or "/aws/batch/job",
            log_stream=f"{prefix}/default/{task_id}",
            options={"container": container, "ceTags": dict(ce.tags) if ce else {}, **extra},
            after=attempt.follows.task_id if attempt.follows is not None else None,
        )

    async def _start(
        self,
        placed: list[tuple[Job, Attempt]],
        specs: list[LaunchSpec | None],
        launches: list[Awaitable[Handle]],
    ) -> None:
        """Wait for placed attempts to launch, then watch them; they are
        recorded RUNNING by the next cycle.

        Each is taken as it launches (those of one loop turn together), not
        once all placed with it have: an executor that queues attempts (Ray)
        launches the last of a large placement only when the cluster gets to
        it, and the exits of the first, which free their slots, would wait
        for it."""
        if len(launches) == 1:  # most often: without a task per launch
            result: Handle | BaseException
            try:
                result = await launches[0]
            except Exception as e:
                result = e
            self._started(placed, specs, [result])
            return
        loop = asyncio.get_running_loop()
        ready: list[int] = []
        woken = loop.create_future()

        def done(index: int, _: asyncio.Future[Handle]) -> None:
            ready.append(index)
            if not woken.done():
                woken.set_result(None)

        futures = [asyncio.ensure_future(launch) for launch in launches]
        for index, future in enumerate(futures):
            future.add_done_callback(functools.partial(done, index))
        left = len(futures)
        while left:
            try:
                await woken
            except asyncio.CancelledError:
                for future in futures:
                    future.cancel()  # as gather's would be
                raise
            woken = loop.create_future()
            batch = sorted(ready)
            ready.clear()
            left -= len(batch)
            self._started(
                [placed[i] for i in batch],
                [specs[i] for i in batch],
                [_outcome(futures[i]) for i in batch],
            )

    def _started(
        self,
        placed: list[tuple[Job, Attempt]],
        specs: list[LaunchSpec | None],
        results: list[Handle | BaseException],
    ) -> None:
        """Placed attempts that launched (or failed to): watch them."""
        launched: list[tuple[Job, Attempt, LaunchSpec]] = []
        for (job, attempt), spec, result in zip(placed, specs, results, strict=True):
            if attempt.timer is not None:  # it waited on a slot, and waits no more
                attempt.timer.cancel()
                attempt.timer = None
            if isinstance(result, LaunchWithdrawn) and attempt.stop_reason is None:
                self._withdrawn(attempt)
                continue
            if isinstance(result, BaseException):
                reason = (
                    result.reason
                    if isinstance(result, LaunchError)
                    else f"CannotStartContainerError: {result}"
                )
                failed = Exit(exit_code=None, reason=reason, status_reason=FAILED_TO_START)
                self.metrics.executor_error(attempt.executor.name)
                self._record_exit(attempt, failed, started_at=None)
                continue
            assert spec is not None
            attempt.handle = result
            launched.append((job, attempt, spec))
        if not launched:
            return
        # RUNNING is recorded once a launch is _MARK_SECONDS old, or with its
        # exit if that comes first (then the job is written once).
        now = self.ctx.clock.now_ms()
        marked_at = asyncio.get_running_loop().time()
        for job, attempt, spec in launched:
            # When it began, as seen where it runs (if the executor says), so
            # that startedAt and stoppedAt of jobs on one slot never overlap.
            started_at = (attempt.handle or {}).get("startedAt")
            if not isinstance(started_at, int) or not attempt.placed_at <= started_at <= now:
                started_at = now  # (a node whose clock is off)
            attempt.marked_at = marked_at
            self.metrics.attempt_launched(attempt.placed_at, started_at)
            self._marks.append((job, attempt, spec, started_at))
            attempt.task = asyncio.create_task(
                self._watch(attempt, job.spec, started_at, elapsed_ms=0)
            )
        if self._mark_timer is None:
            self._mark_timer = asyncio.get_running_loop().call_later(_MARK_SECONDS, self._marks_due)

    def _marks_due(self) -> None:
        self._mark_timer = None
        if self._marks:  # else a cycle took them on its way
            self._request_cycle()

    def _due_marks(self) -> list[tuple[Job, Attempt, LaunchSpec, int]]:
        """Take the launches to record RUNNING now: those _MARK_SECONDS old,
        and those whose exits are being recorded. The rest wait, on a timer."""
        marks = self._marks
        if not marks:
            return marks
        loop = asyncio.get_running_loop()
        due = loop.time() - _MARK_SECONDS + 0.0005  # (timers run to the millisecond)
        ending = {id(attempt) for attempt, _, _ in self._exits}
        taken: list[tuple[Job, Attempt, LaunchSpec, int]] = []
        young: list[tuple[Job, Attempt, LaunchSpec, int]] = []
        for mark in marks:
            attempt = mark[1]
            (taken if attempt.marked_at <= due or id(attempt) in ending else young).append(mark)
        self._marks = young
        if young and self._mark_timer is None:
            wait = young[0][1].marked_at + _MARK_SECONDS - loop.time()
            self._mark_timer = loop.call_later(max(0.0, wait) + 0.0005, self._marks_due)
        return taken

    def _mark_started(
        self, tx: Transaction, job: Job, attempt: Attempt, spec: LaunchSpec, started_at: int
    ) -> Job | None:
        """STARTING -> RUNNING with the attempt's handle; the job as written, or
        None if its status moved underneath (e.g. its queue was deleted)."""
        running = self._as_running(job, attempt, spec, started_at)
        return running if tx.set_job_state(running, JobStatus.STARTING) else None

    def _as_running(self, job: Job, attempt: Attempt, spec: LaunchSpec, started_at: int) -> Job:
        """The job RUNNING its attempt (not written)."""
        latest = attempt.job or job
        runtime = {
            **latest.runtime,
            "handle": attempt.handle,
            "logGroup": spec.log_group,
            "container": {
                "taskArn": self._task_arn(attempt.ce, attempt.task_id),
                "logStreamName": spec.log_stream,
            },
        }
        return dataclasses.replace(
            latest, status=JobStatus.RUNNING, started_at=started_at, runtime=runtime
        )

    async def _watch(self, attempt: Attempt, spec: Json, started_at: int, elapsed_ms: int) -> None:
        assert attempt.handle is not None
        timeout = (spec.get("timeout") or {}).get("attemptDurationSeconds")
        if timeout:
            delay = timeout - elapsed_ms / 1000
            if delay <= 0:
                self._on_timeout(attempt)  # expired while no server was watching
            else:
                loop = asyncio.get_running_loop()
                attempt.timer = loop.call_later(delay, self._on_timeout, attempt)
        if attempt.stop_reason is not None:
            self._spawn(self._stop(attempt))
        try:
            exit_ = await attempt.executor.wait(attempt.handle)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Never leave the job RUNNING with nobody watching it.
            log.exception("waiting for job %s failed", attempt.job_id)
            self.metrics.executor_error(attempt.executor.name)
            with contextlib.suppress(Exception):
                await attempt.executor.stop(attempt.handle, 0)
            exit_ = Exit(
                exit_code=None,
                reason=f"CannotInspectContainerError: {e}"[:255],
                status_reason=ESSENTIAL_EXITED,
            )
        if attempt.timer is not None:
            attempt.timer.cancel()
        self._record_exit(attempt, exit_, started_at=started_at)

    def _on_timeout(self, attempt: Attempt) -> None:
        if attempt.stop_reason is None:
            attempt.stop_reason = TIMEOUT_REASON
            attempt.retryable = False
            self._spawn(self._stop(attempt))

    async def _stop(self, attempt: Attempt) -> None:
        if attempt.handle is not None:
            await attempt.executor.stop(attempt.handle, self.kill_grace_seconds)

    def _record_exit(self, attempt: Attempt, exit_: Exit, *, started_at: int | None) -> None:
        """Queue an attempt's end; exits arriving together commit in one transaction."""
        self._exits.append((attempt, exit_, started_at))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # The next engine cycle records them, in the transaction that places
        # the jobs their ends make room for.
        self._request_cycle()

    def _write_flush(
        self,
        tx: Transaction,
        marks: list[tuple[Job, Attempt, LaunchSpec, int]],
        exits: list[tuple[Attempt, Exit, int | None]],
        now: int,
    ) -> None:
        """Record launches (STARTING -> RUNNING), then exits, in `tx`.

        An attempt that ended before its launch was recorded (most short jobs)
        is written once, from STARTING straight to how it ended: its RUNNING
        would be overwritten in this same transaction, unseen."""
        ending = {id(attempt) for attempt, _, _ in exits}
        unwritten: set[int] = set()  # attempts whose RUNNING is in memory only
        for starting, attempt, spec, launched_at in marks:
            if id(attempt) in ending and not isinstance(attempt.executor, multinode.Gang):
                attempt.job = self._as_running(starting, attempt, spec, launched_at)
                unwritten.add(id(attempt))
                continue
            attempt.job = self._mark_started(tx, starting, attempt, spec, launched_at)
            if attempt.job is not None and isinstance(attempt.executor, multinode.Gang):
                attempt.executor.write_started(tx, attempt.job, launched_at)
        unknown = [a.job_id for a, _, _ in exits if a.job is None]
        stored = tx.get_jobs(unknown) if unknown else {}
        for attempt, exit_, started_at in exits:
            job = attempt.job or stored[attempt.job_id]
            after = self._after_exit(job, attempt, exit_, started_at, now)
            was = JobStatus.STARTING if id(attempt) in unwritten else job.status
            if not tx.set_job_state(after, was):
                # Our copy was stale: apply the exit to what is stored.
                fresh = tx.get_jobs([attempt.job_id])[attempt.job_id]
                after = self._after_exit(fresh, attempt, exit_, started_at, now)
                tx.set_job_state(after, fresh.status)
            attempt.ended = after
            if isinstance(attempt.executor, multinode.Gang):
                attempt.executor.write_ended(
                    tx,
                    after,
                    exit_,
                    now,
                    stop_reason=attempt.stop_reason,
                    terminated=attempt.terminated,
                )
            if after.status.terminal:
                self._pending.ended(after)

    def _forget(self, exits: list[tuple[Attempt, Exit, int | None]]) -> None:
        """After recorded exits commit: their attempts and files go."""
        for attempt, _, _ in exits:
            self.metrics.attempt_ended(attempt.ended, terminated=attempt.terminated)
            if attempt.successor is not None:  # it holds the slot now
                if attempt.successor.follows is attempt:
                    attempt.successor.follows = None
                attempt.successor = None
            # The job's next attempt may have been placed in the same pass:
            # that one stays tracked.
            if self._attempts.get(attempt.job_id) is attempt:
                del self._attempts[attempt.job_id]
            if attempt.handle is not None:
                attempt.executor.release(attempt.handle)

    def _flush_exits(self) -> None:
        """Record queued launches and exits in a transaction of their own (the
        careful path, after a cycle that carried them failed): one exit that
        cannot be recorded must not hold up the rest."""
        marks, self._marks = self._marks, []
        exits, self._exits = self._exits, []
        now = self.ctx.clock.now_ms()
        before = [(attempt, attempt.job) for _, attempt, _, _ in marks]
        try:
            with self.ctx.store.transaction() as tx:
                self._write_flush(tx, marks, exits, now)
        except Exception:
            self._pending.forget_step()
            for attempt, previous in before:
                attempt.job = previous
            if marks:
                # The processes run regardless: their exits are recorded
                # against the STARTING state that is committed.
                log.exception("recording %d launches as RUNNING failed", len(marks))
                self._exits = exits + self._exits
                self._flush_exits()  # the exits alone
                # The launches again later (with their exits, if they come first).
                self._marks = marks + self._marks
                asyncio.get_running_loop().call_later(0.5, self._request_cycle)
                return
            if not exits:
                return
            if len(exits) > 1:
                # Record them one by one, so one bad exit cannot hold up the rest.
                log.exception("recording %d exits together failed; one at a time", len(exits))
                failed: list[tuple[Attempt, Exit, int | None]] = []
                for one in exits:
                    self._exits = [one]
                    self._flush_exits()
                    failed += self._exits  # put back, with a retry set
                self._exits = failed
                return
            log.exception("recording the exit of job %s failed; retrying", exits[0][0].job_id)
            self._exits = exits + self._exits
            asyncio.get_running_loop().call_later(0.5, self._flush_exits)
            return
        for attempt, _, _ in exits:
            self._hand_over(attempt, [])
        self._forget(exits)
        if exits:
            self._capacity_changed()

    def _after_exit(
        self, job: Job, attempt: Attempt, exit_: Exit, started_at: int | None, now: int
    ) -> Job:
        """The job after one of its attempts ended: retry rules applied."""
        if attempt.interrupted:
            # Whatever the process did as its host went away, AWS reports
            # the instance's loss, with no exit code.
            exit_ = Exit(exit_code=None, status_reason=attempt.stop_reason or "")
        status_reason = attempt.stop_reason or exit_.status_reason
        number = int(job.runtime.get("attemptNumber", 1))
        container: Json = {
            "taskArn": self._task_arn(attempt.ce, attempt.task_id),
            "networkInterfaces": [],
        }
        if exit_.exit_code is not None:
            container["exitCode"] = exit_.exit_code
        if exit_.reason:
            container["reason"] = exit_.reason[:255]
        stream = (job.runtime.get("container") or {}).get("logStreamName")
        if stream and started_at is not None:
            container["logStreamName"] = stream
        # When it ended, as seen where it ran (the job that follows it on its
        # slot starts after that), or else now.
        stopped = exit_.ended_at
        if stopped is None or stopped > now or (started_at is not None and stopped < started_at):
            stopped = now
        record: Json = {"container": container, "stoppedAt": stopped, "statusReason": status_reason}
        if started_at is not None:
            record["startedAt"] = started_at
        if exit_.exit_code == 0 and attempt.stop_reason is None:
            status = JobStatus.SUCCEEDED
        else:
            outcome = AttemptOutcome(
                exit_code=exit_.exit_code,
                reason=exit_.reason,
                status_reason=status_reason,
                retryable=attempt.retryable,
            )
            decision = decide(job.spec.get("retryStrategy"), number, outcome)
            status = JobStatus.RUNNABLE if decision is Decision.RETRY else JobStatus.FAILED
        runtime = {
            **job.runtime,
            "attempts": [*job.runtime.get("attempts", []), record],
            "container": {k: v for k, v in container.items() if k != "networkInterfaces"},
        }
        runtime.pop("handle", None)
        if status is JobStatus.RUNNABLE:
            runtime["runnableAt"] = now
        return dataclasses.replace(
            job,
            status=status,
            status_reason=status_reason if status is not JobStatus.RUNNABLE else None,
            stopped_at=stopped if status.terminal else job.stopped_at,
            started_at=started_at if started_at is not None else job.started_at,
            is_terminated=job.is_terminated or attempt.terminated,
            runtime=runtime,
        )

    # -- after a restart ------------------------------------------------------
    async def _reconcile(self) -> None:
        """Reattach to attempts that outlived the previous server process."""
        with self.ctx.store.read() as tx:
            live = [j for _, j in tx.jobs_in_status((JobStatus.STARTING, JobStatus.RUNNING), 10**9)]
        now = self.ctx.clock.now_ms()
        for job in live:
            if multinode.is_node(job):
                continue  # its parent's attempt runs it
            executor = self.executors.get(job.runtime.get("executor", self.default_executor))
            task_id = job.runtime.get("taskId")
            if executor is None or task_id is None:
                continue
            need = _need(job.spec)
            attempt = Attempt(
                job_id=job.job_id,
                task_id=task_id,
                ce=job.runtime.get("ce", ""),
                executor=self._gang(executor, job.job_id, job.spec, job.runtime.get("ce", "")),
                need=need,
                handle=job.runtime.get("handle"),
            )
            if job.terminate_requested:
                attempt.stop_reason = job.terminate_requested
                attempt.terminated = True
                attempt.retryable = False
            if job.status is JobStatus.STARTING:
                number = int(job.runtime.get("attemptNumber", 1))
                attempt.handle = attempt.executor.recover(
                    self._launch_spec(job, attempt, number), job.runtime.get("home")
                )
                if attempt.handle is None:
                    self._requeue(job.job_id, task_id)
                    continue
                self._mark_running(job, attempt, now)
                started_at = now
            else:
                started_at = job.started_at or now
            self._reserve(attempt, executor)
            self._attempts[job.job_id] = attempt
            attempt.task = asyncio.create_task(
                self._watch(attempt, job.spec, started_at, elapsed_ms=now - started_at)
            )
            log.info("reattached to job %s (task %s)", job.job_id, task_id)

    def _withdrawn(self, attempt: Attempt) -> None:
        """A launch that waited on a slot too long was called off before it
        began: its job is RUNNABLE again, as if never placed, and the compute
        environment's jobs are no longer taken for a stream of short ones."""
        if not attempt.over:
            attempt.over = True
            behind = attempt.successor
            if attempt.held:  # the slot came to it as it was being called off
                self._hold(attempt, -1)
                if behind is not None and not behind.over and not behind.held:
                    self._hold(behind, +1)  # what waited behind it has it now
            self._splice(attempt)
            if behind is not None and behind.follows is not None and behind.follows.over:
                behind.follows = None
            # Counted as a long run: following stops until short runs bring
            # the average down again.
            self._ran(attempt.ce, max(self.follow_below_ms * 40, self.follow_wait_seconds * 1000))
            self.metrics.attempt_called_off()
        if self._attempts.get(attempt.job_id) is attempt:
            del self._attempts[attempt.job_id]
        try:
            self._requeue(attempt.job_id, attempt.task_id, attempt.before)
        except Exception:
            log.exception("recording job %s as RUNNABLE again failed; retrying", attempt.job_id)
            asyncio.get_running_loop().call_later(0.5, self._withdrawn, attempt)
            return
        self._blocked.clear()
        self._new_jobs = True
        self._request_cycle()

    def _requeue(self, job_id: str, task_id: str, before: Json | None = None) -> None:
        """A STARTING attempt that never launched: the job goes back to
        RUNNABLE as it was before that placement (`before`: its runtime then;
        else the attempt's own fields are taken off), or FAILED if TerminateJob
        was accepted meanwhile. Nothing, if the job has moved on."""
        now = self.ctx.clock.now_ms()
        with self.ctx.store.transaction() as tx:
            job = tx.get_jobs([job_id]).get(job_id)
            if job is None or job.status is not JobStatus.STARTING:
                return
            if job.runtime.get("taskId") != task_id:
                return
            if before is None:
                before = dict(job.runtime)
                before["attemptNumber"] = int(before.get("attemptNumber", 1)) - 1
                for key in ("taskId", "ce", "executor", "handle", "home"):
                    before.pop(key, None)
            after = dataclasses.replace(job, status=JobStatus.RUNNABLE, runtime=before)
            if job.terminate_requested:  # it never runs
                after = dataclasses.replace(
                    after,
                    status=JobStatus.FAILED,
                    status_reason=job.terminate_requested,
                    stopped_at=now,
                    is_terminated=True,
                )
            tx.update_job(after, JobStatus.STARTING)
            if after.status.terminal:
                self._pending.ended(after)

    def _mark_running(self, job: Job, attempt: Attempt, now: int) -> None:
        handle = attempt.handle or {}
        runtime = {
            **job.runtime,
            "handle": handle,
            "logGroup": handle.get("group"),
            "container": {
                "taskArn": self._task_arn(attempt.ce, attempt.task_id),
                "logStreamName": handle.get("stream"),
            },
        }
        running = dataclasses.replace(
            job, status=JobStatus.RUNNING, started_at=now, runtime=runtime
        )
        with self.ctx.store.transaction() as tx:
            marked = tx.update_job(running, JobStatus.STARTING)
            if marked and isinstance(attempt.executor, multinode.Gang):
                attempt.executor.write_started(tx, running, now)
