"""The nouns of AWS Batch as frozen records.

Deep, AWS-shaped members (containerProperties, computeResources, ...) stay as
JSON-like dicts: they are stored and echoed whole, and the rules that read
them live in the modules named for those rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

Json = dict[str, Any]


class JobStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    PENDING = "PENDING"
    RUNNABLE = "RUNNABLE"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @property
    def queued(self) -> bool:
        """Not yet placed: Cancel and Terminate both end it at once."""
        return self in (JobStatus.SUBMITTED, JobStatus.PENDING, JobStatus.RUNNABLE)


class ResourceStatus(StrEnum):
    """Control-plane status of compute environments and job queues."""

    CREATING = "CREATING"
    UPDATING = "UPDATING"
    DELETING = "DELETING"
    DELETED = "DELETED"
    VALID = "VALID"
    INVALID = "INVALID"


@dataclass(frozen=True, slots=True, kw_only=True)
class Lifecycle:
    """Asynchronous control-plane status: `status` holds until `settles_at`.

    AWS moves CREATING/UPDATING to VALID and DELETING to gone some time after
    the call returns; shoal computes the settled status on read, so there is
    no background task to lose and the delay is a setting (0 = immediate).
    """

    status: ResourceStatus
    settles_at: int = 0

    def effective(self, now_ms: int) -> ResourceStatus:
        if now_ms < self.settles_at:
            return self.status
        if self.status in (ResourceStatus.CREATING, ResourceStatus.UPDATING):
            return ResourceStatus.VALID
        if self.status is ResourceStatus.DELETING:
            return ResourceStatus.DELETED
        return self.status

    def gone(self, now_ms: int) -> bool:
        return self.effective(now_ms) is ResourceStatus.DELETED


@dataclass(frozen=True, slots=True, kw_only=True)
class ComputeEnvironment:
    name: str
    uuid: str
    type: str  # MANAGED | UNMANAGED
    state: str  # ENABLED | DISABLED
    lifecycle: Lifecycle
    status_reason: str | None = None
    compute_resources: Json | None = None
    unmanaged_vcpus: int | None = None
    service_role: str | None = None
    update_policy: Json | None = None
    # Members stored and echoed but not interpreted (eksConfiguration, context, ...).
    extra: Json = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: int = 0

    @property
    def resource_type(self) -> str | None:
        """EC2 | SPOT | FARGATE | FARGATE_SPOT | ...; None for UNMANAGED."""
        if self.compute_resources is None:
            return None
        value = self.compute_resources.get("type")
        return str(value) if value is not None else None

    @property
    def is_fargate(self) -> bool:
        return self.resource_type in ("FARGATE", "FARGATE_SPOT")


@dataclass(frozen=True, slots=True, kw_only=True)
class CeOrder:
    order: int
    compute_environment: str  # name


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQueue:
    name: str
    state: str
    lifecycle: Lifecycle
    priority: int
    compute_environment_order: tuple[CeOrder, ...]
    status_reason: str | None = None
    scheduling_policy: str | None = None  # policy name
    job_state_time_limit_actions: tuple[Json, ...] = ()
    extra: Json = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    created_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulingPolicy:
    name: str
    fairshare_policy: Json | None = None
    quota_share_policy: Json | None = None
    tags: dict[str, str] = field(default_factory=dict)
    created_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRule:
    """An EventBridge rule on the default bus, with its targets.

    A schedule rule fires at `next_fire_ms` (None: disabled, or no schedule,
    or no time left); rate schedules count from `anchor_ms` (the rule's
    creation, or its last enabling)."""

    name: str
    schedule_expression: str | None = None
    event_pattern: str | None = None
    state: str = "ENABLED"
    description: str | None = None
    role_arn: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # Each as PutTargets sent it (PascalCase members), in Id order.
    targets: tuple[Json, ...] = ()
    created_at: int = 0
    anchor_ms: int = 0
    next_fire_ms: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDefinition:
    name: str
    revision: int
    status: str  # ACTIVE | INACTIVE
    type: str  # container | multinode
    # Every other RegisterJobDefinition member as sent (containerProperties,
    # nodeProperties, parameters, retryStrategy, timeout, ...), minus tags.
    body: Json
    tags: dict[str, str] = field(default_factory=dict)
    created_at: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as submitted, plus what has happened to it since.

    `spec` holds what SubmitJob fixed for good (effective container, parameters,
    retry strategy, timeout, dependencies, node and array properties);
    `runtime` holds what the engine adds (attempts, the current container's
    exit code, reason, task ARN and log stream).
    """

    job_id: str
    job_name: str
    queue: str  # queue name
    definition_name: str
    definition_revision: int
    status: JobStatus
    created_at: int
    spec: Json
    status_reason: str | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    share_identifier: str | None = None
    array_parent: str | None = None  # parent job id, for array children
    array_size: int | None = None  # for array parents
    runtime: Json = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    is_cancelled: bool = False
    is_terminated: bool = False
    # TerminateJob's reason for a STARTING/RUNNING job, until the engine stops it.
    terminate_requested: str | None = None
