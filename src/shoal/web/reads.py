"""What the dashboard reads.

Jobs, queues, compute environments and logs come from the service layer's
use-cases, as AWS-shaped documents, so the dashboard shows what the API
answers. Three reads have no AWS call and go to the store's indexed queries:
job counts per queue and status (one GROUP BY over the (queue, status)
index), the vCPUs that STARTING/RUNNING jobs hold per compute environment
(bounded by capacity, not by the jobs stored), and job lists whose filters
ListJobs cannot combine (every queue, every status, a status and a name):
those run ListJobs' own store query (`JobQuery`, newest first, keyset
paging with ListJobs' tokens) and are shaped by the same `views`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.domain.container import resources_of
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.records import Job, JobStatus, Json
from shoal.logs.store import LogStore
from shoal.service import compute_environments, job_definitions, job_queues, jobs, pagination, views
from shoal.service import logs as log_reads
from shoal.service.context import Context
from shoal.store.base import JobQuery, Transaction

PAGE_SIZE = 50
DEFAULT_LOG_GROUP = "/aws/batch/job"
_LIVE = (JobStatus.STARTING, JobStatus.RUNNING)


def _all_pages(call: Callable[[Context, Json], Json], ctx: Context, key: str) -> list[Json]:
    """Every item of a Describe* call (queues and compute environments are few)."""
    items: list[Json] = []
    req: Json = {}
    for _ in range(1000):
        answer = call(ctx, req)
        items += answer[key]
        if not answer.get("nextToken"):
            break
        req = {"nextToken": answer["nextToken"]}
    return items


@dataclass(frozen=True, slots=True)
class Overview:
    queues: list[Json]  # JobQueueDetail, as DescribeJobQueues answers
    ces: list[Json]  # ComputeEnvironmentDetail
    counts: dict[str, dict[str, int]]  # queue -> status -> jobs stored
    used: dict[str, float]  # compute environment -> vCPUs held by its jobs


def overview(ctx: Context) -> Overview:
    queues = _all_pages(job_queues.describe, ctx, "jobQueues")
    ces = _all_pages(compute_environments.describe, ctx, "computeEnvironments")
    counts, used = counts_and_usage(ctx)
    return Overview(queues=queues, ces=ces, counts=counts, used=used)


def counts_and_usage(ctx: Context) -> tuple[dict[str, dict[str, int]], dict[str, float]]:
    with ctx.store.read() as tx:
        return tx.count_jobs_by_queue_status(), _vcpus_in_use(tx)


def _vcpus_in_use(tx: Transaction) -> dict[str, float]:
    used: dict[str, float] = {}
    cursor = 0
    while page := tx.jobs_in_status(_LIVE, 500, cursor):
        cursor = page[-1][0]
        for _, job in page:
            ce = job.runtime.get("ce")
            if ce and "nodeDetails" not in job.spec:  # a node is held by its parent's gang
                used[ce] = used.get(ce, 0.0) + job_vcpus(job.spec)
    return used


def job_vcpus(spec: Json) -> float:
    """What a job holds while it runs; a multi-node job, all of its nodes."""
    props = spec.get("nodeProperties")
    if props is None:
        return resources_of(spec.get("container") or {}).vcpus or 0.0
    num = int(props["numNodes"])
    total = 0.0
    for index in range(num):
        # The narrowest node range holding the node gives its container.
        best: tuple[int, Json] | None = None
        for group in props["nodeRangeProperties"]:
            first, last = job_definitions.parse_node_range(group["targetNodes"], num)
            if first <= index <= last and (best is None or last - first <= best[0]):
                best = (last - first, group.get("container") or {})
        total += resources_of(best[1] if best else {}).vcpus or 1.0
    return total


# -- job lists ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    rows: list[tuple[Job, Json]] = field(default_factory=list)  # record, JobSummary
    next_token: str | None = None
    error: str = ""


def list_jobs(
    ctx: Context,
    *,
    queue: str = "",
    status: str = "",
    name: str = "",
    token: str = "",
    parent: str = "",
    limit: int = PAGE_SIZE,
) -> Listing:
    """A page of jobs, newest first. Without a status only top-level jobs are
    listed (as ListJobs' filters do); with one, array children and nodes too
    (as ListJobs(jobQueue, jobStatus) does), so a page agrees with the counts."""
    try:
        if status and status not in JobStatus.__members__:
            raise InvalidRequest(f"Unknown status {status!r}.")
        query: dict[str, Any] = {"top_level_only": not status and not parent}
        if queue:
            query["queue"] = queue
        if parent:
            query["array_parent"] = parent
        if status:
            query["status"] = JobStatus(status)
        if name.endswith("*"):
            query["name_prefix"] = name[:-1]
        elif name:
            query["name_equals"] = name
        cursor = pagination.decode_int("ListJobs", token or None)
    except InvalidRequest as e:
        return Listing(error=e.message)
    now = ctx.clock.now_ms()
    with ctx.store.read() as tx:
        found = tx.list_jobs(JobQuery(**query, before_seq=cursor, limit=limit))
        counts = tx.child_counts([j.job_id for _, j in found if j.array_size is not None])
    rows = [
        (job, views.job_summary(job, ctx.arns, now, child_counts=counts.get(job.job_id)))
        for _, job in found
    ]
    more = pagination.encode("ListJobs", found[-1][0]) if len(found) == limit else None
    return Listing(rows=rows, next_token=more)


def queue_names(ctx: Context) -> list[str]:
    return [q["jobQueueName"] for q in _all_pages(job_queues.describe, ctx, "jobQueues")]


# -- one job -------------------------------------------------------------------------


def describe_job(ctx: Context, job_id: str) -> Json | None:
    found = describe_jobs(ctx, [job_id])
    return found.get(job_id)


def describe_jobs(ctx: Context, job_ids: list[str]) -> dict[str, Json]:
    out: dict[str, Json] = {}
    for i in range(0, len(job_ids), 100):
        for detail in jobs.describe(ctx, {"jobs": job_ids[i : i + 100]})["jobs"]:
            out[detail["jobId"]] = detail
    return out


@dataclass(frozen=True, slots=True)
class Graph:
    """A job and what it depends on, by levels (0: the job itself)."""

    levels: list[list[str]]
    jobs: dict[str, Json]  # JobDetail, or {"jobId": id} for jobs no longer stored
    edges: list[tuple[str, str, str]]  # (dependency, dependent, type)
    sequential: bool  # the array's children run one after another
    truncated: bool


def dependencies(ctx: Context, detail: Json, depth: int = 3, max_jobs: int = 40) -> Graph:
    known: dict[str, Json] = {detail["jobId"]: detail}
    levels = [[detail["jobId"]]]
    edges: list[tuple[str, str, str]] = []
    frontier = [detail]
    truncated = False
    for _ in range(depth):
        wanted: list[str] = []
        for job in frontier:
            for dep in job.get("dependsOn") or []:
                dep_id = dep.get("jobId")
                if not dep_id:
                    continue
                edges.append((dep_id, job["jobId"], dep.get("type") or ""))
                if dep_id not in known and dep_id not in wanted:
                    wanted.append(dep_id)
        room = max_jobs - len(known)
        truncated = truncated or len(wanted) > room
        wanted = wanted[: max(room, 0)]
        if not wanted:
            break
        found = describe_jobs(ctx, wanted)
        for dep_id in wanted:
            known[dep_id] = found.get(dep_id) or {"jobId": dep_id}
        levels.append(wanted)
        frontier = [found[j] for j in wanted if j in found]
    else:
        truncated = truncated or any(j.get("dependsOn") for j in frontier)
    sequential = any(d.get("type") == "SEQUENTIAL" for d in detail.get("dependsOn") or [])
    edges = [e for e in dict.fromkeys(edges) if e[0] in known and e[1] in known]
    return Graph(levels, known, edges, sequential, truncated)


# -- logs ------------------------------------------------------------------------------


def log_group(detail: Json) -> str:
    container = detail.get("container") or {}
    options = (container.get("logConfiguration") or {}).get("options") or {}
    return str(options.get("awslogs-group") or DEFAULT_LOG_GROUP)


def log_streams(detail: Json) -> list[str]:
    """The job's log streams, one per attempt in order, the current one last."""
    streams = [
        a["container"]["logStreamName"]
        for a in detail.get("attempts") or []
        if (a.get("container") or {}).get("logStreamName")
    ]
    current = (detail.get("container") or {}).get("logStreamName")
    if current and current not in streams:
        streams.append(current)
    return streams


@dataclass(frozen=True, slots=True)
class LogPage:
    lines: list[tuple[int, str]]  # (timestamp ms, message)
    token: str | None  # GetLogEvents' forward token: where the next read starts


def read_log(
    logs: LogStore | None, group: str, stream: str, token: str | None, limit: int = 1000
) -> LogPage:
    """The lines after `token`, or the stream's last `limit` lines without one
    (GetLogEvents, as the Logs API reads them)."""
    if logs is None or not stream:
        return LogPage([], token)
    req: Json = {"logGroupName": group, "logStreamName": stream, "limit": limit}
    if token:
        req["nextToken"] = token
        req["startFromHead"] = True
    try:
        answer = log_reads.get_log_events(logs, req)
    except NotFound:  # the attempt has not written its stream yet
        return LogPage([], token)
    lines = [(e["timestamp"], e["message"]) for e in answer["events"]]
    return LogPage(lines, answer["nextForwardToken"])
