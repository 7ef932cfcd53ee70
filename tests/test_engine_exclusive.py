"""One engine per store; API-only servers next to it on the same store.

A second engine refuses to start (with what to do instead). Jobs submitted,
and terminate requests made, through an API-only server reach the engine of
another process within its poll.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from conftest import Server
from engine_support import (
    ENGINE_ARGS,
    job_log,
    make_env,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
)
from test_store_contract import new_schema, pg_database  # noqa: F401  (a fixture)


@pytest.fixture
def servers() -> Any:
    started: list[Server] = []
    yield started
    for server in reversed(started):
        shutdown(server)


def test_a_second_engine_on_one_data_dir_refuses(tmp_path: Path, servers: list[Server]) -> None:
    servers.append(start_engine_server(tmp_path))
    with pytest.raises(RuntimeError, match=r"another shoal engine \(pid \d+\).*--no-engine"):
        Server(data_dir=tmp_path / "data", args=list(ENGINE_ARGS)).start()


def test_an_api_server_beside_the_engine_shares_its_work(
    tmp_path: Path, servers: list[Server]
) -> None:
    engine = start_engine_server(tmp_path, "--host-vcpus", "8", "--role", "engine")
    servers.append(engine)
    with pytest.raises(ClientError, match="runs the engine only"):
        engine.client("batch").describe_job_queues()
    api = Server(data_dir=tmp_path / "data", args=["--role", "api"]).start()
    servers.append(api)
    batch = api.client("batch")
    env = make_env(batch, "beside")
    done = submit(batch, env, ["true"], name="quick")
    assert wait_for(batch, done, timeout=15)["status"] == "SUCCEEDED"
    long = submit(batch, env, sh("sleep 60"), name="long")
    wait_for(batch, long, "RUNNING", timeout=15)
    batch.terminate_job(jobId=long, reason="from the other server")
    detail = wait_for(batch, long, timeout=15)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "from the other server")


@pytest.mark.parametrize("data_dirs", ["shared", "separate"])
def test_a_standby_engine_takes_over_on_postgres(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
    servers: list[Server],
    data_dirs: str,
) -> None:
    """Engines on one database elect a dispatcher; when it is killed, a
    standby takes over within a second and reattaches to its running jobs:
    in the same data directory, or in another one on the same host (whose
    log store then holds only what the job printed after the takeover)."""
    url = new_schema(pg_database)
    one, two = tmp_path / "one", tmp_path / ("one" if data_dirs == "shared" else "two")
    for path in (one, two):
        path.mkdir(exist_ok=True)
    first = start_engine_server(one, "--store", url, "--host-vcpus", "8")
    servers.append(first)
    batch = first.client("batch")
    env = make_env(batch, "takeover")
    marker = tmp_path / "ran"
    gate = tmp_path / "gate"
    job = submit(
        batch,
        env,
        sh(f"echo run >> {marker}; echo first; until [ -e {gate} ]; do sleep 0.02; done; exit 4"),
    )
    wait_for(batch, job, "RUNNING", timeout=15)
    second = start_engine_server(two, "--store", url, "--host-vcpus", "8")
    servers.append(second)
    batch, logs = second.client("batch"), second.client("logs")
    first.stop(signal.SIGKILL)
    # A new job runs: the standby took over (no other engine is left) ...
    after = submit(batch, env, ["true"], name="after-the-kill")
    assert wait_for(batch, after, timeout=15)["status"] == "SUCCEEDED"
    # ... while the first engine's job still runs, held by its gate.
    assert wait_for(batch, job, "RUNNING")["status"] == "RUNNING"
    gate.touch()
    detail = wait_for(batch, job, timeout=30)
    assert (detail["status"], detail["container"]["exitCode"]) == ("FAILED", 4), detail
    # Its exit code came through: the standby reattached to the running job
    # (a lost attempt would have none).
    assert len(detail["attempts"]) == 1
    assert marker.read_text().splitlines() == ["run"]  # started once
    if data_dirs == "shared":
        assert job_log(logs, detail) == ["first"]
    else:
        # A known limit: logs are files of each data directory, and the job
        # printed only before the takeover, into the first one's.
        with pytest.raises(ClientError, match="log stream does not exist"):
            job_log(logs, detail)
