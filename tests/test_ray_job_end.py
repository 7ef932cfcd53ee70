"""When a job run by the ray executor's code on a node ends: with its main
process, and what it left running in its process group with it. Runs
`ray_remote._follow_output` here, on real processes, without a cluster:
the jobs print nothing and the watcher (which would call the dispatcher)
is replaced by one that does nothing. On a cluster, see test_ray_executor's
test_background_processes_end_with_the_job."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from engine_support import read_pid, wait_gone

from shoal.executors import ray_remote

NOBODY = ("no-such-dispatcher", "shoal-test", "none")


@pytest.fixture(autouse=True)
def no_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_remote, "_watch", lambda *args, **kwargs: None)


def start(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sh", "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_job_ends_with_its_main_process_and_its_group_goes_with_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "bg.pid"
    proc = start(f"sleep 60 & echo $! > {pidfile}; exit 4")
    began = time.monotonic()
    info: dict[str, Any] = {}
    assert ray_remote._follow_output(NOBODY, "t1", info, proc) == 4
    # Not held until the background `sleep` (which has the pipe) ends.
    assert time.monotonic() - began < 30
    wait_gone(read_pid(pidfile, timeout=10), timeout=10)


def test_without_pidfds_a_job_is_followed_until_its_pipe_closes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (Linux before 5.3.) The job still ends, once what holds its pipe does.
    monkeypatch.setattr(ray_remote, "_pidfd", lambda pid: None)
    proc = start("sleep 1 & exit 0")
    began = time.monotonic()
    assert ray_remote._follow_output(NOBODY, "t2", {}, proc) == 0
    assert time.monotonic() - began >= 0.9
