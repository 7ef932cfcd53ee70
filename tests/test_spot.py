"""Spot interruptions, on demand (`POST /shoal/v1/interrupt`) and at a rate
(`shoal:spot-interruption-rate`), on a live engine server: the attempt ends
as AWS ends one on a reclaimed instance, so `Host EC2*` rules retry it and a
job whose rules say EXIT fails; bad requests get a clear 400."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_definition, make_queue, start_server
from engine_support import describe, sh, shutdown, start_engine_server, wait_for, wait_until

HOST_LOST = "Host EC2 (instance i-"
SPOT_RULES = [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(
        tmp_path_factory.mktemp("spot"), "--kill-grace-seconds", "1", "--host-vcpus", "16"
    )
    yield srv
    shutdown(srv)


@pytest.fixture(scope="module")
def batch(server: Server) -> Any:
    return server.client("batch")


def interrupt(server: Server, **body: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        server.url + "/shoal/v1/interrupt",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def spot_env(batch: Any, name: str, **tags: str) -> dict[str, str]:
    extra: dict[str, Any] = {"tags": tags} if tags else {}
    ce = make_ce(batch, name, kind="SPOT", max_vcpus=8, **extra)
    make_queue(batch, name, [ce])
    make_definition(batch, name)
    return {"queue": name, "definition": name}


def held(tmp_path: Path, name: str) -> tuple[list[str], Path]:
    """A job that says its attempt, then waits for a gate file."""
    gate = tmp_path / f"{name}.go"
    return sh(
        f'echo "attempt $AWS_BATCH_JOB_ATTEMPT"; until [ -e {gate} ]; do sleep 0.05; done'
    ), gate


def submit(batch: Any, env: dict[str, str], command: list[str], rules: list[Any]) -> str:
    job_id: str = batch.submit_job(
        jobName="spot",
        jobQueue=env["queue"],
        jobDefinition=env["definition"],
        containerOverrides={"command": command},
        retryStrategy={"attempts": 3, "evaluateOnExit": rules},
    )["jobId"]
    return job_id


def second_attempt_running(batch: Any, job_id: str) -> dict[str, Any]:
    detail: dict[str, Any] = wait_until(
        lambda: (d := describe(batch, job_id))["attempts"] and d["status"] == "RUNNING" and d,
        timeout=30,
        what="the second attempt running",
    )
    return detail


def test_an_interrupted_attempt_is_retried_by_the_host_ec2_rule(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    env = spot_env(batch, unique)
    command, gate = held(tmp_path, unique)
    job_id = submit(batch, env, command, SPOT_RULES)
    wait_for(batch, job_id, "RUNNING")
    status, body = interrupt(server, jobId=job_id)
    assert (status, body) == (200, {"interrupted": [job_id]})
    detail = second_attempt_running(batch, job_id)
    [first] = detail["attempts"]
    assert first["statusReason"].startswith(HOST_LOST) and first["statusReason"].endswith(
        " terminated."
    )
    assert "exitCode" not in first["container"]
    gate.touch()
    done = wait_for(batch, job_id)
    assert done["status"] == "SUCCEEDED"
    assert len(done["attempts"]) == 2


def test_an_interrupted_attempt_fails_the_job_whose_rules_say_exit(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    env = spot_env(batch, unique)
    command, gate = held(tmp_path, unique)
    rules = [{"onStatusReason": "Host EC2*", "action": "EXIT"}]
    job_id = submit(batch, env, command, rules)
    wait_for(batch, job_id, "RUNNING")
    assert interrupt(server, jobId=job_id)[0] == 200
    detail = wait_for(batch, job_id)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"].startswith(HOST_LOST)
    assert len(detail["attempts"]) == 1
    assert "exitCode" not in detail["container"]
    gate.touch()


def test_interrupting_a_compute_environment_ends_all_its_running_jobs(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    env = spot_env(batch, unique)
    command, gate = held(tmp_path, unique)
    jobs = [submit(batch, env, command, SPOT_RULES) for _ in range(3)]
    for job_id in jobs:
        wait_for(batch, job_id, "RUNNING")
    status, body = interrupt(server, computeEnvironment=unique)
    assert status == 200 and sorted(body["interrupted"]) == sorted(jobs)
    for job_id in jobs:
        second_attempt_running(batch, job_id)
    gate.touch()
    assert {wait_for(batch, j)["status"] for j in jobs} == {"SUCCEEDED"}


def test_a_spot_environment_with_an_interruption_rate_interrupts_its_jobs(
    server: Server, batch: Any, unique: str, tmp_path: Path
) -> None:
    # 36,000 per instance-hour: about ten a second, so within a poll or two.
    env = spot_env(batch, unique, **{"shoal:spot-interruption-rate": "36000"})
    command, gate = held(tmp_path, unique)
    job_id = submit(batch, env, command, [{"onStatusReason": "Host EC2*", "action": "EXIT"}])
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"].startswith(HOST_LOST)
    gate.touch()


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"jobId": "no-such-job"}, "not found"),
        ({"computeEnvironment": "no-such-ce"}, "not found"),
        ({}, "exactly one"),
        ({"jobId": "a", "computeEnvironment": "b"}, "exactly one"),
    ],
)
def test_bad_interrupts_get_a_clear_error(
    server: Server, body: dict[str, str], fragment: str
) -> None:
    status, reply = interrupt(server, **body)
    assert status == 400
    assert reply["__type"] == "ClientException"
    assert fragment in reply["message"], reply


def test_a_finished_job_cannot_be_interrupted(server: Server, batch: Any, unique: str) -> None:
    env = spot_env(batch, unique)
    job_id = submit(batch, env, ["true"], SPOT_RULES)
    assert wait_for(batch, job_id)["status"] == "SUCCEEDED"
    status, reply = interrupt(server, jobId=job_id)
    assert status == 400 and "SUCCEEDED" in reply["message"]


def test_a_server_without_an_engine_says_where_to_send_interrupts(tmp_path: Path) -> None:
    srv = start_server(tmp_path)  # --no-engine
    try:
        batch = srv.client("batch")
        env = spot_env(batch, "noengine")
        ce = batch.describe_compute_environments(computeEnvironments=["noengine"])
        assert ce["computeEnvironments"]
        status, reply = interrupt(srv, computeEnvironment="noengine")
        assert status == 400 and "runs no engine" in reply["message"]
        assert env["queue"] == "noengine"
    finally:
        srv.stop()
