"""aws_batch_job_definition: RegisterJobDefinition and its revisions.

Job definitions are immutable: a change registers a new revision, and only
when the content differs from the latest ACTIVE revision (compared as
DescribeJobDefinitions reports it, defaults and empty members aside), so
applying again registers nothing. As the provider does, the replaced
revision is deregistered unless deregister_on_new_revision = false.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    ResourceError,
    Setting,
    as_bool,
    as_int,
    as_json,
    as_str,
    as_str_list,
    as_str_map,
    blocks,
    compact,
    name_of,
    normal,
    one_block,
    required,
    sync_tags,
    tag_changes,
    tags_of,
)

_BODY = (
    ("type", "type"),
    ("containerProperties", "container_properties"),
    ("nodeProperties", "node_properties"),
    ("ecsProperties", "ecs_properties"),
    ("parameters", "parameters"),
    ("platformCapabilities", "platform_capabilities"),
    ("propagateTags", "propagate_tags"),
    ("retryStrategy", "retry_strategy"),
    ("timeout", "timeout"),
    ("schedulingPriority", "scheduling_priority"),
)
# What DescribeJobDefinitions reports for a member that was not given.
_BODY_DEFAULTS: dict[str, Any] = {
    "parameters": {},
    "propagateTags": False,
    "platformCapabilities": ["EC2"],
}


@dataclass(frozen=True, slots=True)
class Revisions:
    """A job definition on the server: its latest ACTIVE revision and all ACTIVE ones."""

    latest: dict[str, Any]
    active: list[dict[str, Any]]


def _retry(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    rules = [
        compact(
            {
                "action": as_str(required(r.get("action"), "action"), "action"),
                "onExitCode": as_str(r.get("on_exit_code"), "on_exit_code"),
                "onReason": as_str(r.get("on_reason"), "on_reason"),
                "onStatusReason": as_str(r.get("on_status_reason"), "on_status_reason"),
            }
        )
        for r in blocks(block, "evaluate_on_exit")
    ]
    return compact(
        {
            "attempts": as_int(block.get("attempts"), "retry_strategy.attempts"),
            "evaluateOnExit": rules or None,
        }
    )


def _all_revisions(api: Api, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pages = api.batch.get_paginator("describe_job_definitions")
    for page in pages.paginate(jobDefinitionName=name):
        out.extend(page["jobDefinitions"])
    return out


class JobDefinition(Kind):
    type = "aws_batch_job_definition"
    rank = 40
    arguments = frozenset(
        {
            "name",
            "type",
            "container_properties",
            "node_properties",
            "ecs_properties",
            "parameters",
            "platform_capabilities",
            "propagate_tags",
            "retry_strategy",
            "timeout",
            "scheduling_priority",
            "deregister_on_new_revision",
            "tags",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        if args.get("eks_properties"):
            raise ResourceError("eks_properties is not supported by shoal apply")
        name = name_of(args, setting, "name")
        timeout = one_block(args, "timeout")
        capabilities = as_str_list(args.get("platform_capabilities"), "platform_capabilities")
        request = compact(
            {
                "jobDefinitionName": name,
                "type": as_str(required(args.get("type"), "type"), "type"),
                "containerProperties": as_json(
                    args.get("container_properties"), "container_properties"
                ),
                "nodeProperties": as_json(args.get("node_properties"), "node_properties"),
                "ecsProperties": as_json(args.get("ecs_properties"), "ecs_properties"),
                "parameters": as_str_map(args.get("parameters"), "parameters"),
                "platformCapabilities": [c.upper() for c in capabilities]
                if capabilities is not None
                else None,
                "propagateTags": as_bool(args.get("propagate_tags"), "propagate_tags"),
                "retryStrategy": _retry(one_block(args, "retry_strategy")),
                "timeout": None
                if timeout is None
                else compact(
                    {
                        "attemptDurationSeconds": as_int(
                            timeout.get("attempt_duration_seconds"),
                            "timeout.attempt_duration_seconds",
                        )
                    }
                ),
                "schedulingPriority": as_int(
                    args.get("scheduling_priority"), "scheduling_priority"
                ),
            }
        )
        tags = tags_of(args, setting)
        if tags:
            request["tags"] = tags
        deregister = as_bool(args.get("deregister_on_new_revision"), "deregister_on_new_revision")
        # The provider deregisters the revision it replaces unless told not to.
        extra = {"deregister_on_new_revision": True if deregister is None else deregister}
        return Desired(name=name, request=request, tags=tags, extra=extra)

    def read(self, api: Api, want: Desired) -> Any | None:
        found = api.batch.describe_job_definitions(jobDefinitionName=want.name, status="ACTIVE")
        active = [d for d in found["jobDefinitions"] if d.get("status") == "ACTIVE"]
        while found.get("nextToken"):
            found = api.batch.describe_job_definitions(
                jobDefinitionName=want.name, status="ACTIVE", nextToken=found["nextToken"]
            )
            active += [d for d in found["jobDefinitions"] if d.get("status") == "ACTIVE"]
        if not active:
            return None
        latest = max(active, key=lambda d: int(d["revision"]))
        api.learn(latest.get("jobDefinitionArn"))
        return Revisions(latest=latest, active=active)

    def changes(self, want: Desired, have: Any) -> list[Change]:
        latest = have.latest
        out: list[Change] = []
        for member, argument in _BODY:
            new = want.request.get(member, _BODY_DEFAULTS.get(member))
            old = latest.get(member, _BODY_DEFAULTS.get(member))
            if normal(new) != normal(old):
                out.append(Change(member=member, argument=argument, old=old, new=new))
        return out + tag_changes(want.tags, latest.get("tags"))

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        made = api.batch.register_job_definition(**want.request)
        return self._attributes(want.name, made["jobDefinitionArn"], int(made["revision"]))

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        latest = have.latest
        if any(c.member != "tags" for c in changes):
            made = api.batch.register_job_definition(**want.request)
            if want.extra.get("deregister_on_new_revision"):
                api.batch.deregister_job_definition(jobDefinition=latest["jobDefinitionArn"])
            return self._attributes(want.name, made["jobDefinitionArn"], int(made["revision"]))
        sync_tags(api, latest["jobDefinitionArn"], want.tags, latest.get("tags"))
        return self.attributes(api, want, have)

    def _attributes(self, name: str, arn: str, revision: int) -> dict[str, Any]:
        return {
            "arn": arn,
            "id": arn,
            "name": name,
            "revision": revision,
            "arn_prefix": arn.rsplit(":", 1)[0],
        }

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        if have is not None:
            latest = have.latest
            return self._attributes(want.name, latest["jobDefinitionArn"], int(latest["revision"]))
        # Not there yet: the revision RegisterJobDefinition will allocate.
        revisions = [int(d["revision"]) for d in _all_revisions(api, want.name)]
        revision = max(revisions, default=0) + 1
        arn = api.arn("batch", f"job-definition/{want.name}:{revision}")
        return self._attributes(want.name, arn, revision)

    def planned_attributes(
        self, api: Api, want: Desired, have: Any | None, changes: list[Change]
    ) -> dict[str, Any]:
        # A change is a new revision, with a new ARN.
        if any(c.member != "tags" for c in changes):
            return self.attributes(api, want, None)
        return self.attributes(api, want, have)

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        for definition in have.active:
            api.batch.deregister_job_definition(jobDefinition=definition["jobDefinitionArn"])
