"""Container options of the docker executor: volumes inside allowed roots,
read-only root filesystems, ulimits, linuxParameters, privileged refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_queue
from engine_support import job_log, sh, shutdown, start_engine_server, wait_for
from test_executor_contract import IMAGE, needs_docker

pytestmark = needs_docker
FAILED_TO_START = "Task failed to start"


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("volumes")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, allowed: Path) -> Iterator[Server]:
    srv = start_engine_server(
        tmp_path_factory.mktemp("docker"), "--host-vcpus", "8", "--volume-root", str(allowed)
    )
    batch = srv.client("batch")
    ce = make_ce(batch, "d-ce", tags={"shoal:executor": "docker"})
    make_queue(batch, "d-q", [ce])
    yield srv
    shutdown(srv)


@pytest.fixture
def batch(server: Server) -> Any:
    return server.client("batch")


@pytest.fixture
def logs(server: Server) -> Any:
    return server.client("logs")


def run(batch: Any, name: str, command: list[str], **props: Any) -> dict[str, Any]:
    batch.register_job_definition(
        jobDefinitionName=name,
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": command,
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
            **props,
        },
    )
    job_id = batch.submit_job(jobName=name, jobQueue="d-q", jobDefinition=name)["jobId"]
    return wait_for(batch, job_id, timeout=60)


def test_a_volume_inside_an_allowed_root(batch: Any, logs: Any, allowed: Path) -> None:
    (allowed / "in.txt").write_text("hello from the host\n")
    detail = run(
        batch,
        "vol",
        sh("cat /data/in.txt; echo written > /data/out.txt"),
        volumes=[{"name": "data", "host": {"sourcePath": str(allowed)}}],
        mountPoints=[{"sourceVolume": "data", "containerPath": "/data"}],
    )
    assert detail["status"] == "SUCCEEDED", detail
    assert job_log(logs, detail) == ["hello from the host"]
    assert (allowed / "out.txt").read_text() == "written\n"


def test_a_read_only_mount(batch: Any, logs: Any, allowed: Path) -> None:
    (allowed / "ro.txt").write_text("readable\n")
    detail = run(
        batch,
        "rovol",
        sh("cat /data/ro.txt; (echo no > /data/nope.txt) 2>/dev/null || echo refused"),
        volumes=[{"name": "data", "host": {"sourcePath": str(allowed)}}],
        mountPoints=[{"sourceVolume": "data", "containerPath": "/data", "readOnly": True}],
    )
    assert detail["status"] == "SUCCEEDED", detail
    assert job_log(logs, detail) == ["readable", "refused"]  # mounted, read-only
    assert not (allowed / "nope.txt").exists()


def test_a_volume_outside_the_allowed_roots_is_refused(batch: Any, tmp_path: Path) -> None:
    detail = run(
        batch,
        "outside",
        ["true"],
        volumes=[{"name": "etc", "host": {"sourcePath": "/etc"}}],
        mountPoints=[{"sourceVolume": "etc", "containerPath": "/host-etc"}],
    )
    assert (detail["status"], detail["statusReason"]) == ("FAILED", FAILED_TO_START)
    assert "outside the roots" in detail["attempts"][0]["container"]["reason"]


def test_read_only_root_filesystem(batch: Any, logs: Any) -> None:
    detail = run(
        batch,
        "readonly",
        sh("touch /file 2>/dev/null && echo wrote || echo read-only"),
        readonlyRootFilesystem=True,
    )
    assert job_log(logs, detail) == ["read-only"]


def test_ulimits_and_linux_parameters(batch: Any, logs: Any) -> None:
    detail = run(
        batch,
        "limits",
        sh(
            "ulimit -n; df -m /dev/shm | tail -1 | awk '{print $2}'; "
            "mount | grep -c ' /scratch '; cat /proc/1/comm"
        ),
        ulimits=[{"name": "nofile", "softLimit": 321, "hardLimit": 321}],
        linuxParameters={
            "sharedMemorySize": 96,
            "tmpfs": [{"containerPath": "/scratch", "size": 8}],
            "initProcessEnabled": True,
        },
    )
    assert detail["status"] == "SUCCEEDED", detail
    # PID 1 is docker's init, not the job's shell.
    assert job_log(logs, detail) == ["321", "96", "1", "docker-init"]


def test_privileged_is_refused_unless_allowed(batch: Any) -> None:
    detail = run(batch, "priv", ["true"], privileged=True)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", FAILED_TO_START)
    assert "privileged" in detail["attempts"][0]["container"]["reason"]
