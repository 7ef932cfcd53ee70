"""DescribeJobs, ListJobs, Cancel/TerminateJob(s)."""

from __future__ import annotations

import dataclasses
from typing import Any

from shoal.domain import arrays
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.limits import MAX_BULK_JOBS, MAX_DESCRIBE_JOBS, check_reason
from shoal.domain.records import Job, JobStatus, Json
from shoal.service import job_definitions, job_queues, pagination, views
from shoal.service.context import Context
from shoal.store.base import JobQuery, Transaction


def describe(ctx: Context, req: Json) -> Json:
    ids = req["jobs"]
    if len(ids) > MAX_DESCRIBE_JOBS:
        raise InvalidRequest(f"Maximum number of jobs supported is {MAX_DESCRIBE_JOBS}")
    now = ctx.clock.now_ms()
    with ctx.store.read() as tx:
        found = tx.get_jobs(ids)
        counts = tx.child_counts([j.job_id for j in found.values() if j.array_size is not None])
    arns = ctx.arns
    return {
        "jobs": [
            views.job_detail(
                job,
                arns,
                queue_arn=arns.job_queue(job.queue),
                now_ms=now,
                child_counts=counts.get(job.job_id),
            )
            for job_id in dict.fromkeys(ids)
            if (job := found.get(job_id)) is not None
        ]
    }


_MAX_MS = 2**63 - 1
_FILTERS = (
    "JOB_NAME",
    "JOB_DEFINITION",
    "BEFORE_CREATED_AT",
    "AFTER_CREATED_AT",
    "SHARE_IDENTIFIER",
)


def _apply_filter(query: dict[str, Any], name: str, value: str) -> None:
    if name == "JOB_NAME":
        if value.endswith("*"):
            query["name_prefix"] = value[:-1]
        else:
            query["name_equals"] = value
    elif name == "JOB_DEFINITION":
        if value.startswith("arn:"):
            if value.endswith("*"):
                raise InvalidRequest("A JOB_DEFINITION filter with an ARN cannot end in '*'.")
            def_name, revision = job_definitions.split_ref(value)
            query["definition_name"] = def_name
            query["definition_revision"] = revision
        elif value.endswith("*"):
            query["definition_prefix"] = value[:-1]
        else:
            def_name, revision = job_definitions.split_ref(value)
            query["definition_name"] = def_name
            query["definition_revision"] = revision
    elif name in ("BEFORE_CREATED_AT", "AFTER_CREATED_AT"):
        # ASCII digits only: isdigit alone takes '²' (which int() refuses) and
        # other scripts' digits; and the store's integers have 64 bits.
        digits = value.isascii() and value.isdigit() and len(value) <= 19
        if not digits or int(value) > _MAX_MS:
            raise InvalidRequest(f"{name} takes epoch milliseconds as digits; got {value!r}.")
        key = "created_before" if name == "BEFORE_CREATED_AT" else "created_after"
        query[key] = int(value)
    else:
        query["share_identifier"] = value


def list_jobs(ctx: Context, req: Json) -> Json:
    scopes = [k for k in ("jobQueue", "arrayJobId", "multiNodeJobId") if req.get(k)]
    if len(scopes) != 1:
        raise InvalidRequest("Give exactly one of jobQueue, arrayJobId and multiNodeJobId.")
    filters = req.get("filters") or []
    if len(filters) > 1:
        raise InvalidRequest("ListJobs takes one filter at a time.")
    query: dict[str, Any] = {}
    status: str | None = req.get("jobStatus")
    maximum = 1000
    if filters:
        name, values = filters[0].get("name"), filters[0].get("values") or []
        if name not in _FILTERS:
            raise InvalidRequest(f"Unknown filter {name!r}; use one of {', '.join(_FILTERS)}.")
        if len(values) != 1:
            raise InvalidRequest(f"Filter {name} takes exactly one value.")
        _apply_filter(query, name, values[0])
        maximum = 100
        if name != "SHARE_IDENTIFIER":
            # With a filter, jobStatus is ignored and every status is listed.
            status = None
            query["top_level_only"] = True
    elif status is None:
        # AWS's default: no status and no filter lists RUNNING jobs only.
        status = JobStatus.RUNNING.value
    limit = pagination.page_size(req.get("maxResults"), maximum, maximum)
    cursor = pagination.decode_int("ListJobs", req.get("nextToken"))
    now = ctx.clock.now_ms()
    with ctx.store.read() as tx:
        if req.get("jobQueue"):
            queue = job_queues.live(tx, req["jobQueue"], now)
            if queue is None:
                raise job_queues.not_found(req["jobQueue"])
            query["queue"] = queue.name
        else:
            query["array_parent"] = req.get("arrayJobId") or req.get("multiNodeJobId")
        rows = tx.list_jobs(
            JobQuery(
                **query,
                status=JobStatus(status) if status else None,
                before_seq=cursor,
                limit=limit,
            )
        )
        counts = tx.child_counts([j.job_id for _, j in rows if j.array_size is not None])
    out: Json = {
        "jobSummaryList": [
            views.job_summary(job, ctx.arns, now, child_counts=counts.get(job.job_id))
            for _, job in rows
        ]
    }
    if len(rows) == limit:
        out["nextToken"] = pagination.encode("ListJobs", rows[-1][0])
    return out


def _get(tx: Transaction, job_id: str) -> Job:
    job = tx.get_jobs([job_id]).get(job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found.")
    return job


def _stop(tx: Transaction, job: Job, reason: str, *, terminate: bool, now_ms: int) -> list[str]:
    """Cancel (terminate=False) or terminate one job, per AWS's table; the ids
    of STARTING/RUNNING jobs the engine must stop.

    Queued jobs fail at once with the caller's reason; CancelJob leaves a
    STARTING or RUNNING job alone, TerminateJob asks the engine to stop it;
    finished jobs are left as they are. An array parent passes it on to every
    child (those not made yet are born FAILED) and ends when they all have;
    one whose children were never made (it was still waiting for its own
    dependencies) just fails.
    """
    if job.array_size is not None and arrays.MADE in job.runtime:
        return _stop_array(tx, job, reason, terminate=terminate, now_ms=now_ms)
    if job.status.queued:
        stopped = dataclasses.replace(
            job,
            status=JobStatus.FAILED,
            status_reason=reason,
            stopped_at=now_ms,
            is_cancelled=not terminate,
            is_terminated=terminate,
        )
        if not tx.update_job(stopped, job.status):
            raise InvalidRequest(f"Job {job.job_id} changed state; try again.")
    elif terminate and not job.status.terminal:
        tx.update_job(dataclasses.replace(job, terminate_requested=reason), job.status)
        return [job.job_id]
    return []


def _stop_array(
    tx: Transaction, parent: Job, reason: str, *, terminate: bool, now_ms: int
) -> list[str]:
    if parent.status.terminal or parent.runtime.get(arrays.STOP):
        return []
    runtime = {**parent.runtime, arrays.STOP: {"reason": reason, "terminate": terminate}}
    stopped = dataclasses.replace(
        parent, runtime=runtime, is_cancelled=not terminate, is_terminated=terminate
    )
    if not tx.update_job(stopped, parent.status):
        raise InvalidRequest(f"Job {parent.job_id} changed state; try again.")
    running: list[str] = []
    cursor = 0
    unfinished = [s for s in JobStatus if not s.terminal]
    while page := tx.child_jobs(parent.job_id, unfinished, 1000, cursor):
        cursor = page[-1][0]
        for _, child in page:
            running += _stop(tx, child, reason, terminate=terminate, now_ms=now_ms)
    return running


def _stop_one(ctx: Context, req: Json, *, terminate: bool) -> Json:
    check_reason(req["reason"])
    with ctx.store.transaction() as tx:
        job = _get(tx, req["jobId"])
        running = _stop(tx, job, req["reason"], terminate=terminate, now_ms=ctx.clock.now_ms())
    for job_id in running:
        ctx.notifier.terminate(job_id, req["reason"])
    ctx.notifier.wake()  # a queue's head may have changed
    return {}


def cancel(ctx: Context, req: Json) -> Json:
    return _stop_one(ctx, req, terminate=False)


def terminate(ctx: Context, req: Json) -> Json:
    return _stop_one(ctx, req, terminate=True)


def _stop_many(ctx: Context, req: Json, *, terminate: bool) -> Json:
    ids = req["jobs"]
    if len(ids) > MAX_BULK_JOBS:
        raise InvalidRequest(f"At most {MAX_BULK_JOBS} jobs can be given at once; got {len(ids)}.")
    check_reason(req["reason"])
    now = ctx.clock.now_ms()
    running: list[str] = []
    with ctx.store.transaction() as tx:
        found = tx.get_jobs(ids)
        for job_id in dict.fromkeys(ids):
            if (job := found.get(job_id)) is not None:
                running += _stop(tx, job, req["reason"], terminate=terminate, now_ms=now)
    for job_id in running:
        ctx.notifier.terminate(job_id, req["reason"])
    ctx.notifier.wake()
    # Unknown ids count as successful, as AWS reports them.
    return {"successful": list(dict.fromkeys(ids)), "errors": []}


def cancel_many(ctx: Context, req: Json) -> Json:
    return _stop_many(ctx, req, terminate=False)


def terminate_many(ctx: Context, req: Json) -> Json:
    return _stop_many(ctx, req, terminate=True)
