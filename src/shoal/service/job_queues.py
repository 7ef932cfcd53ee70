"""Create/Update/Delete/DescribeJobQueues and GetJobQueueSnapshot."""

from __future__ import annotations

import dataclasses
from typing import Any

from shoal.domain.arns import name_from_ref
from shoal.domain.errors import Conflict, InvalidRequest, NotFound
from shoal.domain.limits import MAX_CE_PER_QUEUE, check_name, check_tags
from shoal.domain.records import (
    CeOrder,
    JobQueue,
    JobStatus,
    Json,
    Lifecycle,
    ResourceStatus,
)
from shoal.service import compute_environments, pagination, views
from shoal.service.context import Context
from shoal.store.base import Transaction

_EXTRA = ("jobQueueType", "serviceEnvironmentOrder")


def live(tx: Transaction, ref: str, now_ms: int) -> JobQueue | None:
    queue = tx.get_job_queue(name_from_ref(ref, "job-queue"))
    if queue is None or queue.lifecycle.gone(now_ms):
        return None
    return queue


def not_found(ref: str) -> NotFound:
    return NotFound(f"JobQueue {ref} not found.")


def _ce_order(tx: Transaction, entries: list[Json], now_ms: int) -> tuple[CeOrder, ...]:
    if not 1 <= len(entries) <= MAX_CE_PER_QUEUE:
        raise InvalidRequest(
            f"computeEnvironmentOrder must list 1 to {MAX_CE_PER_QUEUE} compute environments; "
            f"got {len(entries)}."
        )
    orders: list[CeOrder] = []
    kinds: set[str] = set()
    for entry in sorted(entries, key=lambda e: e["order"]):
        ref = entry["computeEnvironment"]
        ce = compute_environments.live(tx, ref, now_ms)
        if ce is None:
            raise NotFound(f"ComputeEnvironment {ref} does not exist.")
        status = ce.lifecycle.effective(now_ms)
        if status is not ResourceStatus.VALID:
            raise InvalidRequest(
                f"ComputeEnvironment {ce.name} is {status.value}; a job queue can only use "
                "VALID compute environments."
            )
        if any(o.compute_environment == ce.name for o in orders):
            raise InvalidRequest(f"ComputeEnvironment {ce.name} is listed twice.")
        if any(o.order == entry["order"] for o in orders):
            raise InvalidRequest(f"computeEnvironmentOrder order {entry['order']} is used twice.")
        kinds.add("FARGATE" if ce.is_fargate else "EC2")
        orders.append(CeOrder(order=entry["order"], compute_environment=ce.name))
    if len(kinds) > 1:
        raise InvalidRequest(
            "A job queue cannot mix EC2 or SPOT compute environments with FARGATE or "
            "FARGATE_SPOT ones."
        )
    return tuple(orders)


def _policy_name(tx: Transaction, arn: str) -> str:
    name = name_from_ref(arn, "scheduling-policy")
    if tx.get_scheduling_policy(name) is None:
        raise NotFound(f"SchedulingPolicy {arn} does not exist.")
    return name


def _check_time_limit_actions(actions: list[Json]) -> None:
    for i, action in enumerate(actions):
        where = f"jobStateTimeLimitActions[{i}]"
        if action["state"] != "RUNNABLE":
            raise InvalidRequest(f"{where}.state must be RUNNABLE.")
        if action["action"] != "CANCEL":
            raise InvalidRequest(f"{where}.action must be CANCEL for this job queue type.")
        if not 600 <= action["maxTimeSeconds"] <= 86400:
            raise InvalidRequest(f"{where}.maxTimeSeconds must be between 600 and 86400.")


def _check_priority(priority: int) -> None:
    # AWS documents no upper bound; only "higher is evaluated first".
    if priority < 0:
        raise InvalidRequest(f"priority must not be negative; got {priority}.")


def create(ctx: Context, req: Json) -> Json:
    name = req["jobQueueName"]
    check_name(name, "jobQueueName")
    _check_priority(req["priority"])
    tags = req.get("tags") or {}
    check_tags(tags)
    actions = req.get("jobStateTimeLimitActions") or []
    _check_time_limit_actions(actions)
    if "computeEnvironmentOrder" not in req:
        raise InvalidRequest("computeEnvironmentOrder is required for this job queue type.")
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        if live(tx, name, now) is not None:
            raise Conflict(f"Object already exists: job queue {name}.")
        policy = req.get("schedulingPolicyArn")
        queue = JobQueue(
            name=name,
            state=req.get("state", "ENABLED"),
            lifecycle=Lifecycle(status=ResourceStatus.CREATING, settles_at=ctx.settles_at(now)),
            priority=req["priority"],
            compute_environment_order=_ce_order(tx, req["computeEnvironmentOrder"], now),
            scheduling_policy=_policy_name(tx, policy) if policy else None,
            job_state_time_limit_actions=tuple(actions),
            extra={k: req[k] for k in _EXTRA if k in req},
            tags=tags,
            created_at=now,
        )
        tx.put_job_queue(queue)
    ctx.notifier.wake()
    return {"jobQueueName": name, "jobQueueArn": ctx.arns.job_queue(name)}


def update(ctx: Context, req: Json) -> Json:
    ref = req["jobQueue"]
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        queue = live(tx, ref, now)
        if queue is None:
            raise not_found(ref)
        if queue.lifecycle.effective(now) is ResourceStatus.DELETING:
            raise Conflict(f"JobQueue {queue.name} is being deleted.")
        changes: dict[str, Any] = {}
        if "state" in req:
            changes["state"] = req["state"]
        if "priority" in req:
            _check_priority(req["priority"])
            changes["priority"] = req["priority"]
        if "computeEnvironmentOrder" in req:
            changes["compute_environment_order"] = _ce_order(
                tx, req["computeEnvironmentOrder"], now
            )
        if "schedulingPolicyArn" in req:
            if queue.scheduling_policy is None:
                raise InvalidRequest(
                    f"JobQueue {queue.name} is a FIFO queue; a scheduling policy can only be "
                    "given when the queue is created."
                )
            changes["scheduling_policy"] = _policy_name(tx, req["schedulingPolicyArn"])
        if "jobStateTimeLimitActions" in req:
            _check_time_limit_actions(req["jobStateTimeLimitActions"])
            changes["job_state_time_limit_actions"] = tuple(req["jobStateTimeLimitActions"])
        extra = {**queue.extra, **{k: req[k] for k in _EXTRA if k in req}}
        tx.put_job_queue(
            dataclasses.replace(
                queue,
                **changes,
                extra=extra,
                lifecycle=Lifecycle(status=ResourceStatus.UPDATING, settles_at=ctx.settles_at(now)),
            )
        )
    ctx.notifier.wake()
    return {"jobQueueName": queue.name, "jobQueueArn": ctx.arns.job_queue(queue.name)}


def delete(ctx: Context, req: Json) -> Json:
    ref = req["jobQueue"]
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        queue = live(tx, ref, now)
        if queue is None:
            raise not_found(ref)
        if queue.lifecycle.effective(now) is ResourceStatus.DELETING:
            return {}  # already on its way out: deleting again changes nothing
        if queue.state != "DISABLED":
            raise Conflict(f"Cannot delete job queue {queue.name}: it must be DISABLED first.")
        # Jobs still waiting in the queue can never run now: they fail. Jobs
        # already placed are left to the engine, which terminates them.
        reason = "Job queue deleted"
        while True:
            waiting = tx.queued_jobs(
                queue.name, (JobStatus.SUBMITTED, JobStatus.PENDING, JobStatus.RUNNABLE), 500
            )
            if not waiting:
                break
            for job in waiting:
                failed = dataclasses.replace(
                    job, status=JobStatus.FAILED, status_reason=reason, stopped_at=now
                )
                tx.update_job(failed, job.status)
        if ctx.settings.settle_delay_ms <= 0:
            tx.delete_job_queue(queue.name)
        else:
            tx.put_job_queue(
                dataclasses.replace(
                    queue,
                    lifecycle=Lifecycle(
                        status=ResourceStatus.DELETING, settles_at=ctx.settles_at(now)
                    ),
                )
            )
    ctx.notifier.wake()
    return {}


def describe(ctx: Context, req: Json) -> Json:
    now = ctx.clock.now_ms()
    refs = req.get("jobQueues")
    with ctx.store.read() as tx:
        if refs:
            if len(refs) > 100:
                raise InvalidRequest("jobQueues takes at most 100 names or ARNs.")
            found = [q for ref in dict.fromkeys(refs) if (q := live(tx, ref, now)) is not None]
            return {"jobQueues": [views.job_queue(q, ctx.arns, now) for q in found]}
        limit = pagination.page_size(req.get("maxResults"), 100, 100)
        after = pagination.decode_name("DescribeJobQueues", req.get("nextToken"))
        batch = tx.list_job_queues(after, limit)
    out: Json = {
        "jobQueues": [views.job_queue(q, ctx.arns, now) for q in batch if not q.lifecycle.gone(now)]
    }
    if len(batch) == limit:
        out["nextToken"] = pagination.encode("DescribeJobQueues", batch[-1].name)
    return out


SNAPSHOT_SIZE = 100


def snapshot(ctx: Context, req: Json) -> Json:
    """The front of the queue: the first RUNNABLE jobs in dispatch order."""
    ref = req["jobQueue"]
    now = ctx.clock.now_ms()
    with ctx.store.read() as tx:
        queue = live(tx, ref, now)
        if queue is None:
            raise not_found(ref)
        front = tx.queued_jobs(queue.name, (JobStatus.RUNNABLE,), SNAPSHOT_SIZE)
    order = ctx.notifier.front(queue.name, SNAPSHOT_SIZE) if queue.scheduling_policy else None
    if order is not None:
        # A fair-share queue: the engine's order, by share usage.
        with ctx.store.read() as tx:
            found = tx.get_jobs(order)
        front = [found[job_id] for job_id in order if job_id in found]
    return {
        "frontOfQueue": {
            "jobs": [
                {
                    "jobArn": ctx.arns.job(job.job_id),
                    "earliestTimeAtPosition": job.runtime.get("runnableAt", job.created_at),
                }
                for job in front
            ],
            "lastUpdatedAt": now,
        }
    }
