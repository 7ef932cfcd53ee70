"""Tag/Untag/ListTagsForResource on every taggable resource, over the wire."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote

import pytest
from conftest import Server, aws_cli, client_error, make_ce, make_definition, make_queue

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"
# More vCPUs than a 16-vCPU compute environment has: jobs of such a definition
# stay queued whether or not the server runs an engine, so nothing else
# (placement, completion) races with what a test looks at.
UNPLACEABLE = [{"type": "VCPU", "value": "64"}, {"type": "MEMORY", "value": "128"}]
KINDS = ["compute-environment", "job-queue", "job-definition", "scheduling-policy", "job"]


def make_resource(batch: Any, kind: str, name: str, tags: dict[str, str] | None = None) -> str:
    """A fresh resource of `kind`, optionally created with `tags`; its ARN."""
    extra: dict[str, Any] = {"tags": tags} if tags is not None else {}
    if kind == "compute-environment":
        return make_ce(batch, name, **extra)
    if kind == "job-queue":
        return make_queue(batch, name, [make_ce(batch, f"{name}-ce")], **extra)
    if kind == "job-definition":
        make_definition(batch, name)  # revision 1, untagged
        arn: str = batch.register_job_definition(
            jobDefinitionName=name,
            type="container",
            containerProperties={
                "image": "busybox",
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "128"},
                ],
            },
            **extra,
        )["jobDefinitionArn"]
        assert arn.endswith(":2")
        return arn
    if kind == "scheduling-policy":
        arn = batch.create_scheduling_policy(name=name, **extra)["arn"]
        return arn
    assert kind == "job"
    queue = make_queue(batch, f"{name}-q", [make_ce(batch, f"{name}-ce")])
    definition = make_definition(batch, f"{name}-def", resourceRequirements=UNPLACEABLE)
    arn = batch.submit_job(jobName=name, jobQueue=queue, jobDefinition=definition, **extra)[
        "jobArn"
    ]
    return arn


def tags_of(batch: Any, arn: str) -> dict[str, str]:
    tags: dict[str, str] = batch.list_tags_for_resource(resourceArn=arn)["tags"]
    return tags


def described_tags(batch: Any, kind: str, arn: str) -> dict[str, str]:
    """The tags as the resource's own Describe call shows them."""
    if kind == "compute-environment":
        [doc] = batch.describe_compute_environments(computeEnvironments=[arn])[
            "computeEnvironments"
        ]
    elif kind == "job-queue":
        [doc] = batch.describe_job_queues(jobQueues=[arn])["jobQueues"]
    elif kind == "job-definition":
        [doc] = batch.describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"]
    elif kind == "scheduling-policy":
        [doc] = batch.describe_scheduling_policies(arns=[arn])["schedulingPolicies"]
    else:
        [doc] = batch.describe_jobs(jobs=[arn.rsplit("/", 1)[1]])["jobs"]
    tags: dict[str, str] = doc.get("tags", {})
    return tags


@pytest.mark.parametrize("kind", KINDS)
def test_tag_untag_list(batch: Any, unique: str, kind: str) -> None:
    arn = make_resource(batch, kind, unique, tags={"origin": "create", "stage": "dev"})
    assert arn.startswith(f"{ARN_PREFIX}:{kind}/")
    assert tags_of(batch, arn) == {"origin": "create", "stage": "dev"}

    # TagResource merges: new keys are added, given keys overwritten, others kept.
    out = batch.tag_resource(resourceArn=arn, tags={"stage": "prod", "owner": "ops", "empty": ""})
    assert set(out) == {"ResponseMetadata"}
    expected = {"origin": "create", "stage": "prod", "owner": "ops", "empty": ""}
    assert tags_of(batch, arn) == expected
    assert described_tags(batch, kind, arn) == expected

    # UntagResource takes several keys; unknown keys are ignored.
    out = batch.untag_resource(resourceArn=arn, tagKeys=["origin", "empty", "never-set"])
    assert set(out) == {"ResponseMetadata"}
    assert tags_of(batch, arn) == {"stage": "prod", "owner": "ops"}
    assert described_tags(batch, kind, arn) == {"stage": "prod", "owner": "ops"}

    batch.untag_resource(resourceArn=arn, tagKeys=["stage", "owner"])
    assert tags_of(batch, arn) == {}


def test_definition_tags_are_per_revision(batch: Any, unique: str) -> None:
    rev2 = make_resource(batch, "job-definition", unique, tags={"rev": "2"})
    rev1 = rev2[: -len(":2")] + ":1"
    assert tags_of(batch, rev1) == {}
    batch.tag_resource(resourceArn=rev1, tags={"rev": "1"})
    assert tags_of(batch, rev1) == {"rev": "1"}
    assert tags_of(batch, rev2) == {"rev": "2"}

    # An ARN without a revision names no single taggable resource.
    message = client_error(batch.list_tags_for_resource, resourceArn=rev2[: -len(":2")])
    assert "revision" in message


@pytest.mark.parametrize(
    "keys",
    [
        ["cost center", "a+b", "path/to:key", "k=v&w@x", "ünï-cödé", "100%", "q?#"],
    ],
)
def test_keys_that_need_encoding_in_the_query(batch: Any, unique: str, keys: list[str]) -> None:
    arn = make_resource(batch, "job-queue", unique)
    batch.tag_resource(resourceArn=arn, tags={k: f"value of {k}" for k in keys} | {"keep": "1"})
    assert tags_of(batch, arn) == {k: f"value of {k}" for k in keys} | {"keep": "1"}
    batch.untag_resource(resourceArn=arn, tagKeys=keys)
    assert tags_of(batch, arn) == {"keep": "1"}


def test_arn_is_percent_encoded_on_the_wire(server: Server, unique: str) -> None:
    batch = server.client()
    paths: list[str] = []

    def capture(request: Any, **_: Any) -> None:
        paths.append(request.url.split("/v1/", 1)[1])

    batch.meta.events.register("before-send.batch.*", capture)
    name = f"{unique}_Mixed-Case_name"
    arn = make_resource(batch, "job-definition", name)
    batch.tag_resource(resourceArn=arn, tags={"a": "1", "b": "2"})
    batch.untag_resource(resourceArn=arn, tagKeys=["a"])
    assert tags_of(batch, arn) == {"b": "2"}

    encoded = quote(arn, safe="")
    assert "%3A" in encoded
    assert "%2F" in encoded
    tag_paths = [p for p in paths if p.startswith("tags/")]
    assert len(tag_paths) == 3
    for path in tag_paths:
        assert path.split("?", 1)[0] == f"tags/{encoded}"

    # Lower-case hex escapes name the same resource.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        lower = encoded.replace("%3A", "%3a").replace("%2F", "%2f")
        conn.request("GET", f"/v1/tags/{lower}")
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200
    assert body == {"tags": {"b": "2"}}


def test_fifty_tag_limit(batch: Any, unique: str) -> None:
    fifty = {f"k{i:02}": str(i) for i in range(50)}
    arn = make_resource(batch, "compute-environment", unique, tags=fifty)
    assert tags_of(batch, arn) == fifty

    # Overwriting existing keys keeps the count at 50: fine.
    batch.tag_resource(resourceArn=arn, tags={"k00": "changed"})
    assert tags_of(batch, arn)["k00"] == "changed"

    message = client_error(batch.tag_resource, resourceArn=arn, tags={"k50": "one too many"})
    assert "50" in message
    assert "51" in message
    assert len(tags_of(batch, arn)) == 50
    assert "k50" not in tags_of(batch, arn)

    # 51 tags at creation are refused too, and nothing is created.
    fifty_one = {f"k{i:02}": str(i) for i in range(51)}
    message = client_error(batch.create_scheduling_policy, name=f"{unique}-sp", tags=fifty_one)
    assert "50" in message
    assert (
        batch.describe_scheduling_policies(arns=[f"{ARN_PREFIX}:scheduling-policy/{unique}-sp"])[
            "schedulingPolicies"
        ]
        == []
    )


def test_merge_checks_limit_on_the_result(batch: Any, unique: str) -> None:
    arn = make_resource(batch, "job-queue", unique, tags={f"old{i}": "x" for i in range(45)})
    message = client_error(
        batch.tag_resource, resourceArn=arn, tags={f"new{i}": "y" for i in range(6)}
    )
    assert "50" in message
    assert tags_of(batch, arn) == {f"old{i}": "x" for i in range(45)}
    batch.tag_resource(resourceArn=arn, tags={f"new{i}": "y" for i in range(5)})
    assert len(tags_of(batch, arn)) == 50


@pytest.mark.parametrize("key", ["aws:owner", "AWS:Owner", "Aws:x"])
def test_aws_prefix_reserved(batch: Any, unique: str, key: str) -> None:
    arn = make_resource(batch, "scheduling-policy", unique, tags={"a": "1"})
    message = client_error(batch.tag_resource, resourceArn=arn, tags={key: "v", "b": "2"})
    assert key in message
    assert "aws:" in message
    assert tags_of(batch, arn) == {"a": "1"}

    message = client_error(
        batch.create_compute_environment,
        computeEnvironmentName=unique,
        type="UNMANAGED",
        tags={key: "v"},
    )
    assert "aws:" in message
    assert (
        batch.describe_compute_environments(computeEnvironments=[unique])["computeEnvironments"]
        == []
    )


def test_key_and_value_lengths(batch: Any, unique: str) -> None:
    arn = make_resource(batch, "compute-environment", unique)
    batch.tag_resource(resourceArn=arn, tags={"k" * 128: "v" * 256})
    message = client_error(batch.tag_resource, resourceArn=arn, tags={"k" * 129: "v"})
    assert "128" in message
    message = client_error(batch.tag_resource, resourceArn=arn, tags={"k": "v" * 257})
    assert "256" in message
    assert tags_of(batch, arn) == {"k" * 128: "v" * 256}


@pytest.mark.parametrize(
    "arn",
    [
        f"{ARN_PREFIX}:compute-environment/never-created",
        f"{ARN_PREFIX}:job-queue/never-created",
        f"{ARN_PREFIX}:job-definition/never-created:1",
        f"{ARN_PREFIX}:scheduling-policy/never-created",
        f"{ARN_PREFIX}:job/00000000-0000-4000-8000-000000000000",
    ],
    ids=KINDS,
)
def test_unknown_arn(batch: Any, arn: str) -> None:
    for call, kwargs in (
        (batch.list_tags_for_resource, {}),
        (batch.tag_resource, {"tags": {"a": "b"}}),
        (batch.untag_resource, {"tagKeys": ["a"]}),
    ):
        message = client_error(call, resourceArn=arn, **kwargs)
        assert arn in message
        assert "does not exist" in message


@pytest.mark.parametrize(
    "arn",
    ["not-an-arn", "arn:aws:s3:::bucket/key", f"{ARN_PREFIX}:widget/x"],
)
def test_malformed_arn(batch: Any, arn: str) -> None:
    message = client_error(batch.list_tags_for_resource, resourceArn=arn)
    assert arn in message
    assert "not a valid" in message


def test_deleted_resource_has_no_tags(batch: Any, unique: str) -> None:
    arn = make_resource(batch, "compute-environment", unique, tags={"a": "1"})
    batch.update_compute_environment(computeEnvironment=arn, state="DISABLED")
    batch.delete_compute_environment(computeEnvironment=arn)
    message = client_error(batch.list_tags_for_resource, resourceArn=arn)
    assert "does not exist" in message


def test_array_child_cannot_be_tagged(batch: Any, unique: str) -> None:
    queue = make_queue(batch, f"{unique}-q", [make_ce(batch, f"{unique}-ce")])
    definition = make_definition(batch, f"{unique}-def", resourceRequirements=UNPLACEABLE)
    parent = batch.submit_job(
        jobName="arr", jobQueue=queue, jobDefinition=definition, arrayProperties={"size": 2}
    )
    message = client_error(batch.tag_resource, resourceArn=f"{parent['jobArn']}:0", tags={"a": "b"})
    assert "array child" in message
    batch.tag_resource(resourceArn=parent["jobArn"], tags={"a": "b"})
    assert tags_of(batch, parent["jobArn"]) == {"a": "b"}


def test_through_the_aws_cli(server: Server, batch: Any, unique: str) -> None:
    arn = make_resource(batch, "job-queue", unique, tags={"origin": "sdk"})
    aws_cli(
        server,
        "batch",
        "tag-resource",
        "--resource-arn",
        arn,
        "--tags",
        json.dumps({"team": "data", "cost center": "42"}),
    )
    listed = json.loads(
        aws_cli(server, "batch", "list-tags-for-resource", "--resource-arn", arn).stdout
    )
    assert listed == {"tags": {"origin": "sdk", "team": "data", "cost center": "42"}}

    aws_cli(
        server,
        "batch",
        "untag-resource",
        "--resource-arn",
        arn,
        "--tag-keys",
        "origin",
        "cost center",
    )
    assert tags_of(batch, arn) == {"team": "data"}

    missing = f"{ARN_PREFIX}:job-queue/{unique}-nope"
    result = aws_cli(
        server, "batch", "tag-resource", "--resource-arn", missing, "--tags", "a=b", check=False
    )
    assert result.returncode == 255
    assert "An error occurred (ClientException) when calling the TagResource operation" in (
        result.stderr
    )
    assert missing in result.stderr
