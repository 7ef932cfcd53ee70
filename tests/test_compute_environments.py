"""Create/Update/Delete/DescribeComputeEnvironments over the wire."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import client_error, make_ce, make_queue, poll, start_server, walk_pages

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"


def ce_arn(name: str) -> str:
    return f"{ARN_PREFIX}:compute-environment/{name}"


def describe_one(batch: Any, ref: str) -> dict[str, Any] | None:
    found = batch.describe_compute_environments(computeEnvironments=[ref])["computeEnvironments"]
    assert len(found) <= 1
    return found[0] if found else None


def all_names(batch: Any) -> list[str]:
    pages = batch.get_paginator("describe_compute_environments").paginate()
    return [ce["computeEnvironmentName"] for page in pages for ce in page["computeEnvironments"]]


# -- create -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["EC2", "SPOT"])
def test_create_managed_ec2_family(batch: Any, unique: str, kind: str) -> None:
    name = f"{unique}-{kind.lower()}"
    resources: dict[str, Any] = {
        "type": kind,
        "minvCpus": 0,
        "maxvCpus": 64,
        "desiredvCpus": 2,
        "instanceTypes": ["optimal"],
        "subnets": ["subnet-1"],
        "securityGroupIds": ["sg-1"],
        "allocationStrategy": "BEST_FIT_PROGRESSIVE",
    }
    if kind == "SPOT":
        resources["bidPercentage"] = 60
    out = batch.create_compute_environment(
        computeEnvironmentName=name,
        type="MANAGED",
        computeResources=resources,
        serviceRole="arn:aws:iam::123456789012:role/batch",
    )
    assert out["computeEnvironmentName"] == name
    assert out["computeEnvironmentArn"] == ce_arn(name)

    ce = describe_one(batch, name)
    assert ce is not None
    assert ce["computeEnvironmentName"] == name
    assert ce["computeEnvironmentArn"] == ce_arn(name)
    assert ce["type"] == "MANAGED"
    assert ce["state"] == "ENABLED"
    assert ce["status"] == "VALID"
    assert ce["computeResources"] == resources
    assert ce["serviceRole"] == "arn:aws:iam::123456789012:role/batch"
    assert ce["ecsClusterArn"].startswith("arn:aws:ecs:us-east-1:123456789012:cluster/")
    assert ce["containerOrchestrationType"] == "ECS"


@pytest.mark.parametrize("kind", ["FARGATE", "FARGATE_SPOT"])
def test_create_managed_fargate(batch: Any, unique: str, kind: str) -> None:
    name = f"{unique}-{kind.lower()}"
    arn = make_ce(batch, name, kind=kind, max_vcpus=8)
    assert arn == ce_arn(name)
    ce = describe_one(batch, name)
    assert ce is not None
    assert ce["computeResources"] == {"type": kind, "maxvCpus": 8}
    assert ce["status"] == "VALID"
    assert ce["state"] == "ENABLED"


@pytest.mark.parametrize(
    ("member", "value"),
    [("instanceTypes", ["m5.large"]), ("minvCpus", 2), ("desiredvCpus", 2)],
)
def test_fargate_rejects_ec2_only_members(batch: Any, unique: str, member: str, value: Any) -> None:
    resources: dict[str, Any] = {"type": "FARGATE", "maxvCpus": 8, member: value}
    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="MANAGED",
        computeResources=resources,
    )
    assert member in message
    assert "FARGATE" in message
    assert describe_one(batch, unique) is None


def test_create_unmanaged(batch: Any, unique: str) -> None:
    out = batch.create_compute_environment(
        computeEnvironmentName=unique, type="UNMANAGED", unmanagedvCpus=12
    )
    assert out == {
        "computeEnvironmentName": unique,
        "computeEnvironmentArn": ce_arn(unique),
        "ResponseMetadata": out["ResponseMetadata"],
    }
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["type"] == "UNMANAGED"
    assert ce["unmanagedvCpus"] == 12
    assert ce["status"] == "VALID"
    assert "computeResources" not in ce


def test_unmanaged_rejects_compute_resources(batch: Any, unique: str) -> None:
    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="UNMANAGED",
        computeResources={"type": "EC2", "maxvCpus": 4},
    )
    assert "UNMANAGED" in message
    assert "computeResources" in message
    assert describe_one(batch, unique) is None


def test_managed_rejects_unmanaged_vcpus(batch: Any, unique: str) -> None:
    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="MANAGED",
        unmanagedvCpus=4,
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 4},
    )
    assert "unmanagedvCpus" in message
    assert describe_one(batch, unique) is None


def test_managed_requires_compute_resources(batch: Any, unique: str) -> None:
    message = client_error(
        batch.create_compute_environment, computeEnvironmentName=unique, type="MANAGED"
    )
    assert "MANAGED" in message
    assert "computeResources" in message
    assert describe_one(batch, unique) is None


@pytest.mark.parametrize(
    ("resources", "words"),
    [
        ({"type": "EC2", "minvCpus": 8, "maxvCpus": 4}, ["minvCpus", "8"]),
        ({"type": "EC2", "minvCpus": 0, "maxvCpus": -1}, ["maxvCpus", "-1"]),
        ({"type": "EC2", "minvCpus": 0, "maxvCpus": 4, "desiredvCpus": 9}, ["desiredvCpus"]),
        ({"type": "SPOT", "minvCpus": 0, "maxvCpus": 4, "bidPercentage": 101}, ["bidPercentage"]),
    ],
)
def test_invalid_vcpu_bounds(
    batch: Any, unique: str, resources: dict[str, Any], words: list[str]
) -> None:
    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="MANAGED",
        computeResources=resources,
    )
    for word in words:
        assert word in message
    assert describe_one(batch, unique) is None


def test_duplicate_name_rejected(batch: Any, unique: str) -> None:
    make_ce(batch, unique, max_vcpus=4)
    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="UNMANAGED",
    )
    assert "already exists" in message
    assert unique in message
    # The original is untouched.
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["type"] == "MANAGED"
    assert ce["computeResources"]["maxvCpus"] == 4


@pytest.mark.parametrize(
    "make_name",
    [
        lambda u: f"{u} space",
        lambda u: f"{u}.dot",
        lambda u: f"{u}/slash",
        lambda u: f"{u}:colon",
        lambda u: f"{u}é",
        lambda u: u + "x" * 129,
        lambda u: "",
    ],
    ids=["space", "dot", "slash", "colon", "non-ascii", "129-chars", "empty"],
)
def test_invalid_name_rejected(batch: Any, unique: str, make_name: Callable[[str], str]) -> None:
    name = make_name(unique)
    message = client_error(
        batch.create_compute_environment, computeEnvironmentName=name, type="UNMANAGED"
    )
    assert "computeEnvironmentName" in message
    assert "letters, numbers, hyphens (-) and underscores (_)" in message
    assert not [n for n in all_names(batch) if n.startswith(unique)]


def test_name_with_underscores_hyphens_and_128_chars(batch: Any, unique: str) -> None:
    name = (f"{unique}_A-b_" + "z" * 128)[:128]
    assert len(name) == 128
    assert make_ce(batch, name) == ce_arn(name)
    ce = describe_one(batch, ce_arn(name))
    assert ce is not None
    assert ce["computeEnvironmentName"] == name


# -- describe -----------------------------------------------------------------


def test_describe_by_name_arn_and_unknown_omitted(batch: Any, unique: str) -> None:
    a = make_ce(batch, f"{unique}-a")
    make_ce(batch, f"{unique}-b", kind="FARGATE")
    found = batch.describe_compute_environments(
        computeEnvironments=[f"{unique}-b", a, f"{unique}-missing", ce_arn(f"{unique}-nope")]
    )["computeEnvironments"]
    assert sorted((ce["computeEnvironmentName"], ce["computeEnvironmentArn"]) for ce in found) == [
        (f"{unique}-a", a),
        (f"{unique}-b", ce_arn(f"{unique}-b")),
    ]

    nothing = batch.describe_compute_environments(computeEnvironments=[f"{unique}-missing"])
    assert nothing["computeEnvironments"] == []
    assert "nextToken" not in nothing


def test_describe_by_arn_of_another_kind_rejected(batch: Any, unique: str) -> None:
    message = client_error(
        batch.describe_compute_environments,
        computeEnvironments=[f"{ARN_PREFIX}:job-queue/{unique}"],
    )
    assert "compute-environment" in message


def test_describe_more_than_100_rejected(batch: Any, unique: str) -> None:
    message = client_error(
        batch.describe_compute_environments,
        computeEnvironments=[f"{unique}-{i}" for i in range(101)],
    )
    assert "100" in message


def test_pagination_across_pages(batch: Any, unique: str) -> None:
    mine = [f"{unique}-p{i}" for i in range(7)]
    for name in mine:
        make_ce(batch, name, kind="FARGATE", max_vcpus=4)

    items, tokens = walk_pages(batch.describe_compute_environments, "computeEnvironments", 2)
    seen = [ce["computeEnvironmentName"] for ce in items]
    assert len(tokens) >= 3  # at least four pages for seven environments
    assert [name for name in seen if name.startswith(unique)] == mine
    assert len(seen) == len(set(seen))

    # botocore's paginator walks the same list.
    pages = batch.get_paginator("describe_compute_environments").paginate(
        PaginationConfig={"PageSize": 3}
    )
    names = [ce["computeEnvironmentName"] for page in pages for ce in page["computeEnvironments"]]
    assert [name for name in names if name.startswith(unique)] == mine


@pytest.mark.parametrize("max_results", [0, 101])
def test_max_results_out_of_range(batch: Any, max_results: int) -> None:
    message = client_error(batch.describe_compute_environments, maxResults=max_results)
    assert "maxResults" in message
    assert str(max_results) in message


def test_foreign_next_token_rejected(batch: Any, unique: str) -> None:
    make_ce(batch, f"{unique}-1", kind="FARGATE")
    make_ce(batch, f"{unique}-2", kind="FARGATE")
    token = batch.describe_compute_environments(maxResults=1)["nextToken"]
    message = client_error(batch.describe_job_queues, nextToken=token)
    assert "nextToken" in message
    message = client_error(batch.describe_compute_environments, nextToken="not-a-token")
    assert "nextToken" in message


# -- update -------------------------------------------------------------------


def test_update_state_and_compute_resources(batch: Any, unique: str) -> None:
    make_ce(batch, unique, max_vcpus=16)
    out = batch.update_compute_environment(
        computeEnvironment=unique,
        state="DISABLED",
        computeResources={"maxvCpus": 32, "desiredvCpus": 4},
    )
    assert out["computeEnvironmentName"] == unique
    assert out["computeEnvironmentArn"] == ce_arn(unique)
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["state"] == "DISABLED"
    assert ce["status"] == "VALID"  # the shared server settles at once
    assert ce["computeResources"] == {
        "type": "EC2",
        "minvCpus": 0,
        "maxvCpus": 32,
        "desiredvCpus": 4,
    }

    # By ARN, back to ENABLED; computeResources untouched.
    batch.update_compute_environment(computeEnvironment=ce_arn(unique), state="ENABLED")
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["state"] == "ENABLED"
    assert ce["computeResources"]["maxvCpus"] == 32


def test_update_rejects_bad_bounds_and_keeps_old_values(batch: Any, unique: str) -> None:
    make_ce(batch, unique, max_vcpus=16)
    message = client_error(
        batch.update_compute_environment,
        computeEnvironment=unique,
        computeResources={"minvCpus": 20},
    )
    assert "minvCpus" in message
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["computeResources"] == {"type": "EC2", "minvCpus": 0, "maxvCpus": 16}
    assert ce["state"] == "ENABLED"


def test_update_unmanaged(batch: Any, unique: str) -> None:
    batch.create_compute_environment(computeEnvironmentName=unique, type="UNMANAGED")
    batch.update_compute_environment(computeEnvironment=unique, unmanagedvCpus=6)
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["unmanagedvCpus"] == 6
    message = client_error(
        batch.update_compute_environment,
        computeEnvironment=unique,
        computeResources={"maxvCpus": 8},
    )
    assert "UNMANAGED" in message


def test_update_unknown_rejected(batch: Any, unique: str) -> None:
    message = client_error(
        batch.update_compute_environment, computeEnvironment=unique, state="DISABLED"
    )
    assert unique in message
    assert "does not exist" in message


# -- delete -------------------------------------------------------------------


def test_delete_requires_disabled(batch: Any, unique: str) -> None:
    make_ce(batch, unique)
    message = client_error(batch.delete_compute_environment, computeEnvironment=unique)
    assert "DISABLED" in message
    assert unique in message
    assert describe_one(batch, unique) is not None


def test_delete_requires_detached_from_queues(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    other = make_ce(batch, f"{unique}-other")
    make_queue(batch, f"{unique}-q", [ce])
    batch.update_compute_environment(computeEnvironment=ce, state="DISABLED")
    message = client_error(batch.delete_compute_environment, computeEnvironment=ce)
    assert f"{unique}-q" in message
    assert describe_one(batch, ce) is not None

    # Detach: point the queue at another environment, then the delete works.
    batch.update_job_queue(
        jobQueue=f"{unique}-q", computeEnvironmentOrder=[{"order": 1, "computeEnvironment": other}]
    )
    batch.delete_compute_environment(computeEnvironment=ce)
    assert describe_one(batch, ce) is None


def test_delete_then_gone_and_name_reusable(batch: Any, unique: str) -> None:
    make_ce(batch, unique)
    batch.update_compute_environment(computeEnvironment=unique, state="DISABLED")
    out = batch.delete_compute_environment(computeEnvironment=ce_arn(unique))
    assert set(out) == {"ResponseMetadata"}
    assert describe_one(batch, unique) is None
    assert unique not in all_names(batch)

    message = client_error(batch.delete_compute_environment, computeEnvironment=unique)
    assert "does not exist" in message
    message = client_error(
        batch.update_compute_environment, computeEnvironment=unique, state="ENABLED"
    )
    assert "does not exist" in message

    # The name is free again.
    make_ce(batch, unique, kind="FARGATE")
    ce = describe_one(batch, unique)
    assert ce is not None
    assert ce["computeResources"]["type"] == "FARGATE"


# -- asynchronous status, with a server that takes its time -------------------


def test_status_transitions_with_settle_delay(tmp_path: Path, unique: str) -> None:
    server = start_server(tmp_path, "--settle-delay-ms", "600")
    try:
        batch = server.client()

        def status() -> str | None:
            ce = describe_one(batch, unique)
            return None if ce is None else str(ce["status"])

        started = time.monotonic()
        make_ce(batch, unique)
        ce = describe_one(batch, unique)
        assert ce is not None
        assert ce["status"] == "CREATING"
        assert ce["state"] == "ENABLED"

        # A queue cannot use an environment that is not VALID yet.
        message = client_error(
            batch.create_job_queue,
            jobQueueName=f"{unique}-q",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": unique}],
        )
        assert "CREATING" in message
        assert "VALID" in message

        assert poll(status, lambda s: s != "CREATING") == "VALID"
        assert time.monotonic() - started >= 0.5

        # Update: UPDATING, then VALID again.
        batch.update_compute_environment(
            computeEnvironment=unique, state="DISABLED", computeResources={"maxvCpus": 4}
        )
        ce = describe_one(batch, unique)
        assert ce is not None
        assert ce["status"] == "UPDATING"
        assert ce["state"] == "DISABLED"
        assert ce["computeResources"]["maxvCpus"] == 4
        assert poll(status, lambda s: s != "UPDATING") == "VALID"

        # Delete: DELETING, then it disappears.
        batch.delete_compute_environment(computeEnvironment=unique)
        ce = describe_one(batch, unique)
        assert ce is not None
        assert ce["status"] == "DELETING"
        message = client_error(
            batch.update_compute_environment, computeEnvironment=unique, state="ENABLED"
        )
        assert "being deleted" in message
        assert poll(status, lambda s: s != "DELETING") is None
        assert unique not in all_names(batch)
    finally:
        server.stop()
