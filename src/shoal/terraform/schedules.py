"""aws_scheduler_schedule: EventBridge Scheduler, as the rule and target shoal fires.

shoal has no Scheduler API of its own; it fires EventBridge rules. A
schedule whose target is the universal target
`arn:aws:scheduler:::aws-sdk:batch:submitJob` (its input holds SubmitJob's
members in PascalCase: JobName, JobQueue, JobDefinition, ArrayProperties,
RetryStrategy, Parameters, ContainerOverrides) becomes a rule with the same
schedule and a Batch target on the queue, with BatchParameters and, when
given, Parameters and ContainerOverrides as the target's input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shoal.terraform.events import (
    dead_letter,
    delete_rule,
    describe_rule,
    find_target,
    put_target,
    remove_target,
    retry_policy,
    rule_changes,
    target_changes,
    target_id,
)
from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    ResourceError,
    Setting,
    as_json,
    as_str,
    compact,
    name_of,
    one_block,
    required,
)

SUBMIT_JOB = "arn:aws:scheduler:::aws-sdk:batch:submitJob"
# SubmitJob members a Batch target carries in BatchParameters, and in Input.
_CARRIED = ("JobName", "JobQueue", "JobDefinition", "ArrayProperties", "RetryStrategy")
_INPUT = ("Parameters", "ContainerOverrides")


class SchedulerSchedule(Kind):
    """EventBridge Scheduler, as the rule and target shoal fires."""

    type = "aws_scheduler_schedule"
    rank = 70
    arguments = frozenset(
        {
            "name",
            "name_prefix",
            "group_name",
            "description",
            "schedule_expression",
            "schedule_expression_timezone",
            "state",
            "flexible_time_window",
            "target",
            "start_date",
            "end_date",
            "kms_key_arn",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        name = name_of(args, setting, "name")
        group = as_str(args.get("group_name"), "group_name") or "default"
        notes: list[str] = []
        zone = as_str(args.get("schedule_expression_timezone"), "schedule_expression_timezone")
        if zone not in (None, "UTC", "Etc/UTC"):
            notes.append(f"schedule_expression_timezone {zone} is ignored: shoal runs it in UTC")
        for ignored in ("start_date", "end_date"):
            if args.get(ignored) is not None:
                notes.append(f"{ignored} is ignored: the schedule is always active")
        rule = compact(
            {
                "Name": name,
                "ScheduleExpression": as_str(
                    required(args.get("schedule_expression"), "schedule_expression"),
                    "schedule_expression",
                ),
                "State": (as_str(args.get("state"), "state") or "ENABLED").upper(),
                "Description": as_str(args.get("description"), "description"),
            }
        )
        block = one_block(args, "target")
        if block is None:
            raise ResourceError("a schedule needs a target block")
        target = self._target(block, setting, notes)
        return Desired(
            name=name,
            request={"Rule": rule, "Target": target},
            extra={"group": group, "id": target["Id"], "notes": notes},
        )

    def _target(
        self, block: Mapping[str, Any], setting: Setting, notes: list[str]
    ) -> dict[str, Any]:
        arn = as_str(required(block.get("arn"), "target.arn"), "target.arn")
        text = as_str(block.get("input"), "target.input")
        common = {
            "Id": target_id(setting.address),
            "RoleArn": as_str(block.get("role_arn"), "target.role_arn"),
            "RetryPolicy": retry_policy(one_block(block, "retry_policy")),
            "DeadLetterConfig": dead_letter(one_block(block, "dead_letter_config")),
        }
        if arn != SUBMIT_JOB:
            return compact({**common, "Arn": arn, "Input": text})
        submit = as_json(text, "target.input")
        if not isinstance(submit, dict):
            raise ResourceError("target.input: the SubmitJob input must be a JSON object")
        for member in submit:
            if member not in _CARRIED and member not in _INPUT:
                notes.append(f"target.input {member} is ignored: a Batch target cannot carry it")
        queue = str(required(submit.get("JobQueue"), "target.input JobQueue"))
        if not queue.startswith("arn:"):
            queue = setting.api.arn("batch", f"job-queue/{queue}")
        size = (submit.get("ArrayProperties") or {}).get("Size")
        attempts = (submit.get("RetryStrategy") or {}).get("Attempts")
        parameters = compact(
            {
                "JobDefinition": str(
                    required(submit.get("JobDefinition"), "target.input JobDefinition")
                ),
                "JobName": str(required(submit.get("JobName"), "target.input JobName")),
                "ArrayProperties": None if size is None else {"Size": int(size)},
                "RetryStrategy": None if attempts is None else {"Attempts": int(attempts)},
            }
        )
        carried = {k: submit[k] for k in _INPUT if k in submit}
        return compact(
            {
                **common,
                "Arn": queue,
                "BatchParameters": parameters,
                "Input": json.dumps(carried, sort_keys=True) if carried else None,
            }
        )

    def read(self, api: Api, want: Desired) -> Any | None:
        rule = describe_rule(api, want.name, {})
        if rule is None:
            return None
        return {"rule": rule, "target": find_target(api, want.name, want.extra["id"], {})}

    def changes(self, want: Desired, have: Any) -> list[Change]:
        out = rule_changes(want.request["Rule"], have["rule"])
        return out + target_changes(want.request["Target"], have["target"] or {}, "target.")

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        api.events.put_rule(**want.request["Rule"])
        put_target(api, want.name, want.request["Target"], {})
        return self.attributes(api, want, None)

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        if any(not c.member.startswith("target.") for c in changes):
            api.events.put_rule(**want.request["Rule"])
        if any(c.member.startswith("target.") for c in changes):
            put_target(api, want.name, want.request["Target"], {})
        return self.attributes(api, want, have)

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        group = want.extra["group"]
        return {
            "arn": api.arn("scheduler", f"schedule/{group}/{want.name}"),
            "id": f"{group}/{want.name}",
            "name": want.name,
        }

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        remove_target(api, want.name, want.extra["id"], {})
        delete_rule(api, want.name, {})
