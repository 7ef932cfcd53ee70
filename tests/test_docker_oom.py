"""An OOM kill of a container is told from any other SIGKILL, even when
dockerd's State.OOMKilled flag is never set: dockerd 20.10 drops it when
containerd's OOM event comes after the exit, and containerd drops the event
when the container's cgroup is gone first. The kernel's log and dockerd's
"oom" event still say so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from test_executor_contract import IMAGE, needs_docker

from shoal.executors.cgroups import oom_kill_logged
from shoal.executors.docker import DockerExecutor
from shoal.logs.store import LogStore

pytestmark = needs_docker

# 16 MiB allowed; the shell holds 64 MiB in a variable.
HOG = 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo survived ${#x}'


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    c = docker.from_env(timeout=120)
    yield c
    c.close()


def ended(client: Any, command: str, kill: bool = False) -> Any:
    """A container of `command` (16 MiB, no swap), run to its end; SIGKILLed
    by dockerd once it runs if `kill`. Removed when the test ends."""
    container = client.containers.create(
        IMAGE,
        ["sh", "-c", command],
        network_mode="host",
        mem_limit="16m",
        memswap_limit="16m",
        labels={"shoal.test": "oom"},
    )
    container.start()
    if kill:
        container.kill(signal="KILL")
    assert container.wait(timeout=60)["StatusCode"] == 137
    container.reload()
    return container


@pytest.fixture
def containers(client: Any) -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for container in made:
        container.remove(force=True)


def test_the_kernel_log_names_the_container_the_oom_killer_killed(
    client: Any, containers: list[Any]
) -> None:
    hog = ended(client, HOG)
    killed = ended(client, "sleep 60", kill=True)
    containers += [hog, killed]
    assert oom_kill_logged(hog.id)
    assert not oom_kill_logged(killed.id)


def test_the_docker_executor_tells_an_oom_kill_from_another_sigkill(
    client: Any, containers: list[Any], tmp_path: Path
) -> None:
    executor = DockerExecutor(LogStore(tmp_path / "logs"), owner="oom-test", client=client)
    hog = ended(client, HOG)
    killed = ended(client, "sleep 60", kill=True)
    containers += [hog, killed]
    assert executor._oom_killed_late(hog)
    began = time.monotonic()
    assert not executor._oom_killed_late(killed)
    # Not an OOM kill: looked for no longer than the deadline (and a poll).
    assert time.monotonic() - began < 10
