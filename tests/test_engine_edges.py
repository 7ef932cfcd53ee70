"""Edge cases of the engine and the process executor found in review: they
must keep working, so each has a test."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, client_error
from engine_support import (
    engine_server,
    job_log,
    make_env,
    pid_alive,
    read_pid,
    sh,
    submit,
    wait_for,
    wait_gone,
)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with engine_server(tmp_path_factory.mktemp("edges"), "--host-vcpus", "64") as server:
        yield server


@pytest.fixture(scope="module")
def batch(srv: Server) -> Any:
    return srv.client("batch")


def test_dependency_failure_cascades_down_a_chain(batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    first = submit(batch, env, sh("exit 1"), name="first")
    second = submit(batch, env, name="second", dependsOn=[{"jobId": first}])
    third = submit(batch, env, name="third", dependsOn=[{"jobId": second}])
    assert wait_for(batch, first)["status"] == "FAILED"
    for job_id in (second, third):
        detail = wait_for(batch, job_id, timeout=10)
        assert detail["status"] == "FAILED"
        assert detail["statusReason"] == "Dependent Job failed"
        assert "startedAt" not in detail  # never ran


def test_dependent_runs_after_its_dependency_succeeds(batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    first = submit(batch, env, sh("echo one"), name="first")
    second = submit(batch, env, sh("echo two"), name="second", dependsOn=[{"jobId": first}])
    done_first, done_second = wait_for(batch, first), wait_for(batch, second)
    assert done_first["status"] == done_second["status"] == "SUCCEEDED"
    assert done_second["startedAt"] >= done_first["stoppedAt"]


def test_background_processes_end_with_the_job(batch: Any, unique: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    env = make_env(batch, unique)
    job = submit(batch, env, sh(f"sleep 300 & echo $! > {pidfile}; exit 0"), name="bg")
    assert wait_for(batch, job)["status"] == "SUCCEEDED"
    pid = read_pid(pidfile)
    wait_gone(pid)
    assert not pid_alive(pid)


def test_blank_lines_are_not_log_events(srv: Server, batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    job = submit(batch, env, sh("printf 'a\\n\\nb\\n\\n'"), name="blank")
    detail = wait_for(batch, job)
    assert job_log(srv.client("logs"), detail) == ["a", "b"]


def test_awslogs_options_are_checked_at_registration(batch: Any, unique: str) -> None:
    props = {
        "image": "busybox",
        "command": ["true"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "64"},
        ],
    }
    for options, words in (
        ({"awslogs-group": "x" * 300}, "awslogs-group"),
        ({"awslogs-group": "bad group!"}, "awslogs-group"),
        ({"awslogs-stream-prefix": "a:b"}, "awslogs-stream-prefix"),
    ):
        message = client_error(
            batch.register_job_definition,
            jobDefinitionName=unique,
            type="container",
            containerProperties={
                **props,
                "logConfiguration": {"logDriver": "awslogs", "options": options},
            },
        )
        assert words in message


def test_many_pending_jobs_leave_the_server_responsive(
    srv: Server, batch: Any, unique: str
) -> None:
    # More PENDING jobs than the engine evaluates in one batch: the API must
    # keep answering, and a job submitted after them must still run.
    env = make_env(batch, unique)
    gate = submit(batch, env, sh("sleep 30"), name="gate")
    wait_for(batch, gate, "RUNNING")
    for i in range(520):
        submit(batch, env, name=f"dep{i}", dependsOn=[{"jobId": gate}])
    started = time.monotonic()
    with urllib.request.urlopen(srv.url + "/health", timeout=5) as r:
        assert r.status == 200
    assert time.monotonic() - started < 2.0
    late = submit(batch, env, sh("echo late"), name="late")
    assert wait_for(batch, late, timeout=20)["status"] == "SUCCEEDED"
    batch.terminate_job(jobId=gate, reason="done with the gate")
