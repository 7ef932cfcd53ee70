"""Tag/Untag/ListTagsForResource on every taggable resource, by ARN."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from shoal.domain.arns import parse_arn
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.limits import check_tags
from shoal.domain.records import Json
from shoal.service import compute_environments, job_definitions, job_queues
from shoal.service.context import Context
from shoal.store.base import Transaction

TagEdit = Callable[[dict[str, str]], dict[str, str]]


def _edit(tx: Transaction, ctx: Context, arn: str, edit: TagEdit) -> dict[str, str]:
    """Apply `edit` to the tags of the resource `arn` names; return the new tags."""
    parsed = parse_arn(arn)
    if parsed is None:
        raise InvalidRequest(f"{arn} is not a valid AWS Batch resource ARN.")
    now = ctx.clock.now_ms()
    missing = NotFound(f"Resource {arn} does not exist.")
    if parsed.kind == "compute-environment":
        ce = compute_environments.live(tx, arn, now)
        if ce is None:
            raise missing
        tags = edit(ce.tags)
        if tags != ce.tags:
            tx.put_compute_environment(dataclasses.replace(ce, tags=tags))
        return tags
    if parsed.kind == "job-queue":
        queue = job_queues.live(tx, arn, now)
        if queue is None:
            raise missing
        tags = edit(queue.tags)
        if tags != queue.tags:
            tx.put_job_queue(dataclasses.replace(queue, tags=tags))
        return tags
    if parsed.kind == "scheduling-policy":
        policy = tx.get_scheduling_policy(parsed.rest)
        if policy is None:
            raise missing
        tags = edit(policy.tags)
        if tags != policy.tags:
            tx.put_scheduling_policy(dataclasses.replace(policy, tags=tags))
        return tags
    if parsed.kind == "job-definition":
        name, revision = job_definitions.split_ref(arn)
        if revision is None:
            raise InvalidRequest(f"{arn} must name a job definition revision.")
        definition = tx.get_job_definition(name, revision)
        if definition is None:
            raise missing
        tags = edit(definition.tags)
        if tags != definition.tags:
            tx.put_job_definition(dataclasses.replace(definition, tags=tags))
        return tags
    # parsed.kind == "job"
    if ":" in parsed.rest or "#" in parsed.rest:
        raise InvalidRequest(f"{arn} is an array child or node: only the parent job has tags.")
    job = tx.get_jobs([parsed.rest]).get(parsed.rest)
    if job is None:
        raise missing
    tags = edit(job.tags)
    if tags != job.tags and not tx.update_job(dataclasses.replace(job, tags=tags), job.status):
        raise InvalidRequest(f"Job {job.job_id} changed state; try again.")
    return tags


def list_tags(ctx: Context, req: Json) -> Json:
    with ctx.store.read() as tx:
        return {"tags": _edit(tx, ctx, req["resourceArn"], lambda tags: tags)}


def tag(ctx: Context, req: Json) -> Json:
    new = req["tags"]

    def merge(tags: dict[str, str]) -> dict[str, str]:
        merged = {**tags, **new}
        check_tags(merged)
        return merged

    with ctx.store.transaction() as tx:
        _edit(tx, ctx, req["resourceArn"], merge)
    ctx.notifier.wake()  # a compute environment's executor is chosen by tag
    return {}


def untag(ctx: Context, req: Json) -> Json:
    keys = set(req["tagKeys"])
    with ctx.store.transaction() as tx:
        _edit(
            tx,
            ctx,
            req["resourceArn"],
            lambda tags: {k: v for k, v in tags.items() if k not in keys},
        )
    ctx.notifier.wake()
    return {}
