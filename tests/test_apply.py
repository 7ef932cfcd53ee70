"""`shoal apply` / `shoal destroy`: the seed's Terraform, unchanged, on a real server.

The CLI runs as a user runs it (`python -m shoal apply main.tf`), against a
`shoal server` started by the fixture; the results are read back with boto3
and the aws CLI. The seed's own names are fixed, so the module applies it
once on its own server; the other tests set `--var project_name=<unique>`
and share that server. The server's settle delay is short but not zero, so
the waits for VALID compute environments and queues are exercised.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Server, aws_cli, start_server

from shoal.terraform.errors import EvalError, UnknownReference
from shoal.terraform.expressions import evaluate
from shoal.terraform.functions import FUNCTIONS
from shoal.terraform.parser import parse_template

# The seed's Terraform, verbatim (acceptance material: it must apply unmodified).
SEED = Path(__file__).resolve().parent.parent / "examples" / "seed-pipeline" / "main.tf"
PREFIX = "arn:aws:batch:us-east-1:123456789012"
ROLE = "arn:aws:iam::123456789012:role"
SEED_RESOURCES = 11  # 3 compute environments, 3 queues, 3 definitions, a rule, a target


def shoal(server: Server, *args: str, env: dict[str, str] | None = None) -> Any:
    """`python -m shoal ARGS --endpoint-url SERVER`, as a user runs it."""
    environ = {
        **os.environ,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_DEFAULT_REGION": "us-east-1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args, "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out: str = result.stdout
    return out


def failed(result: Any) -> str:
    """A clean failure: exit 1, one message, no traceback; the message."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    err: str = result.stderr
    return err


def seed_copy(directory: Path, *edits: tuple[str, str]) -> Path:
    """The seed's main.tf in `directory`, with `edits` (old, new) made once each."""
    directory.mkdir(parents=True, exist_ok=True)
    text = SEED.read_text()
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = directory / "main.tf"
    path.write_text(text)
    return path


def lines(output: str, sign: str) -> list[str]:
    """The resource addresses printed with `sign` (+ ~ = -)."""
    return [line.split()[2] for line in output.splitlines() if line.startswith(f"{sign} ")]


def definitions(batch: Any, name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = batch.describe_job_definitions(jobDefinitionName=name)[
        "jobDefinitions"
    ]
    return sorted(found, key=lambda d: int(d["revision"]))


def env_dict(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["environment"]}


def rule_missing(events: Any, name: str) -> bool:
    try:
        events.describe_rule(Name=name)
    except ClientError as e:
        return bool(e.response["Error"]["Code"] == "ResourceNotFoundException")
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(
        tmp_path_factory.mktemp("apply"),
        "--settle-delay-ms",
        "100",
        "--min-timeout-seconds",
        "1",
    )
    yield srv
    srv.stop()


@dataclass
class Applied:
    server: Server
    path: Path
    output: str


@pytest.fixture(scope="module")
def applied(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Applied:
    """The seed's main.tf, unmodified, applied with its defaults."""
    path = seed_copy(tmp_path_factory.mktemp("seed"))
    assert path.read_text() == SEED.read_text()
    result = shoal(server, "apply", str(path))
    assert result.stderr == ""  # every argument of the seed is understood: no warnings
    return Applied(server, path, ok(result))


# -- the seed -----------------------------------------------------------------


def test_seed_applies(applied: Applied) -> None:
    assert len(lines(applied.output, "+")) == SEED_RESOURCES
    assert f"Applied: {SEED_RESOURCES} created, 0 updated, 0 unchanged." in applied.output
    batch = applied.server.client()
    ces = {
        c["computeEnvironmentName"]: c
        for c in batch.describe_compute_environments()["computeEnvironments"]
        if c["computeEnvironmentName"].startswith("batch-processor-")
    }
    assert {name: (c["computeResources"]["type"], c["status"]) for name, c in ces.items()} == {
        "batch-processor-spot": ("SPOT", "VALID"),
        "batch-processor-on-demand": ("EC2", "VALID"),
        "batch-processor-fargate": ("FARGATE_SPOT", "VALID"),
    }
    assert [ces[n]["computeResources"]["maxvCpus"] for n in sorted(ces)] == [64, 64, 256]
    spot = ces["batch-processor-spot"]["computeResources"]
    assert spot["allocationStrategy"] == "SPOT_PRICE_CAPACITY_OPTIMIZED"
    assert spot["bidPercentage"] == 100
    assert len(spot["instanceTypes"]) == 8
    assert spot["tags"] == {"Name": "batch-processor-spot"}
    assert spot["instanceRole"].startswith("arn:aws:iam::123456789012:instance-profile/")
    assert spot["spotIamFleetRole"] == f"{ROLE}/batch-processor-spot-fleet"
    # module.vpc.private_subnets: two made-up subnet ids, the same for every CE.
    assert len(spot["subnets"]) == 2 and all(s.startswith("subnet-") for s in spot["subnets"])
    assert ces["batch-processor-on-demand"]["computeResources"]["subnets"] == spot["subnets"]
    assert (
        ces["batch-processor-on-demand"]["serviceRole"] == f"{ROLE}/batch-processor-batch-service"
    )

    queues = {
        q["jobQueueName"]: q
        for q in batch.describe_job_queues()["jobQueues"]
        if q["jobQueueName"].startswith("batch-processor-")
    }
    shape = {
        name: (
            q["priority"],
            q["state"],
            q["status"],
            [
                o["computeEnvironment"]
                for o in sorted(q["computeEnvironmentOrder"], key=lambda o: o["order"])
            ],
        )
        for name, q in queues.items()
    }
    ce_arn = f"{PREFIX}:compute-environment/batch-processor"
    assert shape == {
        "batch-processor-high-priority": (
            10,
            "ENABLED",
            "VALID",
            [f"{ce_arn}-on-demand", f"{ce_arn}-spot"],
        ),
        "batch-processor-low-priority": (1, "ENABLED", "VALID", [f"{ce_arn}-spot"]),
        "batch-processor-fargate": (5, "ENABLED", "VALID", [f"{ce_arn}-fargate"]),
    }

    outputs = dict(re.findall(r"^  (\w+) = (.*)$", applied.output, re.M))
    input_bucket, output_bucket = outputs["input_bucket"], outputs["output_bucket"]
    assert re.fullmatch(r"batch-processor-input-[0-9a-f]{8}", input_bucket)
    assert output_bucket == input_bucket.replace("-input-", "-output-")
    assert outputs["job_queue_low"] == f"{PREFIX}:job-queue/batch-processor-low-priority"
    assert outputs["job_definition"] == f"{PREFIX}:job-definition/batch-processor-job:1"

    [main] = definitions(batch, "batch-processor-job")
    assert main["status"] == "ACTIVE" and main["revision"] == 1
    assert main["platformCapabilities"] == ["EC2"]
    assert main["retryStrategy"] == {
        "attempts": 3,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
        ],
    }
    assert main["timeout"] == {"attemptDurationSeconds": 3600}
    container = main["containerProperties"]
    assert container["image"] == "batch-processor-job:latest"
    assert env_dict(container) == {
        "INPUT_BUCKET": input_bucket,
        "OUTPUT_BUCKET": output_bucket,
        "AWS_REGION": "us-east-1",
    }
    assert container["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/aws/batch/batch-processor",
            "awslogs-region": "us-east-1",
            "awslogs-stream-prefix": "batch",
        },
    }
    assert container["jobRoleArn"] == f"{ROLE}/batch-processor-batch-job"
    assert container["mountPoints"] == [
        {"containerPath": "/data", "sourceVolume": "data", "readOnly": False}
    ]
    [fargate] = definitions(batch, "batch-processor-fargate-job")
    assert fargate["platformCapabilities"] == ["FARGATE"]
    assert fargate["retryStrategy"] == {"attempts": 2}
    assert fargate["timeout"] == {"attemptDurationSeconds": 1800}
    assert fargate["containerProperties"]["networkConfiguration"] == {"assignPublicIp": "DISABLED"}
    [array] = definitions(batch, "batch-processor-array-job")
    assert array["containerProperties"]["command"][-1].startswith("echo Processing array index")
    assert "retryStrategy" not in array and "timeout" not in array


def test_seed_nightly_rule(applied: Applied) -> None:
    events = applied.server.client("events")
    rule = events.describe_rule(Name="batch-processor-nightly")
    assert rule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert rule["State"] == "ENABLED"
    [target] = events.list_targets_by_rule(Rule="batch-processor-nightly")["Targets"]
    assert target["Arn"] == f"{PREFIX}:job-queue/batch-processor-low-priority"
    assert target["RoleArn"] == f"{ROLE}/batch-processor-eventbridge-batch"
    assert target["BatchParameters"] == {
        "JobDefinition": f"{PREFIX}:job-definition/batch-processor-job:1",
        "JobName": "nightly-job",
    }


def test_seed_commands_work_on_what_was_applied(applied: Applied) -> None:
    server = applied.server
    single = json.loads(
        aws_cli(
            server,
            "batch",
            "submit-job",
            "--job-name",
            "test-job",
            "--job-queue",
            "batch-processor-low-priority",
            "--job-definition",
            "batch-processor-job",
        ).stdout
    )
    array = json.loads(
        aws_cli(
            server,
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
        ).stdout
    )
    running = json.loads(
        aws_cli(
            server,
            "batch",
            "list-jobs",
            "--job-queue",
            "batch-processor-low-priority",
            "--job-status",
            "RUNNING",
        ).stdout
    )
    assert running == {"jobSummaryList": []}  # the server runs no engine: jobs wait
    described = json.loads(
        aws_cli(server, "batch", "describe-jobs", "--jobs", single["jobId"], array["jobId"]).stdout
    )["jobs"]
    by_id = {j["jobId"]: j for j in described}
    job = by_id[single["jobId"]]
    assert job["jobDefinition"] == f"{PREFIX}:job-definition/batch-processor-job:1"
    assert job["container"]["image"] == "batch-processor-job:latest"
    assert job["retryStrategy"]["attempts"] == 3
    assert by_id[array["jobId"]]["arrayProperties"]["size"] == 100


def test_reapply_changes_nothing(applied: Applied) -> None:
    batch = applied.server.client()
    names = ("batch-processor-job", "batch-processor-fargate-job", "batch-processor-array-job")
    before = {n: len(definitions(batch, n)) for n in names}
    again = ok(shoal(applied.server, "apply", str(applied.path)))
    assert f"Applied: 0 created, 0 updated, {SEED_RESOURCES} unchanged." in again
    assert {n: len(definitions(batch, n)) for n in names} == before == dict.fromkeys(names, 1)
    plan = ok(shoal(applied.server, "apply", str(applied.path.parent), "--plan"))
    assert len(lines(plan, "=")) == SEED_RESOURCES
    assert not lines(plan, "+") and not lines(plan, "~")
    assert f"Plan: 0 to create, 0 to update, {SEED_RESOURCES} unchanged." in plan


# -- plan, variables, updates, destroy ----------------------------------------


def test_plan_on_a_fresh_server_creates_nothing(tmp_path: Path) -> None:
    fresh = start_server(tmp_path)
    try:
        path = seed_copy(tmp_path / "tf")
        plan = ok(shoal(fresh, "apply", str(path), "--plan"))
        assert len(lines(plan, "+")) == SEED_RESOURCES
        assert "aws_batch_compute_environment.spot" in lines(plan, "+")
        assert f"Plan: {SEED_RESOURCES} to create, 0 to update, 0 unchanged." in plan
        assert "module.vpc" in plan  # listed among the stand-ins
        batch = fresh.client()
        assert batch.describe_compute_environments()["computeEnvironments"] == []
        assert batch.describe_job_queues()["jobQueues"] == []
        assert batch.describe_job_definitions()["jobDefinitions"] == []
        assert fresh.client("events").list_rules()["Rules"] == []
    finally:
        fresh.stop()


def test_var_names_the_resources(server: Server, tmp_path: Path, unique: str) -> None:
    path = seed_copy(tmp_path)
    out = ok(shoal(server, "apply", str(path), "--var", f"project_name={unique}"))
    assert len(lines(out, "+")) == SEED_RESOURCES
    batch = server.client()
    names = {
        c["computeEnvironmentName"]
        for c in batch.describe_compute_environments()["computeEnvironments"]
    }
    assert {f"{unique}-spot", f"{unique}-on-demand", f"{unique}-fargate"} <= names
    [queue] = batch.describe_job_queues(jobQueues=[f"{unique}-high-priority"])["jobQueues"]
    assert queue["priority"] == 10
    [definition] = definitions(batch, f"{unique}-job")
    # The image comes from the repository's name, which follows project_name.
    assert definition["containerProperties"]["image"] == f"{unique}-job:latest"
    assert server.client("events").describe_rule(Name=f"{unique}-nightly")["State"] == "ENABLED"
    # TF_VAR_project_name finds the same resources.
    plan = ok(shoal(server, "apply", str(path), "--plan", env={"TF_VAR_project_name": unique}))
    assert len(lines(plan, "=")) == SEED_RESOURCES


def test_repository_url_override(server: Server, tmp_path: Path, unique: str) -> None:
    path = seed_copy(tmp_path)
    url = "registry.local:5000/batch"
    plan = ok(
        shoal(
            server,
            "apply",
            str(path),
            "--var",
            f"project_name={unique}",
            "--repository-url",
            f"{unique}-job={url}",
            "--plan",
        )
    )
    assert "aws_batch_job_definition.main" in lines(plan, "+")
    ok(
        shoal(
            server,
            "apply",
            str(path),
            "--var",
            f"project_name={unique}",
            "--repository-url",
            f"aws_ecr_repository.batch={url}",
        )
    )
    [definition] = definitions(server.client(), f"{unique}-job")
    assert definition["containerProperties"]["image"] == f"{url}:latest"


def test_changes_are_applied_in_place(server: Server, tmp_path: Path, unique: str) -> None:
    var = ("--var", f"project_name={unique}")
    ok(shoal(server, "apply", str(seed_copy(tmp_path / "v1")), *var))
    changed = seed_copy(
        tmp_path / "v2",
        ("max_vcpus     = 256", "max_vcpus     = 128"),
        ('{ type = "VCPU", value = "2" }', '{ type = "VCPU", value = "4" }'),
        ("priority = 5", "priority = 7"),
    )
    plan = ok(shoal(server, "apply", str(changed), *var, "--plan"))
    # The target follows the definition's new revision (its ARN changes).
    assert sorted(lines(plan, "~")) == [
        "aws_batch_compute_environment.spot",
        "aws_batch_job_definition.main",
        "aws_batch_job_queue.fargate",
        "aws_cloudwatch_event_target.batch",
    ]
    assert "computeResources.maxvCpus: 256 -> 128" in plan
    assert "priority: 5 -> 7" in plan
    assert "new revision: containerProperties" in plan
    out = ok(shoal(server, "apply", str(changed), *var))
    assert "Applied: 0 created, 4 updated, 7 unchanged." in out
    batch = server.client()
    [spot] = batch.describe_compute_environments(computeEnvironments=[f"{unique}-spot"])[
        "computeEnvironments"
    ]
    assert spot["computeResources"]["maxvCpus"] == 128
    assert spot["status"] == "VALID"
    [queue] = batch.describe_job_queues(jobQueues=[f"{unique}-fargate"])["jobQueues"]
    assert queue["priority"] == 7
    first, second = definitions(batch, f"{unique}-job")
    assert (first["status"], second["status"]) == ("INACTIVE", "ACTIVE")
    assert second["revision"] == 2
    assert {"type": "VCPU", "value": "4"} in second["containerProperties"]["resourceRequirements"]
    [target] = server.client("events").list_targets_by_rule(Rule=f"{unique}-nightly")["Targets"]
    assert target["BatchParameters"]["JobDefinition"] == f"{PREFIX}:job-definition/{unique}-job:2"
    again = ok(shoal(server, "apply", str(changed), *var, "--plan"))
    assert len(lines(again, "=")) == SEED_RESOURCES

    # What the API cannot change in place is an error, and nothing changes.
    retyped = seed_copy(tmp_path / "v3", ('type      = "FARGATE_SPOT"', 'type      = "FARGATE"'))
    err = failed(shoal(server, "apply", str(retyped), *var))
    assert "aws_batch_compute_environment.fargate" in err
    assert "computeResources.type: FARGATE_SPOT -> FARGATE" in err
    assert "shoal destroy" in err
    [fargate] = batch.describe_compute_environments(computeEnvironments=[f"{unique}-fargate"])[
        "computeEnvironments"
    ]
    assert fargate["computeResources"]["type"] == "FARGATE_SPOT"


def test_destroy_removes_everything_and_is_idempotent(
    server: Server, tmp_path: Path, unique: str
) -> None:
    path = seed_copy(tmp_path)
    var = ("--var", f"project_name={unique}")
    ok(shoal(server, "apply", str(path), *var))
    plan = ok(shoal(server, "destroy", str(path), *var, "--plan"))
    assert len(lines(plan, "-")) == SEED_RESOURCES
    assert lines(plan, "-")[0] == "aws_cloudwatch_event_target.batch"
    out = ok(shoal(server, "destroy", str(path), *var))
    assert f"Destroyed: {SEED_RESOURCES} destroyed, 0 absent." in out
    batch = server.client()
    names = [f"{unique}-spot", f"{unique}-on-demand", f"{unique}-fargate"]
    assert (
        batch.describe_compute_environments(computeEnvironments=names)["computeEnvironments"] == []
    )
    queues = [f"{unique}-high-priority", f"{unique}-low-priority", f"{unique}-fargate"]
    assert batch.describe_job_queues(jobQueues=queues)["jobQueues"] == []
    for name in (f"{unique}-job", f"{unique}-fargate-job", f"{unique}-array-job"):
        assert [d["status"] for d in definitions(batch, name)] == ["INACTIVE"]
    assert rule_missing(server.client("events"), f"{unique}-nightly")
    again = ok(shoal(server, "destroy", str(path), *var))
    assert f"Destroyed: 0 destroyed, {SEED_RESOURCES} absent." in again
    # And it can be applied again from nothing.
    plan = ok(shoal(server, "apply", str(path), *var, "--plan"))
    assert len(lines(plan, "+")) == SEED_RESOURCES


# -- errors -------------------------------------------------------------------


def test_unknown_reference_names_file_line_and_resource(
    server: Server, tmp_path: Path, unique: str
) -> None:
    path = seed_copy(
        tmp_path,
        (
            '{ name = "INPUT_BUCKET", value = aws_s3_bucket.input.bucket },\n'
            '      { name = "OUTPUT_BUCKET", value = aws_s3_bucket.output.bucket },\n'
            '      { name = "AWS_REGION"',
            '{ name = "INPUT_BUCKET", value = aws_s3_bucket.inputt.bucket },\n'
            '      { name = "OUTPUT_BUCKET", value = aws_s3_bucket.output.bucket },\n'
            '      { name = "AWS_REGION"',
        ),
    )
    err = failed(shoal(server, "apply", str(path), "--var", f"project_name={unique}"))
    assert f"{path}:230: aws_batch_job_definition.main: unknown reference aws_s3_bucket.inputt" in (
        err
    )
    batch = server.client()
    assert (
        batch.describe_compute_environments(computeEnvironments=[f"{unique}-spot"])[
            "computeEnvironments"
        ]
        == []
    )
    bad_var = seed_copy(
        tmp_path / "var",
        (
            'compute_environment_name = "${var.project_name}-spot"',
            'compute_environment_name = "${var.projectname}-spot"',
        ),
    )
    err = failed(shoal(server, "apply", str(bad_var), "--plan"))
    assert (
        f"{bad_var}:78: aws_batch_compute_environment.spot: unknown reference var.projectname"
        in (err)
    )


def test_syntax_error_names_the_file(server: Server, tmp_path: Path) -> None:
    path = seed_copy(tmp_path, ("max_vcpus     = 256", "max_vcpus     = 256 +"))
    err = failed(shoal(server, "apply", str(tmp_path)))
    assert f"{path}:" in err
    assert "HCL syntax error" in err


def test_value_the_server_rejects_names_the_resource(
    server: Server, tmp_path: Path, unique: str
) -> None:
    path = seed_copy(tmp_path, ("bid_percentage      = 100", "bid_percentage      = 150"))
    err = failed(shoal(server, "apply", str(path), "--var", f"project_name={unique}"))
    assert f"{path}:77: aws_batch_compute_environment.spot: CreateComputeEnvironment:" in err
    assert "bidPercentage must be 0 to 100; got 150" in err
    batch = server.client()
    assert (
        batch.describe_compute_environments(computeEnvironments=[f"{unique}-spot"])[
            "computeEnvironments"
        ]
        == []
    )


# -- beyond the seed ----------------------------------------------------------

SCHEDULED = """
variable "name" {
  type = string
}

variable "max" {
  type    = number
  default = 8
}

locals {
  prefix = lower(format("%s-%s", var.name, "SCHED"))
  common = merge({ team = "data" }, { owner = upper("ops") })
  shares = { a = 1, b = 3 }
}

resource "aws_batch_scheduling_policy" "fair" {
  name = "${local.prefix}-fair"
  fair_share_policy {
    compute_reservation = 10
    share_decay_seconds = 3600
    dynamic "share_distribution" {
      for_each = local.shares
      content {
        share_identifier = share_distribution.key
        weight_factor    = share_distribution.value
      }
    }
  }
  tags = local.common
}

resource "aws_batch_compute_environment" "ce" {
  name = "${local.prefix}-ce"
  type = "MANAGED"
  compute_resources {
    type      = "EC2"
    min_vcpus = 0
    max_vcpus = var.max
    subnets   = [for i in range(2) : "subnet-${i}"]
  }
}

resource "aws_batch_job_queue" "q" {
  name                  = "${local.prefix}-q"
  state                 = "ENABLED"
  priority              = length(local.shares)
  scheduling_policy_arn = aws_batch_scheduling_policy.fair.arn
  compute_environments  = [aws_batch_compute_environment.ce.arn]
}

resource "aws_batch_job_definition" "job" {
  name = "${local.prefix}-job"
  type = "container"
  container_properties = jsonencode({
    image   = "busybox"
    command = ["echo", "Ref::who"]
    resourceRequirements = [
      { type = "VCPU", value = tostring(1) },
      { type = "MEMORY", value = "128" },
    ]
  })
  parameters = { who = "world" }
}

resource "aws_scheduler_schedule" "hourly" {
  name                = "${local.prefix}-hourly"
  schedule_expression = "rate(1 hour)"
  flexible_time_window {
    mode = "OFF"
  }
  target {
    arn      = "arn:aws:scheduler:::aws-sdk:batch:submitJob"
    role_arn = "arn:aws:iam::123456789012:role/scheduler"
    input = jsonencode({
      JobName         = "hourly"
      JobQueue        = aws_batch_job_queue.q.name
      JobDefinition   = aws_batch_job_definition.job.arn
      ArrayProperties = { Size = 2 }
      Parameters      = { who = "scheduler" }
    })
  }
}
"""


def test_scheduler_schedule_fair_share_and_functions(
    server: Server, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "main.tf").write_text(SCHEDULED)
    (tmp_path / "terraform.tfvars").write_text(f'name = "{unique.upper()}"\n')
    out = ok(shoal(server, "apply", str(tmp_path), "--var", "max=16"))
    assert "Applied: 5 created, 0 updated, 0 unchanged." in out
    prefix = f"{unique}-sched"
    batch = server.client()
    [ce] = batch.describe_compute_environments(computeEnvironments=[f"{prefix}-ce"])[
        "computeEnvironments"
    ]
    assert ce["computeResources"]["maxvCpus"] == 16
    assert ce["computeResources"]["subnets"] == ["subnet-0", "subnet-1"]
    [queue] = batch.describe_job_queues(jobQueues=[f"{prefix}-q"])["jobQueues"]
    assert queue["priority"] == 2
    assert queue["schedulingPolicyArn"] == f"{PREFIX}:scheduling-policy/{prefix}-fair"
    [policy] = batch.describe_scheduling_policies(arns=[queue["schedulingPolicyArn"]])[
        "schedulingPolicies"
    ]
    assert policy["fairsharePolicy"]["shareDistribution"] == [
        {"shareIdentifier": "a", "weightFactor": 1.0},
        {"shareIdentifier": "b", "weightFactor": 3.0},
    ]
    assert policy["tags"] == {"team": "data", "owner": "OPS"}
    events = server.client("events")
    rule = events.describe_rule(Name=f"{prefix}-hourly")
    assert rule["ScheduleExpression"] == "rate(1 hour)"
    [target] = events.list_targets_by_rule(Rule=f"{prefix}-hourly")["Targets"]
    assert target["Arn"] == f"{PREFIX}:job-queue/{prefix}-q"
    assert target["BatchParameters"] == {
        "JobDefinition": f"{PREFIX}:job-definition/{prefix}-job:1",
        "JobName": "hourly",
        "ArrayProperties": {"Size": 2},
    }
    assert json.loads(target["Input"]) == {"Parameters": {"who": "scheduler"}}
    again = ok(shoal(server, "apply", str(tmp_path), "--var", "max=16", "--plan"))
    assert len(lines(again, "=")) == 5
    smaller = ok(shoal(server, "apply", str(tmp_path), "--plan"))
    assert lines(smaller, "~") == ["aws_batch_compute_environment.ce"]
    assert "computeResources.maxvCpus: 16 -> 8" in smaller
    gone = ok(shoal(server, "destroy", str(tmp_path)))
    assert "Destroyed: 5 destroyed, 0 absent." in gone
    assert rule_missing(events, f"{prefix}-hourly")
    assert batch.describe_job_queues(jobQueues=[f"{prefix}-q"])["jobQueues"] == []


def test_missing_variable_and_unknown_var_option(server: Server, tmp_path: Path) -> None:
    (tmp_path / "main.tf").write_text(SCHEDULED)
    err = failed(shoal(server, "apply", str(tmp_path), "--plan"))
    assert "main.tf:2: var.name: variable 'name' has no value" in err
    err = failed(shoal(server, "apply", str(tmp_path), "--var", "nme=x", "--plan"))
    assert "--var nme: no variable 'nme' is declared" in err


# -- the expression evaluator, without a server -------------------------------


class _Scope:
    roots: dict[str, Any] = {
        "var": {
            "n": 3,
            "name": "x",
            "flag": True,
            "list": ["a", "b", "c"],
            "map": {"k1": "v1", "k2": "v2"},
            "objs": [{"id": 1}, {"id": 2}],
        }
    }

    def root(self, name: str) -> Any:
        if name not in self.roots:
            raise UnknownReference(name)
        return self.roots[name]

    def function(self, name: str) -> Any:
        return FUNCTIONS.get(name)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("${var.n}", 3),  # a lone interpolation keeps its type
        ("n=${var.n}", "n=3"),
        ("${var.n * 2 + 1}", 7),
        ("${var.n / 2}", 1.5),
        ("${var.n / 3}", 1),
        ('${var.flag ? "yes" : "no"}', "yes"),
        ('${var.n >= 3 && !false || var.name == "y"}', True),
        ('${format("%s-%03d", var.name, var.n)}', "x-003"),
        ('${join(",", [for s in var.list : upper(s) if s != "b"])}', "A,C"),
        ("${{for k, v in var.map : v => k}}", {"v1": "k1", "v2": "k2"}),
        ("${var.objs[*].id}", [1, 2]),
        ("${var.list[1]}", "b"),
        ('${var.map["k2"]}', "v2"),
        ("${length(var.map) + length(var.list)}", 5),
        ('${jsonencode({b = 1, a = [true, null, "x"]})}', '{"a":[true,null,"x"],"b":1}'),
        ('${merge(var.map, {z = "9"})["z"]}', "9"),
        ('${lookup(var.map, "nope", "d")}', "d"),
        ('${try(var.map.nope, "fallback")}', "fallback"),
        ("${concat(var.list, [1])}", ["a", "b", "c", 1]),
        ('${upper(var.name)}-${lower("ABC")}', "X-abc"),
        ('${"a\\"b\\n"}', 'a"b\n'),
        ("$${not.interpolated}", "${not.interpolated}"),
        ("${tostring(var.n)}", "3"),
    ],
)
def test_expressions(text: str, value: Any) -> None:
    assert evaluate(parse_template(text), _Scope()) == value


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("${var.nope}", UnknownReference, "unknown reference var.nope"),
        ("${missing.thing}", UnknownReference, "unknown reference missing"),
        ("${nofn(1)}", EvalError, "unknown function nofn()"),
        ("${1 +}", EvalError, "cannot parse"),
        ("%{if true}x%{endif}", EvalError, "template directives"),
        ('${var.list["x"]}', EvalError, "'x' is not a number"),
    ],
)
def test_expression_errors(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=re.escape(message)):
        evaluate(parse_template(text), _Scope())
