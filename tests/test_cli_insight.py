"""`shoal cost`, `shoal explain` and `shoal interrupt`, run as a user runs
them (`python -m shoal ...`) against a real engine server that runs real jobs.

Costs are checked against numbers computed here by hand, from each attempt's
startedAt/stoppedAt as DescribeJobs reports them and the seed's prices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import CREDENTIALS, REGION, Server, fails_cleanly, make_ce, make_queue
from engine_support import describe, now_ms, sh, shutdown, start_engine_server, wait_for, wait_until

# The seed's cost breakdown, per vCPU-hour and GiB-hour (an m5.large is 2 vCPU).
EC2 = (0.085 / 2, 0.0)
SPOT = (0.025 / 2, 0.0)
FARGATE = (0.04048, 0.004445)
FARGATE_SPOT = (0.01214, 0.00133)  # Fargate at 70% off
RATES = {"EC2": EC2, "SPOT": SPOT, "FARGATE": FARGATE, "FARGATE_SPOT": FARGATE_SPOT}
TWO_VCPU_4GIB = [{"type": "VCPU", "value": "2"}, {"type": "MEMORY", "value": "4096"}]
HOST_LOST = "Host EC2 (instance i-"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The host offers more than this machine has, so that 2-vCPU jobs run side by side.
    srv = start_engine_server(
        tmp_path_factory.mktemp("insight"), "--host-vcpus", "64", "--host-memory-mib", "65536"
    )
    yield srv
    shutdown(srv)


@pytest.fixture(scope="module")
def batch(server: Server) -> Any:
    return server.client("batch")


def shoal(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """`shoal ARGS --endpoint-url URL`, as a separate process."""
    env = {
        **os.environ,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    env.pop("AWS_ENDPOINT_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args, "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def shoal_json(server: Server, *args: str) -> Any:
    result = shoal(server, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- setups ----------------------------------------------------------------------------


def setup(
    batch: Any,
    name: str,
    *,
    kind: str = "EC2",
    command: list[str] | None = None,
    retry: dict[str, Any] | None = None,
    max_vcpus: int = 16,
    requirements: list[dict[str, str]] | None = None,
) -> dict[str, str]:
    """A compute environment of `kind`, a queue on it and a definition fit
    for it (platformCapabilities FARGATE on a Fargate one), all named `name`."""
    ce = make_ce(batch, name, kind=kind, max_vcpus=max_vcpus)
    make_queue(batch, name, [ce])
    extra: dict[str, Any] = {}
    if kind.startswith("FARGATE"):
        extra["platformCapabilities"] = ["FARGATE"]
    if retry is not None:
        extra["retryStrategy"] = retry
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": "busybox",
            "command": command or ["sleep", "0.3"],
            "resourceRequirements": requirements or TWO_VCPU_4GIB,
        },
        **extra,
    )
    return {"queue": name, "definition": name, "ce": name}


def run(batch: Any, env: dict[str, str], **kwargs: Any) -> str:
    job_id: str = batch.submit_job(
        jobName="work", jobQueue=env["queue"], jobDefinition=env["definition"], **kwargs
    )["jobId"]
    return job_id


def gated(tmp_path: Path, name: str) -> tuple[list[str], Path]:
    """A command that runs until the gate file exists."""
    gate = tmp_path / f"{name}.go"
    return sh(f"until [ -e {gate} ]; do sleep 0.05; done"), gate


# -- hand computation ----------------------------------------------------------------


def attempt_seconds(detail: dict[str, Any]) -> list[float]:
    return [(a["stoppedAt"] - a["startedAt"]) / 1000 for a in detail["attempts"]]


def dollars(seconds: float, rate: tuple[float, float], vcpus: float = 2, gib: float = 4) -> float:
    return (vcpus * seconds * rate[0] + gib * seconds * rate[1]) / 3600


def expected_row(details: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    seconds = [s for d in details for s in attempt_seconds(d)]
    total = sum(seconds)
    return {
        "jobs": len(details),
        "attempts": len(seconds),
        "vcpuSeconds": 2 * total,
        "memoryGibSeconds": 4 * total,
        "gpuSeconds": 0.0,
        "cost": dollars(total, RATES[kind]),
        "whatIf": {model: dollars(total, rate) for model, rate in RATES.items()},
    }


def assert_numbers(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key in ("jobs", "attempts"):
        assert actual[key] == expected[key], (key, actual, expected)
    for key in ("vcpuSeconds", "memoryGibSeconds", "gpuSeconds", "cost"):
        assert actual[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    for model, value in expected["whatIf"].items():
        assert actual["whatIf"][model] == pytest.approx(value, rel=1e-9, abs=1e-12), model


def rows_by_queue(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["queue"]: row for row in doc["rows"]}


# -- cost --------------------------------------------------------------------------


def test_cost_prices_each_attempt_by_its_compute_environment_type(
    server: Server, batch: Any, unique: str
) -> None:
    envs = {kind: setup(batch, f"{unique}-{kind.lower()}", kind=kind) for kind in RATES}
    # A job on EC2 whose first attempt fails: both attempts count.
    flaky = setup(
        batch,
        f"{unique}-flaky",
        command=sh('sleep 0.2; [ "$AWS_BATCH_JOB_ATTEMPT" = 2 ]'),
        retry={"attempts": 2},
    )
    jobs = {kind: [run(batch, env) for _ in range(2)] for kind, env in envs.items()}
    jobs["flaky"] = [run(batch, flaky)]
    details = {kind: [wait_for(batch, j) for j in ids] for kind, ids in jobs.items()}
    assert [d["status"] for ds in details.values() for d in ds] == ["SUCCEEDED"] * 9
    assert len(details["flaky"][0]["attempts"]) == 2

    queues = [env["queue"] for env in envs.values()] + [flaky["queue"]]
    doc = shoal_json(server, "cost", *(arg for q in queues for arg in ("--queue", q)))
    rows = rows_by_queue(doc)
    assert sorted(rows) == sorted(queues)
    for kind, env in envs.items():
        assert_numbers(rows[env["queue"]], expected_row(details[kind], kind))
    assert_numbers(rows[flaky["queue"]], expected_row(details["flaky"], "EC2"))
    everything = [d for ds in details.values() for d in ds]
    total = doc["total"]
    assert total["jobs"] == 9 and total["attempts"] == 10
    assert total["cost"] == pytest.approx(
        sum(
            expected_row(ds, kind if kind in RATES else "EC2")["cost"]
            for kind, ds in details.items()
        )
    )
    assert total["vcpuSeconds"] == pytest.approx(
        2 * sum(s for d in everything for s in attempt_seconds(d))
    )
    # Each attempt says where it ran and how it was priced.
    [fargate_job, _] = [j for j in doc["jobs"] if j["queue"] == envs["FARGATE"]["queue"]]
    [attempt] = fargate_job["attempts"]
    assert attempt["computeEnvironment"] == envs["FARGATE"]["ce"]
    assert attempt["pricedAs"] == "FARGATE"
    assert (attempt["vcpus"], attempt["memoryMiB"]) == (2, 4096)

    # The table says the same, with a total line.
    table = shoal(server, "cost", *(arg for q in queues for arg in ("--queue", q)))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "JOBS", "ATTEMPTS"]
    assert "ON-DEMAND" in lines[0] and "FARGATE SPOT" in lines[0]
    [total_line] = [line for line in lines if line.startswith("TOTAL")]
    assert total_line.split()[1:3] == ["9", "10"]
    # Test jobs cost millionths of a dollar: the table keeps six decimals for them.
    assert total["cost"] < 0.01
    assert f"${total['cost']:.6f}" in total_line


def test_cost_prices_file_overrides_the_table(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    env = setup(batch, unique)
    detail = wait_for(batch, run(batch, env))
    [seconds] = attempt_seconds(detail)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"ec2_vcpu_hour": 1.0, "ec2_memory_gib_hour": 0.5}))
    doc = shoal_json(server, "cost", "--queue", unique, "--prices", str(prices))
    [row] = doc["rows"]
    assert row["cost"] == pytest.approx((2 * seconds * 1.0 + 4 * seconds * 0.5) / 3600)
    assert row["whatIf"]["EC2"] == pytest.approx(row["cost"])
    # What the file leaves alone keeps the seed's price.
    assert row["whatIf"]["SPOT"] == pytest.approx(dollars(seconds, SPOT))
    assert doc["prices"]["ec2_vcpu_hour"] == 1.0
    assert doc["prices"]["fargate_vcpu_hour"] == 0.04048

    prices.write_text(json.dumps({"ec2_per_hour": 1}))
    fails_cleanly(shoal(server, "cost", "--prices", str(prices)), "unknown price ec2_per_hour")
    prices.write_text(json.dumps({"spot_vcpu_hour": "cheap"}))
    fails_cleanly(shoal(server, "cost", "--prices", str(prices)), "must be a number")


def test_cost_queue_filter_and_running_attempts(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    done_env = setup(batch, f"{unique}-a")
    other = setup(batch, f"{unique}-b")
    done = wait_for(batch, run(batch, done_env))
    wait_for(batch, run(batch, other))
    command, gate = gated(tmp_path, unique)
    running = run(batch, done_env, containerOverrides={"command": command})
    started = wait_for(batch, running, "RUNNING")["startedAt"]
    try:
        before = now_ms()
        doc = shoal_json(server, "cost", "--queue", done_env["queue"], "--by", "job")
        after = now_ms()
    finally:
        gate.touch()
    # Only the queue asked for; one row per job.
    assert {row["queue"] for row in doc["rows"]} == {done_env["queue"]}
    assert {row["jobId"] for row in doc["rows"]} == {done["jobId"], running}
    jobs = {j["jobId"]: j for j in doc["jobs"]}
    [live] = jobs[running]["attempts"]
    assert live["stoppedAt"] is None
    # A running attempt counts up to now (the CLI's now, taken between ours).
    assert (before - started) / 1000 <= live["seconds"] <= (after - started) / 1000
    assert jobs[done["jobId"]]["attempts"][0]["seconds"] == attempt_seconds(done)[0]

    fails_cleanly(shoal(server, "cost", "--queue", f"{unique}-none"), "not found")


def test_cost_since_leaves_out_older_attempts(server: Server, batch: Any, unique: str) -> None:
    env = setup(batch, unique)
    old = wait_for(batch, run(batch, env))
    cut = now_ms()
    time.sleep(0.05)
    new = wait_for(batch, run(batch, env))
    assert old["attempts"][0]["startedAt"] < cut < new["attempts"][0]["startedAt"]

    iso = datetime.fromtimestamp(cut / 1000, UTC).isoformat(timespec="milliseconds")
    for since in (str(cut), iso):
        doc = shoal_json(server, "cost", "--queue", unique, "--since", since)
        assert [j["jobId"] for j in doc["jobs"]] == [new["jobId"]], since
        assert_numbers(doc["total"], expected_row([new], "EC2"))
        assert doc["since"] == cut
    doc = shoal_json(server, "cost", "--queue", unique, "--since", "24h")
    assert_numbers(doc["total"], expected_row([old, new], "EC2"))
    fails_cleanly(shoal(server, "cost", "--since", "last tuesday"), "is not a time")


def test_cost_counts_the_children_of_an_array_job(server: Server, batch: Any, unique: str) -> None:
    env = setup(batch, unique, kind="SPOT")
    parent = run(batch, env, arrayProperties={"size": 3})
    assert wait_for(batch, parent, timeout=30)["status"] == "SUCCEEDED"
    children = [describe(batch, f"{parent}:{i}") for i in range(3)]
    doc = shoal_json(server, "cost", "--queue", unique)
    [row] = doc["rows"]
    assert_numbers(row, expected_row(children, "SPOT"))
    assert {j["jobId"] for j in doc["jobs"]} == {f"{parent}:{i}" for i in range(3)}


def test_cost_counts_a_multinode_job_with_all_its_nodes(
    server: Server, batch: Any, unique: str
) -> None:
    ce = make_ce(batch, unique)
    make_queue(batch, unique, [ce])
    container = {"image": "busybox", "command": ["sleep", "0.3"]}
    batch.register_job_definition(
        jobDefinitionName=unique,
        type="multinode",
        nodeProperties={
            "numNodes": 3,
            "mainNode": 0,
            "nodeRangeProperties": [
                {
                    "targetNodes": "0:",
                    "container": {**container, "resourceRequirements": TWO_VCPU_4GIB},
                },
            ],
        },
    )
    job = wait_for(batch, run(batch, {"queue": unique, "definition": unique}), timeout=30)
    assert job["status"] == "SUCCEEDED"
    [seconds] = attempt_seconds(job)
    doc = shoal_json(server, "cost", "--queue", unique)
    # One job (its node rows are not counted again), three nodes of 2 vCPU / 4 GiB.
    assert [j["jobId"] for j in doc["jobs"]] == [job["jobId"]]
    assert doc["total"]["vcpuSeconds"] == pytest.approx(3 * 2 * seconds)
    assert doc["total"]["memoryGibSeconds"] == pytest.approx(3 * 4 * seconds)
    assert doc["total"]["cost"] == pytest.approx(dollars(seconds, EC2, vcpus=6, gib=12))


def test_cost_groups_by_share(server: Server, batch: Any, unique: str) -> None:
    policy = batch.create_scheduling_policy(name=unique, fairsharePolicy={})["arn"]
    ce = make_ce(batch, unique)
    make_queue(batch, unique, [ce], schedulingPolicyArn=policy)
    batch.register_job_definition(
        jobDefinitionName=unique,
        type="container",
        containerProperties={
            "image": "busybox",
            "command": ["sleep", "0.2"],
            "resourceRequirements": TWO_VCPU_4GIB,
        },
    )
    env = {"queue": unique, "definition": unique}
    blue = [wait_for(batch, run(batch, env, shareIdentifier="blue")) for _ in range(2)]
    green = wait_for(batch, run(batch, env, shareIdentifier="green"))
    doc = shoal_json(server, "cost", "--queue", unique)
    assert doc["groupBy"] == "share"
    shares = {row["shareIdentifier"]: row for row in doc["rows"]}
    assert_numbers(shares["blue"], expected_row(blue, "EC2"))
    assert_numbers(shares["green"], expected_row([green], "EC2"))
    only = shoal_json(server, "cost", "--queue", unique, "--share", "green")
    assert [j["jobId"] for j in only["jobs"]] == [green["jobId"]]


# -- explain ------------------------------------------------------------------------


def test_explain_tells_each_attempt_and_the_rule_that_followed(
    server: Server, batch: Any, unique: str
) -> None:
    rules = [{"onExitCode": "3", "action": "RETRY"}, {"onReason": "*", "action": "EXIT"}]
    env = setup(
        batch,
        unique,
        command=sh('if [ "$AWS_BATCH_JOB_ATTEMPT" = 1 ]; then exit 3; else exit 4; fi'),
        retry={"attempts": 3, "evaluateOnExit": rules},
    )
    job_id = run(batch, env)
    detail = wait_for(batch, job_id)
    assert detail["status"] == "FAILED"

    doc = shoal_json(server, "explain", job_id)
    assert (doc["jobId"], doc["jobQueue"], doc["status"]) == (job_id, unique, "FAILED")
    assert doc["jobDefinition"].endswith(f":job-definition/{unique}:1")
    first, second = doc["attempts"]
    assert (first["exitCode"], second["exitCode"]) == (3, 4)
    assert first["retry"] == {
        "decision": "RETRY",
        "rule": 1,
        "ruleDefinition": rules[0],
        "why": "rule 1 (onExitCode='3') matched → RETRY",
    }
    assert second["retry"]["decision"] == "EXIT"
    assert second["retry"]["rule"] == 2
    for mine, theirs in zip(doc["attempts"], detail["attempts"], strict=True):
        assert mine["startedAt"] == theirs["startedAt"]
        assert mine["stoppedAt"] == theirs["stoppedAt"]
        assert mine["logStreamName"] == theirs["container"]["logStreamName"]
        assert mine["computeEnvironment"] == unique
        assert mine["statusReason"] == "Essential container in task exited"

    story = shoal(server, "explain", job_id)
    assert story.returncode == 0, story.stderr
    out = story.stdout
    assert f"Job {job_id} (work): FAILED" in out
    assert out.index("#1") < out.index("exit code      3") < out.index("#2")
    assert out.index("#2") < out.index("exit code      4")
    assert "then           rule 1 (onExitCode='3') matched → RETRY" in out
    assert "then           rule 2 (onReason='*') matched → EXIT" in out
    assert detail["attempts"][0]["container"]["logStreamName"] in out


def test_explain_a_job_that_waits(server: Server, batch: Any, unique: str, tmp_path: Path) -> None:
    env = setup(batch, unique, max_vcpus=2)  # room for one 2-vCPU job
    command, gate = gated(tmp_path, unique)
    try:
        holder = run(batch, env, containerOverrides={"command": command})
        wait_for(batch, holder, "RUNNING")
        first, second = run(batch, env), run(batch, env)
        after = run(batch, env, dependsOn=[{"jobId": holder}])
        for job_id in (first, second):
            wait_for(batch, job_id, "RUNNABLE")
        wait_for(batch, after, "PENDING")

        doc = shoal_json(server, "explain", second)
        waiting = doc["waiting"]
        assert (waiting["position"], waiting["runnable"], waiting["ahead"]) == (2, 2, [first])
        assert waiting["frontOfQueuePosition"] == 2
        assert waiting["needs"] == {"vcpus": 2.0, "memoryMiB": 4096, "gpus": 0}
        [ce] = waiting["computeEnvironments"]
        assert ce["computeEnvironment"] == unique
        assert (ce["maxvCpus"], ce["vcpusInUse"], ce["jobsRunning"]) == (2, 2.0, 1)
        text = shoal(server, "explain", second).stdout
        assert "position       2 of 2 RUNNABLE in its queue" in text
        assert f"{unique} (EC2, ENABLED, VALID): 2 of 2 vCPU in use by 1 job(s)" in text

        doc = shoal_json(server, "explain", after)
        assert doc["waiting"]["waitingFor"] == [{"jobId": holder, "status": "RUNNING"}]
        assert doc["dependsOn"][0]["status"] == "RUNNING"
        text = shoal(server, "explain", after).stdout
        assert f"Waiting for\n  {holder} (RUNNING)" in text

        # A running job: its attempt so far.
        doc = shoal_json(server, "explain", holder)
        [live] = doc["attempts"]
        assert live["running"] is True and live["computeEnvironment"] == unique
    finally:
        gate.touch()
    assert wait_for(batch, after, timeout=30)["status"] == "SUCCEEDED"


def test_explain_an_unknown_job_fails_cleanly(server: Server) -> None:
    fails_cleanly(shoal(server, "explain", "no-such-job"), "job no-such-job not found")


def test_the_commands_say_when_no_server_answers(tmp_path: Path) -> None:
    gone = Server(data_dir=tmp_path, port=1)  # nothing listens on port 1
    fails_cleanly(shoal(gone, "explain", "x"), "http://127.0.0.1:1")
    fails_cleanly(shoal(gone, "cost"), "http://127.0.0.1:1")
    fails_cleanly(shoal(gone, "interrupt", "x"), "http://127.0.0.1:1")


# -- interrupt ----------------------------------------------------------------------


def second_attempt_running(batch: Any, job_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = wait_until(
        lambda: (d := describe(batch, job_id))["attempts"] and d["status"] == "RUNNING" and d,
        timeout=30,
        what="the second attempt running",
    )
    return detail


def test_interrupt_a_job_and_its_host_ec2_rule_retries_it(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    command, gate = gated(tmp_path, unique)
    rules = [{"onStatusReason": "Host EC2*", "action": "RETRY"}]
    env = setup(
        batch, unique, kind="SPOT", command=command, retry={"attempts": 2, "evaluateOnExit": rules}
    )
    job_id = run(batch, env)
    wait_for(batch, job_id, "RUNNING")
    result = shoal(server, "interrupt", job_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [job_id]
    [first] = second_attempt_running(batch, job_id)["attempts"]
    assert first["statusReason"].startswith(HOST_LOST)
    assert "exitCode" not in first["container"]
    story = shoal_json(server, "explain", job_id)
    assert story["attempts"][0]["exitCode"] is None
    assert story["attempts"][0]["retry"]["rule"] == 1
    assert story["attempts"][0]["retry"]["decision"] == "RETRY"
    gate.touch()
    assert wait_for(batch, job_id)["status"] == "SUCCEEDED"


def test_interrupt_a_compute_environment(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    command, gate = gated(tmp_path, unique)
    rules = [{"onStatusReason": "Host EC2*", "action": "RETRY"}]
    env = setup(
        batch, unique, kind="SPOT", command=command, retry={"attempts": 2, "evaluateOnExit": rules}
    )
    jobs = [run(batch, env) for _ in range(2)]
    for job_id in jobs:
        wait_for(batch, job_id, "RUNNING")
    result = shoal(server, "interrupt", "--compute-environment", unique)
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(jobs)
    for job_id in jobs:
        [first] = second_attempt_running(batch, job_id)["attempts"]
        assert first["statusReason"].startswith(HOST_LOST)
    gate.touch()
    assert {wait_for(batch, j)["status"] for j in jobs} == {"SUCCEEDED"}


def test_interrupt_errors(server: Server) -> None:
    fails_cleanly(shoal(server, "interrupt", "no-such-job"), "Job no-such-job not found.")
    fails_cleanly(
        shoal(server, "interrupt", "--compute-environment", "no-such-ce"), "no-such-ce not found"
    )
    usage = shoal(server, "interrupt")
    assert usage.returncode == 2 and "one of them" in usage.stderr
