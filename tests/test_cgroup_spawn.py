"""Spawning into a memory cgroup from one thread (cgroup v1), as Ray workers
do: the child starts in the cgroup with no `sh` to join it, the spawning
thread is back home before the limit is set, and an OOM kill picks the job,
never the process that spawned it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_support import wait_until

from shoal.executors.cgroups import MemoryCgroups, OverLimit

MIB = 1024 * 1024


@pytest.fixture
def cgroups() -> Iterator[MemoryCgroups]:
    made = MemoryCgroups(f"shoal-spawn-test-{os.getpid()}", sweep=False)
    if not made.threads_movable:
        made.close()
        pytest.skip("no cgroup v1 memory controller to move a thread into here")
    yield made
    assert made.root is not None
    for cgroup in made.root.iterdir():
        if cgroup.is_dir():
            made.remove(cgroup)  # (each test's children have ended)
    made.close()


def memory_cgroup(pid: int | str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    raise AssertionError(f"{pid} has no memory cgroup")


def unlimited(cgroups: MemoryCgroups) -> Path:
    """An attempt's cgroup made without a limit, as for `spawn_in`."""
    cgroup = cgroups.create(uuid.uuid4().hex, None)
    assert cgroup is not None
    return cgroup


def limit_of(cgroup: Path) -> int:
    return int((cgroup / "memory.limit_in_bytes").read_text())


def test_the_child_starts_in_the_cgroup_and_the_thread_comes_home_then_the_limit_is_set(
    cgroups: MemoryCgroups,
) -> None:
    home = memory_cgroup(f"self/task/{threading.get_native_id()}")
    cgroup = unlimited(cgroups)
    assert limit_of(cgroup) > 1 << 50  # none yet
    seen_inside: list[str] = []
    with cgroups.spawn_in(cgroup, 32):
        seen_inside.append(memory_cgroup(f"self/task/{threading.get_native_id()}"))
        child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert seen_inside == [f"/{cgroup.parent.name}/{cgroup.name}"]
        assert memory_cgroup(child.pid) == seen_inside[0]
        assert memory_cgroup(f"self/task/{threading.get_native_id()}") == home
        assert limit_of(cgroup) == 32 * MIB
        assert [int(p) for p in (cgroup / "cgroup.procs").read_text().split()] == [child.pid]
    finally:
        child.kill()
        child.wait()


def test_an_oom_kill_after_the_spawn_takes_the_job_not_the_spawner(
    cgroups: MemoryCgroups,
) -> None:
    cgroup = unlimited(cgroups)
    hog = [sys.executable, "-c", "x = b'x' * (200 * 1024 * 1024); print('survived')"]
    with cgroups.spawn_in(cgroup, 32):
        child = subprocess.Popen(hog, stdout=subprocess.PIPE, start_new_session=True)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == -9, out
    assert b"survived" not in out
    assert cgroups.oom_killed(cgroup)


def test_a_job_over_its_limit_before_it_is_set_is_told(cgroups: MemoryCgroups) -> None:
    """The job runs unlimited while the spawning thread is in its cgroup: if
    it is already over its limit by the time the limit is set, the spawner
    hears of it (and kills it, as the OOM killer would have)."""
    cgroup = unlimited(cgroups)
    grow = [sys.executable, "-c", "import time; x = b'x' * (64 * 1024 * 1024); time.sleep(60)"]
    child: subprocess.Popen[bytes] | None = None
    with pytest.raises(OverLimit), cgroups.spawn_in(cgroup, 16):
        child = subprocess.Popen(grow, start_new_session=True)
        usage = cgroup / "memory.usage_in_bytes"
        wait_until(lambda: int(usage.read_text()) > 64 * MIB, what="the job over 16 MiB")
    assert child is not None
    child.kill()
    child.wait()


def test_a_cgroup_limited_after_its_spawn_is_kept_without_a_limit(
    cgroups: MemoryCgroups,
) -> None:
    cgroup = unlimited(cgroups)
    with cgroups.spawn_in(cgroup, 32):
        child = subprocess.Popen(["true"])
    child.wait()
    assert limit_of(cgroup) == 32 * MIB
    cgroups.release(cgroup)
    again = unlimited(cgroups)
    assert not cgroup.exists()  # the spare was renamed into place
    assert limit_of(again) > 1 << 50
