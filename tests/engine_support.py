"""Helpers for the tests that run jobs: servers with the engine on, polling
with deadlines, reading a job's output through the CloudWatch Logs API."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from conftest import Server, make_ce, make_queue, start_server

from shoal.runtime import host_name, run_dir

# Short timeouts and kill grace so that tests of them take a second or two.
ENGINE_ARGS = ("--engine", "--min-timeout-seconds", "1", "--kill-grace-seconds", "1")
LOG_GROUP = "/aws/batch/job"
TERMINAL = ("SUCCEEDED", "FAILED")
EXITED = "Essential container in task exited"
TIMEOUT_REASON = "Job attempt duration exceeded timeout"

T = TypeVar("T")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# -- servers ----------------------------------------------------------------------


def start_engine_server(tmp_path: Path, *extra: str) -> Server:
    return start_server(tmp_path, *ENGINE_ARGS, *extra)


def restart(server: Server) -> Server:
    """A new server process on the same data directory, with the same flags."""
    return Server(data_dir=server.data_dir, args=list(server.args)).start()


def reap_jobs(server: Server) -> None:
    """Kill what is left of the jobs a (stopped) server launched.

    Jobs run in their own process groups and outlive the server on purpose;
    a test that failed half-way must not leave `sleep 30`s behind."""
    root = run_dir(host_name(server.data_dir)) or server.data_dir / "attempts"
    # `<task>.started` holds "PID START" of a job the launcher spawned, or the
    # pid of a job's supervisor.
    for started in root.glob("*.started"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = started.read_text().split()
            pid = int(fields[0])
            stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            if len(fields) > 1:
                ours = int(fields[1]) <= int(stat[19]) <= int(fields[1]) + 1
            else:
                ours = started.stem.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
            if ours:
                os.killpg(pid, signal.SIGKILL)


def shutdown(server: Server) -> None:
    if server.proc is not None and server.proc.poll() is None:
        server.stop()
    reap_jobs(server)
    # tmpfs is memory: what a killed server left there goes with its test.
    run = run_dir(host_name(server.data_dir))
    if run is not None:
        shutil.rmtree(run, ignore_errors=True)


@contextlib.contextmanager
def engine_server(tmp_path: Path, *extra: str) -> Iterator[Server]:
    server = start_engine_server(tmp_path, *extra)
    try:
        yield server
    finally:
        shutdown(server)


# -- waiting ----------------------------------------------------------------------


def wait_until(probe: Callable[[], T | None], timeout: float = 10.0, what: str = "condition") -> T:
    """Call `probe` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout} s waiting for {what} (last: {value!r})"
            )
        time.sleep(0.02)


def describe(batch: Any, job_id: str) -> dict[str, Any]:
    jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert len(jobs) == 1, jobs
    detail: dict[str, Any] = jobs[0]
    return detail


def wait_for(
    batch: Any,
    job_id: str,
    statuses: str | tuple[str, ...] | list[str] = TERMINAL,
    timeout: float = 15.0,
    *,
    reason_prefix: str | None = None,
) -> dict[str, Any]:
    """Poll DescribeJobs until the job is in one of `statuses` (and, if given,
    its statusReason starts with `reason_prefix`); return its detail."""
    wanted = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    deadline = time.monotonic() + timeout
    while True:
        detail = describe(batch, job_id)
        if detail["status"] in wanted and (
            reason_prefix is None or (detail.get("statusReason") or "").startswith(reason_prefix)
        ):
            return detail
        if detail["status"] in TERMINAL and not set(wanted) & set(TERMINAL):
            raise AssertionError(f"job ended before reaching {wanted}: {detail}")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"job {job_id} not in {wanted} (reason {reason_prefix!r}) after {timeout} s; "
                f"last seen: {detail}"
            )
        time.sleep(0.05)


# -- processes ----------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Is `pid` a live (not zombie) process?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path, timeout: float = 10.0) -> int:
    def probe() -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        return None

    return wait_until(probe, timeout, f"a pid in {path}")


def wait_gone(pid: int, timeout: float = 10.0) -> None:
    wait_until(lambda: not pid_alive(pid), timeout, f"process {pid} to end")


# -- logs --------------------------------------------------------------------------


def log_events(logs: Any, stream: str, group: str = LOG_GROUP) -> list[dict[str, Any]]:
    """Every event of a stream, read the way clients do: from the head,
    following nextForwardToken until it stops changing."""
    events: list[dict[str, Any]] = []
    token: str | None = None
    for _ in range(1_000):
        args: dict[str, Any] = {
            "logGroupName": group,
            "logStreamName": stream,
            "startFromHead": True,
        }
        if token is not None:
            args["nextToken"] = token
        page = logs.get_log_events(**args)
        events.extend(page["events"])
        if page["nextForwardToken"] == token:
            return events
        token = page["nextForwardToken"]
    raise AssertionError("GetLogEvents never repeated its forward token")


def log_lines(logs: Any, stream: str, group: str = LOG_GROUP) -> list[str]:
    return [e["message"] for e in log_events(logs, stream, group)]


def job_log(logs: Any, detail: dict[str, Any], attempt: int | None = None) -> list[str]:
    """The output of a job's latest attempt (or attempt number `attempt`)."""
    if attempt is None:
        stream = detail["container"]["logStreamName"]
    else:
        stream = detail["attempts"][attempt - 1]["container"]["logStreamName"]
    return log_lines(logs, stream)


# -- resources ----------------------------------------------------------------------


def make_env(
    batch: Any,
    prefix: str,
    *,
    max_vcpus: int = 16,
    ce_state: str = "ENABLED",
    command: list[str] | None = None,
    parameters: dict[str, str] | None = None,
    retry: dict[str, Any] | None = None,
    **container: Any,
) -> dict[str, str]:
    """A compute environment, a queue on it and a job definition, all named
    after `prefix`."""
    ce = make_ce(batch, f"{prefix}-ce", max_vcpus=max_vcpus, state=ce_state)
    queue = make_queue(batch, f"{prefix}-q", [ce])
    props: dict[str, Any] = {
        "image": "busybox",
        "command": command or ["true"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "128"},
        ],
        **container,
    }
    extra: dict[str, Any] = {}
    if parameters is not None:
        extra["parameters"] = parameters
    if retry is not None:
        extra["retryStrategy"] = retry
    batch.register_job_definition(
        jobDefinitionName=f"{prefix}-def", type="container", containerProperties=props, **extra
    )
    return {
        "ce": ce,
        "ce_name": f"{prefix}-ce",
        "queue": queue,
        "queue_name": f"{prefix}-q",
        "definition_name": f"{prefix}-def",
    }


def submit(
    batch: Any,
    env: dict[str, str],
    command: list[str] | None = None,
    *,
    name: str = "job",
    queue: str | None = None,
    vcpus: int | None = None,
    overrides: dict[str, Any] | None = None,
    **kwargs: Any,
) -> str:
    container: dict[str, Any] = dict(overrides or {})
    if command is not None:
        container["command"] = command
    if vcpus is not None:
        container["resourceRequirements"] = [{"type": "VCPU", "value": str(vcpus)}]
    if container:
        kwargs["containerOverrides"] = container
    job_id: str = batch.submit_job(
        jobName=name,
        jobQueue=queue or env["queue"],
        jobDefinition=env["definition_name"],
        **kwargs,
    )["jobId"]
    return job_id
