"""The dashboard's actions, through the same use-cases as the API:
CancelJob, TerminateJob, and resubmit (SubmitJob again with the job's queue,
definition revision, parameters and overrides)."""

from __future__ import annotations

import re
from typing import Any

import orjson

from shoal.domain.container import effective_container
from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.records import Json
from shoal.service import job_definitions, jobs, submit
from shoal.service.context import Context
from shoal.web.reads import describe_job

_NONCE = re.compile(r"^[0-9a-f]{32}$")


def cancel(ctx: Context, job_id: str, reason: str) -> None:
    jobs.cancel(ctx, {"jobId": job_id, "reason": reason})


def terminate(ctx: Context, job_id: str, reason: str) -> None:
    jobs.terminate(ctx, {"jobId": job_id, "reason": reason})


def resubmit(ctx: Context, job_id: str, nonce: str) -> str:
    """Submit the job again; the new job's id.

    The form's nonce becomes SubmitJob's idempotency token: a double click
    or a re-sent form finds the job the first request made."""
    detail = describe_job(ctx, job_id)
    if detail is None:
        raise NotFound(f"Job {job_id} not found.")
    req = resubmit_request(ctx, detail)
    token = f"shoal-ui-resubmit-{nonce}" if _NONCE.match(nonce) else None
    answer = submit.submit(ctx, req, payload_size=len(orjson.dumps(req)), token=token)
    return str(answer["jobId"])


def resubmit_request(ctx: Context, detail: Json) -> Json:
    """A SubmitJob request that makes the same job as `detail` did: what
    differs from the definition is passed as overrides. Dependencies are not
    carried over (they have run); the array size and share are."""
    job_id = detail["jobId"]
    if ":" in job_id or "#" in job_id:
        raise InvalidRequest(
            "An array child or a node cannot be resubmitted alone: resubmit its parent job."
        )
    found = job_definitions.describe(ctx, {"jobDefinitions": [detail["jobDefinition"]]})
    if not found["jobDefinitions"]:
        raise NotFound(f"Job definition {detail['jobDefinition']} is no longer stored.")
    definition: Json = found["jobDefinitions"][0]
    parameters: dict[str, str] = detail.get("parameters") or {}
    req: Json = {
        "jobName": detail["jobName"],
        "jobQueue": detail["jobQueue"],
        "jobDefinition": detail["jobDefinition"],
        "parameters": parameters,
    }
    props = definition.get("containerProperties")
    if props is not None and detail.get("container"):
        overrides = container_overrides(props, detail["container"], parameters)
        if overrides:
            req["containerOverrides"] = overrides
    node_overrides = _node_overrides(definition, detail, parameters)
    if node_overrides:
        req["nodeOverrides"] = node_overrides
    for member, override in (
        ("retryStrategy", "retryStrategy"),
        ("timeout", "timeout"),
        ("schedulingPriority", "schedulingPriorityOverride"),
        ("propagateTags", "propagateTags"),
    ):
        value = detail.get(member)
        if value is not None and value != definition.get(
            member, False if override == "propagateTags" else None
        ):
            req[override] = value
    size = (detail.get("arrayProperties") or {}).get("size")
    if size is not None:
        req["arrayProperties"] = {"size": size}
    if detail.get("shareIdentifier") is not None:
        req["shareIdentifier"] = detail["shareIdentifier"]
    if detail.get("tags"):
        req["tags"] = detail["tags"]
    return req


def container_overrides(props: Json, effective: Json, parameters: dict[str, str]) -> Json:
    """containerOverrides that turn `props` into the `effective` container."""
    base = effective_container(props, None, parameters)
    out: Json = {}
    if effective.get("command") and effective.get("command") != base.get("command"):
        out["command"] = list(effective["command"])
    env = _by(effective.get("environment"), "name")
    base_env = _by(base.get("environment"), "name")
    if env != base_env:
        out["environment"] = [e for name, e in env.items() if base_env.get(name) != e]
    needs = _by(effective.get("resourceRequirements"), "type")
    base_needs = _by(base.get("resourceRequirements"), "type")
    if needs != base_needs:
        out["resourceRequirements"] = [r for t, r in needs.items() if base_needs.get(t) != r]
    for legacy in ("vcpus", "memory", "instanceType"):
        if effective.get(legacy) is not None and effective.get(legacy) != base.get(legacy):
            out[legacy] = effective[legacy]
    return out


def _by(items: Any, key: str) -> dict[str, Json]:
    return {str(item.get(key)): dict(item) for item in items or []}


def _node_overrides(definition: Json, detail: Json, parameters: dict[str, str]) -> Json:
    props, effective = definition.get("nodeProperties"), detail.get("nodeProperties")
    if not props or not effective:
        return {}
    out: Json = {}
    if effective.get("numNodes") != props.get("numNodes"):
        out["numNodes"] = effective["numNodes"]
    groups: list[Json] = []
    pairs = zip(
        props.get("nodeRangeProperties") or [],
        effective.get("nodeRangeProperties") or [],
        strict=False,
    )
    for group, used in pairs:
        if group.get("container") and used.get("container"):
            overrides = container_overrides(group["container"], used["container"], parameters)
            if overrides:
                groups.append(
                    {"targetNodes": group["targetNodes"], "containerOverrides": overrides}
                )
    if groups:
        out["nodePropertyOverrides"] = groups
    return out
