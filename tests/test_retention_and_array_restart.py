"""Finished jobs are purged after the retention; arrays survive a kill -9."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import Server
from engine_support import (
    describe,
    make_env,
    restart,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_until,
)


@pytest.fixture
def servers() -> Any:
    started: list[Server] = []
    yield started
    for server in reversed(started):
        shutdown(server)


def test_finished_jobs_go_after_the_retention(tmp_path: Path, servers: list[Server]) -> None:
    server = start_engine_server(tmp_path, "--host-vcpus", "8", "--job-retention-seconds", "3")
    servers.append(server)
    batch = server.client("batch")
    env = make_env(batch, "keep")
    gate = tmp_path / "gate"
    done = submit(batch, env, ["true"], name="done")
    parent = submit(batch, env, ["true"], name="arr", arrayProperties={"size": 2})
    running = submit(batch, env, sh(f"until [ -e {gate} ]; do sleep 0.02; done"), name="long")
    wait_for(batch, done)
    wait_for(batch, parent)
    wait_for(batch, running, "RUNNING")
    wait_until(
        lambda: not batch.describe_jobs(jobs=[done, parent, f"{parent}:0"])["jobs"],
        timeout=15,
        what="finished jobs to be purged",
    )
    # Unfinished jobs stay, however old.
    assert describe(batch, running)["status"] == "RUNNING"
    gate.touch()
    wait_for(batch, running)


def test_an_array_survives_a_kill_mid_run(tmp_path: Path, servers: list[Server]) -> None:
    first = start_engine_server(tmp_path, "--host-vcpus", "4")
    servers.append(first)
    batch = first.client("batch")
    env = make_env(batch, "crash", max_vcpus=4)
    marks = tmp_path / "marks"
    size = 3000
    parent = submit(
        batch,
        env,
        sh(f"echo $AWS_BATCH_JOB_ARRAY_INDEX >> {marks}"),
        arrayProperties={"size": size},
    )
    wait_until(
        lambda: marks.exists() and len(marks.read_text().split()) > 200,
        timeout=60,
        what="some children to run",
    )
    assert len(marks.read_text().split()) < size  # killed mid-run
    first.stop(signal.SIGKILL)
    second = restart(first)
    servers.append(second)
    batch = second.client("batch")
    detail = wait_for(batch, parent, timeout=180)
    assert detail["status"] == "SUCCEEDED", detail["arrayProperties"]
    assert detail["arrayProperties"]["statusSummary"]["SUCCEEDED"] == size
    ran = marks.read_text().split()
    assert sorted(map(int, ran)) == list(range(size))  # each child once, none twice
