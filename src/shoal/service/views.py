"""Records as AWS wire shapes (ComputeEnvironmentDetail, JobDetail, ...)."""

from __future__ import annotations

from typing import Any

from shoal.domain import arrays
from shoal.domain.arns import Arns
from shoal.domain.records import (
    ComputeEnvironment,
    Job,
    JobDefinition,
    JobQueue,
    Json,
    SchedulingPolicy,
)


def _drop_none(doc: Json) -> Json:
    return {k: v for k, v in doc.items() if v is not None}


def compute_environment(ce: ComputeEnvironment, arns: Arns, now_ms: int) -> Json:
    return _drop_none(
        {
            "computeEnvironmentName": ce.name,
            "computeEnvironmentArn": arns.compute_environment(ce.name),
            "ecsClusterArn": arns.ecs_cluster(ce.name, ce.uuid),
            "tags": ce.tags,
            "type": ce.type,
            "state": ce.state,
            "status": ce.lifecycle.effective(now_ms).value,
            "statusReason": ce.status_reason or _settled_reason(ce.lifecycle.effective(now_ms)),
            "computeResources": ce.compute_resources,
            "unmanagedvCpus": ce.unmanaged_vcpus,
            "serviceRole": ce.service_role,
            "updatePolicy": ce.update_policy,
            "containerOrchestrationType": "EKS" if ce.extra.get("eksConfiguration") else "ECS",
            "uuid": ce.uuid,
            **ce.extra,
        }
    )


def _settled_reason(status: Any) -> str | None:
    return "ComputeEnvironment Healthy" if status == "VALID" else None


def job_queue(queue: JobQueue, arns: Arns, now_ms: int) -> Json:
    status = queue.lifecycle.effective(now_ms)
    return _drop_none(
        {
            "jobQueueName": queue.name,
            "jobQueueArn": arns.job_queue(queue.name),
            "state": queue.state,
            "schedulingPolicyArn": (
                arns.scheduling_policy(queue.scheduling_policy) if queue.scheduling_policy else None
            ),
            "status": status.value,
            "statusReason": queue.status_reason
            or ("JobQueue Healthy" if status == "VALID" else None),
            "priority": queue.priority,
            "computeEnvironmentOrder": [
                {
                    "order": o.order,
                    "computeEnvironment": arns.compute_environment(o.compute_environment),
                }
                for o in queue.compute_environment_order
            ],
            "tags": queue.tags,
            "jobStateTimeLimitActions": list(queue.job_state_time_limit_actions),
            **queue.extra,
        }
    )


def scheduling_policy(policy: SchedulingPolicy, arns: Arns) -> Json:
    return _drop_none(
        {
            "name": policy.name,
            "arn": arns.scheduling_policy(policy.name),
            "fairsharePolicy": policy.fairshare_policy,
            "quotaSharePolicy": policy.quota_share_policy,
            "tags": policy.tags,
        }
    )


def job_definition(definition: JobDefinition, arns: Arns) -> Json:
    doc: Json = {
        "jobDefinitionName": definition.name,
        "jobDefinitionArn": arns.job_definition(definition.name, definition.revision),
        "revision": definition.revision,
        "status": definition.status,
        "type": definition.type,
        "tags": definition.tags,
        "containerOrchestrationType": "EKS" if definition.body.get("eksProperties") else "ECS",
    }
    doc.update(definition.body)
    doc.setdefault("parameters", {})
    doc.setdefault("propagateTags", False)
    doc.setdefault("platformCapabilities", ["EC2"])
    return doc


def _container_detail(job: Job) -> Json | None:
    container = job.spec.get("container")
    if container is None:
        return None
    detail: Json = {
        "environment": [],
        "volumes": [],
        "mountPoints": [],
        "ulimits": [],
        "resourceRequirements": [],
        "secrets": [],
        "networkInterfaces": [],
    }
    detail.update(container)
    detail.update(job.runtime.get("container") or {})
    return detail


def array_summary(job: Job, counts: dict[str, int] | None, now_ms: int) -> Json:
    return {
        "size": job.array_size,
        "statusSummary": arrays.status_summary(job, counts or {}),
        "statusSummaryLastUpdatedAt": now_ms,  # counted as this answer was made
    }


def job_detail(
    job: Job,
    arns: Arns,
    *,
    queue_arn: str,
    now_ms: int,
    child_counts: dict[str, int] | None = None,
) -> Json:
    spec = job.spec
    doc: Json = {
        "jobArn": arns.job(job.job_id),
        "jobName": job.job_name,
        "jobId": job.job_id,
        "jobQueue": queue_arn,
        "status": job.status.value,
        "shareIdentifier": job.share_identifier,
        "schedulingPriority": spec.get("schedulingPriority"),
        "attempts": job.runtime.get("attempts", []),
        "statusReason": job.status_reason,
        "createdAt": job.created_at,
        "retryStrategy": spec.get("retryStrategy"),
        "startedAt": job.started_at,
        "stoppedAt": job.stopped_at,
        "dependsOn": spec.get("dependsOn", []),
        "jobDefinition": arns.job_definition(job.definition_name, job.definition_revision),
        "parameters": spec.get("parameters", {}),
        "container": _container_detail(job),
        "nodeProperties": spec.get("nodeProperties"),
        "timeout": spec.get("timeout"),
        "tags": job.tags,
        "propagateTags": spec.get("propagateTags", False),
        "platformCapabilities": spec.get("platformCapabilities", []),
        "eksProperties": spec.get("eksProperties"),
        "ecsProperties": spec.get("ecsProperties"),
        "isCancelled": job.is_cancelled or None,
        "isTerminated": job.is_terminated or None,
    }
    if job.array_size is not None:
        doc["arrayProperties"] = array_summary(job, child_counts, now_ms)
        doc["attempts"] = []
    elif "arrayIndex" in spec:
        doc["arrayProperties"] = {"index": spec["arrayIndex"]}
    # A multinode job reports nodeProperties (above), each of its nodes nodeDetails.
    doc["nodeDetails"] = spec.get("nodeDetails")
    return _drop_none(doc)


def _node_summary(spec: Json) -> Json | None:
    """NodePropertiesSummary: the job's node count; a node's index and role too."""
    if "nodeProperties" in spec:
        return {"numNodes": spec["nodeProperties"]["numNodes"]}
    if "nodeDetails" in spec:
        return {**spec["nodeDetails"], "numNodes": spec.get("numNodes")}
    return None


def job_summary(
    job: Job, arns: Arns, now_ms: int, *, child_counts: dict[str, int] | None = None
) -> Json:
    spec = job.spec
    runtime_container = job.runtime.get("container") or {}
    container = {k: runtime_container[k] for k in ("exitCode", "reason") if k in runtime_container}
    doc: Json = {
        "jobArn": arns.job(job.job_id),
        "jobId": job.job_id,
        "jobName": job.job_name,
        "createdAt": job.created_at,
        "shareIdentifier": job.share_identifier,
        "status": job.status.value,
        "statusReason": job.status_reason,
        "startedAt": job.started_at,
        "stoppedAt": job.stopped_at,
        "container": container or None,
        "jobDefinition": arns.job_definition(job.definition_name, job.definition_revision),
        "isCancelled": job.is_cancelled or None,
        "isTerminated": job.is_terminated or None,
    }
    if job.array_size is not None:
        doc["arrayProperties"] = array_summary(job, child_counts, now_ms)
    elif "arrayIndex" in spec:
        doc["arrayProperties"] = {"index": spec["arrayIndex"]}
    doc["nodeProperties"] = _node_summary(spec)
    return _drop_none(doc)
