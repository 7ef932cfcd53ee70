"""SubmitJob: resolve, check every rule, and store the job as SUBMITTED."""

from __future__ import annotations

import copy
from typing import Any

from shoal.domain.arns import new_job_id
from shoal.domain.container import effective_container, resources_of
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.limits import (
    MAX_DEPENDENCIES,
    MAX_SUBMIT_PAYLOAD,
    check_array_size,
    check_environment,
    check_job_name,
    check_payload_size,
    check_resource_requirements,
    check_retry_strategy,
    check_scheduling_priority,
    check_tags,
    check_timeout,
)
from shoal.domain.records import Job, JobDefinition, JobQueue, JobStatus, Json
from shoal.service import job_definitions, job_queues
from shoal.service.context import Context
from shoal.store.base import Transaction

FAIR_SHARE_ONLY = (
    "Job with shareIdentifier or schedulingPriority can onlybe submitted to job queue with "
    "fair share scheduling policy."
)


def _check_overrides(overrides: Json | None, where: str) -> None:
    if not overrides:
        return
    check_environment(overrides.get("environment"), where)
    check_resource_requirements(overrides.get("resourceRequirements"), where)


def _check_capabilities(tx: Transaction, queue: JobQueue, definition: JobDefinition) -> None:
    capabilities = definition.body.get("platformCapabilities") or ["EC2"]
    for order in queue.compute_environment_order:
        ce = tx.get_compute_environment(order.compute_environment)
        if ce is None:
            continue
        wanted = "FARGATE" if ce.is_fargate else "EC2"
        if wanted not in capabilities:
            raise InvalidRequest(
                "Job Queue is attached to Compute Environment that can not run Jobs with "
                f"capability {capabilities[0]}."
            )


def _check_dependencies(tx: Transaction, depends_on: list[Json], is_array: bool) -> None:
    if len(depends_on) > MAX_DEPENDENCIES:
        raise InvalidRequest(
            f"A job can depend on at most {MAX_DEPENDENCIES} jobs; got {len(depends_on)}."
        )
    wanted: list[str] = []
    for dep in depends_on:
        kind = dep.get("type")
        job_id = dep.get("jobId")
        if kind == "SEQUENTIAL":
            if not is_array:
                raise InvalidRequest("A SEQUENTIAL dependency applies only to array jobs.")
            if job_id:
                raise InvalidRequest("A SEQUENTIAL dependency takes no jobId.")
            continue
        if not job_id:
            raise InvalidRequest("dependsOn entries need a jobId (except SEQUENTIAL ones).")
        if kind == "N_TO_N" and not is_array:
            raise InvalidRequest("An N_TO_N dependency applies only to array jobs.")
        wanted.append(job_id.split(":", 1)[0])
    found = tx.get_jobs(wanted)
    missing = [j for j in wanted if j not in found]
    for dep in depends_on:
        # `<array job id>:<index>` names one child: the index must be one.
        parent, colon, index = str(dep.get("jobId") or "").partition(":")
        job = found.get(parent)
        if colon and job is not None:
            size = job.array_size
            if size is None or not (index.isascii() and index.isdigit()) or int(index) >= size:
                missing.append(str(dep["jobId"])[:100])
    if missing:
        raise NotFound(f"Dependent job(s) not found: {', '.join(missing)}.")


def _node_properties(definition: JobDefinition, req: Json, parameters: dict[str, str]) -> Json:
    props: Json = copy.deepcopy(definition.body["nodeProperties"])
    overrides: Json = req.get("nodeOverrides") or {}
    num = overrides.get("numNodes")
    if num is not None:
        open_ended = [g for g in props["nodeRangeProperties"] if g["targetNodes"].endswith(":")]
        if not open_ended:
            raise InvalidRequest(
                "nodeOverrides.numNodes needs a node range in the definition that is open at "
                "the end (like '1:')."
            )
        if props["mainNode"] >= num:
            raise InvalidRequest(
                f"nodeOverrides.numNodes ({num}) must be above mainNode ({props['mainNode']})."
            )
        props["numNodes"] = num
    by_target = {
        o["targetNodes"]: o.get("containerOverrides")
        for o in overrides.get("nodePropertyOverrides") or []
    }
    for i, group in enumerate(props["nodeRangeProperties"]):
        job_definitions.parse_node_range(group["targetNodes"], props["numNodes"])
        if "container" in group:
            node_overrides = by_target.get(group["targetNodes"])
            _check_overrides(node_overrides, f"nodePropertyOverrides[{i}].containerOverrides")
            group["container"] = effective_container(group["container"], node_overrides, parameters)
    return props


def _container(definition: JobDefinition, req: Json, parameters: dict[str, str]) -> Json | None:
    props = definition.body.get("containerProperties")
    overrides = req.get("containerOverrides")
    if props is None:
        if overrides:
            raise InvalidRequest(
                "containerOverrides applies only to job definitions with containerProperties."
            )
        return None
    if overrides and "instanceType" in overrides:
        raise InvalidRequest("containerOverrides.instanceType applies only to multi-node jobs.")
    _check_overrides(overrides, "containerOverrides")
    container = effective_container(props, overrides, parameters)
    needs = resources_of(container)
    if needs.vcpus is None or needs.memory_mib is None:
        missing = " and ".join(
            kind
            for kind, value in (("VCPU", needs.vcpus), ("MEMORY", needs.memory_mib))
            if value is None
        )
        raise InvalidRequest(
            f"The job gives no {missing}: set it in the job definition's resourceRequirements "
            "or in containerOverrides.resourceRequirements."
        )
    return container


def _response(ctx: Context, job_id: str, job_name: str) -> Json:
    return {"jobArn": ctx.arns.job(job_id), "jobName": job_name, "jobId": job_id}


def submit(ctx: Context, req: Json, *, payload_size: int, token: str | None) -> Json:
    """Store a new job as SUBMITTED and return its ids.

    `token` is the SDK's invocation id: a retried request carrying a token
    seen before returns the job created the first time, so an SDK retry
    after a lost reply never creates a second job.
    """
    check_payload_size(payload_size, MAX_SUBMIT_PAYLOAD, "The SubmitJob request")
    check_job_name(req["jobName"])
    tags = req.get("tags") or {}
    check_tags(tags)
    array_size = (req.get("arrayProperties") or {}).get("size")
    if array_size is not None:
        check_array_size(array_size)
    check_retry_strategy(req.get("retryStrategy"))
    check_timeout(req.get("timeout"), ctx.settings.min_timeout_seconds)
    check_scheduling_priority(req.get("schedulingPriorityOverride"), "schedulingPriorityOverride")
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        if token is not None and (first := tx.job_for_token(token)) is not None:
            jobs = tx.get_jobs([first])
            if first in jobs:
                return _response(ctx, first, jobs[first].job_name)
        queue = job_queues.live(tx, req["jobQueue"], now)
        if queue is None:
            raise job_queues.not_found(req["jobQueue"])
        if queue.state != "ENABLED":
            raise InvalidRequest(f"JobQueue {queue.name} is DISABLED: it does not accept jobs.")
        definition = job_definitions.resolve_active(tx, req["jobDefinition"])
        share = req.get("shareIdentifier")
        if queue.scheduling_policy is None:
            if share is not None or req.get("schedulingPriorityOverride") is not None:
                raise InvalidRequest(FAIR_SHARE_ONLY)
        elif share is None:
            raise InvalidRequest(
                f"JobQueue {queue.name} has a fair-share scheduling policy: the job needs a "
                "shareIdentifier."
            )
        _check_capabilities(tx, queue, definition)
        parameters = {**definition.body.get("parameters", {}), **req.get("parameters", {})}
        spec: Json = {"parameters": parameters}
        if definition.type == "multinode":
            if req.get("containerOverrides"):
                raise InvalidRequest(
                    "containerOverrides does not apply to multi-node jobs; use nodeOverrides."
                )
            if array_size is not None:
                raise InvalidRequest("Multi-node parallel jobs cannot be array jobs.")
            spec["nodeProperties"] = _node_properties(definition, req, parameters)
        else:
            if req.get("nodeOverrides"):
                raise InvalidRequest("nodeOverrides applies only to multi-node jobs.")
            container = _container(definition, req, parameters)
            if container is not None:
                spec["container"] = container
        depends_on = req.get("dependsOn") or []
        _check_dependencies(tx, depends_on, array_size is not None)
        spec["dependsOn"] = depends_on
        body = definition.body
        optional: dict[str, Any] = {
            "retryStrategy": req.get("retryStrategy", body.get("retryStrategy")),
            "timeout": req.get("timeout", body.get("timeout")),
            "schedulingPriority": req.get(
                "schedulingPriorityOverride", body.get("schedulingPriority")
            ),
            "ecsProperties": body.get("ecsProperties"),
            "eksProperties": body.get("eksProperties"),
        }
        spec.update({k: v for k, v in optional.items() if v is not None})
        spec["propagateTags"] = req.get("propagateTags", body.get("propagateTags", False))
        spec["platformCapabilities"] = body.get("platformCapabilities") or ["EC2"]
        job = Job(
            job_id=new_job_id(),
            job_name=req["jobName"],
            queue=queue.name,
            definition_name=definition.name,
            definition_revision=definition.revision,
            status=JobStatus.SUBMITTED,
            created_at=now,
            spec=spec,
            share_identifier=share,
            array_size=array_size,
            tags=tags,
        )
        tx.insert_job(job, token)
    ctx.notifier.submitted()
    return _response(ctx, job.job_id, job.job_name)
