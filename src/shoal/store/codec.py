"""Records to and from JSON documents, shared by every store implementation."""

from __future__ import annotations

from typing import Any

import orjson

from shoal.domain.records import (
    CeOrder,
    ComputeEnvironment,
    EventRule,
    JobDefinition,
    JobQueue,
    Json,
    Lifecycle,
    ResourceStatus,
    SchedulingPolicy,
)


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str | bytes) -> Any:
    return orjson.loads(text)


def _lifecycle(doc: Json) -> Lifecycle:
    return Lifecycle(status=ResourceStatus(doc["status"]), settles_at=doc["settles_at"])


def ce_to_doc(ce: ComputeEnvironment) -> Json:
    return {
        "name": ce.name,
        "uuid": ce.uuid,
        "type": ce.type,
        "state": ce.state,
        "status": ce.lifecycle.status.value,
        "settles_at": ce.lifecycle.settles_at,
        "status_reason": ce.status_reason,
        "compute_resources": ce.compute_resources,
        "unmanaged_vcpus": ce.unmanaged_vcpus,
        "service_role": ce.service_role,
        "update_policy": ce.update_policy,
        "extra": ce.extra,
        "tags": ce.tags,
        "created_at": ce.created_at,
    }


def ce_from_doc(doc: Json) -> ComputeEnvironment:
    return ComputeEnvironment(
        name=doc["name"],
        uuid=doc["uuid"],
        type=doc["type"],
        state=doc["state"],
        lifecycle=_lifecycle(doc),
        status_reason=doc["status_reason"],
        compute_resources=doc["compute_resources"],
        unmanaged_vcpus=doc["unmanaged_vcpus"],
        service_role=doc["service_role"],
        update_policy=doc["update_policy"],
        extra=doc["extra"],
        tags=doc["tags"],
        created_at=doc["created_at"],
    )


def queue_to_doc(queue: JobQueue) -> Json:
    return {
        "name": queue.name,
        "state": queue.state,
        "status": queue.lifecycle.status.value,
        "settles_at": queue.lifecycle.settles_at,
        "status_reason": queue.status_reason,
        "priority": queue.priority,
        "compute_environment_order": [
            {"order": o.order, "compute_environment": o.compute_environment}
            for o in queue.compute_environment_order
        ],
        "scheduling_policy": queue.scheduling_policy,
        "job_state_time_limit_actions": list(queue.job_state_time_limit_actions),
        "extra": queue.extra,
        "tags": queue.tags,
        "created_at": queue.created_at,
    }


def queue_from_doc(doc: Json) -> JobQueue:
    return JobQueue(
        name=doc["name"],
        state=doc["state"],
        lifecycle=_lifecycle(doc),
        status_reason=doc["status_reason"],
        priority=doc["priority"],
        compute_environment_order=tuple(
            CeOrder(order=o["order"], compute_environment=o["compute_environment"])
            for o in doc["compute_environment_order"]
        ),
        scheduling_policy=doc["scheduling_policy"],
        job_state_time_limit_actions=tuple(doc["job_state_time_limit_actions"]),
        extra=doc["extra"],
        tags=doc["tags"],
        created_at=doc["created_at"],
    )


def policy_to_doc(policy: SchedulingPolicy) -> Json:
    return {
        "name": policy.name,
        "fairshare_policy": policy.fairshare_policy,
        "quota_share_policy": policy.quota_share_policy,
        "tags": policy.tags,
        "created_at": policy.created_at,
    }


def policy_from_doc(doc: Json) -> SchedulingPolicy:
    return SchedulingPolicy(
        name=doc["name"],
        fairshare_policy=doc["fairshare_policy"],
        quota_share_policy=doc["quota_share_policy"],
        tags=doc["tags"],
        created_at=doc["created_at"],
    )


def definition_to_doc(definition: JobDefinition) -> Json:
    return {"type": definition.type, "body": definition.body, "tags": definition.tags}


def definition_from_row(
    name: str, revision: int, status: str, created_at: int, doc: Json
) -> JobDefinition:
    return JobDefinition(
        name=name,
        revision=revision,
        status=status,
        type=doc["type"],
        body=doc["body"],
        tags=doc["tags"],
        created_at=created_at,
    )


def rule_to_doc(rule: EventRule) -> Json:
    return {
        "name": rule.name,
        "schedule_expression": rule.schedule_expression,
        "event_pattern": rule.event_pattern,
        "state": rule.state,
        "description": rule.description,
        "role_arn": rule.role_arn,
        "tags": rule.tags,
        "targets": list(rule.targets),
        "created_at": rule.created_at,
        "anchor_ms": rule.anchor_ms,
    }


def rule_from_doc(doc: Json, next_fire_ms: int | None) -> EventRule:
    return EventRule(
        name=doc["name"],
        schedule_expression=doc["schedule_expression"],
        event_pattern=doc["event_pattern"],
        state=doc["state"],
        description=doc["description"],
        role_arn=doc["role_arn"],
        tags=doc["tags"],
        targets=tuple(doc["targets"]),
        created_at=doc["created_at"],
        anchor_ms=doc["anchor_ms"],
        next_fire_ms=next_fire_ms,
    )
