"""One engine per store; API-only servers next to it on the same store.

A second engine refuses to start (with what to do instead). Jobs submitted,
and terminate requests made, through an API-only server reach the engine of
another process within its poll.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Server, start_server
from engine_support import (
    ENGINE_ARGS,
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
    engine = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(engine)
    api = Server(data_dir=tmp_path / "data", args=["--no-engine"]).start()
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


def test_a_second_engine_on_one_postgres_database_refuses(
    pg_database: str,  # noqa: F811
    tmp_path: Path,
    servers: list[Server],
) -> None:
    url = new_schema(pg_database)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    servers.append(start_engine_server(tmp_path / "one", "--store", url))
    with pytest.raises(RuntimeError, match="another shoal engine uses this PostgreSQL"):
        start_server(tmp_path / "two", *ENGINE_ARGS, "--store", url)
