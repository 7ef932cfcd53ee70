"""EventBridge use-cases: scheduled rules and their Batch targets.

shoal keeps rules on the default event bus. A rule with a schedule fires at
the times its expression names; each Batch target (a job queue ARN with
`BatchParameters`) then submits a job, as EventBridge does. Rules with only
an event pattern, and targets of other services, are stored and described
but never fire: shoal emits no events and reaches no other service.

The engine decides when a rule is due (engine/schedules.py); `fire` here
submits what its targets describe, with a submission token per rule, target
and scheduled time, so firing a time again (another engine, a crash before
the rule advanced) finds the job submitted the first time instead of making
a second one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import orjson

from shoal.domain.arns import parse_arn
from shoal.domain.errors import (
    DomainError,
    InvalidEventPattern,
    InvalidRequest,
    LimitExceeded,
    NotFound,
)
from shoal.domain.records import EventRule, Json
from shoal.domain.schedules import parse_schedule
from shoal.service import pagination, submit
from shoal.service.context import Context

log = logging.getLogger("shoal.service.events")

_NAME = re.compile(r"^[.\-_A-Za-z0-9]{1,64}$")
_MAX_TARGETS = 5  # per rule, as AWS allows
_MAX_PER_CALL = 10  # targets per PutTargets / ids per RemoveTargets
_MAX_INPUT_DEPTH = 64  # nesting of a target's Input (ContainerOverrides needs 4)


def rule_arn(ctx: Context, name: str) -> str:
    return f"arn:aws:events:{ctx.settings.region}:{ctx.settings.account_id}:rule/{name}"


def _check_bus(req: Json) -> None:
    bus = req.get("EventBusName")
    if bus is not None and bus != "default" and not str(bus).endswith(":event-bus/default"):
        raise NotFound(f"Event bus {bus} does not exist.")


def _check_name(name: str, what: str = "Name") -> None:
    if not _NAME.match(name):
        raise InvalidRequest(
            f"{what} {name!r} is not valid: 1 to 64 characters of letters, digits, '.', '-', '_'."
        )


def _not_found(name: str) -> NotFound:
    return NotFound(f"Rule {name} does not exist on EventBus default.")


def _get(ctx: Context, tx: Any, name: str) -> EventRule:
    rule: EventRule | None = tx.get_rule(name)
    if rule is None:
        raise _not_found(name)
    return rule


def next_fire(rule: EventRule, after_ms: int) -> int | None:
    """When an enabled schedule rule fires next after `after_ms` (None: never)."""
    if rule.state == "DISABLED" or not rule.schedule_expression:
        return None
    return parse_schedule(rule.schedule_expression).next_after(after_ms, rule.anchor_ms)


# -- rules ---------------------------------------------------------------------
def put_rule(ctx: Context, req: Json) -> Json:
    name = req["Name"]
    _check_name(name)
    _check_bus(req)
    schedule = req.get("ScheduleExpression")
    pattern = req.get("EventPattern")
    if not schedule and not pattern:
        raise InvalidRequest("Parameter(s) ScheduleExpression or EventPattern must be specified.")
    if schedule is not None:
        if len(schedule) > 256:
            raise InvalidRequest("ScheduleExpression is longer than 256 characters.")
        parse_schedule(schedule)  # raises with what is wrong
    if pattern is not None:
        try:
            parsed = orjson.loads(pattern)
        except orjson.JSONDecodeError as e:
            raise InvalidEventPattern(f"Event pattern is not valid. Reason: {e}") from None
        if not isinstance(parsed, dict):
            raise InvalidEventPattern("Event pattern is not valid. Reason: not a JSON object.")
    state = req.get("State", "ENABLED")
    if state not in ("ENABLED", "DISABLED", "ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS"):
        raise InvalidRequest(f"State {state!r} is not one of ENABLED, DISABLED.")
    state = "DISABLED" if state == "DISABLED" else "ENABLED"
    tags = {t["Key"]: t["Value"] for t in req.get("Tags") or []}
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        old: EventRule | None = tx.get_rule(name)
        # PutRule replaces the rule (omitted members are reset); its targets
        # stay, and tags count only when it is created.
        rule = EventRule(
            name=name,
            schedule_expression=schedule,
            event_pattern=pattern,
            state=state,
            description=req.get("Description"),
            role_arn=req.get("RoleArn"),
            tags=old.tags if old is not None else tags,
            targets=old.targets if old is not None else (),
            created_at=old.created_at if old is not None else now,
            anchor_ms=now,
        )
        same_timing = (
            old is not None
            and old.schedule_expression == schedule
            and old.state == state
            and old.next_fire_ms is not None
        )
        if same_timing and old is not None:
            # Put again unchanged (a re-applied setup): the next time stands.
            rule = dataclasses.replace(rule, anchor_ms=old.anchor_ms, next_fire_ms=old.next_fire_ms)
        else:
            rule = dataclasses.replace(rule, next_fire_ms=next_fire(rule, now))
        tx.put_rule(rule)
    ctx.notifier.wake()
    return {"RuleArn": rule_arn(ctx, name)}


def describe_rule(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    with ctx.store.read() as tx:
        rule = _get(ctx, tx, req["Name"])
    return _rule_view(ctx, rule)


def _rule_view(ctx: Context, rule: EventRule) -> Json:
    view: Json = {
        "Name": rule.name,
        "Arn": rule_arn(ctx, rule.name),
        "State": rule.state,
        "EventBusName": "default",
    }
    optional = {
        "ScheduleExpression": rule.schedule_expression,
        "EventPattern": rule.event_pattern,
        "Description": rule.description,
        "RoleArn": rule.role_arn,
    }
    view.update({k: v for k, v in optional.items() if v is not None})
    return view


def list_rules(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    prefix = req.get("NamePrefix") or ""
    limit = pagination.page_size(req.get("Limit"), 100, 100)
    after = pagination.decode_name("ListRules", req.get("NextToken"))
    rules: list[EventRule] = []
    with ctx.store.read() as tx:
        cursor = after
        while len(rules) <= limit:
            page = tx.list_rules(cursor, 200)
            if not page:
                break
            rules += [rule for rule in page if rule.name.startswith(prefix)]
            last = page[-1].name
            if prefix and last > prefix and not last.startswith(prefix):
                break  # in name order: past every name with the prefix
            cursor = last
    out: Json = {"Rules": [_rule_view(ctx, r) for r in rules[:limit]]}
    if len(rules) > limit:
        out["NextToken"] = pagination.encode("ListRules", rules[limit - 1].name)
    return out


def delete_rule(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    with ctx.store.transaction() as tx:
        rule: EventRule | None = tx.get_rule(req["Name"])
        if rule is None:
            return {}  # as AWS: deleting what is not there succeeds
        if rule.targets:
            raise InvalidRequest("Rule can't be deleted since it has targets.")
        tx.delete_rule(rule.name)
    return {}


def _set_state(ctx: Context, req: Json, state: str) -> Json:
    _check_bus(req)
    now = ctx.clock.now_ms()
    with ctx.store.transaction() as tx:
        rule = _get(ctx, tx, req["Name"])
        if rule.state == state:
            return {}
        rule = dataclasses.replace(rule, state=state, anchor_ms=now)
        tx.put_rule(dataclasses.replace(rule, next_fire_ms=next_fire(rule, now)))
    ctx.notifier.wake()
    return {}


def enable_rule(ctx: Context, req: Json) -> Json:
    return _set_state(ctx, req, "ENABLED")


def disable_rule(ctx: Context, req: Json) -> Json:
    return _set_state(ctx, req, "DISABLED")


# -- targets -------------------------------------------------------------------
def _check_target(target: Json) -> None:
    _check_name(target["Id"], "Target Id")
    text = target.get("Input")
    if text is not None:
        if len(text) > 8192:
            raise InvalidRequest(f"Input of target {target['Id']} is longer than 8192 characters.")
        try:
            document = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise InvalidRequest(f"Input of target {target['Id']} is not valid JSON.") from None
        if _depth(document) > _MAX_INPUT_DEPTH:
            # Firing walks the input recursively (`submit_request`): a deeper one
            # would raise RecursionError there, at every tick, for every rule due.
            raise InvalidRequest(
                f"Input of target {target['Id']} is nested more than {_MAX_INPUT_DEPTH} levels "
                "deep."
            )
    parsed = parse_arn(target["Arn"])
    if parsed is not None and parsed.kind == "job-queue" and not target.get("BatchParameters"):
        raise InvalidRequest(
            f"Parameter BatchParameters must be specified for target {target['Id']}: its Arn "
            "is a job queue."
        )
    size = (target.get("BatchParameters") or {}).get("ArrayProperties", {}).get("Size")
    if size is not None and not 2 <= size <= 10_000:
        raise InvalidRequest(
            f"BatchParameters.ArrayProperties.Size of target {target['Id']} must be between 2 "
            "and 10000."
        )
    attempts = (target.get("BatchParameters") or {}).get("RetryStrategy", {}).get("Attempts")
    if attempts is not None and not 1 <= attempts <= 10:
        raise InvalidRequest(
            f"BatchParameters.RetryStrategy.Attempts of target {target['Id']} must be between "
            "1 and 10."
        )


def _depth(document: Any) -> int:
    """How deeply a JSON document nests (a scalar: 0), without recursion."""
    deepest, level = 0, [(document, 0)]
    while level:
        value, depth = level.pop()
        if isinstance(value, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            level += [(v, depth) for v in (value.values() if isinstance(value, dict) else value)]
    return deepest


def put_targets(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    targets: list[Json] = req["Targets"]
    if not 1 <= len(targets) <= _MAX_PER_CALL:
        raise InvalidRequest(f"Targets must have 1 to {_MAX_PER_CALL} entries.")
    for target in targets:
        _check_target(target)
    with ctx.store.transaction() as tx:
        rule = _get(ctx, tx, req["Rule"])
        by_id = {t["Id"]: t for t in rule.targets}
        by_id.update({t["Id"]: t for t in targets})
        if len(by_id) > _MAX_TARGETS:
            raise LimitExceeded(
                f"Rule {rule.name} would have {len(by_id)} targets; a rule can have at most "
                f"{_MAX_TARGETS}."
            )
        tx.put_rule(dataclasses.replace(rule, targets=tuple(by_id[k] for k in sorted(by_id))))
    return {"FailedEntryCount": 0, "FailedEntries": []}


def remove_targets(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    ids = set(req["Ids"])
    if not 1 <= len(ids) <= 100:
        raise InvalidRequest("Ids must have 1 to 100 entries.")
    with ctx.store.transaction() as tx:
        rule = _get(ctx, tx, req["Rule"])
        kept = tuple(t for t in rule.targets if t["Id"] not in ids)
        if kept != rule.targets:
            tx.put_rule(dataclasses.replace(rule, targets=kept))
    return {"FailedEntryCount": 0, "FailedEntries": []}


def list_targets_by_rule(ctx: Context, req: Json) -> Json:
    _check_bus(req)
    limit = pagination.page_size(req.get("Limit"), 100, 100)
    after = pagination.decode_name("ListTargetsByRule", req.get("NextToken"))
    with ctx.store.read() as tx:
        rule = _get(ctx, tx, req["Rule"])
    targets = [t for t in rule.targets if after is None or t["Id"] > after]
    out: Json = {"Targets": targets[:limit]}
    if len(targets) > limit:
        out["NextToken"] = pagination.encode("ListTargetsByRule", targets[limit - 1]["Id"])
    return out


# -- tags ----------------------------------------------------------------------
def _rule_of_arn(ctx: Context, arn: str) -> str:
    prefix = rule_arn(ctx, "")
    if not arn.startswith(prefix) or "/" in arn[len(prefix) :]:
        raise NotFound(f"Resource {arn} does not exist.")
    return arn[len(prefix) :]


def tag_resource(ctx: Context, req: Json) -> Json:
    name = _rule_of_arn(ctx, req["ResourceARN"])
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    with ctx.store.transaction() as tx:
        rule = _get(ctx, tx, name)
        if len({**rule.tags, **tags}) > 50:
            raise InvalidRequest("A rule can have at most 50 tags.")
        tx.put_rule(dataclasses.replace(rule, tags={**rule.tags, **tags}))
    return {}


def untag_resource(ctx: Context, req: Json) -> Json:
    name = _rule_of_arn(ctx, req["ResourceARN"])
    with ctx.store.transaction() as tx:
        rule = _get(ctx, tx, name)
        tags = {k: v for k, v in rule.tags.items() if k not in set(req["TagKeys"])}
        tx.put_rule(dataclasses.replace(rule, tags=tags))
    return {}


def list_tags_for_resource(ctx: Context, req: Json) -> Json:
    name = _rule_of_arn(ctx, req["ResourceARN"])
    with ctx.store.read() as tx:
        rule = _get(ctx, tx, name)
    return {"Tags": [{"Key": k, "Value": v} for k, v in sorted(rule.tags.items())]}


# -- firing --------------------------------------------------------------------
def _camel(value: Any) -> Any:
    """EventBridge's PascalCase input members as Batch's camelCase ones."""
    if isinstance(value, dict):
        return {k[:1].lower() + k[1:]: _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(v) for v in value]
    return value


def submit_request(target: Json) -> Json | None:
    """The SubmitJob a Batch target makes (None for a target of another kind)."""
    parsed = parse_arn(target["Arn"])
    params = target.get("BatchParameters")
    if parsed is None or parsed.kind != "job-queue" or not params:
        return None
    req: Json = {
        "jobQueue": target["Arn"],
        "jobDefinition": params["JobDefinition"],
        "jobName": params["JobName"],
    }
    size = (params.get("ArrayProperties") or {}).get("Size")
    if size is not None:
        req["arrayProperties"] = {"size": size}
    attempts = (params.get("RetryStrategy") or {}).get("Attempts")
    if attempts is not None:
        req["retryStrategy"] = {"attempts": attempts}
    data = orjson.loads(target["Input"]) if target.get("Input") else {}
    if isinstance(data, dict):
        if isinstance(data.get("Parameters"), dict):
            req["parameters"] = {str(k): str(v) for k, v in data["Parameters"].items()}
        if isinstance(data.get("ContainerOverrides"), dict):
            req["containerOverrides"] = _camel(data["ContainerOverrides"])
    return req


def fire(ctx: Context, rule: EventRule, fire_ms: int) -> list[str]:
    """Submit the jobs of the rule's Batch targets for the time `fire_ms`;
    the ids of the jobs (made now or by an earlier firing of that time). A
    target whose job cannot be submitted (its queue disabled or deleted, a
    definition gone) is logged and skipped, as EventBridge drops an event
    it cannot deliver."""
    job_ids: list[str] = []
    for target in rule.targets:
        req = submit_request(target)
        if req is None:
            continue
        token = f"events:{rule.name}:{target['Id']}:{fire_ms}"
        try:
            job_ids.append(submit.submit(ctx, req, payload_size=0, token=token)["jobId"])
        except DomainError as e:
            log.warning(
                "rule %s, target %s: the job for %d was not submitted: %s",
                rule.name,
                target["Id"],
                fire_ms,
                e.message,
            )
    return job_ids
