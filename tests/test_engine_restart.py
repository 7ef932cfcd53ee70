"""Jobs outlive the server: after a restart the engine reattaches to them.

Each test has its own server and data directory; it kills (or stops) the
server while jobs run and starts a new server process on the same data.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_queue
from engine_support import (
    EXITED,
    job_log,
    pid_alive,
    read_pid,
    restart,
    sh,
    shutdown,
    start_engine_server,
    wait_for,
    wait_gone,
    wait_until,
)

ARGS = ("--host-vcpus", "8")


def setup(batch: Any) -> None:
    ce = make_ce(batch, "ce", max_vcpus=8)
    make_queue(batch, "q", [ce])
    batch.register_job_definition(
        jobDefinitionName="d",
        type="container",
        containerProperties={
            "image": "busybox",
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
    )


def wait_for_gate(gate: Path) -> str:
    """Shell that waits until the test creates `gate` (at most 30 s, so that a
    failed test leaves nothing behind for long)."""
    return f"i=0; until [ -e {gate} ] || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done"


def submit(batch: Any, script: str, name: str = "job", **kwargs: Any) -> str:
    job_id: str = batch.submit_job(
        jobName=name,
        jobQueue="q",
        jobDefinition="d",
        containerOverrides={"command": sh(script)},
        **kwargs,
    )["jobId"]
    return job_id


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    """Every server a test starts is shut down (and its jobs reaped) at the end."""
    started: list[Server] = []
    yield started
    for server in reversed(started):  # the newest first: it may share a data dir
        shutdown(server)


def test_sigkill_mid_run_reattaches_and_never_starts_twice(
    tmp_path: Path, servers: list[Server]
) -> None:
    first = start_engine_server(tmp_path, *ARGS)
    servers.append(first)
    batch, logs = first.client("batch"), first.client("logs")
    setup(batch)
    gate = tmp_path / "gate"
    files = {}
    for i in range(3):
        marker = tmp_path / f"started-{i}"
        # Job 0 may finish while no server runs; the others wait for the gate,
        # so they are certainly still running when the new server starts.
        wait = "sleep 3" if i == 0 else wait_for_gate(gate)
        job_id = submit(
            batch,
            f"echo started; echo started >> {marker}; {wait}; echo done",
            name=f"job{i}",
            retryStrategy={"attempts": 3},
        )
        files[job_id] = marker
    for job_id, marker in files.items():
        wait_for(batch, job_id, "RUNNING")
        wait_until(marker.exists, what=f"{marker} to be written")
        # The first line made it into the log before the crash.
        wait_until(lambda job_id=job_id: job_log(logs, wait_for(batch, job_id, "RUNNING")))

    first.stop(signal.SIGKILL)
    second = restart(first)
    servers.append(second)
    batch, logs = second.client("batch"), second.client("logs")
    for job_id in list(files)[1:]:
        detail = wait_for(batch, job_id, "RUNNING")
        assert detail["attempts"] == []
    gate.touch()
    for job_id, marker in files.items():
        detail = wait_for(batch, job_id, timeout=20)
        assert detail["status"] == "SUCCEEDED", detail
        [attempt] = detail["attempts"]
        assert attempt["container"]["exitCode"] == 0
        assert marker.read_text().splitlines() == ["started"]
        assert job_log(logs, detail) == ["started", "done"]


def test_job_that_ends_while_server_is_down_keeps_its_exit_code(
    tmp_path: Path, servers: list[Server]
) -> None:
    first = start_engine_server(tmp_path, *ARGS)
    servers.append(first)
    batch = first.client("batch")
    setup(batch)
    pidfile = tmp_path / "pid"
    job_id = submit(batch, f"echo $$ > {pidfile}; echo bye; sleep 1; exit 7")
    running = wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)

    first.stop(signal.SIGKILL)
    wait_gone(pid, timeout=10)  # the job ended while no server was watching
    second = restart(first)
    servers.append(second)
    batch, logs = second.client("batch"), second.client("logs")
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == EXITED
    [attempt] = detail["attempts"]
    assert attempt["container"]["exitCode"] == 7
    assert detail["container"]["exitCode"] == 7
    assert attempt["startedAt"] == running["startedAt"]
    assert job_log(logs, detail) == ["bye"]


def test_sigterm_leaves_running_jobs_running(tmp_path: Path, servers: list[Server]) -> None:
    first = start_engine_server(tmp_path, *ARGS)
    servers.append(first)
    batch = first.client("batch")
    setup(batch)
    pidfile, gate = tmp_path / "pid", tmp_path / "gate"
    job_id = submit(
        batch,
        f"echo $$ > {pidfile}; echo started; {wait_for_gate(gate)}; echo done",
    )
    running = wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)

    # uvicorn re-raises the signal after its graceful shutdown.
    assert first.stop(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert pid_alive(pid), "a graceful shutdown must not stop running jobs"
    second = restart(first)
    servers.append(second)
    batch, logs = second.client("batch"), second.client("logs")
    again = wait_for(batch, job_id, "RUNNING")
    assert again["attempts"] == []
    assert again["startedAt"] == running["startedAt"]
    assert pid_alive(pid)
    gate.touch()
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "SUCCEEDED", detail
    [attempt] = detail["attempts"]
    assert attempt["container"]["exitCode"] == 0
    assert attempt["startedAt"] == running["startedAt"]
    assert job_log(logs, detail) == ["started", "done"]
