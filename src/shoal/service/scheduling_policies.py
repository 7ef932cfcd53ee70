"""Create/Update/Delete/Describe/ListSchedulingPolicies."""

from __future__ import annotations

import dataclasses

from shoal.domain.arns import name_from_ref
from shoal.domain.errors import Conflict, InvalidRequest, NotFound
from shoal.domain.limits import check_name, check_tags
from shoal.domain.records import Json, SchedulingPolicy
from shoal.service import pagination, views
from shoal.service.context import Context
from shoal.store.base import Transaction


def _check_fairshare(policy: Json | None) -> None:
    if policy is None:
        return
    decay = policy.get("shareDecaySeconds")
    if decay is not None and not 0 <= decay <= 604800:
        raise InvalidRequest(f"shareDecaySeconds must be between 0 and 604800; got {decay}.")
    reservation = policy.get("computeReservation")
    if reservation is not None and not 0 <= reservation <= 99:
        raise InvalidRequest(f"computeReservation must be between 0 and 99; got {reservation}.")
    exact: set[str] = set()
    prefixes: list[str] = []
    for entry in policy.get("shareDistribution") or []:
        ident = entry["shareIdentifier"]
        weight = entry.get("weightFactor")
        if weight is not None and not 0.0001 <= weight <= 999.9999:
            raise InvalidRequest(
                f"weightFactor of share {ident!r} must be between 0.0001 and 999.9999; "
                f"got {weight}."
            )
        if ident.endswith("*"):
            prefixes.append(ident[:-1])
        else:
            exact.add(ident)
    for prefix in prefixes:
        clash = sorted(i for i in exact if i.startswith(prefix))
        if clash:
            raise InvalidRequest(
                f"shareDistribution entry {prefix}* overlaps the exact entries {clash}."
            )


def _policy_body(req: Json) -> tuple[Json | None, Json | None]:
    fairshare, quota = req.get("fairsharePolicy"), req.get("quotaSharePolicy")
    if fairshare is not None and quota is not None:
        raise InvalidRequest("Give either fairsharePolicy or quotaSharePolicy, not both.")
    _check_fairshare(fairshare)
    return fairshare, quota


def create(ctx: Context, req: Json) -> Json:
    name = req["name"]
    check_name(name, "name")
    tags = req.get("tags") or {}
    check_tags(tags)
    fairshare, quota = _policy_body(req)
    with ctx.store.transaction() as tx:
        if tx.get_scheduling_policy(name) is not None:
            raise Conflict(f"Object already exists: scheduling policy {name}.")
        tx.put_scheduling_policy(
            SchedulingPolicy(
                name=name,
                fairshare_policy=fairshare,
                quota_share_policy=quota,
                tags=tags,
                created_at=ctx.clock.now_ms(),
            )
        )
    return {"name": name, "arn": ctx.arns.scheduling_policy(name)}


def _get(tx: Transaction, arn: str) -> SchedulingPolicy:
    policy = tx.get_scheduling_policy(name_from_ref(arn, "scheduling-policy"))
    if policy is None:
        raise NotFound(f"SchedulingPolicy {arn} does not exist.")
    return policy


def update(ctx: Context, req: Json) -> Json:
    fairshare, quota = _policy_body(req)
    with ctx.store.transaction() as tx:
        policy = _get(tx, req["arn"])
        if fairshare is not None and policy.quota_share_policy is not None:
            raise InvalidRequest("A quota-share policy cannot become a fair-share policy.")
        if quota is not None and policy.fairshare_policy is not None:
            raise InvalidRequest("A fair-share policy cannot become a quota-share policy.")
        tx.put_scheduling_policy(
            dataclasses.replace(
                policy,
                fairshare_policy=fairshare if fairshare is not None else policy.fairshare_policy,
                quota_share_policy=quota if quota is not None else policy.quota_share_policy,
            )
        )
    return {}


def delete(ctx: Context, req: Json) -> Json:
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        policy = _get(tx, req["arn"])
        after: str | None = None
        while batch := tx.list_job_queues(after, 100):
            for queue in batch:
                if queue.scheduling_policy == policy.name and not queue.lifecycle.gone(now):
                    raise Conflict(
                        f"Cannot delete scheduling policy {policy.name}: job queue "
                        f"{queue.name} uses it."
                    )
            after = batch[-1].name
        tx.delete_scheduling_policy(policy.name)
    return {}


def describe(ctx: Context, req: Json) -> Json:
    arns = req["arns"]
    if len(arns) > 100:
        raise InvalidRequest("arns takes at most 100 scheduling policy ARNs.")
    with ctx.store.read() as tx:
        found = [
            p
            for arn in dict.fromkeys(arns)
            if (p := tx.get_scheduling_policy(name_from_ref(arn, "scheduling-policy")))
        ]
    return {"schedulingPolicies": [views.scheduling_policy(p, ctx.arns) for p in found]}


def list_policies(ctx: Context, req: Json) -> Json:
    limit = pagination.page_size(req.get("maxResults"), 100, 100)
    after = pagination.decode_name("ListSchedulingPolicies", req.get("nextToken"))
    with ctx.store.read() as tx:
        batch = tx.list_scheduling_policies(after, limit)
    out: Json = {"schedulingPolicies": [{"arn": ctx.arns.scheduling_policy(p.name)} for p in batch]}
    if len(batch) == limit:
        out["nextToken"] = pagination.encode("ListSchedulingPolicies", batch[-1].name)
    return out
