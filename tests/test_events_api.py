"""The EventBridge API on a live server, through boto3's `events` client and
the aws CLI: rules and Batch targets as Terraform and the CLI drive them,
AWS's errors for bad input (changing nothing), and a `rate(1 minute)` rule
that submits its job within its minute."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Server, aws_cli, make_ce, make_queue, start_server
from engine_support import wait_until

QUEUE = "arn:aws:batch:us-east-1:123456789012:job-queue/{}"


@pytest.fixture(scope="module")
def events(server: Server) -> Any:
    return server.client("events")


def error(call: Any, **kwargs: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    e = info.value.response
    return e["Error"]["Code"], e["Error"]["Message"], e["ResponseMetadata"]["HTTPStatusCode"]


def batch_target(queue: str, **more: Any) -> dict[str, Any]:
    return {
        "Id": "batch",
        "Arn": QUEUE.format(queue),
        "RoleArn": "arn:aws:iam::123456789012:role/events",
        "BatchParameters": {"JobDefinition": "def", "JobName": "nightly-job"},
        **more,
    }


def test_a_rule_and_its_batch_target_as_terraform_makes_them(events: Any, unique: str) -> None:
    arn = events.put_rule(Name=unique, ScheduleExpression="cron(0 2 * * ? *)")["RuleArn"]
    assert arn == f"arn:aws:events:us-east-1:123456789012:rule/{unique}"
    rule = events.describe_rule(Name=unique)
    assert {k: rule[k] for k in ("Name", "Arn", "ScheduleExpression", "State")} == {
        "Name": unique,
        "Arn": arn,
        "ScheduleExpression": "cron(0 2 * * ? *)",
        "State": "ENABLED",
    }
    assert rule["EventBusName"] == "default"
    out = events.put_targets(Rule=unique, Targets=[batch_target("low")])
    assert out["FailedEntryCount"] == 0 and out["FailedEntries"] == []
    [target] = events.list_targets_by_rule(Rule=unique)["Targets"]
    assert target == batch_target("low")
    # PutTargets upserts by Id.
    events.put_targets(Rule=unique, Targets=[batch_target("high")])
    [target] = events.list_targets_by_rule(Rule=unique)["Targets"]
    assert target["Arn"] == QUEUE.format("high")
    # A rule with targets cannot be deleted; without them it can.
    code, message, status = error(events.delete_rule, Name=unique)
    assert (code, status) == ("ValidationException", 400)
    assert "targets" in message
    events.remove_targets(Rule=unique, Ids=["batch"])
    assert events.list_targets_by_rule(Rule=unique)["Targets"] == []
    events.delete_rule(Name=unique)
    code, message, _ = error(events.describe_rule, Name=unique)
    assert code == "ResourceNotFoundException"
    assert message == f"Rule {unique} does not exist on EventBus default."


def test_put_rule_replaces_and_enable_disable_change_the_state(events: Any, unique: str) -> None:
    events.put_rule(Name=unique, ScheduleExpression="rate(5 minutes)", Description="first")
    events.put_targets(Rule=unique, Targets=[batch_target("q")])
    events.put_rule(Name=unique, ScheduleExpression="rate(1 hour)", State="DISABLED")
    rule = events.describe_rule(Name=unique)
    assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 hour)", "DISABLED")
    assert "Description" not in rule  # omitted members are reset
    assert len(events.list_targets_by_rule(Rule=unique)["Targets"]) == 1  # targets stay
    events.enable_rule(Name=unique)
    assert events.describe_rule(Name=unique)["State"] == "ENABLED"
    events.disable_rule(Name=unique)
    assert events.describe_rule(Name=unique)["State"] == "DISABLED"


def test_list_rules_by_prefix_in_pages(events: Any, unique: str) -> None:
    names = [f"{unique}-{i:02d}" for i in range(7)]
    for name in names:
        events.put_rule(Name=name, ScheduleExpression="rate(1 day)")
    events.put_rule(Name=f"x{unique}", ScheduleExpression="rate(1 day)")
    seen: list[str] = []
    token: dict[str, str] = {}
    while True:
        page = events.list_rules(NamePrefix=unique, Limit=3, **token)
        seen += [r["Name"] for r in page["Rules"]]
        if "NextToken" not in page:
            break
        token = {"NextToken": page["NextToken"]}
    assert seen == names


def test_tags_on_rules(events: Any, unique: str) -> None:
    arn = events.put_rule(
        Name=unique, ScheduleExpression="rate(1 day)", Tags=[{"Key": "team", "Value": "data"}]
    )["RuleArn"]
    events.tag_resource(ResourceARN=arn, Tags=[{"Key": "env", "Value": "dev"}])
    tags = events.list_tags_for_resource(ResourceARN=arn)["Tags"]
    assert tags == [{"Key": "env", "Value": "dev"}, {"Key": "team", "Value": "data"}]
    events.untag_resource(ResourceARN=arn, TagKeys=["team"])
    assert events.list_tags_for_resource(ResourceARN=arn)["Tags"] == [
        {"Key": "env", "Value": "dev"}
    ]


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"ScheduleExpression": "cron(0 2 * * * *)"}, "ValidationException", "?"),
        ({"ScheduleExpression": "cron(0 2 * *)"}, "ValidationException", "6 fields"),
        ({"ScheduleExpression": "rate(5 minute)"}, "ValidationException", "minutes"),
        ({"ScheduleExpression": "every day"}, "ValidationException", "every day"),
        ({}, "ValidationException", "ScheduleExpression or EventPattern"),
        ({"EventPattern": "{not json"}, "InvalidEventPatternException", "not valid"),
        ({"EventPattern": "[1]"}, "InvalidEventPatternException", "not valid"),
    ],
)
def test_bad_rules_are_refused_and_change_nothing(
    events: Any, unique: str, kwargs: dict[str, str], code: str, fragment: str
) -> None:
    got, message, status = error(events.put_rule, Name=unique, **kwargs)
    assert (got, status) == (code, 400)
    assert fragment in message, message
    assert error(events.describe_rule, Name=unique)[0] == "ResourceNotFoundException"


def test_bad_names_and_missing_members_are_refused(events: Any) -> None:
    code, message, _ = error(events.put_rule, Name="no spaces", ScheduleExpression="rate(1 day)")
    assert code == "ValidationException" and "no spaces" in message
    code, _, _ = error(events.put_rule, Name="x" * 65, ScheduleExpression="rate(1 day)")
    assert code == "ValidationException"
    # Rules live on the default bus only, named or by ARN.
    code, message, _ = error(
        events.put_rule, Name="on-custom", ScheduleExpression="rate(1 day)", EventBusName="mine"
    )
    assert (code, message) == ("ResourceNotFoundException", "Event bus mine does not exist.")
    bus = "arn:aws:events:us-east-1:123456789012:event-bus/default"
    events.put_rule(Name="on-default", ScheduleExpression="rate(1 day)", EventBusName=bus)
    assert events.describe_rule(Name="on-default", EventBusName="default")["Name"] == "on-default"


def test_bad_targets_are_refused_and_change_nothing(events: Any, unique: str) -> None:
    events.put_rule(Name=unique, ScheduleExpression="rate(1 day)")
    no_params = {"Id": "t", "Arn": QUEUE.format("q")}
    cases = [
        ([no_params], "ValidationException", "BatchParameters"),
        ([batch_target("q", Input="{not json")], "ValidationException", "not valid JSON"),
        (
            [
                batch_target(
                    "q",
                    BatchParameters={
                        **batch_target("q")["BatchParameters"],
                        "ArrayProperties": {"Size": 1},
                    },
                )
            ],
            "ValidationException",
            "Size",
        ),
        (
            [{**batch_target("q"), "Id": f"t{i}"} for i in range(6)],
            "LimitExceededException",
            "at most 5",
        ),
    ]
    for targets, code, fragment in cases:
        got, message, status = error(events.put_targets, Rule=unique, Targets=targets)
        assert (got, status) == (code, 400), message
        assert fragment in message, message
    assert events.list_targets_by_rule(Rule=unique)["Targets"] == []
    code, _, _ = error(events.put_targets, Rule=f"{unique}-missing", Targets=[batch_target("q")])
    assert code == "ResourceNotFoundException"


def test_the_aws_cli_drives_rules(server: Server, unique: str) -> None:
    aws_cli(
        server,
        "events",
        "put-rule",
        "--name",
        unique,
        "--schedule-expression",
        "cron(0 18 ? * MON-FRI *)",
    )
    target = json.dumps([batch_target("q")])
    aws_cli(server, "events", "put-targets", "--rule", unique, "--targets", target)
    out = json.loads(aws_cli(server, "events", "describe-rule", "--name", unique).stdout)
    assert out["ScheduleExpression"] == "cron(0 18 ? * MON-FRI *)"
    listed = json.loads(aws_cli(server, "events", "list-targets-by-rule", "--rule", unique).stdout)
    assert listed["Targets"][0]["BatchParameters"]["JobName"] == "nightly-job"
    bad = aws_cli(
        server,
        "events",
        "put-rule",
        "--name",
        unique,
        "--schedule-expression",
        "cron(0 18 * * MON-FRI *)",
        check=False,
    )
    assert bad.returncode != 0
    assert "ValidationException" in bad.stderr


# -- firing, with an engine -----------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("events-engine"), "--engine")
    yield srv
    srv.stop()


def test_a_rate_rule_submits_its_job_within_its_minute(engine: Server, tmp_path: Path) -> None:
    batch, events = engine.client("batch"), engine.client("events")
    ce = make_ce(batch, "sched-ce", max_vcpus=2)
    make_queue(batch, "sched-q", [ce])
    batch.register_job_definition(
        jobDefinitionName="sched-def",
        type="container",
        parameters={"day": "unset"},
        containerProperties={
            "image": "busybox",
            "command": ["sh", "-c", "echo $MODE Ref::day"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
    )
    created = time.time()
    events.put_rule(Name="every-minute", ScheduleExpression="rate(1 minute)")
    payload = {
        "Parameters": {"day": "2026-11-29"},
        "ContainerOverrides": {"Environment": [{"Name": "MODE", "Value": "scheduled"}]},
    }
    events.put_targets(
        Rule="every-minute",
        Targets=[
            {
                "Id": "job",
                "Arn": QUEUE.format("sched-q"),
                "BatchParameters": {"JobDefinition": "sched-def", "JobName": "from-rule"},
                "Input": json.dumps(payload),
            }
        ],
    )

    def submitted() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = batch.list_jobs(
            jobQueue="sched-q",
            filters=[{"name": "JOB_NAME", "values": ["from-rule"]}],
        )["jobSummaryList"]
        return found

    [summary] = wait_until(submitted, timeout=75, what="the rule's job")
    # A minute after the rule was made (not before), and within that minute.
    assert created + 59 <= summary["createdAt"] / 1000 <= created + 61 + 5, (
        summary["createdAt"] / 1000 - created
    )
    [job] = batch.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert job["parameters"] == {"day": "2026-11-29"}
    assert {"name": "MODE", "value": "scheduled"} in job["container"]["environment"]
    assert job["container"]["command"] == ["sh", "-c", "echo $MODE 2026-11-29"]
    events.remove_targets(Rule="every-minute", Ids=["job"])
    events.delete_rule(Name="every-minute")
