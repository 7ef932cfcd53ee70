"""Running jobs: the engine and the process executor, end to end.

One server per module (per xdist worker), started with --engine, a short
kill grace and a host of 64 vCPUs so that tests sharing it do not compete
for the machine's 2 CPUs; each test builds its own CE, queue and definition.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server
from engine_support import (
    EXITED,
    TIMEOUT_REASON,
    describe,
    engine_server,
    job_log,
    make_env,
    now_ms,
    pid_alive,
    read_pid,
    sh,
    submit,
    wait_for,
    wait_gone,
    wait_until,
)

STREAM = re.compile(r"(?P<prefix>.+)/default/(?P<task>[0-9a-f]{32})")
TASK_ARN = re.compile(r"arn:aws:ecs:us-east-1:123456789012:task/[^/]+/(?P<task>[0-9a-f]{32})")
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with engine_server(tmp_path_factory.mktemp("engine"), "--host-vcpus", "64") as server:
        yield server


@pytest.fixture(scope="module")
def batch(srv: Server) -> Any:
    return srv.client("batch")


@pytest.fixture(scope="module")
def logs(srv: Server) -> Any:
    return srv.client("logs")


def exit_codes(detail: dict[str, Any]) -> list[int | None]:
    return [a["container"].get("exitCode") for a in detail["attempts"]]


def check_attempt(attempt: dict[str, Any], definition_name: str) -> str:
    """An attempt record's container has a stream and task of the same id."""
    container = attempt["container"]
    stream = STREAM.fullmatch(container["logStreamName"])
    assert stream is not None, container
    assert stream["prefix"] == definition_name
    arn = TASK_ARN.fullmatch(container["taskArn"])
    assert arn is not None, container
    assert arn["task"] == stream["task"]
    assert type(attempt["startedAt"]) is int
    assert type(attempt["stoppedAt"]) is int
    assert attempt["startedAt"] <= attempt["stoppedAt"]
    return str(container["logStreamName"])


# -- a job runs --------------------------------------------------------------------------


def test_trivial_job_succeeds(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(batch, unique, command=sh("echo hello from $AWS_BATCH_JOB_ID"))
    before = now_ms()
    job_id = submit(batch, env)
    detail = wait_for(batch, job_id)
    after = now_ms()

    assert detail["status"] == "SUCCEEDED", detail
    assert detail["statusReason"] == EXITED
    for key in ("createdAt", "startedAt", "stoppedAt"):
        assert type(detail[key]) is int, (key, detail[key])
    assert before <= detail["createdAt"] <= detail["startedAt"] <= detail["stoppedAt"] <= after

    [attempt] = detail["attempts"]
    assert attempt["container"]["exitCode"] == 0
    assert attempt["statusReason"] == EXITED
    stream = check_attempt(attempt, env["definition_name"])
    assert attempt["startedAt"] == detail["startedAt"]
    assert attempt["stoppedAt"] == detail["stoppedAt"]

    # The job-level container mirrors the (only) attempt.
    container = detail["container"]
    assert container["exitCode"] == 0
    assert container["logStreamName"] == stream
    assert container["taskArn"] == attempt["container"]["taskArn"]
    assert "reason" not in container

    assert job_log(logs, detail) == [f"hello from {job_id}"]

    summaries = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUCCEEDED")["jobSummaryList"]
    [summary] = [s for s in summaries if s["jobId"] == job_id]
    assert summary["container"]["exitCode"] == 0
    assert summary["startedAt"] == detail["startedAt"]
    assert summary["stoppedAt"] == detail["stoppedAt"]


def test_running_job_shows_its_stream_and_task(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(batch, unique, command=sh("echo up; exec sleep 30"))
    job_id = submit(batch, env)
    running = wait_for(batch, job_id, "RUNNING")
    assert type(running["startedAt"]) is int
    assert "stoppedAt" not in running
    assert running["attempts"] == []
    container = running["container"]
    stream = STREAM.fullmatch(container["logStreamName"])
    assert stream is not None and stream["prefix"] == env["definition_name"]
    arn = TASK_ARN.fullmatch(container["taskArn"])
    assert arn is not None and arn["task"] == stream["task"]
    assert "exitCode" not in container
    # Output is readable while the job runs.
    wait_until(lambda: job_log(logs, describe(batch, job_id)) == ["up"], what="live output")

    batch.terminate_job(jobId=job_id, reason="done looking")
    done = wait_for(batch, job_id)
    assert done["status"] == "FAILED"
    [attempt] = done["attempts"]
    assert attempt["container"]["logStreamName"] == container["logStreamName"]
    assert attempt["container"]["taskArn"] == container["taskArn"]
    assert attempt["startedAt"] == running["startedAt"]


# -- evaluateOnExit ----------------------------------------------------------------------

# Exits 3 on attempts before the n-th, then `last`.
ATTEMPT_SCRIPT = (
    "echo attempt $AWS_BATCH_JOB_ATTEMPT; "
    '[ "$AWS_BATCH_JOB_ATTEMPT" -lt {n} ] && exit 3; '
    "exit {last}"
)


def test_retry_on_exit_code_then_exit_on_others(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(batch, unique)
    job_id = submit(
        batch,
        env,
        sh(ATTEMPT_SCRIPT.format(n=3, last=4)),
        retryStrategy={
            "attempts": 5,
            "evaluateOnExit": [
                {"onExitCode": "3", "action": "RETRY"},
                {"onExitCode": "*", "action": "EXIT"},
            ],
        },
    )
    detail = wait_for(batch, job_id)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == EXITED
    assert exit_codes(detail) == [3, 3, 4]
    streams = [check_attempt(a, env["definition_name"]) for a in detail["attempts"]]
    assert len(set(streams)) == 3
    for number in (1, 2, 3):
        assert job_log(logs, detail, number) == [f"attempt {number}"]
    assert detail["container"]["exitCode"] == 4
    assert detail["container"]["logStreamName"] == streams[-1]
    assert detail["startedAt"] == detail["attempts"][-1]["startedAt"]
    for earlier, later in zip(detail["attempts"], detail["attempts"][1:], strict=False):
        assert earlier["stoppedAt"] <= later["startedAt"]


def test_retry_then_success_with_lowercase_actions(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(
        batch,
        unique,
        command=sh(ATTEMPT_SCRIPT.format(n=2, last=0)),
        retry={
            "attempts": 3,
            "evaluateOnExit": [
                {"onExitCode": "3", "action": "retry"},
                {"onReason": "*", "action": "exit"},
            ],
        },
    )
    detail = wait_for(batch, submit(batch, env))
    assert detail["status"] == "SUCCEEDED", detail
    assert exit_codes(detail) == [3, 0]
    assert detail["container"]["exitCode"] == 0
    assert (
        detail["container"]["logStreamName"] == detail["attempts"][1]["container"]["logStreamName"]
    )
    assert job_log(logs, detail) == ["attempt 2"]
    assert job_log(logs, detail, 1) == ["attempt 1"]


def test_host_loss_idiom_fails_a_plain_exit_at_once(batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    job_id = submit(
        batch,
        env,
        sh("exit 1"),
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [
                {"onStatusReason": "Host EC2*", "action": "RETRY"},
                {"onReason": "*", "action": "EXIT"},
            ],
        },
    )
    detail = wait_for(batch, job_id)
    assert detail["status"] == "FAILED", detail
    assert exit_codes(detail) == [1]
    assert detail["statusReason"] == EXITED
    assert detail["container"]["exitCode"] == 1


def test_no_matching_rule_retries_until_attempts_run_out(
    batch: Any, logs: Any, unique: str
) -> None:
    env = make_env(batch, unique)
    job_id = submit(
        batch,
        env,
        sh("echo attempt $AWS_BATCH_JOB_ATTEMPT; exit 1"),
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [
                {"onExitCode": "99", "action": "EXIT"},
                {"onStatusReason": "Host EC2*", "action": "EXIT"},
            ],
        },
    )
    detail = wait_for(batch, job_id)
    assert detail["status"] == "FAILED", detail
    assert exit_codes(detail) == [1, 1, 1]
    streams = [check_attempt(a, env["definition_name"]) for a in detail["attempts"]]
    assert len(set(streams)) == 3
    assert [job_log(logs, detail, n) for n in (1, 2, 3)] == [
        ["attempt 1"],
        ["attempt 2"],
        ["attempt 3"],
    ]


# -- timeouts --------------------------------------------------------------------------


def test_timeout_fails_after_one_attempt(batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    job_id = submit(
        batch,
        env,
        sh("echo going; sleep 30"),
        timeout={"attemptDurationSeconds": 1},
        retryStrategy={"attempts": 3},
    )
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == TIMEOUT_REASON
    [attempt] = detail["attempts"]
    assert attempt["statusReason"] == TIMEOUT_REASON
    assert 1000 <= attempt["stoppedAt"] - attempt["startedAt"] < 10_000
    assert not detail.get("isTerminated")
    assert not detail.get("isCancelled")


# -- CancelJob and TerminateJob -----------------------------------------------------------

FLAG = {"cancel": "isCancelled", "terminate": "isTerminated"}


def stop(batch: Any, kind: str, job_id: str, reason: str) -> None:
    call = batch.cancel_job if kind == "cancel" else batch.terminate_job
    response = call(jobId=job_id, reason=reason)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_stop_runnable_job(batch: Any, logs: Any, unique: str, kind: str) -> None:
    # The queue's only compute environment is DISABLED: nothing can start.
    env = make_env(batch, unique, ce_state="DISABLED", command=sh("echo ran"))
    job_id = submit(batch, env)
    runnable = wait_for(batch, job_id, "RUNNABLE", reason_prefix="ACTION_REQUIRED")
    assert "startedAt" not in runnable

    stop(batch, kind, job_id, f"{kind} while runnable")
    detail = describe(batch, job_id)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"] == f"{kind} while runnable"
    assert detail[FLAG[kind]] is True
    assert detail["attempts"] == []
    assert "startedAt" not in detail

    # Once the compute environment is enabled, other jobs run; this one never does.
    batch.update_compute_environment(computeEnvironment=env["ce"], state="ENABLED")
    other = wait_for(batch, submit(batch, env, name="other"))
    assert other["status"] == "SUCCEEDED", other
    after = describe(batch, job_id)
    assert after["status"] == "FAILED"
    assert after["statusReason"] == f"{kind} while runnable"
    assert after["attempts"] == []
    assert "logStreamName" not in after.get("container", {})


def test_enabling_the_compute_environment_starts_waiting_jobs(tmp_path: Path) -> None:
    # A server of its own: no other test's submit or exit may wake the engine.
    with engine_server(tmp_path) as server:
        batch = server.client("batch")
        env = make_env(batch, "lonely", ce_state="DISABLED", command=sh("echo ran"))
        job_id = submit(batch, env)
        wait_for(batch, job_id, "RUNNABLE", reason_prefix="ACTION_REQUIRED")
        batch.update_compute_environment(computeEnvironment=env["ce"], state="ENABLED")
        assert wait_for(batch, job_id, timeout=3)["status"] == "SUCCEEDED"


def test_cancel_running_is_a_noop_and_terminate_stops_it(
    batch: Any, unique: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "pid"
    env = make_env(batch, unique)
    job_id = submit(
        batch,
        env,
        sh(f"echo $$ > {pidfile}; exec sleep 30"),
        retryStrategy={"attempts": 3},  # a terminated job is never retried
    )
    wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)
    assert pid_alive(pid)

    stop(batch, "cancel", job_id, "please stop")
    detail = describe(batch, job_id)
    assert detail["status"] == "RUNNING"
    assert not detail.get("isCancelled")

    # Give the engine a full cycle: another job on the same queue runs to the end.
    other = wait_for(batch, submit(batch, env, sh("true"), name="other"))
    assert other["status"] == "SUCCEEDED"
    detail = describe(batch, job_id)
    assert detail["status"] == "RUNNING", detail
    assert detail.get("statusReason") != "please stop"
    assert not detail.get("isCancelled")
    assert detail["attempts"] == []
    assert pid_alive(pid)

    stop(batch, "terminate", job_id, "really stop")
    detail = wait_for(batch, job_id, timeout=10)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == "really stop"
    assert detail["isTerminated"] is True
    assert not detail.get("isCancelled")
    [attempt] = detail["attempts"]
    assert attempt["statusReason"] == "really stop"
    assert type(detail["stoppedAt"]) is int
    wait_gone(pid, timeout=5)


def test_terminate_stops_a_retried_attempt(batch: Any, unique: str, tmp_path: Path) -> None:
    # The second attempt is placed in the same engine pass that records the
    # first one's exit: it must be the attempt TerminateJob reaches.
    pidfile = tmp_path / "pid"
    env = make_env(batch, unique)
    script = f'[ "$AWS_BATCH_JOB_ATTEMPT" = 1 ] && exit 1; echo $$ > {pidfile}; exec sleep 30'
    job_id = submit(batch, env, sh(script), retryStrategy={"attempts": 3})
    pid = read_pid(pidfile)
    # The second attempt's process runs; its RUNNING is recorded moments after.
    detail = wait_for(batch, job_id, "RUNNING")
    assert len(detail["attempts"]) == 1, detail
    stop(batch, "terminate", job_id, "stop the second")
    detail = wait_for(batch, job_id, timeout=10)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "stop the second")
    assert [a["statusReason"] for a in detail["attempts"]] == [EXITED, "stop the second"]
    wait_gone(pid, timeout=5)


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_stop_succeeded_job_is_a_noop(batch: Any, unique: str, kind: str) -> None:
    env = make_env(batch, unique, command=sh("echo fine"))
    job_id = submit(batch, env)
    before = wait_for(batch, job_id)
    assert before["status"] == "SUCCEEDED"
    stop(batch, kind, job_id, "too late")
    after = describe(batch, job_id)
    assert after == before
    assert after["statusReason"] == EXITED
    assert "isCancelled" not in after and "isTerminated" not in after


# -- out of memory ------------------------------------------------------------------------


def writable_memory_cgroup() -> bool:
    v1 = Path("/sys/fs/cgroup/memory")
    if (v1 / "memory.limit_in_bytes").exists():
        return os.access(v1, os.W_OK)
    v2 = Path("/sys/fs/cgroup")
    controllers = v2 / "cgroup.controllers"
    return controllers.exists() and "memory" in controllers.read_text() and os.access(v2, os.W_OK)


@pytest.mark.skipif(
    not writable_memory_cgroup(),
    reason="no writable memory cgroup (v1 memory controller or v2 with +memory): "
    "shoal cannot enforce MEMORY here",
)
def test_out_of_memory_kill(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(batch, unique)
    hog = "x = b'x' * (200 * 1024 * 1024); print('survived', len(x))"
    job_id = submit(
        batch,
        env,
        [sys.executable, "-c", hog],
        overrides={"resourceRequirements": [{"type": "MEMORY", "value": "32"}]},
        retryStrategy={"attempts": 1},
    )
    detail = wait_for(batch, job_id, timeout=20)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == EXITED
    [attempt] = detail["attempts"]
    assert attempt["container"]["exitCode"] == 137
    assert attempt["container"]["reason"] == OOM_REASON
    assert detail["container"]["exitCode"] == 137
    assert detail["container"]["reason"] == OOM_REASON
    assert not any(line.startswith("survived") for line in job_log(logs, detail))


# -- what the job sees -------------------------------------------------------------------


def test_environment(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(
        batch,
        unique,
        command=["env"],
        environment=[
            {"name": "FROM_DEF", "value": "def-a"},
            {"name": "SHARED", "value": "def-b"},
        ],
    )
    job_id = submit(
        batch,
        env,
        overrides={
            "environment": [
                {"name": "SHARED", "value": "override-b"},
                {"name": "FROM_OVERRIDE", "value": "override-c"},
            ]
        },
    )
    detail = wait_for(batch, job_id)
    assert detail["status"] == "SUCCEEDED", detail
    seen = dict(line.split("=", 1) for line in job_log(logs, detail) if "=" in line)
    assert seen["AWS_BATCH_JOB_ID"] == job_id
    assert seen["AWS_BATCH_JQ_NAME"] == env["queue_name"]
    assert seen["AWS_BATCH_CE_NAME"] == env["ce_name"]
    assert seen["AWS_BATCH_JOB_ATTEMPT"] == "1"
    assert "AWS_BATCH_JOB_ARRAY_INDEX" not in seen
    assert seen["FROM_DEF"] == "def-a"
    assert seen["SHARED"] == "override-b"
    assert seen["FROM_OVERRIDE"] == "override-c"


def test_pipes_end_quietly(batch: Any, logs: Any, unique: str) -> None:
    # SIGPIPE has its default action in the job, as in a container: `yes`
    # dies of it silently instead of printing "Broken pipe".
    env = make_env(batch, unique, command=sh("yes | head -n 3; echo end"))
    detail = wait_for(batch, submit(batch, env))
    assert detail["status"] == "SUCCEEDED", detail
    assert job_log(logs, detail) == ["y", "y", "y", "end"]


def test_parameter_substitution(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(
        batch,
        unique,
        command=["echo", "Ref::greeting", "Ref::who"],
        parameters={"greeting": "hello", "who": "world"},
    )
    defaults = wait_for(batch, submit(batch, env, name="defaults"))
    overridden = wait_for(batch, submit(batch, env, name="overridden", parameters={"who": "shoal"}))
    assert defaults["status"] == overridden["status"] == "SUCCEEDED"
    assert job_log(logs, defaults) == ["hello world"]
    assert job_log(logs, overridden) == ["hello shoal"]
    assert overridden["parameters"] == {"greeting": "hello", "who": "shoal"}
    assert overridden["container"]["command"] == ["echo", "hello", "shoal"]


# -- placement ---------------------------------------------------------------------------


def test_higher_priority_queue_starts_first(batch: Any, unique: str) -> None:
    env = make_env(batch, unique, max_vcpus=1)
    low = env["queue"]
    high = batch.create_job_queue(
        jobQueueName=f"{unique}-high",
        priority=10,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["ce"]}],
    )["jobQueueArn"]

    blocker = submit(batch, env, sh("exec sleep 30"), name="blocker", queue=low)
    wait_for(batch, blocker, "RUNNING")
    low_job = submit(batch, env, sh("echo low"), name="low", queue=low)
    wait_for(batch, low_job, "RUNNABLE", reason_prefix="CAPACITY:")
    high_job = submit(batch, env, sh("echo high"), name="high", queue=high)
    wait_for(batch, high_job, "RUNNABLE", reason_prefix="CAPACITY:")
    assert describe(batch, low_job)["status"] == "RUNNABLE"

    batch.terminate_job(jobId=blocker, reason="make room")
    high_done = wait_for(batch, high_job)
    low_done = wait_for(batch, low_job)
    assert high_done["status"] == low_done["status"] == "SUCCEEDED"
    # One vCPU: the high-priority job ran first, the low one only after it.
    assert high_done["startedAt"] <= low_done["startedAt"]
    assert high_done["stoppedAt"] <= low_done["startedAt"]


def test_job_waiting_for_capacity_says_why(batch: Any, unique: str) -> None:
    env = make_env(batch, unique, max_vcpus=2)
    blocker = submit(batch, env, sh("exec sleep 30"), name="blocker", vcpus=2)
    wait_for(batch, blocker, "RUNNING")
    waiting = submit(batch, env, sh("echo finally"), name="waiting")
    detail = wait_for(batch, waiting, "RUNNABLE", reason_prefix="CAPACITY:")
    reason = detail["statusReason"]
    # What it needs (1 vCPU, 128 MiB) and what is free (0 of the CE's 2 vCPUs).
    assert re.search(r"\b1 vCPU\b", reason), reason
    assert "128 MiB" in reason, reason
    assert re.search(r"\b0 of 2 vCPU", reason), reason
    assert env["ce_name"] in reason, reason

    batch.terminate_job(jobId=blocker, reason="make room")
    done = wait_for(batch, waiting)
    assert done["status"] == "SUCCEEDED"
    assert done["statusReason"] == EXITED


def test_job_that_can_never_fit_does_not_block_the_queue(batch: Any, unique: str) -> None:
    env = make_env(batch, unique, max_vcpus=4)
    huge = submit(batch, env, sh("echo huge"), name="huge", vcpus=64)
    detail = wait_for(batch, huge, "RUNNABLE", reason_prefix="MISCONFIGURATION:")
    assert detail["statusReason"].startswith("MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE")

    small = wait_for(batch, submit(batch, env, sh("echo small"), name="small"))
    assert small["status"] == "SUCCEEDED", small

    detail = describe(batch, huge)
    assert detail["status"] == "RUNNABLE"
    assert detail["statusReason"].startswith("MISCONFIGURATION:")
    assert detail["attempts"] == []
    assert "startedAt" not in detail
    batch.cancel_job(jobId=huge, reason="cleanup")
    assert describe(batch, huge)["status"] == "FAILED"
