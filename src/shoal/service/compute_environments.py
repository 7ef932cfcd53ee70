"""Create/Update/Delete/DescribeComputeEnvironments."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from shoal.domain.arns import name_from_ref
from shoal.domain.errors import Conflict, InvalidRequest, NotFound
from shoal.domain.limits import check_name, check_tags
from shoal.domain.records import ComputeEnvironment, Json, Lifecycle, ResourceStatus
from shoal.service import pagination, views
from shoal.service.context import Context
from shoal.store.base import Transaction

_EXTRA = ("eksConfiguration", "context", "ecsSettings")
_FARGATE_FORBIDDEN = (
    "minvCpus",
    "desiredvCpus",
    "instanceTypes",
    "allocationStrategy",
    "bidPercentage",
    "ec2KeyPair",
    "imageId",
    "instanceRole",
    "launchTemplate",
    "placementGroup",
    "spotIamFleetRole",
)


def live(tx: Transaction, ref: str, now_ms: int) -> ComputeEnvironment | None:
    """The compute environment named (or ARN'd) by `ref`, unless it is gone."""
    ce = tx.get_compute_environment(name_from_ref(ref, "compute-environment"))
    if ce is None or ce.lifecycle.gone(now_ms):
        return None
    return ce


def _check_compute_resources(resources: Json) -> None:
    kind = resources.get("type")
    max_v = resources.get("maxvCpus", 0)
    min_v = resources.get("minvCpus")
    desired = resources.get("desiredvCpus")
    if max_v < 0:
        raise InvalidRequest(f"computeResources.maxvCpus must not be negative; got {max_v}.")
    if min_v is not None and not 0 <= min_v <= max_v:
        raise InvalidRequest(
            f"computeResources.minvCpus must be between 0 and maxvCpus ({max_v}); got {min_v}."
        )
    if desired is not None and not (min_v or 0) <= desired <= max_v:
        raise InvalidRequest(
            f"computeResources.desiredvCpus must be between minvCpus and maxvCpus; got {desired}."
        )
    if kind in ("FARGATE", "FARGATE_SPOT"):
        for member in _FARGATE_FORBIDDEN:
            if resources.get(member):
                raise InvalidRequest(
                    f"computeResources.{member} is not applicable to {kind} compute environments."
                )
    bid = resources.get("bidPercentage")
    if bid is not None and not 0 <= bid <= 100:
        raise InvalidRequest(f"computeResources.bidPercentage must be 0 to 100; got {bid}.")


def _check_unmanaged_vcpus(value: int | None) -> None:
    if value is not None and value < 0:
        raise InvalidRequest(f"unmanagedvCpus must not be negative; got {value}.")


def create(ctx: Context, req: Json) -> Json:
    name = req["computeEnvironmentName"]
    check_name(name, "computeEnvironmentName")
    tags = req.get("tags") or {}
    check_tags(tags)
    ce_type = req["type"]
    resources = req.get("computeResources")
    if ce_type == "MANAGED":
        if resources is None:
            raise InvalidRequest("A MANAGED compute environment requires computeResources.")
        _check_compute_resources(resources)
        if req.get("unmanagedvCpus") is not None:
            raise InvalidRequest("unmanagedvCpus applies only to UNMANAGED compute environments.")
    elif resources is not None:
        raise InvalidRequest("An UNMANAGED compute environment does not take computeResources.")
    _check_unmanaged_vcpus(req.get("unmanagedvCpus"))
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        if live(tx, name, now) is not None:
            raise Conflict(f"Object already exists: compute environment {name}.")
        ce = ComputeEnvironment(
            name=name,
            uuid=str(uuid.uuid4()),
            type=ce_type,
            state=req.get("state", "ENABLED"),
            lifecycle=Lifecycle(status=ResourceStatus.CREATING, settles_at=ctx.settles_at(now)),
            compute_resources=resources,
            unmanaged_vcpus=req.get("unmanagedvCpus"),
            service_role=req.get("serviceRole"),
            extra={k: req[k] for k in _EXTRA if k in req},
            tags=tags,
            created_at=now,
        )
        tx.put_compute_environment(ce)
    ctx.notifier.wake()
    return {
        "computeEnvironmentName": name,
        "computeEnvironmentArn": ctx.arns.compute_environment(name),
    }


def _not_found(ref: str) -> NotFound:
    return NotFound(f"ComputeEnvironment {ref} does not exist.")


def update(ctx: Context, req: Json) -> Json:
    ref = req["computeEnvironment"]
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        ce = live(tx, ref, now)
        if ce is None:
            raise _not_found(ref)
        if ce.lifecycle.effective(now) is ResourceStatus.DELETING:
            raise Conflict(f"ComputeEnvironment {ce.name} is being deleted.")
        changes: dict[str, Any] = {}
        if "state" in req:
            changes["state"] = req["state"]
        if "unmanagedvCpus" in req:
            if ce.type != "UNMANAGED":
                raise InvalidRequest(
                    "unmanagedvCpus applies only to UNMANAGED compute environments."
                )
            _check_unmanaged_vcpus(req["unmanagedvCpus"])
            changes["unmanaged_vcpus"] = req["unmanagedvCpus"]
        if "computeResources" in req:
            if ce.compute_resources is None:
                raise InvalidRequest(
                    "An UNMANAGED compute environment does not take computeResources."
                )
            merged = {**ce.compute_resources, **req["computeResources"]}
            merged.pop("updateToLatestImageVersion", None)
            _check_compute_resources(merged)
            changes["compute_resources"] = merged
        if "serviceRole" in req:
            changes["service_role"] = req["serviceRole"]
        if "updatePolicy" in req:
            changes["update_policy"] = req["updatePolicy"]
        extra = {**ce.extra, **{k: req[k] for k in _EXTRA if k in req}}
        updated = dataclasses.replace(
            ce,
            **changes,
            extra=extra,
            lifecycle=Lifecycle(status=ResourceStatus.UPDATING, settles_at=ctx.settles_at(now)),
        )
        tx.put_compute_environment(updated)
    ctx.notifier.wake()
    return {
        "computeEnvironmentName": ce.name,
        "computeEnvironmentArn": ctx.arns.compute_environment(ce.name),
    }


def delete(ctx: Context, req: Json) -> Json:
    ref = req["computeEnvironment"]
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        ce = live(tx, ref, now)
        if ce is None:
            raise _not_found(ref)
        if ce.lifecycle.effective(now) is ResourceStatus.DELETING:
            return {}  # already on its way out: deleting again changes nothing
        if ce.state != "DISABLED":
            raise Conflict(
                f"Cannot delete compute environment {ce.name}: it must be DISABLED first."
            )
        users = _queues_using(tx, ce.name, now)
        if users:
            raise Conflict(
                f"Cannot delete compute environment {ce.name}: it is used by job queue(s) "
                f"{', '.join(users)}. Remove it from their computeEnvironmentOrder first."
            )
        if ctx.settings.settle_delay_ms <= 0:
            tx.delete_compute_environment(ce.name)
        else:
            tx.put_compute_environment(
                dataclasses.replace(
                    ce,
                    lifecycle=Lifecycle(
                        status=ResourceStatus.DELETING, settles_at=ctx.settles_at(now)
                    ),
                )
            )
    ctx.notifier.wake()
    return {}


def _queues_using(tx: Transaction, ce_name: str, now_ms: int) -> list[str]:
    names: list[str] = []
    after: str | None = None
    while True:
        batch = tx.list_job_queues(after, 100)
        if not batch:
            return names
        for queue in batch:
            if queue.lifecycle.gone(now_ms):
                continue
            if any(o.compute_environment == ce_name for o in queue.compute_environment_order):
                names.append(queue.name)
        after = batch[-1].name


def describe(ctx: Context, req: Json) -> Json:
    now = ctx.clock.now_ms()
    refs = req.get("computeEnvironments")
    with ctx.store.read() as tx:
        if refs:
            if len(refs) > 100:
                raise InvalidRequest("computeEnvironments takes at most 100 names or ARNs.")
            found = [ce for ref in dict.fromkeys(refs) if (ce := live(tx, ref, now)) is not None]
            return {
                "computeEnvironments": [
                    views.compute_environment(ce, ctx.arns, now) for ce in found
                ]
            }
        limit = pagination.page_size(req.get("maxResults"), 100, 100)
        after = pagination.decode_name("DescribeComputeEnvironments", req.get("nextToken"))
        batch = tx.list_compute_environments(after, limit)
    out: Json = {
        "computeEnvironments": [
            views.compute_environment(ce, ctx.arns, now)
            for ce in batch
            if not ce.lifecycle.gone(now)
        ]
    }
    if len(batch) == limit:
        out["nextToken"] = pagination.encode("DescribeComputeEnvironments", batch[-1].name)
    return out
