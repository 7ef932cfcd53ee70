"""Register/Deregister/DescribeJobDefinitions, and resolving a reference."""

from __future__ import annotations

import dataclasses
import re

import orjson

from shoal.domain.arns import parse_arn
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.limits import (
    MAX_JOB_DEFINITION,
    check_environment,
    check_name,
    check_payload_size,
    check_resource_requirements,
    check_retry_strategy,
    check_scheduling_priority,
    check_tags,
    check_timeout,
)
from shoal.domain.records import JobDefinition, Json
from shoal.service import pagination, views
from shoal.service.context import Context
from shoal.store.base import Transaction

_REVISIONED = re.compile(r"^(?P<name>[^:]+):(?P<rev>[0-9]+)$")
# Revisions are stored as SQLite INTEGERs (64-bit signed).
_MAX_REVISION = 2**63 - 1
_BODY_MEMBERS = (
    "parameters",
    "schedulingPriority",
    "containerProperties",
    "nodeProperties",
    "retryStrategy",
    "propagateTags",
    "timeout",
    "platformCapabilities",
    "eksProperties",
    "ecsProperties",
    "consumableResourceProperties",
)


def split_ref(ref: str) -> tuple[str, int | None]:
    """`name`, `name:rev`, or an ARN with or without `:rev` -> (name, revision)."""
    if ref.startswith("arn:"):
        parsed = parse_arn(ref)
        if parsed is None or parsed.kind != "job-definition":
            raise InvalidRequest(f"{ref} is not a valid job-definition ARN.")
        ref = parsed.rest
    m = _REVISIONED.match(ref)
    if m:
        # (int() refuses more than 4300 digits: no revision has 19.)
        digits = m.group("rev")
        if len(digits) > 18 or int(digits) > _MAX_REVISION:
            raise InvalidRequest(
                f"Revision {digits:.30} of job definition {m.group('name')} is out of range."
            )
        return m.group("name"), int(digits)
    return ref, None


def resolve_active(tx: Transaction, ref: str) -> JobDefinition:
    """The definition a SubmitJob reference means: a bare name is the latest ACTIVE."""
    name, revision = split_ref(ref)
    if revision is None:
        definition = tx.latest_active_definition(name)
    else:
        definition = tx.get_job_definition(name, revision)
    if definition is None or definition.status != "ACTIVE":
        raise NotFound(f"JobDefinition name {ref} does not exist or is not in ACTIVE status")
    return definition


_LOG_GROUP = re.compile(r"^[.\-_/#A-Za-z0-9]{1,200}$")
_STREAM_PREFIX = re.compile(r"^[^:*]{1,128}$")


def check_log_configuration(config: Json | None, where: str) -> None:
    """awslogs options name files in shoal's log store: check them up front."""
    options = (config or {}).get("options") or {}
    group = options.get("awslogs-group")
    if group is not None and not _LOG_GROUP.match(group):
        raise InvalidRequest(
            f"{where}.logConfiguration awslogs-group {group!r} must be 1 to 200 of letters, "
            "numbers and . - _ / #."
        )
    prefix = options.get("awslogs-stream-prefix")
    if prefix is not None and not _STREAM_PREFIX.match(prefix):
        raise InvalidRequest(
            f"{where}.logConfiguration awslogs-stream-prefix {prefix!r} must be 1 to 128 "
            "characters without ':' or '*'."
        )


def check_container(props: Json, where: str) -> None:
    check_log_configuration(props.get("logConfiguration"), where)
    check_environment(props.get("environment"), where)
    requirements = props.get("resourceRequirements") or []
    check_resource_requirements(requirements, where)
    kinds = {r.get("type") for r in requirements}
    for legacy, kind in (("vcpus", "VCPU"), ("memory", "MEMORY")):
        if props.get(legacy) is not None and kind in kinds:
            raise InvalidRequest(
                f"{where}: give {kind} either as resourceRequirements or as the legacy "
                f"'{legacy}' field, not both."
            )
    if props.get("vcpus") is not None and props["vcpus"] < 1:
        raise InvalidRequest(f"{where}: vcpus must be at least 1.")
    if props.get("memory") is not None and props["memory"] < 4:
        raise InvalidRequest(f"{where}: memory must be at least 4 MiB.")


def parse_node_range(text: str, num_nodes: int) -> tuple[int, int]:
    """`"a:b"`, `":b"`, `"a:"` or `"a"` -> an inclusive (first, last) node range."""
    try:
        if ":" in text:
            first_s, last_s = text.split(":", 1)
            first = int(first_s) if first_s else 0
            last = int(last_s) if last_s else num_nodes - 1
        else:
            first = last = int(text)
    except ValueError:
        raise InvalidRequest(f"targetNodes {text!r} is not a node range like '0:3'.") from None
    if not 0 <= first <= last < num_nodes:
        raise InvalidRequest(f"targetNodes {text!r} is outside the job's {num_nodes} nodes.")
    return first, last


def _check_node_properties(props: Json) -> None:
    num, main = props["numNodes"], props["mainNode"]
    if num < 1 or num > 1000:
        raise InvalidRequest(f"nodeProperties.numNodes must be between 1 and 1000; got {num}.")
    if not 0 <= main < num:
        raise InvalidRequest(f"nodeProperties.mainNode must be below numNodes ({num}).")
    groups = props["nodeRangeProperties"]
    if not 1 <= len(groups) <= 5:
        raise InvalidRequest("nodeProperties.nodeRangeProperties takes 1 to 5 node groups.")
    covered: set[int] = set()
    for i, group in enumerate(groups):
        first, last = parse_node_range(group["targetNodes"], num)
        covered.update(range(first, last + 1))
        if "container" in group:
            check_container(group["container"], f"nodeRangeProperties[{i}].container")
    if len(covered) != num:
        raise InvalidRequest("nodeRangeProperties must cover every node of the job.")


def register(ctx: Context, req: Json) -> Json:
    name = req["jobDefinitionName"]
    check_name(name, "jobDefinitionName")
    check_payload_size(len(orjson.dumps(req)), MAX_JOB_DEFINITION, "The job definition")
    tags = req.get("tags") or {}
    check_tags(tags)
    kind = req["type"]
    if kind == "container":
        given = [m for m in ("containerProperties", "ecsProperties", "eksProperties") if m in req]
        if len(given) != 1:
            raise InvalidRequest(
                "A container job definition takes exactly one of containerProperties, "
                "ecsProperties and eksProperties."
            )
        if "nodeProperties" in req:
            raise InvalidRequest("nodeProperties applies only to multinode job definitions.")
        if "containerProperties" in req:
            check_container(req["containerProperties"], "containerProperties")
    else:
        if "nodeProperties" not in req:
            raise InvalidRequest("A multinode job definition requires nodeProperties.")
        if "containerProperties" in req:
            raise InvalidRequest(
                "A multinode job definition takes its containers in nodeProperties, "
                "not containerProperties."
            )
        _check_node_properties(req["nodeProperties"])
        if "FARGATE" in (req.get("platformCapabilities") or []):
            raise InvalidRequest("Multi-node parallel jobs are not supported on Fargate.")
    check_retry_strategy(req.get("retryStrategy"))
    check_timeout(req.get("timeout"), ctx.settings.min_timeout_seconds)
    check_scheduling_priority(req.get("schedulingPriority"), "schedulingPriority")
    body = {k: req[k] for k in _BODY_MEMBERS if k in req}
    with ctx.store.transaction() as tx:
        revision = tx.allocate_revision(name)
        tx.put_job_definition(
            JobDefinition(
                name=name,
                revision=revision,
                status="ACTIVE",
                type=kind,
                body=body,
                tags=tags,
                created_at=ctx.clock.now_ms(),
            )
        )
    return {
        "jobDefinitionName": name,
        "jobDefinitionArn": ctx.arns.job_definition(name, revision),
        "revision": revision,
    }


def deregister(ctx: Context, req: Json) -> Json:
    ref = req["jobDefinition"]
    name, revision = split_ref(ref)
    if revision is None:
        raise InvalidRequest(
            f"jobDefinition {ref!r} must name a revision: use name:revision or a full ARN."
        )
    with ctx.store.transaction() as tx:
        definition = tx.get_job_definition(name, revision)
        if definition is None:
            raise NotFound(f"JobDefinition {ref} does not exist.")
        if definition.status != "INACTIVE":
            tx.put_job_definition(dataclasses.replace(definition, status="INACTIVE"))
    return {}


def describe(ctx: Context, req: Json) -> Json:
    refs = req.get("jobDefinitions")
    name = req.get("jobDefinitionName")
    status = req.get("status")
    if status is not None and status not in ("ACTIVE", "INACTIVE"):
        raise InvalidRequest(f"status must be ACTIVE or INACTIVE; got {status!r}.")
    with ctx.store.read() as tx:
        if refs:
            if name is not None or status is not None:
                raise InvalidRequest(
                    "jobDefinitions cannot be combined with jobDefinitionName or status."
                )
            if len(refs) > 100:
                raise InvalidRequest("jobDefinitions takes at most 100 entries.")
            found: list[JobDefinition] = []
            for ref in dict.fromkeys(refs):
                ref_name, revision = split_ref(ref)
                if revision is None:
                    found.extend(
                        tx.list_job_definitions(name=ref_name, status=None, after=None, limit=10**6)
                    )
                elif definition := tx.get_job_definition(ref_name, revision):
                    found.append(definition)
            return {"jobDefinitions": [views.job_definition(d, ctx.arns) for d in found]}
        limit = pagination.page_size(req.get("maxResults"), 100, 100)
        after = pagination.decode_name_revision("DescribeJobDefinitions", req.get("nextToken"))
        batch = tx.list_job_definitions(name=name, status=status, after=after, limit=limit)
    out: Json = {"jobDefinitions": [views.job_definition(d, ctx.arns) for d in batch]}
    if len(batch) == limit:
        last = batch[-1]
        out["nextToken"] = pagination.encode("DescribeJobDefinitions", [last.name, last.revision])
    return out
