"""Register/Deregister/DescribeJobDefinitions over the wire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import (
    Server,
    client_error,
    make_ce,
    make_definition,
    make_queue,
    start_server,
    walk_pages,
)

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"

CONTAINER: dict[str, Any] = {
    "image": "busybox",
    "command": ["echo", "Ref::greeting"],
    "resourceRequirements": [
        {"type": "VCPU", "value": "1"},
        {"type": "MEMORY", "value": "128"},
    ],
}

# More vCPUs than a 16-vCPU compute environment has: jobs of such a definition
# stay queued whether or not the server runs an engine, so nothing else
# (placement, completion) races with what a test looks at.
UNPLACEABLE = [{"type": "VCPU", "value": "64"}, {"type": "MEMORY", "value": "128"}]


def def_arn(name: str, revision: int) -> str:
    return f"{ARN_PREFIX}:job-definition/{name}:{revision}"


def register(batch: Any, name: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("type", "container")
    if kw["type"] == "container" and not {"containerProperties", "ecsProperties"} & set(kw):
        kw["containerProperties"] = CONTAINER
    out: dict[str, Any] = batch.register_job_definition(jobDefinitionName=name, **kw)
    return out


def revisions(batch: Any, name: str, **kw: Any) -> list[tuple[int, str]]:
    pages = batch.get_paginator("describe_job_definitions").paginate(jobDefinitionName=name, **kw)
    return [(d["revision"], d["status"]) for page in pages for d in page["jobDefinitions"]]


def assert_not_registered(batch: Any, name: str) -> None:
    assert batch.describe_job_definitions(jobDefinitionName=name)["jobDefinitions"] == []


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with AWS's own minimum timeout (no --min-timeout-seconds)."""
    server = start_server(tmp_path_factory.mktemp("strict"))
    yield server
    server.stop()


# -- register -----------------------------------------------------------------


def test_register_container(batch: Any, unique: str) -> None:
    out = register(
        batch,
        unique,
        parameters={"greeting": "hi"},
        retryStrategy={"attempts": 3, "evaluateOnExit": [{"onExitCode": "1*", "action": "exit"}]},
        timeout={"attemptDurationSeconds": 120},
        propagateTags=True,
        tags={"team": "data"},
        schedulingPriority=5,
    )
    assert out["jobDefinitionName"] == unique
    assert out["revision"] == 1
    assert out["jobDefinitionArn"] == def_arn(unique, 1)

    [d] = batch.describe_job_definitions(jobDefinitions=[def_arn(unique, 1)])["jobDefinitions"]
    assert d["jobDefinitionName"] == unique
    assert d["jobDefinitionArn"] == def_arn(unique, 1)
    assert d["revision"] == 1
    assert d["status"] == "ACTIVE"
    assert d["type"] == "container"
    assert d["containerProperties"]["image"] == "busybox"
    assert d["containerProperties"]["command"] == ["echo", "Ref::greeting"]
    assert d["containerProperties"]["resourceRequirements"] == CONTAINER["resourceRequirements"]
    assert d["parameters"] == {"greeting": "hi"}
    assert d["retryStrategy"] == {
        "attempts": 3,
        "evaluateOnExit": [{"onExitCode": "1*", "action": "exit"}],
    }
    assert d["timeout"] == {"attemptDurationSeconds": 120}
    assert d["propagateTags"] is True
    assert d["tags"] == {"team": "data"}
    assert d["schedulingPriority"] == 5
    assert "nodeProperties" not in d


def test_register_multinode(batch: Any, unique: str) -> None:
    node_properties = {
        "numNodes": 3,
        "mainNode": 0,
        "nodeRangeProperties": [
            {"targetNodes": "0", "container": CONTAINER},
            {"targetNodes": "1:", "container": {**CONTAINER, "command": ["worker"]}},
        ],
    }
    out = register(batch, unique, type="multinode", nodeProperties=node_properties)
    assert out["revision"] == 1
    assert out["jobDefinitionArn"] == def_arn(unique, 1)
    [d] = batch.describe_job_definitions(jobDefinitions=[f"{unique}:1"])["jobDefinitions"]
    assert d["type"] == "multinode"
    assert d["nodeProperties"] == node_properties
    assert "containerProperties" not in d


@pytest.mark.parametrize(
    ("node_properties", "word"),
    [
        (
            {"numNodes": 2, "mainNode": 2, "nodeRangeProperties": [{"targetNodes": "0:1"}]},
            "mainNode",
        ),
        ({"numNodes": 3, "mainNode": 0, "nodeRangeProperties": [{"targetNodes": "0:1"}]}, "cover"),
        ({"numNodes": 2, "mainNode": 0, "nodeRangeProperties": [{"targetNodes": "0:5"}]}, "0:5"),
        ({"numNodes": 2, "mainNode": 0, "nodeRangeProperties": [{"targetNodes": "a:b"}]}, "a:b"),
    ],
)
def test_multinode_node_ranges_validated(
    batch: Any, unique: str, node_properties: dict[str, Any], word: str
) -> None:
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="multinode",
        nodeProperties=node_properties,
    )
    assert word in message
    assert_not_registered(batch, unique)


def test_revisions_increase_and_are_never_reused(batch: Any, unique: str) -> None:
    assert [register(batch, unique)["revision"] for _ in range(3)] == [1, 2, 3]
    batch.deregister_job_definition(jobDefinition=f"{unique}:3")
    assert register(batch, unique)["revision"] == 4
    for revision in (1, 2, 4):
        batch.deregister_job_definition(jobDefinition=def_arn(unique, revision))
    assert revisions(batch, unique, status="ACTIVE") == []
    out = register(batch, unique)
    assert out["revision"] == 5
    assert out["jobDefinitionArn"] == def_arn(unique, 5)
    assert revisions(batch, unique) == [
        (1, "INACTIVE"),
        (2, "INACTIVE"),
        (3, "INACTIVE"),
        (4, "INACTIVE"),
        (5, "ACTIVE"),
    ]


def test_revisions_are_per_name(batch: Any, unique: str) -> None:
    assert register(batch, f"{unique}-a")["revision"] == 1
    assert register(batch, f"{unique}-a")["revision"] == 2
    assert register(batch, f"{unique}-b")["revision"] == 1


# -- deregister ---------------------------------------------------------------


def test_deregister_makes_inactive_but_describable(batch: Any, unique: str) -> None:
    register(batch, unique)
    register(batch, unique)
    out = batch.deregister_job_definition(jobDefinition=def_arn(unique, 1))
    assert set(out) == {"ResponseMetadata"}
    [d] = batch.describe_job_definitions(jobDefinitions=[f"{unique}:1"])["jobDefinitions"]
    assert d["status"] == "INACTIVE"
    assert d["jobDefinitionArn"] == def_arn(unique, 1)
    assert d["containerProperties"]["image"] == "busybox"
    [d2] = batch.describe_job_definitions(jobDefinitions=[f"{unique}:2"])["jobDefinitions"]
    assert d2["status"] == "ACTIVE"

    # Deregistering again is harmless.
    batch.deregister_job_definition(jobDefinition=f"{unique}:1")
    assert revisions(batch, unique) == [(1, "INACTIVE"), (2, "ACTIVE")]


def test_deregister_unknown_or_without_revision(batch: Any, unique: str) -> None:
    message = client_error(batch.deregister_job_definition, jobDefinition=f"{unique}:1")
    assert f"{unique}:1" in message
    assert "does not exist" in message
    register(batch, unique)
    message = client_error(batch.deregister_job_definition, jobDefinition=unique)
    assert "revision" in message
    assert revisions(batch, unique) == [(1, "ACTIVE")]


# -- describe -----------------------------------------------------------------


def test_describe_filters(batch: Any, unique: str) -> None:
    for _ in range(3):
        register(batch, f"{unique}-a")
    register(batch, f"{unique}-b")
    batch.deregister_job_definition(jobDefinition=f"{unique}-a:2")

    by_refs = batch.describe_job_definitions(
        jobDefinitions=[f"{unique}-a:3", def_arn(f"{unique}-b", 1), f"{unique}-a:9"]
    )["jobDefinitions"]
    assert sorted(d["jobDefinitionArn"] for d in by_refs) == [
        def_arn(f"{unique}-a", 3),
        def_arn(f"{unique}-b", 1),
    ]

    assert revisions(batch, f"{unique}-a") == [(1, "ACTIVE"), (2, "INACTIVE"), (3, "ACTIVE")]
    assert revisions(batch, f"{unique}-a", status="ACTIVE") == [(1, "ACTIVE"), (3, "ACTIVE")]
    assert revisions(batch, f"{unique}-a", status="INACTIVE") == [(2, "INACTIVE")]
    assert revisions(batch, f"{unique}-b") == [(1, "ACTIVE")]
    assert revisions(batch, f"{unique}-none") == []

    # status alone filters every definition.
    pages = batch.get_paginator("describe_job_definitions").paginate(status="INACTIVE")
    inactive = [d for page in pages for d in page["jobDefinitions"]]
    assert all(d["status"] == "INACTIVE" for d in inactive)
    assert [
        d["jobDefinitionArn"] for d in inactive if d["jobDefinitionName"].startswith(unique)
    ] == [def_arn(f"{unique}-a", 2)]


def test_describe_refs_cannot_mix_with_filters(batch: Any, unique: str) -> None:
    register(batch, unique)
    message = client_error(
        batch.describe_job_definitions, jobDefinitions=[f"{unique}:1"], status="ACTIVE"
    )
    assert "jobDefinitions" in message
    message = client_error(batch.describe_job_definitions, status="DELETED")
    assert "status" in message


def test_describe_pagination(batch: Any, unique: str) -> None:
    for _ in range(5):
        register(batch, unique)
    items, tokens = walk_pages(
        batch.describe_job_definitions, "jobDefinitions", 2, jobDefinitionName=unique
    )
    seen = [d["revision"] for d in items]
    assert seen == [1, 2, 3, 4, 5]
    assert len(tokens) >= 2

    # The unfiltered listing pages too, and holds each of ours exactly once, in order.
    pages = batch.get_paginator("describe_job_definitions").paginate(
        PaginationConfig={"PageSize": 3}
    )
    everything = [
        (d["jobDefinitionName"], d["revision"]) for page in pages for d in page["jobDefinitions"]
    ]
    assert [r for n, r in everything if n == unique] == [1, 2, 3, 4, 5]
    assert len(everything) == len(set(everything))


# -- limits -------------------------------------------------------------------


def test_definition_size_limit_24_kib(batch: Any, unique: str) -> None:
    def with_padding(size: int) -> dict[str, Any]:
        return {**CONTAINER, "environment": [{"name": "PAD", "value": "x" * size}]}

    out = register(batch, unique, containerProperties=with_padding(23 * 1024))
    assert out["revision"] == 1
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=with_padding(24 * 1024),
    )
    assert "24576" in message
    assert "24 KiB" in message
    assert revisions(batch, unique) == [(1, "ACTIVE")]


@pytest.mark.parametrize("env_name", ["AWS_BATCH_JOB_ID", "AWS_BATCH_CUSTOM"])
def test_reserved_environment_names(batch: Any, unique: str, env_name: str) -> None:
    container = {**CONTAINER, "environment": [{"name": env_name, "value": "x"}]}
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=container,
    )
    assert env_name in message
    assert "reserved" in message

    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="multinode",
        nodeProperties={
            "numNodes": 1,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0", "container": container}],
        },
    )
    assert env_name in message
    assert_not_registered(batch, unique)

    ok = {**CONTAINER, "environment": [{"name": "MY_AWS_BATCH", "value": "x"}]}
    assert register(batch, unique, containerProperties=ok)["revision"] == 1


@pytest.mark.parametrize("attempts", [0, 11])
def test_retry_attempts_out_of_range(batch: Any, unique: str, attempts: int) -> None:
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=CONTAINER,
        retryStrategy={"attempts": attempts},
    )
    assert "retryStrategy.attempts" in message
    assert "between 1 and 10" in message
    assert f"got {attempts}" in message
    assert_not_registered(batch, unique)


def test_retry_attempts_bounds_accepted(batch: Any, unique: str) -> None:
    assert register(batch, unique, retryStrategy={"attempts": 1})["revision"] == 1
    assert register(batch, unique, retryStrategy={"attempts": 10})["revision"] == 2


def test_evaluate_on_exit_at_most_five(batch: Any, unique: str) -> None:
    rules = [{"onExitCode": str(i), "action": "RETRY"} for i in range(6)]
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=CONTAINER,
        retryStrategy={"attempts": 2, "evaluateOnExit": rules},
    )
    assert "evaluateOnExit" in message
    assert "5" in message
    assert "got 6" in message
    assert_not_registered(batch, unique)
    out = register(batch, unique, retryStrategy={"attempts": 2, "evaluateOnExit": rules[:5]})
    assert out["revision"] == 1


@pytest.mark.parametrize(
    ("rule", "word"),
    [
        ({"onExitCode": "1?", "action": "RETRY"}, "onExitCode"),
        ({"onReason": "a*b*", "action": "RETRY"}, "onReason"),
        ({"onStatusReason": "x", "action": "MAYBE"}, "action"),
    ],
)
def test_evaluate_on_exit_patterns(
    batch: Any, unique: str, rule: dict[str, str], word: str
) -> None:
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=CONTAINER,
        retryStrategy={"attempts": 2, "evaluateOnExit": [rule]},
    )
    assert f"evaluateOnExit[0].{word}" in message
    assert_not_registered(batch, unique)


def test_timeout_minimum_on_shared_server(batch: Any, unique: str) -> None:
    # The shared server runs with --min-timeout-seconds 1.
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=CONTAINER,
        timeout={"attemptDurationSeconds": 0},
    )
    assert "attemptDurationSeconds" in message
    assert register(batch, unique, timeout={"attemptDurationSeconds": 1})["revision"] == 1


def test_timeout_minimum_is_60_by_default(strict_server: Server, unique: str) -> None:
    batch = strict_server.client()
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties=CONTAINER,
        timeout={"attemptDurationSeconds": 59},
    )
    assert "timeout.attemptDurationSeconds must be at least 60" in message
    assert "got 59" in message
    assert_not_registered(batch, unique)
    out = register(batch, unique, timeout={"attemptDurationSeconds": 60})
    assert out["revision"] == 1
    [d] = batch.describe_job_definitions(jobDefinitions=[f"{unique}:1"])["jobDefinitions"]
    assert d["timeout"] == {"attemptDurationSeconds": 60}


# -- properties that do not go together ---------------------------------------

_NODES = {
    "numNodes": 1,
    "mainNode": 0,
    "nodeRangeProperties": [{"targetNodes": "0", "container": CONTAINER}],
}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"type": "container"}, ["exactly one of containerProperties"]),
        (
            {"type": "container", "containerProperties": CONTAINER, "nodeProperties": _NODES},
            ["nodeProperties", "multinode"],
        ),
        ({"type": "container", "nodeProperties": _NODES}, ["containerProperties"]),
        (
            {
                "type": "container",
                "containerProperties": CONTAINER,
                "ecsProperties": {"taskProperties": [{"containers": [{"image": "busybox"}]}]},
            },
            ["exactly one of containerProperties"],
        ),
        ({"type": "multinode"}, ["multinode", "requires nodeProperties"]),
        ({"type": "multinode", "containerProperties": CONTAINER}, ["nodeProperties"]),
        (
            {"type": "multinode", "containerProperties": CONTAINER, "nodeProperties": _NODES},
            ["multinode", "containerProperties"],
        ),
        (
            {"type": "multinode", "nodeProperties": _NODES, "platformCapabilities": ["FARGATE"]},
            ["Fargate"],
        ),
    ],
)
def test_property_mixups_rejected(
    batch: Any, unique: str, kwargs: dict[str, Any], words: list[str]
) -> None:
    message = client_error(batch.register_job_definition, jobDefinitionName=unique, **kwargs)
    for word in words:
        assert word in message
    assert_not_registered(batch, unique)


def test_legacy_and_requirement_for_same_resource_rejected(batch: Any, unique: str) -> None:
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties={**CONTAINER, "vcpus": 2},
    )
    assert "VCPU" in message
    assert "vcpus" in message
    assert_not_registered(batch, unique)


@pytest.mark.parametrize("name", ["with space", "dot.name", "a" * 129, ""])
def test_invalid_name(batch: Any, name: str) -> None:
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=name,
        type="container",
        containerProperties=CONTAINER,
    )
    assert "jobDefinitionName" in message


# -- SubmitJob resolves only ACTIVE revisions ---------------------------------


def test_submit_against_inactive_revision(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce])
    make_definition(batch, unique, resourceRequirements=UNPLACEABLE)  # revision 1
    make_definition(batch, unique, resourceRequirements=UNPLACEABLE)  # revision 2
    batch.deregister_job_definition(jobDefinition=f"{unique}:1")

    for ref in (f"{unique}:1", def_arn(unique, 1)):
        message = client_error(
            batch.submit_job, jobName="j", jobQueue=f"{unique}-q", jobDefinition=ref
        )
        assert message == f"JobDefinition name {ref} does not exist or is not in ACTIVE status"

    # A bare name is the latest ACTIVE revision.
    job = batch.submit_job(jobName="j", jobQueue=f"{unique}-q", jobDefinition=unique)
    [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert detail["jobDefinition"] == def_arn(unique, 2)

    batch.deregister_job_definition(jobDefinition=f"{unique}:2")
    message = client_error(
        batch.submit_job, jobName="j", jobQueue=f"{unique}-q", jobDefinition=unique
    )
    assert message == f"JobDefinition name {unique} does not exist or is not in ACTIVE status"

    # A new revision makes the name usable again.
    assert make_definition(batch, unique, resourceRequirements=UNPLACEABLE) == def_arn(unique, 3)
    job = batch.submit_job(jobName="j", jobQueue=f"{unique}-q", jobDefinition=unique)
    [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert detail["jobDefinition"] == def_arn(unique, 3)


def test_submit_bare_name_falls_back_to_older_active_revision(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, f"{unique}-q", [ce])
    make_definition(batch, unique, resourceRequirements=UNPLACEABLE)
    make_definition(batch, unique, resourceRequirements=UNPLACEABLE)
    batch.deregister_job_definition(jobDefinition=f"{unique}:2")
    job = batch.submit_job(jobName="j", jobQueue=f"{unique}-q", jobDefinition=unique)
    [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert detail["jobDefinition"] == def_arn(unique, 1)


@pytest.mark.parametrize(
    ("kind", "value"), [("MEMORY", "²"), ("GPU", "²"), ("VCPU", "nan"), ("VCPU", "inf")]
)
def test_resource_requirement_values_must_be_plain_numbers(
    server: Server, unique: str, kind: str, value: str
) -> None:
    batch = server.client(retries={"max_attempts": 1})
    requirements = {"VCPU": "1", "MEMORY": "128"} | {kind: value}
    message = client_error(
        batch.register_job_definition,
        jobDefinitionName=unique,
        type="container",
        containerProperties={
            "image": "busybox",
            "resourceRequirements": [{"type": k, "value": v} for k, v in requirements.items()],
        },
    )
    assert kind in message
    assert_not_registered(batch, unique)
