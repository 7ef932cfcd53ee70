"""One contract, every executor: the process, docker and ray executors pass
the same tests against a live server (docker ones run in the locally built
`shoal-test/busybox:1` image, see scripts/build-test-images; ray ones on a
real three-node Ray cluster on loopback, see ray_support.py)."""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_queue
from engine_support import (
    EXITED,
    TIMEOUT_REASON,
    job_log,
    restart,
    sh,
    shutdown,
    start_engine_server,
    wait_for,
    wait_until,
)
from ray_support import in_ray_group, needs_ray, ray_cluster  # noqa: F401  (a fixture)

IMAGE = "shoal-test/busybox:1"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"
# ray-docker: the ray executor running jobs in containers on its nodes.
EXECUTORS = ["process", "docker", "ray", "ray-docker"]
SERVER_ARGS = (
    "--host-vcpus",
    "16",
    "--min-timeout-seconds",
    "1",
    "--kill-grace-seconds",
    "1",
    "--job-env",
    "SHOAL_TEST_INJECTED=from-server",
)


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, check=False)
    return found.returncode == 0


needs_docker = pytest.mark.skipif(
    not docker_ready(),
    reason=f"no dockerd or no {IMAGE} image (.ci/run starts dockerd and builds it)",
)


def executor_params() -> list[Any]:
    marks = {
        "docker": [needs_docker],
        "ray": [needs_ray, in_ray_group],
        "ray-docker": [needs_ray, in_ray_group, needs_docker],
    }
    return [pytest.param(name, marks=marks.get(name, [])) for name in EXECUTORS]


def setup_executor(
    batch: Any, executor: str, gates: Path, *, max_vcpus: int = 16, ray_address: str | None = None
) -> dict[str, str]:
    """A compute environment, queue and definition for `executor`. The
    directory `gates` is at the same path for processes and containers (a
    bind mount) and on Ray's nodes (all on this machine): jobs wait there for
    files the test makes."""
    tags = {"shoal:executor": executor.split("-")[0], "shoal:env:SHOAL_TEST_CE": f"ce-{executor}"}
    if ray_address is not None:
        tags["shoal:ray-address"] = ray_address
    if executor == "ray-docker":
        tags["shoal:ray-container"] = "docker"
    ce = make_ce(batch, f"{executor}-ce", max_vcpus=max_vcpus, tags=tags)
    make_queue(batch, f"{executor}-q", [ce])
    batch.register_job_definition(
        jobDefinitionName=f"{executor}-def",
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": ["true"],
            "environment": [{"name": "FROM_DEFINITION", "value": "d"}],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
            "volumes": [{"name": "gates", "host": {"sourcePath": str(gates)}}],
            "mountPoints": [{"sourceVolume": "gates", "containerPath": str(gates)}],
        },
    )
    return {"queue": f"{executor}-q", "definition": f"{executor}-def"}


def gated(gate: Path, before: str, after: str) -> list[str]:
    """A job that runs `before`, waits for `gate` to exist, then runs `after`."""
    return sh(f"{before}; until [ -e {gate} ]; do sleep 0.02; done; {after}")


def start_with_gates(tmp_path: Path, *extra: str) -> tuple[Server, Path]:
    gates = tmp_path / "gates"
    gates.mkdir(exist_ok=True)
    return start_engine_server(tmp_path, *SERVER_ARGS, "--volume-root", str(gates), *extra), gates


def run(batch: Any, env: dict[str, str], command: list[str], **kwargs: Any) -> str:
    overrides = kwargs.pop("overrides", {})
    job_id: str = batch.submit_job(
        jobName="contract",
        jobQueue=env["queue"],
        jobDefinition=env["definition"],
        containerOverrides={"command": command, **overrides},
        **kwargs,
    )["jobId"]
    return job_id


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    srv, gates = start_with_gates(tmp_path_factory.mktemp("contract"))
    batch = srv.client("batch")
    for executor in EXECUTORS:
        if not executor.startswith("ray"):  # set up when first used: it needs the cluster
            setup_executor(batch, executor, gates)
    yield srv, gates
    shutdown(srv)


@pytest.fixture
def server(started: tuple[Server, Path]) -> Server:
    return started[0]


@pytest.fixture
def gates(started: tuple[Server, Path]) -> Path:
    return started[1]


@pytest.fixture(params=executor_params())
def executor(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def env(
    executor: str, request: pytest.FixtureRequest, started: tuple[Server, Path]
) -> dict[str, str]:
    if executor.startswith("ray"):
        batch = started[0].client("batch")
        if not batch.describe_job_queues(jobQueues=[f"{executor}-q"])["jobQueues"]:
            cluster = request.getfixturevalue("ray_cluster")
            setup_executor(batch, executor, started[1], ray_address=cluster.address)
    return {"queue": f"{executor}-q", "definition": f"{executor}-def"}


@pytest.fixture
def batch(server: Server) -> Any:
    return server.client("batch")


@pytest.fixture
def logs(server: Server) -> Any:
    return server.client("logs")


def test_exit_codes(batch: Any, env: dict[str, str]) -> None:
    ok = wait_for(batch, run(batch, env, ["true"]), timeout=30)
    assert ok["status"] == "SUCCEEDED"
    assert ok["container"]["exitCode"] == 0
    bad = wait_for(batch, run(batch, env, sh("exit 3")), timeout=30)
    assert (bad["status"], bad["statusReason"]) == ("FAILED", EXITED)
    assert bad["container"]["exitCode"] == 3
    assert bad["attempts"][0]["container"]["exitCode"] == 3


def test_a_program_not_on_the_path_fails_to_start(batch: Any, env: dict[str, str]) -> None:
    detail = wait_for(batch, run(batch, env, ["shoal-no-such-program"]), timeout=60)
    # As AWS reports a container whose command cannot be executed: no exit code.
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start"), detail
    reason = detail["container"]["reason"]
    assert reason.startswith("CannotStartContainerError: "), reason
    assert "executable file not found" in reason, reason
    assert "exitCode" not in detail["container"]


def test_the_command_is_executed_not_interpreted_by_a_shell(
    batch: Any, logs: Any, env: dict[str, str]
) -> None:
    # A container runtime execs the program: a shell builtin of the same name
    # (dash's echo turns \n into a newline; `exit` is no program at all) never runs.
    detail = wait_for(batch, run(batch, env, ["echo", "a\\nb"]), timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    assert job_log(logs, detail) == ["a\\nb"]
    detail = wait_for(batch, run(batch, env, ["exit", "3"]), timeout=30)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start")


def test_started_and_stopped_at_are_when_it_ran(
    batch: Any, logs: Any, env: dict[str, str], executor: str
) -> None:
    # As seen where the job runs (not when the server heard of it): the
    # job's own clock reading lies between them. (busybox's date, in the
    # containers, tells whole seconds only.)
    in_container = executor in ("docker", "ray-docker")
    command = ["date", "+%s" if in_container else "+%s%N"]
    detail = wait_for(batch, run(batch, env, command), timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    [line] = job_log(logs, detail)
    if in_container:
        ran_at = int(line)
        started, stopped = detail["startedAt"] // 1000, detail["stoppedAt"] // 1000
    else:
        ran_at = int(line) // 1_000_000
        started, stopped = detail["startedAt"], detail["stoppedAt"]
    assert started <= ran_at <= stopped, (detail, ran_at)
    attempt = detail["attempts"][0]
    assert (attempt["startedAt"], attempt["stoppedAt"]) == (
        detail["startedAt"],
        detail["stoppedAt"],
    )


def test_environment(batch: Any, logs: Any, env: dict[str, str], executor: str) -> None:
    names = [
        "AWS_BATCH_JOB_ID",
        "AWS_BATCH_JQ_NAME",
        "AWS_BATCH_CE_NAME",
        "AWS_BATCH_JOB_ATTEMPT",
        "FROM_DEFINITION",
        "FROM_OVERRIDE",
        "SHOAL_TEST_INJECTED",
        "SHOAL_TEST_CE",
    ]
    script = "; ".join(f'echo "{n}=${n}"' for n in names)
    job_id = run(
        batch,
        env,
        sh(script),
        overrides={"environment": [{"name": "FROM_OVERRIDE", "value": "o"}]},
    )
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    seen = dict(line.split("=", 1) for line in job_log(logs, detail))
    assert seen == {
        "AWS_BATCH_JOB_ID": job_id,
        "AWS_BATCH_JQ_NAME": env["queue"],
        "AWS_BATCH_CE_NAME": f"{executor}-ce",
        "AWS_BATCH_JOB_ATTEMPT": "1",
        "FROM_DEFINITION": "d",
        "FROM_OVERRIDE": "o",
        "SHOAL_TEST_INJECTED": "from-server",
        "SHOAL_TEST_CE": f"ce-{executor}",
    }


def test_a_line_longer_than_a_log_event_is_stored_in_pieces(
    batch: Any, logs: Any, env: dict[str, str]
) -> None:
    # CloudWatch's largest event is 256 KiB: a longer line (here one with
    # no newline for 600,000 bytes) is stored as events of that size, in order.
    job_id = run(batch, env, sh("head -c 600000 /dev/zero | tr '\\0' a; echo; echo after"))
    detail = wait_for(batch, job_id, timeout=60)
    assert detail["status"] == "SUCCEEDED", detail
    lines = job_log(logs, detail)
    assert [len(line) for line in lines] == [262144, 262144, 600000 - 2 * 262144, 5]
    assert set("".join(lines[:3])) == {"a"} and lines[3] == "after"


def test_timeout_stops_the_attempt_and_is_not_retried(batch: Any, env: dict[str, str]) -> None:
    job_id = run(
        batch,
        env,
        ["sleep", "60"],
        timeout={"attemptDurationSeconds": 1},
        retryStrategy={"attempts": 3},
    )
    detail = wait_for(batch, job_id, timeout=40)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", TIMEOUT_REASON)
    assert len(detail["attempts"]) == 1


def test_terminate_stops_a_running_job(batch: Any, env: dict[str, str]) -> None:
    job_id = run(batch, env, ["sleep", "60"], retryStrategy={"attempts": 2})
    wait_for(batch, job_id, "RUNNING", timeout=30)
    batch.terminate_job(jobId=job_id, reason="stop it")
    detail = wait_for(batch, job_id, timeout=40)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "stop it")
    assert detail["isTerminated"] is True
    assert len(detail["attempts"]) == 1


def test_out_of_memory_kill(batch: Any, logs: Any, env: dict[str, str]) -> None:
    # 16 MiB allowed; the shell holds 64 MiB in a variable.
    hog = 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo survived ${#x}'
    job_id = run(
        batch,
        env,
        sh(hog),
        overrides={"resourceRequirements": [{"type": "MEMORY", "value": "16"}]},
    )
    detail = wait_for(batch, job_id, timeout=60)
    assert detail["status"] == "FAILED", detail
    assert detail["container"]["exitCode"] == 137
    assert detail["container"]["reason"] == OOM_REASON
    assert not any(line.startswith("survived") for line in job_log(logs, detail))


def test_output_reaches_the_log_while_the_job_runs(
    batch: Any, logs: Any, env: dict[str, str], gates: Path, executor: str
) -> None:
    gate = gates / f"log-{executor}"
    job_id = run(batch, env, gated(gate, "echo first", "echo second"))
    running = wait_for(batch, job_id, "RUNNING", timeout=30)
    wait_until(lambda: job_log(logs, describe_now(batch, job_id)), what="the first line")
    # The job waits for the gate: it is certainly still running here.
    assert job_log(logs, describe_now(batch, job_id)) == ["first"]
    assert describe_now(batch, job_id)["status"] == "RUNNING"
    gate.touch()
    done = wait_for(batch, job_id, timeout=30)
    assert done["status"] == "SUCCEEDED"
    assert job_log(logs, done) == ["first", "second"]
    assert done["container"]["logStreamName"] == running["container"]["logStreamName"]


def describe_now(batch: Any, job_id: str) -> dict[str, Any]:
    [detail] = batch.describe_jobs(jobs=[job_id])["jobs"]
    result: dict[str, Any] = detail
    return result


@pytest.mark.parametrize("executor_name", executor_params())
def test_reattach_after_a_kill(
    tmp_path: Path, executor_name: str, request: pytest.FixtureRequest
) -> None:
    first, gates = start_with_gates(tmp_path)
    servers = [first]
    try:
        batch = first.client("batch")
        address = None
        if executor_name.startswith("ray"):
            address = request.getfixturevalue("ray_cluster").address
        env = setup_executor(batch, executor_name, gates, ray_address=address)
        gate = gates / "go"
        job_id = run(batch, env, gated(gate, "echo before", "echo after; exit 5"))
        wait_for(batch, job_id, "RUNNING", timeout=30)
        wait_until(
            lambda: job_log(first.client("logs"), describe_now(batch, job_id)) == ["before"],
            timeout=30,
            what="the first line",
        )
        assert describe_now(batch, job_id)["status"] == "RUNNING"  # held by the gate
        first.stop(signal.SIGKILL)
        second = restart(first)
        servers.append(second)
        batch, logs = second.client("batch"), second.client("logs")
        assert describe_now(batch, job_id)["status"] == "RUNNING"
        gate.touch()
        detail = wait_for(batch, job_id, timeout=40)
        assert detail["status"] == "FAILED"
        assert detail["container"]["exitCode"] == 5
        assert len(detail["attempts"]) == 1
        assert job_log(logs, detail) == ["before", "after"]
    finally:
        for server in reversed(servers):
            shutdown(server)


IN_CONTAINERS = [p for p in executor_params() if p.values[0] in ("docker", "ray-docker")]


@pytest.mark.parametrize("executor", IN_CONTAINERS)
def test_missing_image_fails_to_start(batch: Any, env: dict[str, str], executor: str) -> None:
    batch.register_job_definition(
        jobDefinitionName="noimage",
        type="container",
        containerProperties={
            "image": "shoal-test/does-not-exist:1",
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
    )
    job_id: str = batch.submit_job(
        jobName="noimage",
        jobQueue=env["queue"],
        jobDefinition="noimage",
        retryStrategy={
            "attempts": 3,
            "evaluateOnExit": [{"onReason": "CannotPullContainerError*", "action": "EXIT"}],
        },
    )["jobId"]
    detail = wait_for(batch, job_id, timeout=60)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start")
    [attempt] = detail["attempts"]  # the EXIT rule matched: not retried
    assert attempt["container"]["reason"].startswith("CannotPullContainerError:")


@pytest.mark.parametrize("executor", IN_CONTAINERS)
def test_containers_are_removed_once_recorded(
    batch: Any, gates: Path, env: dict[str, str], executor: str
) -> None:
    gate = gates / f"removed-{executor}"
    job_id = run(batch, env, gated(gate, "true", "true"))

    def containers() -> str:
        return subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=shoal.job={job_id}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    wait_for(batch, job_id, "RUNNING", timeout=30)
    assert containers()  # labelled with its job while it runs
    gate.touch()
    wait_for(batch, job_id, timeout=30)
    wait_until(lambda: not containers(), timeout=20, what="the container to be removed")


def test_a_server_without_dockerd_runs_and_fails_docker_jobs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-dockerd.sock")
    server, gates = start_with_gates(tmp_path)
    try:
        batch = server.client("batch")
        process_env = setup_executor(batch, "process", gates)
        docker_env = setup_executor(batch, "docker", gates)
        ok = wait_for(batch, run(batch, process_env, ["true"]), timeout=30)
        assert ok["status"] == "SUCCEEDED"
        failed = wait_for(batch, run(batch, docker_env, ["true"]), timeout=30)
        assert (failed["status"], failed["statusReason"]) == ("FAILED", "Task failed to start")
        assert failed["attempts"][0]["container"]["reason"].startswith("CannotStartContainerError")
    finally:
        shutdown(server)


@needs_docker
def test_the_default_executor_setting_applies_to_untagged_environments(tmp_path: Path) -> None:
    server = start_engine_server(tmp_path, *SERVER_ARGS, "--default-executor", "docker")
    try:
        batch = server.client("batch")
        ce = make_ce(batch, "untagged-ce")
        make_queue(batch, "untagged-q", [ce])
        batch.register_job_definition(
            jobDefinitionName="untagged",
            type="container",
            containerProperties={
                "image": IMAGE,
                "command": ["cat", "/proc/1/comm"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"},
                ],
            },
        )
        job_id = batch.submit_job(
            jobName="untagged", jobQueue="untagged-q", jobDefinition="untagged"
        )["jobId"]
        detail = wait_for(batch, job_id, timeout=30)
        assert detail["status"] == "SUCCEEDED", detail
        # PID 1 is the job's own command: it runs in a container of its own.
        assert job_log(server.client("logs"), detail) == ["cat"]
    finally:
        shutdown(server)
