"""Scheduled jobs: EventBridge rules and targets, through the `events` API
shoal serves on the same endpoint.

`aws_cloudwatch_event_rule` and `aws_cloudwatch_event_target` map one to one
onto PutRule and PutTargets; the helpers here also serve `schedules.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from shoal.terraform.resources import (
    Api,
    Change,
    Desired,
    Kind,
    ResourceError,
    Setting,
    as_bool,
    as_int,
    as_str,
    as_str_map,
    compact,
    name_of,
    normal,
    one_block,
    required,
)

_MISSING = ("ResourceNotFoundException",)
_RULE_MEMBERS = (
    ("ScheduleExpression", "schedule_expression"),
    ("EventPattern", "event_pattern"),
    ("State", "state"),
    ("Description", "description"),
    ("RoleArn", "role_arn"),
)


def target_id(address: str) -> str:
    """A target Id for a target written without one: from its address, so the
    same target is found again (Terraform would make up a random one)."""
    return re.sub(r"[^.\-_A-Za-z0-9]", "-", address)[:64]


def _missing(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") in _MISSING


def _bus(request: Mapping[str, Any]) -> dict[str, Any]:
    return {"EventBusName": request["EventBusName"]} if "EventBusName" in request else {}


def describe_rule(api: Api, name: str, bus: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        rule: dict[str, Any] = api.events.describe_rule(Name=name, **bus)
    except ClientError as e:
        if _missing(e):
            return None
        raise
    api.learn(rule.get("Arn"))
    return rule


def find_target(api: Api, rule: str, ident: str, bus: Mapping[str, Any]) -> dict[str, Any] | None:
    """Target `ident` of `rule` (None when either is missing)."""
    token: str | None = None
    while True:
        extra = {"NextToken": token} if token else {}
        try:
            page = api.events.list_targets_by_rule(Rule=rule, **bus, **extra)
        except ClientError as e:
            if _missing(e):
                return None
            raise
        for target in page.get("Targets", []):
            if target.get("Id") == ident:
                found: dict[str, Any] = target
                return found
        token = page.get("NextToken")
        if not token:
            return None


def put_target(api: Api, rule: str, target: dict[str, Any], bus: Mapping[str, Any]) -> None:
    result = api.events.put_targets(Rule=rule, Targets=[target], **bus)
    if result.get("FailedEntryCount"):
        failed = result.get("FailedEntries") or [{}]
        raise ResourceError(
            f"PutTargets failed for target {target['Id']}: "
            f"{failed[0].get('ErrorCode', '')}: {failed[0].get('ErrorMessage', '')}"
        )


def remove_target(api: Api, rule: str, ident: str, bus: Mapping[str, Any]) -> None:
    try:
        api.events.remove_targets(Rule=rule, Ids=[ident], **bus)
    except ClientError as e:
        if not _missing(e):
            raise


def delete_rule(api: Api, name: str, bus: Mapping[str, Any]) -> None:
    try:
        api.events.delete_rule(Name=name, **bus)
    except ClientError as e:
        if not _missing(e):
            raise


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _comparable(member: str, value: Any) -> Any:
    # JSON documents compare by content: the server may re-serialise them.
    if member in ("Input", "EventPattern"):
        return _json_or_text(value)
    return normal(value)


def rule_changes(
    want: Mapping[str, Any], have: Mapping[str, Any], prefix: str = ""
) -> list[Change]:
    out: list[Change] = []
    for member, argument in _RULE_MEMBERS:
        new = want.get(member, "ENABLED" if member == "State" else None)
        old = have.get(member)
        if _comparable(member, new) != _comparable(member, old):
            out.append(Change(member=prefix + member, argument=argument, old=old, new=new))
    return out


def target_changes(
    want: Mapping[str, Any], have: Mapping[str, Any], prefix: str = ""
) -> list[Change]:
    out: list[Change] = []
    for member in dict.fromkeys([*want, *have]):
        new, old = want.get(member), have.get(member)
        if _comparable(member, new) != _comparable(member, old):
            argument = re.sub(r"(?<!^)([A-Z])", r"_\1", member).lower()
            out.append(Change(member=prefix + member, argument=argument, old=old, new=new))
    return out


def _rule_request(args: Mapping[str, Any], name: str) -> dict[str, Any]:
    state = as_str(args.get("state"), "state")
    enabled = as_bool(args.get("is_enabled"), "is_enabled")
    if state is None:
        state = "DISABLED" if enabled is False else "ENABLED"
    pattern = args.get("event_pattern")
    if pattern is not None and not isinstance(pattern, str):
        pattern = json.dumps(pattern)
    bus = as_str(args.get("event_bus_name"), "event_bus_name")
    return compact(
        {
            "Name": name,
            "ScheduleExpression": as_str(args.get("schedule_expression"), "schedule_expression"),
            "EventPattern": pattern,
            "State": state.upper(),
            "Description": as_str(args.get("description"), "description"),
            "RoleArn": as_str(args.get("role_arn"), "role_arn"),
            "EventBusName": None if bus in (None, "default") else bus,
        }
    )


class EventRule(Kind):
    type = "aws_cloudwatch_event_rule"
    rank = 50
    arguments = frozenset(
        {
            "name",
            "name_prefix",
            "schedule_expression",
            "event_pattern",
            "description",
            "state",
            "is_enabled",
            "role_arn",
            "event_bus_name",
            "force_destroy",
            "tags",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        name = name_of(args, setting, "name")
        request = _rule_request(args, name)
        tags = {**setting.default_tags, **(as_str_map(args.get("tags"), "tags") or {})}
        if tags:
            # PutRule applies tags when it creates the rule.
            request["Tags"] = [{"Key": k, "Value": v} for k, v in tags.items()]
        return Desired(name=name, request=request, tags=tags)

    def read(self, api: Api, want: Desired) -> Any | None:
        return describe_rule(api, want.name, _bus(want.request))

    def changes(self, want: Desired, have: Any) -> list[Change]:
        return rule_changes(want.request, have)

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        made = api.events.put_rule(**want.request)
        return self._attributes(want.name, made["RuleArn"])

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        # PutRule replaces the whole rule (its targets stay).
        made = api.events.put_rule(**want.request)
        return self._attributes(want.name, made["RuleArn"])

    def _attributes(self, name: str, arn: str) -> dict[str, Any]:
        return {"arn": arn, "id": name, "name": name}

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        arn = (have or {}).get("Arn") or api.arn("events", f"rule/{want.name}")
        return self._attributes(want.name, arn)

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        delete_rule(api, want.name, _bus(want.request))


def _batch_parameters(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    size = as_int(block.get("array_size"), "batch_target.array_size")
    attempts = as_int(block.get("job_attempts"), "batch_target.job_attempts")
    return compact(
        {
            "JobDefinition": as_str(
                required(block.get("job_definition"), "batch_target.job_definition"),
                "batch_target.job_definition",
            ),
            "JobName": as_str(
                required(block.get("job_name"), "batch_target.job_name"), "batch_target.job_name"
            ),
            "ArrayProperties": None if size is None else {"Size": size},
            "RetryStrategy": None if attempts is None else {"Attempts": attempts},
        }
    )


def retry_policy(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    return compact(
        {
            "MaximumEventAgeInSeconds": as_int(
                block.get("maximum_event_age_in_seconds"), "maximum_event_age_in_seconds"
            ),
            "MaximumRetryAttempts": as_int(
                block.get("maximum_retry_attempts"), "maximum_retry_attempts"
            ),
        }
    )


def dead_letter(block: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    return {"Arn": as_str(required(block.get("arn"), "dead_letter_config.arn"), "arn")}


class EventTarget(Kind):
    type = "aws_cloudwatch_event_target"
    rank = 60
    arguments = frozenset(
        {
            "rule",
            "target_id",
            "arn",
            "role_arn",
            "input",
            "input_path",
            "input_transformer",
            "batch_target",
            "retry_policy",
            "dead_letter_config",
            "event_bus_name",
            "force_destroy",
        }
    )

    def desired(self, args: dict[str, Any], setting: Setting) -> Desired:
        rule = str(as_str(required(args.get("rule"), "rule"), "rule"))
        ident = as_str(args.get("target_id"), "target_id") or target_id(setting.address)
        transformer = one_block(args, "input_transformer")
        target = compact(
            {
                "Id": ident,
                "Arn": as_str(required(args.get("arn"), "arn"), "arn"),
                "RoleArn": as_str(args.get("role_arn"), "role_arn"),
                "Input": as_str(args.get("input"), "input"),
                "InputPath": as_str(args.get("input_path"), "input_path"),
                "InputTransformer": None
                if transformer is None
                else compact(
                    {
                        "InputPathsMap": as_str_map(
                            transformer.get("input_paths"), "input_transformer.input_paths"
                        ),
                        "InputTemplate": as_str(
                            required(transformer.get("input_template"), "input_template"),
                            "input_template",
                        ),
                    }
                ),
                "BatchParameters": _batch_parameters(one_block(args, "batch_target")),
                "RetryPolicy": retry_policy(one_block(args, "retry_policy")),
                "DeadLetterConfig": dead_letter(one_block(args, "dead_letter_config")),
            }
        )
        bus = as_str(args.get("event_bus_name"), "event_bus_name")
        request: dict[str, Any] = {"Rule": rule, "Target": target}
        if bus not in (None, "default"):
            request["EventBusName"] = bus
        return Desired(name=f"{rule}/{ident}", request=request, extra={"rule": rule, "id": ident})

    def read(self, api: Api, want: Desired) -> Any | None:
        return find_target(api, want.extra["rule"], want.extra["id"], _bus(want.request))

    def changes(self, want: Desired, have: Any) -> list[Change]:
        return target_changes(want.request["Target"], have)

    def create(self, api: Api, want: Desired) -> dict[str, Any]:
        put_target(api, want.extra["rule"], want.request["Target"], _bus(want.request))
        return self.attributes(api, want, None)

    def update(self, api: Api, want: Desired, have: Any, changes: list[Change]) -> dict[str, Any]:
        return self.create(api, want)

    def attributes(self, api: Api, want: Desired, have: Any | None) -> dict[str, Any]:
        rule, ident = want.extra["rule"], want.extra["id"]
        return {
            "id": f"{rule}-{ident}",
            "target_id": ident,
            "rule": rule,
            "arn": want.request["Target"]["Arn"],
        }

    def delete(self, api: Api, want: Desired, have: Any) -> None:
        remove_target(api, want.extra["rule"], want.extra["id"], _bus(want.request))


KINDS: tuple[type[Kind], ...] = (EventRule, EventTarget)
