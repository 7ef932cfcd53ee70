"""The process executor's files and helper process, against a live server.

- the launcher process: killed mid-run, the jobs it started finish and new
  jobs still start (in the server itself);
- the run directory on tmpfs: gone after a host restart, the jobs that were
  running are failed as on the loss of a host, never restarted in place;
- empty log streams share one file until their first write;
- working directories are reused only empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import Server
from engine_support import (
    describe,
    job_log,
    log_lines,
    make_env,
    pid_alive,
    read_pid,
    restart,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_gone,
    wait_until,
)

from shoal.executors import launcher
from shoal.runtime import host_name, run_dir

HOST_TERMINATED = "Host EC2"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
ONE_ATTEMPT: dict[str, Any] = {"retryStrategy": {"attempts": 1}}


@pytest.fixture
def servers() -> Any:
    started: list[Server] = []
    yield started
    for server in reversed(started):  # the newest first: it may share a data dir
        shutdown(server)


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def zombies(pid: int) -> list[int]:
    """Children of `pid` that ended and were not reaped."""
    found = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        for child in children_of_thread(pid, int(tid)):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{child}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z":
                    found.append(child)
    return found


def children_of_thread(pid: int, tid: int) -> list[int]:
    with contextlib.suppress(OSError):
        return [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return []


def launcher_pid(server: Server) -> int:
    assert server.proc is not None
    for pid in children(server.proc.pid):
        if b"shoal.executors.launcher" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("the server has no launcher process")


def test_jobs_survive_the_launcher_and_later_jobs_still_start(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(server)
    batch, logs = server.client("batch"), server.client("logs")
    env = make_env(batch, "l")
    gate = tmp_path / "gate"
    wait = f"until [ -e {gate} ]; do sleep 0.05; done"
    running = submit(batch, env, sh(f"echo before; {wait}; echo after"))
    # It fails, and leaves a process behind (which must not stay a zombie).
    failing = submit(batch, env, sh(f"sleep 60 & {wait}; exit 5"), name="failing")
    wait_for(batch, running, "RUNNING")
    wait_for(batch, failing, "RUNNING")

    # The launcher is the parent of the jobs it spawned: without it, they come
    # to the server (their subreaper), which learns how they end.
    launcher = launcher_pid(server)
    os.kill(launcher, signal.SIGKILL)
    wait_gone(launcher)
    gate.touch()
    detail = wait_for(batch, running)
    assert detail["status"] == "SUCCEEDED", detail
    assert job_log(logs, detail) == ["before", "after"]
    detail = wait_for(batch, failing)
    assert (detail["status"], detail["container"]["exitCode"]) == ("FAILED", 5), detail
    assert server.proc is not None
    wait_until(lambda: not zombies(server.proc.pid), what="the server to reap what it adopted")

    later = [submit(batch, env, sh(f"echo job {i}; exit {i}"), name=f"later{i}") for i in range(3)]
    for i, job_id in enumerate(later):
        detail = wait_for(batch, job_id)
        assert detail["container"]["exitCode"] == i, detail
        assert job_log(logs, detail) == [f"job {i}"]


def test_a_job_that_ended_unreaped_when_its_launcher_died_keeps_its_exit_code(
    tmp_path: Path, servers: list[Server]
) -> None:
    """The job exits while its launcher is frozen, so nobody reaps it or
    records its exit; then the launcher is killed. The server, now the
    zombie's parent, takes its exit status from the zombie itself."""
    server = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(server)
    batch = server.client("batch")
    env = make_env(batch, "z")
    gate, pidfile = tmp_path / "gate", tmp_path / "pid"
    job_id = submit(
        batch, env, sh(f"echo $$ > {pidfile}; until [ -e {gate} ]; do sleep 0.05; done; exit 7")
    )
    wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)
    launcher = launcher_pid(server)
    os.kill(launcher, signal.SIGSTOP)
    try:
        gate.touch()

        def zombie() -> bool:
            stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            return stat[0] == b"Z"

        wait_until(zombie, what="the job to end, unreaped")
        run = run_dir(host_name(tmp_path / "data")) or tmp_path / "data" / "attempts"
        assert not list(run.glob("*.exit")), "nobody recorded the exit yet"
    finally:
        os.kill(launcher, signal.SIGKILL)  # a stopped process dies of it too
    wait_gone(launcher)
    detail = wait_for(batch, job_id)
    assert (detail["status"], detail["container"].get("exitCode")) == ("FAILED", 7), detail
    assert server.proc is not None
    wait_until(lambda: not zombies(server.proc.pid), what="the server to reap the job")


def reboot_mid_run(
    tmp_path: Path, servers: list[Server], script: str, **submit_args: Any
) -> tuple[Any, str]:
    """Start a job, then "reboot": the server and the job die and tmpfs is
    emptied; a new server starts on the same data. (batch client, job id)."""
    run = run_dir(host_name(tmp_path / "data"))
    if run is None:
        pytest.skip("no tmpfs run directory on this host")
    first = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(first)
    batch = first.client("batch")
    env = make_env(batch, "h")
    pidfile = tmp_path / "pid"
    job_id = submit(batch, env, sh(f"echo $$ > {pidfile}; {script}"), **submit_args)
    wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)
    first.stop(signal.SIGKILL)
    shutdown(first)
    wait_gone(pid)
    shutil.rmtree(run, ignore_errors=True)  # (shutdown may have removed it)
    second = restart(first)
    servers.append(second)
    return second.client("batch"), job_id


def test_after_a_host_restart_running_jobs_fail_as_on_a_lost_host(
    tmp_path: Path, servers: list[Server]
) -> None:
    marker = tmp_path / "runs"
    batch, job_id = reboot_mid_run(
        tmp_path, servers, f"echo run >> {marker}; sleep 30", retryStrategy={"attempts": 2}
    )
    # The lost attempt is recorded as a host loss, and the retry strategy
    # decides what follows: here a second attempt, which runs anew.
    detail = wait_until(lambda: describe(batch, job_id)["attempts"], what="the lost attempt")
    [lost] = detail
    assert lost["statusReason"].startswith(HOST_TERMINATED), lost
    assert "exitCode" not in lost["container"]
    wait_until(lambda: marker.read_text().splitlines() == ["run", "run"], what="the retry")


def test_a_lost_attempt_without_retries_fails(tmp_path: Path, servers: list[Server]) -> None:
    batch, job_id = reboot_mid_run(tmp_path, servers, "sleep 30")
    detail = wait_for(batch, job_id, timeout=20)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"].startswith(HOST_TERMINATED)
    [attempt] = detail["attempts"]
    assert attempt["container"]["reason"].startswith("CannotInspectContainerError")


def test_empty_streams_stay_empty_when_another_is_written(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(server)
    batch, logs = server.client("batch"), server.client("logs")
    env = make_env(batch, "s")
    quiet = [submit(batch, env, ["true"], name=f"quiet{i}") for i in range(3)]
    quiet_details = [wait_for(batch, job_id) for job_id in quiet]
    loud = wait_for(batch, submit(batch, env, sh("echo one; echo two"), name="loud"))
    assert job_log(logs, loud) == ["one", "two"]
    streams = {
        s["logStreamName"]: s
        for s in logs.describe_log_streams(logGroupName="/aws/batch/job")["logStreams"]
    }
    for detail in quiet_details:
        name = detail["container"]["logStreamName"]
        assert name in streams  # it exists, as the awslogs driver makes it
        assert log_lines(logs, name) == []
        assert streams[name]["storedBytes"] == 0
    # A later write to an empty stream gives it a file of its own.
    again = wait_for(batch, submit(batch, env, sh("echo three"), name="again"))
    assert job_log(logs, again) == ["three"]
    for detail in quiet_details:
        assert log_lines(logs, detail["container"]["logStreamName"]) == []


def test_each_attempt_starts_in_an_empty_working_directory(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(server)
    batch, logs = server.client("batch"), server.client("logs")
    env = make_env(batch, "w")
    # Jobs one after the other, so that an emptied directory can be reused.
    for i in range(7):  # the last leaves its directory empty
        script = "ls -A; mkdir -p sub; echo x > sub/f; echo y > top" if i % 2 else "ls -A"
        detail = wait_for(batch, submit(batch, env, sh(script), name=f"w{i}"))
        assert detail["status"] == "SUCCEEDED", detail
        assert job_log(logs, detail) == [], (i, job_log(logs, detail))
    pool = tmp_path / "data" / "attempts" / ".pool"
    wait_until(lambda: any(pool.iterdir()), what="an emptied directory in the pool")
    assert all(not any(p.iterdir()) for p in pool.iterdir())


def test_an_attempt_from_another_host_is_lost(tmp_path: Path, servers: list[Server]) -> None:
    """A store shared by engines on several hosts: an attempt launched on a
    host that is gone cannot be reattached here. It fails as a lost host, and
    its process here (there is none of that name) is never touched."""
    first = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(first)
    batch = first.client("batch")
    env = make_env(batch, "elsewhere")
    pidfile = tmp_path / "pid"
    job_id = submit(batch, env, sh(f"echo $$ > {pidfile}; sleep 30"))
    wait_for(batch, job_id, "RUNNING")
    pid = read_pid(pidfile)
    first.stop(signal.SIGKILL)
    # Rewrite where the attempt ran: another host.
    db = sqlite3.connect(tmp_path / "data" / "shoal.db")
    with db:
        (runtime,) = db.execute("SELECT runtime FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        doc = json.loads(runtime)
        doc["handle"]["host"] = doc["home"]["host"] = "another-host"
        db.execute("UPDATE jobs SET runtime = ? WHERE job_id = ?", (json.dumps(doc), job_id))
    db.close()
    second = restart(first)
    servers.append(second)
    detail = wait_for(second.client("batch"), job_id, timeout=20)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"].startswith(HOST_TERMINATED)
    assert pid_alive(pid)  # not ours to stop: on "another host"
    os.kill(pid, signal.SIGKILL)


class SlowCleanups:
    """Stands in for AttemptFiles in the launcher's loop: each clean-up takes
    a while, as thousands of them do on a loaded host."""

    cgroups = None

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.cleaned: list[str] = []

    def clean(self, task: str, cgroup: str | None) -> None:
        time.sleep(self.seconds)
        self.cleaned.append(task)


def test_a_stopping_launcher_does_not_wait_for_its_whole_clean_up_backlog() -> None:
    # The server stops after a burst of jobs: the launcher has a backlog of
    # clean-ups (launches came first). It cleans for a moment, then exits;
    # the next start's sweep takes what is left.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    files = SlowCleanups(0.05)
    tasks = [[f"t{i}", None] for i in range(200)]  # 10 s of clean-ups
    ours.send(orjson.dumps({"op": "clean", "tasks": tasks}))
    ours.close()
    started = time.monotonic()
    launcher._serve(theirs, files)  # type: ignore[arg-type]
    took = time.monotonic() - started
    theirs.close()
    assert took < launcher._CLEANUP_ON_EXIT_SECONDS + 1.0, took
    assert 0 < len(files.cleaned) < len(tasks)
    assert files.cleaned == [t for t, _ in tasks[: len(files.cleaned)]]  # oldest first


class PeekingCleanups:
    """Stands in for AttemptFiles in the launcher's loop: records, for each
    clean-up, whether a message from the server was waiting meanwhile."""

    cgroups = None

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.busy: list[bool] = []

    def clean(self, task: str, cgroup: str | None) -> None:
        try:
            waiting = bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except BlockingIOError:
            waiting = False
        self.busy.append(waiting)


def test_a_busy_launcher_cleans_up_once_the_backlog_is_long() -> None:
    # Clean-ups wait for a quiet moment, but a steady stream of jobs has
    # none: past the backlog the launcher cleans up between messages too,
    # so that finished attempts' cgroups and directories do not pile up.
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    files = PeekingCleanups(theirs)
    backlog = launcher._CLEANUP_BACKLOG
    tasks = [[f"t{i}", None] for i in range(backlog + 20)]
    ours.send(orjson.dumps({"op": "clean", "tasks": tasks}))
    queued = 0
    ours.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while queued < 50:  # messages that keep it busy (withdraws of nothing)
            ours.send(orjson.dumps({"op": "withdraw", "task": f"none{queued}"}))
            queued += 1
    assert queued >= 3, "the socket holds too few messages for this test"
    ours.close()  # after what was sent: the launcher reads it all, then leaves
    launcher._serve(theirs, files)  # type: ignore[arg-type]
    theirs.close()
    assert len(files.busy) == len(tasks)  # all cleaned before it left
    # Cleaned with messages waiting: two per message while over the backlog.
    assert sum(files.busy) >= min(2 * (queued - 1), len(tasks) - backlog), files.busy


def test_a_start_sweeps_files_an_attempt_left_behind(tmp_path: Path, servers: list[Server]) -> None:
    # What a stop left uncleaned (or a crash between recording an exit and
    # cleaning up) goes when the engine starts: no job owns it.
    data = tmp_path / "data"
    root = data / "attempts"
    root.mkdir(parents=True)
    run = run_dir(host_name(data)) or root
    run.mkdir(parents=True, exist_ok=True)
    task = "0123456789abcdef0123456789abcdef"
    workdir = root / f"{task}.work"
    workdir.mkdir()
    (workdir / "output.csv").write_text("left behind\n")
    leftovers = [workdir, run / f"{task}.out", run / f"{task}.exit"]
    for path in leftovers[1:]:
        path.write_text("0\n")
    server = start_engine_server(tmp_path)
    servers.append(server)
    assert server.data_dir == data
    wait_until(lambda: not any(p.exists() for p in leftovers), what="the sweep")


def test_a_program_that_is_not_executable_fails_to_start(
    tmp_path: Path, servers: list[Server]
) -> None:
    server = start_engine_server(tmp_path)
    servers.append(server)
    batch = server.client("batch")
    env = make_env(batch, "x")
    script = tmp_path / "script.sh"
    script.write_text("echo never\n")  # mode 644: exec is refused
    detail = wait_for(batch, submit(batch, env, [str(script)]))
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start"), detail
    reason = detail["container"]["reason"]
    assert reason == f'CannotStartContainerError: exec: "{script}": permission denied', reason
    assert "exitCode" not in detail["container"]


@pytest.mark.parametrize("unread", [False, True])
def test_a_launcher_whose_server_dies_records_its_jobs_exits_then_leaves(
    tmp_path: Path, unread: bool
) -> None:
    # The launcher is the parent of its jobs: when its server is killed it
    # stays until they end, recording each exit for the next server. A server
    # killed with the launcher's answers unread resets the socket rather than
    # closing it (`unread`); that is a server gone all the same.
    root, run, logs = tmp_path / "root", tmp_path / "run", tmp_path / "logs"
    run.mkdir()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with theirs:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal.executors.launcher", str(theirs.fileno())],
            stdin=subprocess.PIPE,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,
        )
    assert proc.stdin is not None
    with proc.stdin:
        config = {"root": str(root), "run": str(run), "logs": str(logs), "cgroup": None}
        proc.stdin.write(orjson.dumps(config))
    gate = tmp_path / "gate"
    try:
        for task, code in (("a" * 32, 7), ("b" * 32, 0)):
            request = {
                "op": "launch",
                "task": task,
                "command": [
                    "/bin/sh",
                    "-c",
                    f"until [ -e {gate} ]; do sleep 0.02; done; exit {code}",
                ],
                "environment": {"PATH": os.defpath},
                "memory_mib": None,
                "log_group": "g",
                "log_stream": task,
            }
            ours.send(orjson.dumps(request))
        if not unread:
            ours.settimeout(10)
            answers = [orjson.loads(ours.recv(1 << 16)) for _ in range(2)]
            assert [a["task"] for a in answers] == ["a" * 32, "b" * 32]
        wait_until(lambda: len(list(run.glob("*.started"))) == 2, what="both jobs to start")
        wait_until(
            lambda: all(p.read_text().strip() for p in run.glob("*.started")), what="their pids"
        )
        ours.close()  # the server is gone
        assert proc.poll() is None, "the launcher left its jobs"
        gate.touch()
        assert proc.wait(timeout=10) == 0
        assert (run / f"{'a' * 32}.exit").read_text().strip() == "7"
        assert (run / f"{'b' * 32}.exit").read_text().strip() == "0"
    finally:
        gate.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def memory_cgroup_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
        usable = (root / "cgroup.procs").exists() and os.access(root, os.W_OK)
        if usable and (
            root.name == "memory" or "memory" in (root / "cgroup.controllers").read_text()
        ):
            return root
    return None


@pytest.mark.skipif(memory_cgroup_root() is None, reason="no writable memory cgroup here")
def test_memory_cgroups_are_reused_only_when_clean(tmp_path: Path, servers: list[Server]) -> None:
    """The launcher keeps emptied cgroups for the next attempt with the same
    limit: a reused one still holds its job to the limit, and one whose job
    was OOM-killed is never reused (the kill would be blamed on the next job)."""
    server = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(server)
    batch = server.client("batch")
    env = make_env(batch, "cg")
    root = memory_cgroup_root()
    assert root is not None and server.data_dir is not None
    parent = root / host_name(server.data_dir)
    limit = {"resourceRequirements": [{"type": "MEMORY", "value": "32"}]}
    hog = [sys.executable, "-c", "x = b'x' * (200 * 1024 * 1024); print('survived')"]

    def cgroups() -> list[str]:
        # Another test's server starting meanwhile removes an empty parent
        # (it sweeps what killed servers left); ours makes it again when needed.
        try:
            return sorted(p.name for p in parent.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    def spares() -> list[str]:
        return [name for name in cgroups() if name.startswith(".spare-")]

    first = wait_for(batch, submit(batch, env, ["true"], name="first", overrides=limit))
    assert first["status"] == "SUCCEEDED", first
    wait_until(lambda: len(spares()) == 1, what="the emptied cgroup kept for reuse")
    kept = spares()

    oom = wait_for(batch, submit(batch, env, hog, name="hog", overrides=limit, **ONE_ATTEMPT))
    assert oom["container"]["reason"] == OOM_REASON, oom
    # The hog ran in the kept cgroup (it is no longer a spare), and its cgroup,
    # OOM-killed in, is removed rather than kept.
    wait_until(
        lambda: spares() != kept and not [name for name in cgroups() if name[0] != "."],
        what="the hog's cgroup removed",
    )
    assert spares() == []

    # A job killed by SIGKILL after an OOM kill in its cgroup's predecessor is
    # not reported as out of memory.
    killed = wait_for(
        batch, submit(batch, env, sh("kill -9 $$"), name="killed", overrides=limit, **ONE_ATTEMPT)
    )
    assert killed["container"]["exitCode"] == 137, killed
    assert killed["container"].get("reason") != OOM_REASON, killed
    wait_until(lambda: len(spares()) == 1, what="the killed job's clean cgroup kept")
    again = wait_for(batch, submit(batch, env, hog, name="again", overrides=limit, **ONE_ATTEMPT))
    # It ran in the kept cgroup (which is gone from the spares), held to its limit.
    assert again["container"]["reason"] == OOM_REASON, again
    wait_until(lambda: cgroups() == [], what="the reused cgroup removed after its OOM kill")
