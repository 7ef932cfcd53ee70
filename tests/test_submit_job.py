"""SubmitJob and DescribeJobs over the wire, with a real boto3 client.

At this stage nothing runs jobs: every accepted job stays SUBMITTED, so the
JobDetail checked here is the one AWS shows right after SubmitJob.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import make_ce, make_definition, make_queue, start_server

PREFIX = "arn:aws:batch:us-east-1:123456789012"
JOB_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
STATUSES = {"SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED"}
FAIR_SHARE_ONLY = (
    "Job with shareIdentifier or schedulingPriority can onlybe submitted to job queue with "
    "fair share scheduling policy."
)
RESOURCES = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "128"}]


def rejected(batch: Any, call: Callable[..., Any], **kwargs: Any) -> str:
    """Call `call`, expect a ClientException (HTTP 400), return its message."""
    with pytest.raises(batch.exceptions.ClientException) as info:
        call(**kwargs)
    response = info.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["Error"]["Code"] == "ClientException"
    message: str = response["Error"]["Message"]
    return message


def submit(batch: Any, env: dict[str, str], name: str = "job", **kwargs: Any) -> str:
    kwargs.setdefault("jobQueue", env["queue_name"])
    kwargs.setdefault("jobDefinition", env["definition_name"])
    job_id: str = batch.submit_job(jobName=name, **kwargs)["jobId"]
    return job_id


def describe(batch: Any, job_id: str) -> dict[str, Any]:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert len(jobs) == 1
    detail: dict[str, Any] = jobs[0]
    return detail


def register(batch: Any, name: str, **kwargs: Any) -> str:
    """Register a container definition; `container` members go to containerProperties."""
    props: dict[str, Any] = {"image": "busybox", "command": ["true"]}
    if "resourceRequirements" not in kwargs.get("container", {}):
        props["resourceRequirements"] = RESOURCES
    props.update(kwargs.pop("container", {}))
    arn: str = batch.register_job_definition(
        jobDefinitionName=name, type="container", containerProperties=props, **kwargs
    )["jobDefinitionArn"]
    return arn


def env_dict(container: dict[str, Any]) -> dict[str, str]:
    names = [e["name"] for e in container["environment"]]
    assert len(names) == len(set(names)), f"duplicate environment names: {names}"
    return {e["name"]: e["value"] for e in container["environment"]}


def requirements(container: dict[str, Any]) -> dict[str, str]:
    kinds = [r["type"] for r in container["resourceRequirements"]]
    assert len(kinds) == len(set(kinds)), f"duplicate resource types: {kinds}"
    return {r["type"]: r["value"] for r in container["resourceRequirements"]}


# -- references -----------------------------------------------------------------


def test_submit_by_queue_name_and_arn(batch: Any, env: dict[str, str]) -> None:
    for ref in (env["queue_name"], env["queue"]):
        response = batch.submit_job(
            jobName="by-queue", jobQueue=ref, jobDefinition=env["definition_name"]
        )
        job_id = response["jobId"]
        assert JOB_ID_RE.match(job_id), job_id
        assert response["jobArn"] == f"{PREFIX}:job/{job_id}"
        assert response["jobName"] == "by-queue"
        detail = describe(batch, job_id)
        assert detail["jobQueue"] == f"{PREFIX}:job-queue/{env['queue_name']}"
        assert detail["jobArn"] == response["jobArn"]
        assert detail["jobId"] == job_id


def test_queue_arn_and_queue_name_are_the_same_queue(batch: Any, env: dict[str, str]) -> None:
    by_name = submit(batch, env, "n1", jobQueue=env["queue_name"])
    by_arn = submit(batch, env, "n2", jobQueue=env["queue"])
    listed = batch.list_jobs(jobQueue=env["queue_name"], jobStatus="SUBMITTED")["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [by_arn, by_name]


@pytest.fixture
def revisions(batch: Any, unique: str) -> str:
    """Definition `<unique>-rev` with revisions 1, 2 ACTIVE and 3 INACTIVE."""
    name = f"{unique}-rev"
    for rev in (1, 2, 3):
        arn = register(batch, name, container={"command": ["echo", f"rev{rev}"]})
        assert arn == f"{PREFIX}:job-definition/{name}:{rev}"
    batch.deregister_job_definition(jobDefinition=f"{name}:3")
    return name


@pytest.mark.parametrize(
    ("form", "revision"),
    [
        ("name", 2),
        ("name:1", 1),
        ("name:2", 2),
        ("arn:1", 1),
        ("arn", 2),
    ],
)
def test_definition_reference_forms(
    batch: Any, env: dict[str, str], revisions: str, form: str, revision: int
) -> None:
    ref = {
        "name": revisions,
        "name:1": f"{revisions}:1",
        "name:2": f"{revisions}:2",
        "arn:1": f"{PREFIX}:job-definition/{revisions}:1",
        "arn": f"{PREFIX}:job-definition/{revisions}",
    }[form]
    detail = describe(batch, submit(batch, env, jobDefinition=ref))
    assert detail["jobDefinition"] == f"{PREFIX}:job-definition/{revisions}:{revision}"
    assert detail["container"]["command"] == ["echo", f"rev{revision}"]


@pytest.mark.parametrize("suffix", [":3", ":9", "-missing"])
def test_inactive_or_missing_definition_rejected(
    batch: Any, env: dict[str, str], revisions: str, suffix: str
) -> None:
    ref = revisions + suffix
    message = rejected(
        batch, batch.submit_job, jobName="j", jobQueue=env["queue"], jobDefinition=ref
    )
    assert message == f"JobDefinition name {ref} does not exist or is not in ACTIVE status"


def test_all_revisions_inactive_rejected(batch: Any, env: dict[str, str], unique: str) -> None:
    name = f"{unique}-gone"
    register(batch, name)
    batch.deregister_job_definition(jobDefinition=f"{PREFIX}:job-definition/{name}:1")
    message = rejected(
        batch, batch.submit_job, jobName="j", jobQueue=env["queue"], jobDefinition=name
    )
    assert message == f"JobDefinition name {name} does not exist or is not in ACTIVE status"


def test_unknown_queue_rejected(batch: Any, env: dict[str, str], unique: str) -> None:
    message = rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=f"{unique}-nope",
        jobDefinition=env["definition_name"],
    )
    assert message == f"JobQueue {unique}-nope not found."


def test_disabled_queue_rejected(batch: Any, env: dict[str, str]) -> None:
    batch.update_job_queue(jobQueue=env["queue_name"], state="DISABLED")
    rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue_name"],
        jobDefinition=env["definition_name"],
    )


# -- the JobDetail shape --------------------------------------------------------


def test_describe_full_job_detail(batch: Any, env: dict[str, str], unique: str) -> None:
    name = f"{unique}-full"
    register(
        batch,
        name,
        parameters={"input": "def-in", "x": "def-x", "unused": "u"},
        container={
            "image": "busybox:1.36",
            "command": ["process", "Ref::input", "--x=Ref::x", "--both=Ref::x,Ref::input"],
            "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "resourceRequirements": [
                {"type": "VCPU", "value": "2"},
                {"type": "MEMORY", "value": "512"},
            ],
        },
    )
    before = int(time.time() * 1000)
    response = batch.submit_job(
        jobName="Full_Detail-1",
        jobQueue=env["queue"],
        jobDefinition=name,
        parameters={"x": "sub-x"},
        containerOverrides={
            "environment": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
            "resourceRequirements": [{"type": "MEMORY", "value": "1024"}],
        },
        tags={"team": "data", "cost": "42"},
    )
    after = int(time.time() * 1000)
    job_id = response["jobId"]
    detail = describe(batch, job_id)

    assert detail["jobArn"] == f"{PREFIX}:job/{job_id}"
    assert detail["jobId"] == job_id
    assert detail["jobName"] == "Full_Detail-1"
    assert detail["jobQueue"] == f"{PREFIX}:job-queue/{env['queue_name']}"
    assert detail["jobDefinition"] == f"{PREFIX}:job-definition/{name}:1"
    assert detail["status"] == "SUBMITTED"
    created = detail["createdAt"]
    assert type(created) is int
    assert before - 1000 <= created <= after + 1000  # epoch milliseconds, not seconds
    for absent in ("startedAt", "stoppedAt", "isCancelled", "isTerminated", "arrayProperties"):
        assert absent not in detail, absent
    assert detail["attempts"] == []
    assert detail["dependsOn"] == []
    assert detail["tags"] == {"team": "data", "cost": "42"}
    assert detail["propagateTags"] is False
    assert detail["platformCapabilities"] == ["EC2"]
    # Definition defaults overlaid by the submit's parameters.
    assert detail["parameters"] == {"input": "def-in", "x": "sub-x", "unused": "u"}

    container = detail["container"]
    assert container["image"] == "busybox:1.36"
    # Whole-element and embedded placeholders are substituted.
    assert container["command"] == ["process", "def-in", "--x=sub-x", "--both=sub-x,def-in"]
    assert env_dict(container) == {"A": "1", "B": "20", "C": "3"}
    assert [e["name"] for e in container["environment"]] == ["A", "B", "C"]
    assert requirements(container) == {"VCPU": "2", "MEMORY": "1024"}
    for runtime_only in ("exitCode", "taskArn", "logStreamName"):
        assert runtime_only not in container, runtime_only


def test_response_arns_match_describe(batch: Any, env: dict[str, str]) -> None:
    response = batch.submit_job(
        jobName="arns", jobQueue=env["queue"], jobDefinition=env["definition"]
    )
    detail = describe(batch, response["jobId"])
    assert detail["jobArn"] == response["jobArn"]
    assert detail["jobDefinition"] == env["definition"]
    assert detail["jobDefinition"].endswith(":1")
    assert detail["jobQueue"] == env["queue"]


# -- parameter substitution -----------------------------------------------------


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        (["echo", "Ref::missing"], "missing"),
        (["echo", "--in=Ref::other"], "other"),
        (["echo", "Ref::known", "Ref::third"], "third"),
    ],
)
def test_unresolved_reference_rejected(
    batch: Any, env: dict[str, str], unique: str, command: list[str], missing: str
) -> None:
    name = f"{unique}-ref"
    register(batch, name, parameters={"known": "k"}, container={"command": command})
    message = rejected(
        batch, batch.submit_job, jobName="j", jobQueue=env["queue"], jobDefinition=name
    )
    assert message == f"Unable to substitute value. No parameter found for reference {missing}"
    # The submit's parameters can supply it.
    job_id = submit(batch, env, jobDefinition=name, parameters={missing: "given"})
    assert "given" in " ".join(describe(batch, job_id)["container"]["command"])


def test_unresolved_reference_in_command_override_rejected(batch: Any, env: dict[str, str]) -> None:
    message = rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        containerOverrides={"command": ["echo", "Ref::nothere"]},
    )
    assert message == "Unable to substitute value. No parameter found for reference nothere"


def test_substitution_touches_only_the_command(
    batch: Any, env: dict[str, str], unique: str
) -> None:
    name = f"{unique}-only"
    register(
        batch,
        name,
        parameters={"p": "value"},
        container={
            "command": ["run", "Ref::p"],
            "environment": [{"name": "E", "value": "Ref::p"}],
        },
    )
    container = describe(batch, submit(batch, env, jobDefinition=name))["container"]
    assert container["command"] == ["run", "value"]
    assert env_dict(container) == {"E": "Ref::p"}


# -- overrides ------------------------------------------------------------------


def test_environment_override_merges_by_name(batch: Any, env: dict[str, str], unique: str) -> None:
    name = f"{unique}-env"
    register(
        batch,
        name,
        container={"environment": [{"name": "KEEP", "value": "k"}, {"name": "SET", "value": "d"}]},
    )
    job_id = submit(
        batch,
        env,
        jobDefinition=name,
        containerOverrides={
            "environment": [{"name": "SET", "value": "o"}, {"name": "NEW", "value": "n"}]
        },
    )
    assert env_dict(describe(batch, job_id)["container"]) == {"KEEP": "k", "SET": "o", "NEW": "n"}


def test_resource_requirements_override_per_type(batch: Any, env: dict[str, str]) -> None:
    job_id = submit(
        batch,
        env,
        containerOverrides={"resourceRequirements": [{"type": "VCPU", "value": "4"}]},
    )
    assert requirements(describe(batch, job_id)["container"]) == {"VCPU": "4", "MEMORY": "128"}
    job_id = submit(
        batch,
        env,
        containerOverrides={
            "resourceRequirements": [
                {"type": "MEMORY", "value": "2048"},
                {"type": "VCPU", "value": "0.5"},
            ]
        },
    )
    assert requirements(describe(batch, job_id)["container"]) == {"VCPU": "0.5", "MEMORY": "2048"}


def test_legacy_vcpus_override_ignored_when_definition_uses_requirements(
    batch: Any, env: dict[str, str]
) -> None:
    job_id = submit(batch, env, containerOverrides={"vcpus": 8, "memory": 4096})
    container = describe(batch, job_id)["container"]
    assert requirements(container) == {"VCPU": "1", "MEMORY": "128"}
    assert container.get("vcpus") in (None, 0)
    assert container.get("memory") in (None, 0)


def test_legacy_vcpus_override_applies_to_legacy_definition(
    batch: Any, env: dict[str, str], unique: str
) -> None:
    name = f"{unique}-legacy"
    register(batch, name, container={"resourceRequirements": [], "vcpus": 2, "memory": 256})
    container = describe(batch, submit(batch, env, jobDefinition=name))["container"]
    assert (container["vcpus"], container["memory"]) == (2, 256)
    job_id = submit(batch, env, jobDefinition=name, containerOverrides={"vcpus": 4})
    container = describe(batch, job_id)["container"]
    assert (container["vcpus"], container["memory"]) == (4, 256)


def test_command_override_replaces_and_is_substituted(
    batch: Any, env: dict[str, str], unique: str
) -> None:
    name = f"{unique}-cmd"
    register(
        batch, name, parameters={"p": "dv"}, container={"command": ["original", "Ref::p", "x"]}
    )
    job_id = submit(
        batch,
        env,
        jobDefinition=name,
        parameters={"q": "sq"},
        containerOverrides={"command": ["new", "Ref::p", "--q=Ref::q"]},
    )
    detail = describe(batch, job_id)
    assert detail["container"]["command"] == ["new", "dv", "--q=sq"]
    assert detail["parameters"] == {"p": "dv", "q": "sq"}


def test_command_override_with_empty_string_rejected(batch: Any, env: dict[str, str]) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        containerOverrides={"command": ["echo", ""]},
    )


def test_instance_type_override_rejected_for_single_node_job(
    batch: Any, env: dict[str, str]
) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        containerOverrides={"instanceType": "c5.large"},
    )


@pytest.mark.parametrize("var", ["AWS_BATCH_JOB_ID", "AWS_BATCH", "AWS_BATCH_CUSTOM"])
def test_reserved_environment_in_overrides_rejected(
    batch: Any, env: dict[str, str], var: str
) -> None:
    message = rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        containerOverrides={"environment": [{"name": var, "value": "x"}]},
    )
    assert "AWS_BATCH" in message


def test_non_reserved_aws_environment_accepted(batch: Any, env: dict[str, str]) -> None:
    job_id = submit(
        batch,
        env,
        containerOverrides={"environment": [{"name": "AWS_REGION", "value": "eu-west-1"}]},
    )
    assert env_dict(describe(batch, job_id)["container"]) == {"AWS_REGION": "eu-west-1"}


def test_no_vcpu_or_memory_anywhere_rejected(batch: Any, env: dict[str, str], unique: str) -> None:
    bare = f"{unique}-bare"
    register(batch, bare, container={"resourceRequirements": []})
    rejected(batch, batch.submit_job, jobName="j", jobQueue=env["queue"], jobDefinition=bare)
    # One of the two is not enough either.
    rejected(
        batch,
        batch.submit_job,
        jobName="j",
        jobQueue=env["queue"],
        jobDefinition=bare,
        containerOverrides={"resourceRequirements": [{"type": "VCPU", "value": "1"}]},
    )
    memory_only = f"{unique}-memonly"
    register(batch, memory_only, container={"resourceRequirements": [RESOURCES[1]]})
    rejected(batch, batch.submit_job, jobName="j", jobQueue=env["queue"], jobDefinition=memory_only)
    # The override can supply what the definition lacks.
    job_id = submit(
        batch,
        env,
        jobDefinition=bare,
        containerOverrides={"resourceRequirements": RESOURCES},
    )
    assert requirements(describe(batch, job_id)["container"]) == {"VCPU": "1", "MEMORY": "128"}
    job_id = submit(batch, env, jobDefinition=memory_only, containerOverrides={"vcpus": 2})
    container = describe(batch, job_id)["container"]
    assert container["vcpus"] == 2
    assert requirements(container) == {"MEMORY": "128"}
    listed = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED")["jobSummaryList"]
    assert len(listed) == 2  # nothing rejected was stored


# -- limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["_lead", "-lead", "a" * 129, "has space", "dot.name", "colon:name", "ü"]
)
def test_bad_job_name_rejected(batch: Any, env: dict[str, str], name: str) -> None:
    message = rejected(
        batch,
        batch.submit_job,
        jobName=name,
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
    )
    assert "Job name should match valid pattern" in message


@pytest.mark.parametrize("name", ["a" * 128, "0start", "A_b-C", "x"])
def test_good_job_name_accepted(batch: Any, env: dict[str, str], name: str) -> None:
    assert describe(batch, submit(batch, env, name))["jobName"] == name


def test_payload_limit_30_kib(batch: Any, env: dict[str, str]) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="big",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        parameters={"blob": "x" * (30 * 1024)},
    )
    job_id = submit(batch, env, "almost", parameters={"blob": "x" * (29 * 1024)})
    assert len(describe(batch, job_id)["parameters"]["blob"]) == 29 * 1024


def test_tag_limit_50(batch: Any, env: dict[str, str]) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="t",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        tags={f"k{i}": "v" for i in range(51)},
    )
    tags = {f"k{i}": "v" for i in range(50)}
    assert describe(batch, submit(batch, env, tags=tags))["tags"] == tags


def test_dependency_limit_20(batch: Any, env: dict[str, str]) -> None:
    parents = [submit(batch, env, f"p{i}") for i in range(21)]
    rejected(
        batch,
        batch.submit_job,
        jobName="child",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        dependsOn=[{"jobId": p} for p in parents],
    )
    deps = [{"jobId": p} for p in parents[:20]]
    detail = describe(batch, submit(batch, env, "child", dependsOn=deps))
    assert detail["dependsOn"] == deps


def test_unknown_dependency_rejected(batch: Any, env: dict[str, str]) -> None:
    known = submit(batch, env, "known")
    rejected(
        batch,
        batch.submit_job,
        jobName="child",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        dependsOn=[{"jobId": known}, {"jobId": str(uuid.uuid4())}],
    )
    listed = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED")["jobSummaryList"]
    assert [j["jobId"] for j in listed] == [known]


@pytest.mark.parametrize("size", [1, 10001])
def test_array_size_out_of_range_rejected(batch: Any, env: dict[str, str], size: int) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="arr",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        arrayProperties={"size": size},
    )


@pytest.mark.parametrize("size", [2, 10000])
def test_array_size_in_range_accepted(batch: Any, env: dict[str, str], size: int) -> None:
    detail = describe(batch, submit(batch, env, "arr", arrayProperties={"size": size}))
    assert detail["arrayProperties"]["size"] == size


@pytest.mark.parametrize("attempts", [0, 11, -1])
def test_retry_attempts_out_of_range_rejected(
    batch: Any, env: dict[str, str], attempts: int
) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="r",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        retryStrategy={"attempts": attempts},
    )


def test_retry_strategy_more_than_5_rules_rejected(batch: Any, env: dict[str, str]) -> None:
    rules = [{"onExitCode": str(i), "action": "RETRY"} for i in range(6)]
    rejected(
        batch,
        batch.submit_job,
        jobName="r",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        retryStrategy={"attempts": 2, "evaluateOnExit": rules},
    )
    detail = describe(
        batch, submit(batch, env, retryStrategy={"attempts": 2, "evaluateOnExit": rules[:5]})
    )
    assert detail["retryStrategy"] == {"attempts": 2, "evaluateOnExit": rules[:5]}


@pytest.mark.parametrize("attempts", [1, 10])
def test_retry_attempts_in_range_accepted(batch: Any, env: dict[str, str], attempts: int) -> None:
    detail = describe(batch, submit(batch, env, retryStrategy={"attempts": attempts}))
    assert detail["retryStrategy"]["attempts"] == attempts


def test_timeout_below_minimum_rejected(batch: Any, env: dict[str, str]) -> None:
    # The shared server runs with --min-timeout-seconds 1.
    rejected(
        batch,
        batch.submit_job,
        jobName="t",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        timeout={"attemptDurationSeconds": 0},
    )
    detail = describe(batch, submit(batch, env, timeout={"attemptDurationSeconds": 1}))
    assert detail["timeout"] == {"attemptDurationSeconds": 1}


def test_timeout_minimum_is_60_seconds_by_default(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        batch = server.client()
        ce = make_ce(batch, "ce")
        make_queue(batch, "q", [ce])
        make_definition(batch, "d")
        message = rejected(
            batch,
            batch.submit_job,
            jobName="t",
            jobQueue="q",
            jobDefinition="d",
            timeout={"attemptDurationSeconds": 59},
        )
        assert "60" in message
        job_id = batch.submit_job(
            jobName="t", jobQueue="q", jobDefinition="d", timeout={"attemptDurationSeconds": 60}
        )["jobId"]
        [detail] = batch.describe_jobs(jobs=[job_id])["jobs"]
        assert detail["timeout"] == {"attemptDurationSeconds": 60}
    finally:
        server.stop()


@pytest.mark.parametrize(
    "extra",
    [
        {"schedulingPriorityOverride": 5},
        {"shareIdentifier": "blue"},
        {"shareIdentifier": "blue", "schedulingPriorityOverride": 0},
    ],
)
def test_fair_share_members_on_fifo_queue_rejected(
    batch: Any, env: dict[str, str], extra: dict[str, Any]
) -> None:
    message = rejected(
        batch,
        batch.submit_job,
        jobName="fs",
        jobQueue=env["queue"],
        jobDefinition=env["definition_name"],
        **extra,
    )
    assert message == FAIR_SHARE_ONLY


@pytest.fixture
def fair_queue(batch: Any, env: dict[str, str], unique: str) -> str:
    policy = batch.create_scheduling_policy(
        name=f"{unique}-fs",
        fairsharePolicy={"shareDecaySeconds": 0, "shareDistribution": [{"shareIdentifier": "a"}]},
    )["arn"]
    return make_queue(batch, f"{unique}-fq", [env["ce"]], schedulingPolicyArn=policy)


def test_fair_share_queue_requires_share_identifier(
    batch: Any, env: dict[str, str], fair_queue: str
) -> None:
    rejected(
        batch,
        batch.submit_job,
        jobName="fs",
        jobQueue=fair_queue,
        jobDefinition=env["definition_name"],
    )
    job_id = submit(
        batch, env, jobQueue=fair_queue, shareIdentifier="a", schedulingPriorityOverride=7
    )
    detail = describe(batch, job_id)
    assert detail["shareIdentifier"] == "a"
    assert detail["schedulingPriority"] == 7
    assert detail["jobQueue"] == fair_queue


def test_fargate_definition_on_ec2_queue_rejected(
    batch: Any, env: dict[str, str], unique: str
) -> None:
    name = f"{unique}-fg"
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        platformCapabilities=["FARGATE"],
        containerProperties={
            "image": "busybox",
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "0.25"},
                {"type": "MEMORY", "value": "512"},
            ],
            "networkConfiguration": {"assignPublicIp": "DISABLED"},
            "fargatePlatformConfiguration": {"platformVersion": "LATEST"},
        },
    )
    message = rejected(
        batch, batch.submit_job, jobName="fg", jobQueue=env["queue"], jobDefinition=name
    )
    assert message == (
        "Job Queue is attached to Compute Environment that can not run Jobs with capability "
        "FARGATE."
    )
    # The same definition on a Fargate queue is fine, and an EC2 one is not.
    fargate_ce = make_ce(batch, f"{unique}-fgce", kind="FARGATE")
    fargate_queue = make_queue(batch, f"{unique}-fgq", [fargate_ce])
    detail = describe(batch, submit(batch, env, jobQueue=fargate_queue, jobDefinition=name))
    assert detail["platformCapabilities"] == ["FARGATE"]
    message = rejected(
        batch,
        batch.submit_job,
        jobName="ec2",
        jobQueue=fargate_queue,
        jobDefinition=env["definition_name"],
    )
    assert message == (
        "Job Queue is attached to Compute Environment that can not run Jobs with capability EC2."
    )


# -- retryStrategy / timeout: definition defaults vs submit values --------------------

DEF_RETRY = {
    "attempts": 3,
    "evaluateOnExit": [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    ],
}


@pytest.fixture
def defaults_definition(batch: Any, unique: str) -> str:
    name = f"{unique}-defaults"
    register(batch, name, retryStrategy=DEF_RETRY, timeout={"attemptDurationSeconds": 3600})
    return name


def test_retry_and_timeout_from_definition(
    batch: Any, env: dict[str, str], defaults_definition: str
) -> None:
    detail = describe(batch, submit(batch, env, jobDefinition=defaults_definition))
    assert detail["retryStrategy"] == DEF_RETRY
    assert detail["timeout"] == {"attemptDurationSeconds": 3600}


def test_retry_and_timeout_submit_overrides_definition(
    batch: Any, env: dict[str, str], defaults_definition: str
) -> None:
    retry = {"attempts": 5, "evaluateOnExit": [{"onExitCode": "1*", "action": "exit"}]}
    detail = describe(
        batch,
        submit(
            batch,
            env,
            jobDefinition=defaults_definition,
            retryStrategy=retry,
            timeout={"attemptDurationSeconds": 90},
        ),
    )
    assert detail["retryStrategy"] == retry
    assert detail["timeout"] == {"attemptDurationSeconds": 90}


# -- DescribeJobs ---------------------------------------------------------------


def test_describe_more_than_100_ids_rejected(batch: Any) -> None:
    ids = [str(uuid.uuid4()) for _ in range(101)]
    message = rejected(batch, batch.describe_jobs, jobs=ids)
    assert message == "Maximum number of jobs supported is 100"
    assert batch.describe_jobs(jobs=ids[:100])["jobs"] == []


def test_describe_omits_unknown_ids(batch: Any, env: dict[str, str]) -> None:
    first = submit(batch, env, "first")
    second = submit(batch, env, "second")
    ids = [str(uuid.uuid4()), first, "not-even-a-uuid", second, f"{first}:5"]
    jobs = batch.describe_jobs(jobs=ids)["jobs"]
    assert sorted(j["jobId"] for j in jobs) == sorted([first, second])
    assert {j["jobId"]: j["jobName"] for j in jobs} == {first: "first", second: "second"}
    assert batch.describe_jobs(jobs=[str(uuid.uuid4())])["jobs"] == []


def test_describe_100_known_ids(batch: Any, env: dict[str, str]) -> None:
    ids = [submit(batch, env, f"j{i}") for i in range(100)]
    jobs = batch.describe_jobs(jobs=ids)["jobs"]
    assert sorted(j["jobId"] for j in jobs) == sorted(ids)


def test_array_parent_detail(batch: Any, env: dict[str, str]) -> None:
    job_id = submit(batch, env, "array", arrayProperties={"size": 7})
    detail = describe(batch, job_id)
    assert detail["status"] == "SUBMITTED"
    props = detail["arrayProperties"]
    assert props["size"] == 7
    assert "index" not in props
    summary = props["statusSummary"]
    assert set(summary) == STATUSES
    assert all(type(v) is int and v >= 0 for v in summary.values())
    assert sum(summary.values()) <= 7
    assert type(props["statusSummaryLastUpdatedAt"]) is int
    assert detail["attempts"] == []
    summary_row = next(
        j
        for j in batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED")["jobSummaryList"]
        if j["jobId"] == job_id
    )
    assert summary_row["arrayProperties"]["size"] == 7
    assert set(summary_row["arrayProperties"]["statusSummary"]) == STATUSES
