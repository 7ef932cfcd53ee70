"""Create/Update/Delete/Describe/ListSchedulingPolicies over the wire."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Server, client_error, make_ce, make_queue, walk_pages

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"

POLICY: dict[str, Any] = {
    "shareDecaySeconds": 3600,
    "computeReservation": 25,
    "shareDistribution": [
        {"shareIdentifier": "blue", "weightFactor": 0.5},
        {"shareIdentifier": "green*", "weightFactor": 2.0},
    ],
}


def policy_arn(name: str) -> str:
    return f"{ARN_PREFIX}:scheduling-policy/{name}"


def describe(batch: Any, *arns: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = batch.describe_scheduling_policies(arns=list(arns))[
        "schedulingPolicies"
    ]
    return found


def listed_arns(batch: Any) -> list[str]:
    pages = batch.get_paginator("list_scheduling_policies").paginate()
    return [p["arn"] for page in pages for p in page["schedulingPolicies"]]


def test_create_describe_update_delete(batch: Any, unique: str) -> None:
    out = batch.create_scheduling_policy(name=unique, fairsharePolicy=POLICY, tags={"owner": "ops"})
    assert out["name"] == unique
    assert out["arn"] == policy_arn(unique)

    [policy] = describe(batch, out["arn"])
    assert policy == {
        "name": unique,
        "arn": policy_arn(unique),
        "fairsharePolicy": POLICY,
        "tags": {"owner": "ops"},
    }
    assert policy_arn(unique) in listed_arns(batch)

    new_policy = {
        "shareDecaySeconds": 0,
        "computeReservation": 0,
        "shareDistribution": [{"shareIdentifier": "red", "weightFactor": 0.125}],
    }
    out = batch.update_scheduling_policy(arn=policy_arn(unique), fairsharePolicy=new_policy)
    assert set(out) == {"ResponseMetadata"}
    [policy] = describe(batch, policy_arn(unique))
    assert policy["fairsharePolicy"] == new_policy
    assert policy["tags"] == {"owner": "ops"}

    out = batch.delete_scheduling_policy(arn=policy_arn(unique))
    assert set(out) == {"ResponseMetadata"}
    assert describe(batch, policy_arn(unique)) == []
    assert policy_arn(unique) not in listed_arns(batch)

    # Gone for good: a second delete and an update fail, and the name is free again.
    message = client_error(batch.delete_scheduling_policy, arn=policy_arn(unique))
    assert policy_arn(unique) in message
    assert "does not exist" in message
    message = client_error(
        batch.update_scheduling_policy, arn=policy_arn(unique), fairsharePolicy=new_policy
    )
    assert "does not exist" in message
    assert batch.create_scheduling_policy(name=unique)["arn"] == policy_arn(unique)


def test_create_without_fairshare_policy(batch: Any, unique: str) -> None:
    batch.create_scheduling_policy(name=unique)
    [policy] = describe(batch, policy_arn(unique))
    assert policy["name"] == unique
    assert policy["arn"] == policy_arn(unique)
    assert "fairsharePolicy" not in policy


def test_duplicate_name_rejected(batch: Any, unique: str) -> None:
    batch.create_scheduling_policy(name=unique, fairsharePolicy={"computeReservation": 5})
    message = client_error(
        batch.create_scheduling_policy, name=unique, fairsharePolicy={"computeReservation": 9}
    )
    assert "already exists" in message
    assert unique in message
    [policy] = describe(batch, policy_arn(unique))
    assert policy["fairsharePolicy"] == {"computeReservation": 5}


@pytest.mark.parametrize("name", ["bad name", "bad.name", "x" * 129, ""])
def test_invalid_name_rejected(batch: Any, name: str) -> None:
    message = client_error(batch.create_scheduling_policy, name=name)
    assert "name" in message
    assert "letters, numbers, hyphens (-) and underscores (_)" in message


def test_describe_omits_unknown(batch: Any, unique: str) -> None:
    a = batch.create_scheduling_policy(name=f"{unique}-a")["arn"]
    b = batch.create_scheduling_policy(name=f"{unique}-b")["arn"]
    found = describe(batch, b, policy_arn(f"{unique}-missing"), a)
    assert sorted(p["arn"] for p in found) == [a, b]
    assert describe(batch, policy_arn(f"{unique}-missing")) == []


def test_list_pagination(batch: Any, unique: str) -> None:
    mine = [policy_arn(f"{unique}-{i}") for i in range(5)]
    for i in range(5):
        batch.create_scheduling_policy(name=f"{unique}-{i}")

    items, tokens = walk_pages(batch.list_scheduling_policies, "schedulingPolicies", 2)
    assert all(set(entry) == {"arn"} for entry in items)  # List returns ARNs only
    seen = [entry["arn"] for entry in items]
    assert len(tokens) >= 2
    assert [arn for arn in seen if arn.startswith(policy_arn(unique))] == mine
    assert len(seen) == len(set(seen))

    message = client_error(batch.list_scheduling_policies, maxResults=0)
    assert "maxResults" in message
    message = client_error(batch.list_scheduling_policies, nextToken="bogus")
    assert "nextToken" in message


def test_delete_while_used_by_queue_rejected(batch: Any, unique: str) -> None:
    arn = batch.create_scheduling_policy(name=unique, fairsharePolicy=POLICY)["arn"]
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce], schedulingPolicyArn=arn)

    message = client_error(batch.delete_scheduling_policy, arn=arn)
    assert unique in message
    assert f"{unique}-q" in message
    assert [p["arn"] for p in describe(batch, arn)] == [arn]

    batch.update_job_queue(jobQueue=f"{unique}-q", state="DISABLED")
    batch.delete_job_queue(jobQueue=f"{unique}-q")
    batch.delete_scheduling_policy(arn=arn)
    assert describe(batch, arn) == []


def test_delete_while_replaced_on_queue(batch: Any, unique: str) -> None:
    first = batch.create_scheduling_policy(name=f"{unique}-1")["arn"]
    second = batch.create_scheduling_policy(name=f"{unique}-2")["arn"]
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce], schedulingPolicyArn=first)
    batch.update_job_queue(jobQueue=f"{unique}-q", schedulingPolicyArn=second)
    batch.delete_scheduling_policy(arn=first)  # no longer used
    message = client_error(batch.delete_scheduling_policy, arn=second)
    assert f"{unique}-q" in message


@pytest.mark.parametrize("weight", [0.0001, 1.0, 999.9999])
def test_weight_factor_bounds_accepted(batch: Any, unique: str, weight: float) -> None:
    policy = {"shareDistribution": [{"shareIdentifier": "a", "weightFactor": weight}]}
    batch.create_scheduling_policy(name=unique, fairsharePolicy=policy)
    [found] = describe(batch, policy_arn(unique))
    assert found["fairsharePolicy"]["shareDistribution"][0]["weightFactor"] == pytest.approx(weight)


@pytest.mark.parametrize("weight", [0.0, 0.00009, 1000.0, -1.0])
def test_weight_factor_out_of_bounds(batch: Any, unique: str, weight: float) -> None:
    policy = {"shareDistribution": [{"shareIdentifier": "a", "weightFactor": weight}]}
    message = client_error(batch.create_scheduling_policy, name=unique, fairsharePolicy=policy)
    assert "weightFactor" in message
    assert "0.0001" in message
    assert "999.9999" in message
    assert describe(batch, policy_arn(unique)) == []

    # Update validates too, and leaves the stored policy alone.
    batch.create_scheduling_policy(name=unique, fairsharePolicy={"computeReservation": 1})
    message = client_error(
        batch.update_scheduling_policy, arn=policy_arn(unique), fairsharePolicy=policy
    )
    assert "weightFactor" in message
    [found] = describe(batch, policy_arn(unique))
    assert found["fairsharePolicy"] == {"computeReservation": 1}


@pytest.mark.parametrize(
    ("policy", "word"),
    [
        ({"shareDecaySeconds": 604801}, "shareDecaySeconds"),
        ({"shareDecaySeconds": -1}, "shareDecaySeconds"),
        ({"computeReservation": 100}, "computeReservation"),
        (
            {
                "shareDistribution": [
                    {"shareIdentifier": "team*"},
                    {"shareIdentifier": "team1"},
                ]
            },
            "overlaps",
        ),
    ],
)
def test_fairshare_policy_bounds(
    batch: Any, unique: str, policy: dict[str, Any], word: str
) -> None:
    message = client_error(batch.create_scheduling_policy, name=unique, fairsharePolicy=policy)
    assert word in message
    assert describe(batch, policy_arn(unique)) == []


def test_describe_requires_arns(server: Server) -> None:
    unchecked = server.client(parameter_validation=False)
    message = client_error(unchecked.describe_scheduling_policies)
    assert message == "Missing required parameter arns."
