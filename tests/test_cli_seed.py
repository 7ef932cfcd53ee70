"""The user's seed, driven with the real aws CLI (v1) configured only by environment.

The compute environments, queues and job definitions are those of the seed's
main.tf (with a local image instead of the ECR URL); the job commands are the
ones in its deployment-commands.sh, verbatim. The seed's names are fixed, so
this module runs its own server.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, aws_cli, start_server

PREFIX = "arn:aws:batch:us-east-1:123456789012"
IMAGE = "batch-processor-job:latest"
ROLE = "arn:aws:iam::123456789012:role"
SUBNETS = ["subnet-0a1b2c3d4e5f60001", "subnet-0a1b2c3d4e5f60002"]
SECURITY_GROUPS = ["sg-0123456789abcdef0"]
LOGS = {"awslogs-group": "/aws/batch/batch-processor", "awslogs-region": "us-east-1"}
BUCKETS = [
    {"name": "INPUT_BUCKET", "value": "batch-processor-input-1a2b3c4d"},
    {"name": "OUTPUT_BUCKET", "value": "batch-processor-output-1a2b3c4d"},
]

COMPUTE_ENVIRONMENTS: dict[str, dict[str, Any]] = {
    "batch-processor-spot": {
        "type": "SPOT",
        "allocationStrategy": "SPOT_PRICE_CAPACITY_OPTIMIZED",
        "bidPercentage": 100,
        "minvCpus": 0,
        "maxvCpus": 256,
        "desiredvCpus": 0,
        "instanceTypes": [
            "c5.large",
            "c5.xlarge",
            "c5.2xlarge",
            "m5.large",
            "m5.xlarge",
            "m5.2xlarge",
            "r5.large",
            "r5.xlarge",
        ],
        "subnets": SUBNETS,
        "securityGroupIds": SECURITY_GROUPS,
        "instanceRole": "arn:aws:iam::123456789012:instance-profile/batch-processor-instance",
        "spotIamFleetRole": f"{ROLE}/batch-processor-spot-fleet",
        "tags": {"Name": "batch-processor-spot"},
    },
    "batch-processor-on-demand": {
        "type": "EC2",
        "minvCpus": 0,
        "maxvCpus": 64,
        "desiredvCpus": 0,
        "instanceTypes": ["c5.large", "c5.xlarge", "m5.large"],
        "subnets": SUBNETS,
        "securityGroupIds": SECURITY_GROUPS,
        "instanceRole": "arn:aws:iam::123456789012:instance-profile/batch-processor-instance",
    },
    "batch-processor-fargate": {
        "type": "FARGATE_SPOT",
        "maxvCpus": 64,
        "subnets": SUBNETS,
        "securityGroupIds": SECURITY_GROUPS,
    },
}

QUEUES: dict[str, tuple[int, list[str]]] = {
    "batch-processor-high-priority": (10, ["batch-processor-on-demand", "batch-processor-spot"]),
    "batch-processor-low-priority": (1, ["batch-processor-spot"]),
    "batch-processor-fargate": (5, ["batch-processor-fargate"]),
}

MAIN_CONTAINER: dict[str, Any] = {
    "image": IMAGE,
    "resourceRequirements": [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}],
    "jobRoleArn": f"{ROLE}/batch-processor-job",
    "executionRoleArn": f"{ROLE}/batch-processor-execution",
    "environment": [*BUCKETS, {"name": "AWS_REGION", "value": "us-east-1"}],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {**LOGS, "awslogs-stream-prefix": "batch"},
    },
    "mountPoints": [{"containerPath": "/data", "sourceVolume": "data", "readOnly": False}],
    "volumes": [{"name": "data", "host": {"sourcePath": "/tmp/data"}}],
}
MAIN_RETRY: dict[str, Any] = {
    "attempts": 3,
    "evaluateOnExit": [
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    ],
}
FARGATE_CONTAINER: dict[str, Any] = {
    "image": IMAGE,
    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
    "jobRoleArn": f"{ROLE}/batch-processor-job",
    "executionRoleArn": f"{ROLE}/batch-processor-execution",
    "fargatePlatformConfiguration": {"platformVersion": "LATEST"},
    "networkConfiguration": {"assignPublicIp": "DISABLED"},
    "environment": BUCKETS,
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {**LOGS, "awslogs-stream-prefix": "fargate"},
    },
}
ARRAY_CONTAINER: dict[str, Any] = {
    "image": IMAGE,
    "resourceRequirements": [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "2048"}],
    "jobRoleArn": f"{ROLE}/batch-processor-job",
    "executionRoleArn": f"{ROLE}/batch-processor-execution",
    "environment": BUCKETS,
    "command": [
        "/bin/bash",
        "-c",
        "echo Processing array index $AWS_BATCH_JOB_ARRAY_INDEX && "
        "python process.py --index $AWS_BATCH_JOB_ARRAY_INDEX",
    ],
    "logConfiguration": {
        "logDriver": "awslogs",
        "options": {**LOGS, "awslogs-stream-prefix": "array"},
    },
}

# deployment-commands.sh, verbatim (the shell's quoting already removed).
SUBMIT_SINGLE = [
    "batch",
    "submit-job",
    "--job-name",
    "test-job",
    "--job-queue",
    "batch-processor-low-priority",
    "--job-definition",
    "batch-processor-job",
]
SUBMIT_ARRAY = [
    "batch",
    "submit-job",
    "--job-name",
    "array-job",
    "--job-queue",
    "batch-processor-low-priority",
    "--job-definition",
    "batch-processor-array-job",
    "--array-properties",
    "size=100",
]
SUBMIT_OVERRIDES = [
    "batch",
    "submit-job",
    "--job-name",
    "custom-job",
    "--job-queue",
    "batch-processor-high-priority",
    "--job-definition",
    "batch-processor-job",
    "--container-overrides",
    """{
    "environment": [
      {"name": "CUSTOM_VAR", "value": "custom_value"}
    ],
    "resourceRequirements": [
      {"type": "VCPU", "value": "4"},
      {"type": "MEMORY", "value": "8192"}
    ]
  }""",
]
LIST_RUNNING = [
    "batch",
    "list-jobs",
    "--job-queue",
    "batch-processor-low-priority",
    "--job-status",
    "RUNNING",
]


def cli_json(server: Server, *args: str) -> dict[str, Any]:
    result = aws_cli(server, *args)
    assert result.returncode == 0
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def parallel(server: Server, commands: list[list[str]]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=len(commands)) as pool:
        return list(pool.map(lambda args: cli_json(server, *args), commands))


def create_seed(server: Server) -> dict[tuple[str, str], dict[str, Any]]:
    """The seed's resources, created with the CLI; returns the CLI's outputs."""
    first = [
        [
            "batch",
            "create-compute-environment",
            "--compute-environment-name",
            name,
            "--type",
            "MANAGED",
            "--compute-resources",
            json.dumps(resources),
            "--service-role",
            f"{ROLE}/batch-processor-batch-service",
        ]
        for name, resources in COMPUTE_ENVIRONMENTS.items()
    ]
    definitions = [
        ("batch-processor-job", MAIN_CONTAINER, "EC2", MAIN_RETRY, 3600),
        ("batch-processor-fargate-job", FARGATE_CONTAINER, "FARGATE", {"attempts": 2}, 1800),
        ("batch-processor-array-job", ARRAY_CONTAINER, "EC2", None, None),
    ]
    for name, container, capability, retry, timeout in definitions:
        args = [
            "batch",
            "register-job-definition",
            "--job-definition-name",
            name,
            "--type",
            "container",
            "--platform-capabilities",
            capability,
            "--container-properties",
            json.dumps(container),
        ]
        if retry is not None:
            args += ["--retry-strategy", json.dumps(retry)]
        if timeout is not None:
            args += ["--timeout", f"attemptDurationSeconds={timeout}"]
        first.append(args)
    outputs = parallel(server, first)
    queues = [
        [
            "batch",
            "create-job-queue",
            "--job-queue-name",
            name,
            "--state",
            "ENABLED",
            "--priority",
            str(priority),
            "--compute-environment-order",
            *[
                f"order={i + 1},computeEnvironment={PREFIX}:compute-environment/{ce}"
                for i, ce in enumerate(ces)
            ],
        ]
        for name, (priority, ces) in QUEUES.items()
    ]
    outputs += parallel(server, queues)
    keyed: dict[tuple[str, str], dict[str, Any]] = {}
    for out in outputs:
        for kind in ("computeEnvironment", "jobDefinition", "jobQueue"):
            if f"{kind}Name" in out:
                keyed[kind, out[f"{kind}Name"]] = out
    assert len(keyed) == len(outputs)
    return keyed


def seed_template(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the seed, created once per test session with the CLI.

    Under pytest-xdist every worker that runs tests of this module needs the
    seed; the first one creates it through a real server and the CLI, the
    others copy its data directory (one CLI setup instead of one per worker).
    """
    template = root / "cli-seed-template"
    with (root / "cli-seed.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (template / "outputs.json").exists():
            build = tmp_path_factory.mktemp("seed-build")
            server = start_server(build)
            try:
                outputs = create_seed(server)
            finally:
                server.stop()
            shutil.copytree(build / "data", template / "data")
            rows = [[kind, name, out] for (kind, name), out in outputs.items()]
            (template / "outputs.json").write_text(json.dumps(rows))
    return template


@pytest.fixture(scope="module")
def seed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Server, dict[tuple[str, str], Any]]]:
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's basetemp is a directory of the session's one.
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    template = seed_template(root, tmp_path_factory)
    outputs = {(k, n): out for k, n, out in json.loads((template / "outputs.json").read_text())}
    mine = tmp_path_factory.mktemp("seed")
    shutil.copytree(template / "data", mine / "data")
    server = Server(data_dir=mine / "data", args=["--no-engine"]).start()
    try:
        yield server, outputs
    finally:
        server.stop()


@pytest.fixture
def seed_server(seed: tuple[Server, dict[tuple[str, str], Any]]) -> Server:
    return seed[0]


def describe(server: Server, job_id: str) -> dict[str, Any]:
    """DescribeJobs through boto3 (quicker than another CLI process)."""
    [detail] = server.client().describe_jobs(jobs=[job_id])["jobs"]
    result: dict[str, Any] = detail
    return result


def env_dict(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["environment"]}


def requirements(container: dict[str, Any]) -> dict[str, str]:
    return {r["type"]: r["value"] for r in container["resourceRequirements"]}


def test_seed_resources_created(seed: tuple[Server, dict[tuple[str, str], Any]]) -> None:
    server, outputs = seed
    for name in COMPUTE_ENVIRONMENTS:
        assert outputs["computeEnvironment", name] == {
            "computeEnvironmentName": name,
            "computeEnvironmentArn": f"{PREFIX}:compute-environment/{name}",
        }
    for name in QUEUES:
        assert outputs["jobQueue", name] == {
            "jobQueueName": name,
            "jobQueueArn": f"{PREFIX}:job-queue/{name}",
        }
    for name in ("batch-processor-job", "batch-processor-fargate-job", "batch-processor-array-job"):
        assert outputs["jobDefinition", name] == {
            "jobDefinitionName": name,
            "jobDefinitionArn": f"{PREFIX}:job-definition/{name}:1",
            "revision": 1,
        }
    batch = server.client()
    queues = batch.describe_job_queues()["jobQueues"]
    shape = {
        q["jobQueueName"]: (
            q["priority"],
            q["state"],
            [o["computeEnvironment"] for o in sorted(q["computeEnvironmentOrder"], key=order)],
        )
        for q in queues
    }
    assert shape == {
        name: (priority, "ENABLED", [f"{PREFIX}:compute-environment/{ce}" for ce in ces])
        for name, (priority, ces) in QUEUES.items()
    }
    ces = batch.describe_compute_environments()["computeEnvironments"]
    assert {c["computeEnvironmentName"]: c["computeResources"]["type"] for c in ces} == {
        name: r["type"] for name, r in COMPUTE_ENVIRONMENTS.items()
    }
    [main] = batch.describe_job_definitions(jobDefinitions=["batch-processor-job:1"])[
        "jobDefinitions"
    ]
    assert main["containerProperties"]["image"] == IMAGE
    assert main["retryStrategy"] == MAIN_RETRY
    assert main["timeout"] == {"attemptDurationSeconds": 3600}
    assert main["platformCapabilities"] == ["EC2"]


def order(entry: dict[str, Any]) -> int:
    value: int = entry["order"]
    return value


def test_submit_single_job(seed_server: Server) -> None:
    out = cli_json(seed_server, *SUBMIT_SINGLE)
    assert set(out) == {"jobArn", "jobName", "jobId"}
    assert out["jobName"] == "test-job"
    assert out["jobArn"] == f"{PREFIX}:job/{out['jobId']}"

    # aws batch describe-jobs --jobs JOB_ID
    described = cli_json(seed_server, "batch", "describe-jobs", "--jobs", out["jobId"])
    assert set(described) == {"jobs"}
    [detail] = described["jobs"]
    assert detail["jobId"] == out["jobId"]
    assert detail["jobName"] == "test-job"
    assert detail["status"] == "SUBMITTED"
    assert detail["jobQueue"] == f"{PREFIX}:job-queue/batch-processor-low-priority"
    assert detail["jobDefinition"] == f"{PREFIX}:job-definition/batch-processor-job:1"
    assert type(detail["createdAt"]) is int and detail["createdAt"] > 1_600_000_000_000
    assert "startedAt" not in detail
    assert detail["retryStrategy"] == MAIN_RETRY
    assert detail["timeout"] == {"attemptDurationSeconds": 3600}
    assert detail["platformCapabilities"] == ["EC2"]
    container = detail["container"]
    assert container["image"] == IMAGE
    assert env_dict(container) == {
        "INPUT_BUCKET": "batch-processor-input-1a2b3c4d",
        "OUTPUT_BUCKET": "batch-processor-output-1a2b3c4d",
        "AWS_REGION": "us-east-1",
    }
    assert requirements(container) == {"VCPU": "2", "MEMORY": "4096"}
    assert container["jobRoleArn"] == f"{ROLE}/batch-processor-job"
    assert container["logConfiguration"] == MAIN_CONTAINER["logConfiguration"]
    assert container["mountPoints"] == MAIN_CONTAINER["mountPoints"]
    assert container["volumes"] == MAIN_CONTAINER["volumes"]


def test_submit_array_job(seed_server: Server) -> None:
    out = cli_json(seed_server, *SUBMIT_ARRAY)
    assert out["jobName"] == "array-job"
    detail = describe(seed_server, out["jobId"])
    assert detail["jobDefinition"] == f"{PREFIX}:job-definition/batch-processor-array-job:1"
    assert detail["arrayProperties"]["size"] == 100
    assert set(detail["arrayProperties"]["statusSummary"]) == {
        "SUBMITTED",
        "PENDING",
        "RUNNABLE",
        "STARTING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
    }
    # `$AWS_BATCH_JOB_ARRAY_INDEX` is for the shell in the container, left as is.
    assert detail["container"]["command"] == ARRAY_CONTAINER["command"]


def test_submit_with_overrides(seed_server: Server) -> None:
    out = cli_json(seed_server, *SUBMIT_OVERRIDES)
    assert out["jobName"] == "custom-job"
    detail = describe(seed_server, out["jobId"])
    assert detail["jobQueue"] == f"{PREFIX}:job-queue/batch-processor-high-priority"
    container = detail["container"]
    assert env_dict(container) == {
        "INPUT_BUCKET": "batch-processor-input-1a2b3c4d",
        "OUTPUT_BUCKET": "batch-processor-output-1a2b3c4d",
        "AWS_REGION": "us-east-1",
        "CUSTOM_VAR": "custom_value",
    }
    assert requirements(container) == {"VCPU": "4", "MEMORY": "8192"}


def test_list_running_jobs_is_empty_right_after_submit(seed_server: Server) -> None:
    submitted = cli_json(seed_server, *SUBMIT_SINGLE)["jobId"]
    assert cli_json(seed_server, *LIST_RUNNING) == {"jobSummaryList": []}
    listed = seed_server.client().list_jobs(
        jobQueue="batch-processor-low-priority", jobStatus="SUBMITTED"
    )["jobSummaryList"]
    assert submitted in [j["jobId"] for j in listed]
    assert all(j["status"] == "SUBMITTED" for j in listed)


def test_fargate_job_on_fargate_queue(seed_server: Server) -> None:
    out = cli_json(
        seed_server,
        "batch",
        "submit-job",
        "--job-name",
        "fargate-job",
        "--job-queue",
        "batch-processor-fargate",
        "--job-definition",
        "batch-processor-fargate-job",
    )
    detail = describe(seed_server, out["jobId"])
    assert detail["platformCapabilities"] == ["FARGATE"]
    assert detail["retryStrategy"] == {"attempts": 2}
    assert detail["timeout"] == {"attemptDurationSeconds": 1800}
    assert detail["container"]["networkConfiguration"] == {"assignPublicIp": "DISABLED"}


def test_fargate_job_on_ec2_queue_fails_with_cli_error(seed_server: Server) -> None:
    result = aws_cli(
        seed_server,
        "batch",
        "submit-job",
        "--job-name",
        "misplaced",
        "--job-queue",
        "batch-processor-low-priority",
        "--job-definition",
        "batch-processor-fargate-job",
        check=False,
    )
    assert result.returncode == 255
    assert result.stdout == ""
    assert "An error occurred (ClientException) when calling the SubmitJob operation" in (
        result.stderr
    )


def test_unknown_queue_is_a_cli_error(seed_server: Server) -> None:
    result = aws_cli(
        seed_server,
        "batch",
        "submit-job",
        "--job-name",
        "test-job",
        "--job-queue",
        "no-such-queue",
        "--job-definition",
        "batch-processor-job",
        check=False,
    )
    assert result.returncode == 255
    assert result.stdout == ""
    assert (
        "An error occurred (ClientException) when calling the SubmitJob operation: "
        "JobQueue no-such-queue not found." in result.stderr
    )


def test_describe_unknown_job_prints_empty_list(seed_server: Server) -> None:
    assert cli_json(
        seed_server, "batch", "describe-jobs", "--jobs", "00000000-0000-0000-0000-000000000000"
    ) == {"jobs": []}
