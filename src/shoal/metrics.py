"""Prometheus metrics: what `GET /metrics` answers, in the text format.

Two kinds of numbers:

- read at scrape time: jobs by queue and status (one GROUP BY on the store,
  so every process on a store answers the same), and the vCPUs in use per
  compute environment (the dispatching engine's own accounting);
- recorded as work happens, by the engine of this process: queue wait, run
  time and dispatch latency histograms, attempts by outcome and reason,
  executor errors. They start from zero with the process, as Prometheus
  counters do.

Each server process has its own registry (not prometheus_client's global
one), so several servers in one process stay apart. Labels are kept to a
bounded set of values: queue and compute environment names, executor names,
and a fixed list of reason categories; never job ids or free text.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from shoal import __version__
from shoal.domain.records import Job, JobStatus
from shoal.executors.base import ESSENTIAL_EXITED, FAILED_TO_START
from shoal.service.context import Context

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()

# (compute environment, vCPUs in use, most vCPUs it holds or None if unknown)
CapacitySource = Callable[[], Sequence[tuple[str, float, float | None]]]

_OUTCOMES = {
    JobStatus.SUCCEEDED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.RUNNABLE: "retried",
}
TIMEOUT_REASON = "Job attempt duration exceeded timeout"  # engine.py's (it imports this module)

# Waits in a queue and runs last from a moment to hours; a launch takes
# milliseconds (a process) to minutes (an image pull).
_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
_RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_DISPATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def reason_category(status_reason: str, container_reason: str, *, terminated: bool) -> str:
    """A low-cardinality label for why an attempt ended."""
    if terminated:
        return "terminated"  # TerminateJob: its reason is the caller's free text
    if status_reason == TIMEOUT_REASON:
        return "timeout"
    if status_reason.startswith("Host EC2"):
        return "host_terminated"  # a reclaimed Spot instance, a lost host or Ray node
    if status_reason == FAILED_TO_START:
        return "failed_to_start"
    if container_reason.startswith("OutOfMemoryError"):
        return "oom"
    if status_reason == ESSENTIAL_EXITED:
        return ESSENTIAL_EXITED
    return "other"


class EngineMetrics:
    """What the engine reports as it works. This base does nothing (an
    engine built without metrics); `Metrics` records it. Times are epoch ms."""

    def job_placed(self, job: Job, placed_at: int) -> None:
        """`job` (as it was RUNNABLE) was placed: its attempt is STARTING."""

    def attempt_launched(self, placed_at: int, running_at: int) -> None:
        """The executor answered a launch: the attempt is RUNNING."""

    def attempt_ended(self, job: Job | None, *, terminated: bool) -> None:
        """An attempt's end was committed; `job` as that left it (its last
        `attempts` record is the attempt's)."""

    def executor_error(self, executor: str) -> None:
        """A launch failed, or waiting on an attempt failed."""

    def attempt_followed(self) -> None:
        """An attempt was placed on the slot of a running one, to start when it ends."""

    def attempt_called_off(self) -> None:
        """Such an attempt waited too long: its job is RUNNABLE again."""


class _JobCounts(Collector):
    """shoal_jobs: one GROUP BY on the store per scrape."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def collect(self) -> Iterable[Metric]:
        now = self._ctx.clock.now_ms()
        with self._ctx.store.read() as tx:
            counts = tx.count_jobs_by_queue_status()
            queues = [q.name for q in tx.list_job_queues(None, 10_000) if not q.lifecycle.gone(now)]
        family = GaugeMetricFamily(
            "shoal_jobs",
            "Jobs stored, by job queue and status, as ListJobs(jobQueue, jobStatus) lists "
            "them: an array parent counts once and so does each child made so far (children "
            "not made yet do not count); multi-node jobs count their nodes too. Every status "
            "of every queue is present (0 when none).",
            labels=["queue", "status"],
        )
        for queue in sorted(set(queues) | set(counts)):
            by_status = counts.get(queue, {})
            for status in JobStatus:
                family.add_metric([queue, status.value], by_status.get(status.value, 0))
        yield family


class _EngineState(Collector):
    """shoal_engine_dispatching and shoal_capacity_vcpus, from this
    process's engine while it dispatches."""

    def __init__(self) -> None:
        self.capacity: CapacitySource | None = None

    def collect(self) -> Iterable[Metric]:
        source = self.capacity
        yield GaugeMetricFamily(
            "shoal_engine_dispatching",
            "1 if this process's engine dispatches jobs, 0 if it has none or stands by.",
            value=0 if source is None else 1,
        )
        if source is None:
            return
        family = GaugeMetricFamily(
            "shoal_capacity_vcpus",
            "vCPUs of a compute environment: in_use by the jobs this engine runs there; max "
            "that it holds (maxvCpus, no more than this host offers for process and docker "
            "compute environments; a Ray cluster's total for unmanaged ones).",
            labels=["compute_environment", "kind"],
        )
        for ce, in_use, most in source():
            family.add_metric([ce, "in_use"], in_use)
            if most is not None:
                family.add_metric([ce, "max"], most)
        yield family


class Metrics(EngineMetrics):
    """One server process's metrics and their registry."""

    def __init__(self, ctx: Context) -> None:
        # The `_created` series double the output and are rarely used.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_wait = Histogram(
            "shoal_job_queue_wait_seconds",
            "From a job becoming RUNNABLE (again, for a retry) to its attempt being placed "
            "(STARTING).",
            ["queue"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.run_time = Histogram(
            "shoal_job_run_seconds",
            "Per attempt that ran: from startedAt to stoppedAt.",
            ["queue"],
            buckets=_RUN_BUCKETS,
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "shoal_dispatch_latency_seconds",
            "From an attempt's placement (STARTING) to its executor's launch answer (RUNNING).",
            buckets=_DISPATCH_BUCKETS,
            registry=r,
        )
        self.attempts = Counter(
            "shoal_attempts",
            "Attempts ended, by outcome (succeeded, retried, failed) and reason: Essential "
            "container in task exited, oom, timeout, terminated (TerminateJob), "
            "host_terminated (Host EC2 ... terminated), failed_to_start, other.",
            ["queue", "outcome", "reason"],
            registry=r,
        )
        self.executor_errors = Counter(
            "shoal_executor_errors",
            "Launches that failed and waits on running attempts that failed, by executor.",
            ["executor"],
            registry=r,
        )
        self.slot_followers = Counter(
            "shoal_slot_followers",
            "Attempts placed on the slot of a running attempt of a stream of short jobs, to "
            "start the moment it ends (event=placed), and those that waited too long and "
            "went back to RUNNABLE (event=called_off).",
            ["event"],
            registry=r,
        )
        for event in ("placed", "called_off"):
            self.slot_followers.labels(event)  # present from 0, for rate()
        build = Gauge(
            "shoal_build_info", "shoal's version; always 1.", ["version", "python"], registry=r
        )
        build.labels(__version__, platform.python_version()).set(1)
        r.register(_JobCounts(ctx))
        self._engine = _EngineState()
        r.register(self._engine)

    def attach_engine(self, capacity: CapacitySource | None, executors: Iterable[str] = ()) -> None:
        """This process's engine dispatches (`capacity` reads its usage), or
        no longer does (None)."""
        self._engine.capacity = capacity
        for name in executors:
            self.executor_errors.labels(name)  # present from 0, for rate()

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    # -- EngineMetrics ------------------------------------------------------------
    def job_placed(self, job: Job, placed_at: int) -> None:
        runnable_at = int(job.runtime.get("runnableAt", job.created_at))
        self.queue_wait.labels(job.queue).observe(max(0, placed_at - runnable_at) / 1000)

    def attempt_launched(self, placed_at: int, running_at: int) -> None:
        self.dispatch_latency.observe(max(0, running_at - placed_at) / 1000)

    def attempt_ended(self, job: Job | None, *, terminated: bool) -> None:
        records = job.runtime.get("attempts") if job is not None else None
        if job is None or not records:
            return
        record = records[-1]
        started, stopped = record.get("startedAt"), record.get("stoppedAt")
        if started is not None and stopped is not None:
            self.run_time.labels(job.queue).observe(max(0, stopped - started) / 1000)
        outcome = _OUTCOMES.get(job.status, job.status.value.lower())
        reason = reason_category(
            record.get("statusReason") or "",
            (record.get("container") or {}).get("reason") or "",
            terminated=terminated,
        )
        self.attempts.labels(job.queue, outcome, reason).inc()

    def executor_error(self, executor: str) -> None:
        self.executor_errors.labels(executor).inc()

    def attempt_followed(self) -> None:
        self.slot_followers.labels("placed").inc()

    def attempt_called_off(self) -> None:
        self.slot_followers.labels("called_off").inc()
