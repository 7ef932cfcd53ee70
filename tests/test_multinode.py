"""Multi-node parallel jobs, run by a live server's engine (process executor,
and one test on docker).

One server for the module (a compute environment per test keeps tests
apart). Nodes coordinate with the test and with each other through files in
the test's directory, passed in as a parameter (`Ref::dir`): never sleeps.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_queue
from engine_support import (
    EXITED,
    TIMEOUT_REASON,
    describe,
    log_lines,
    make_env,
    pid_alive,
    read_pid,
    restart,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
    wait_gone,
    wait_until,
)
from test_executor_contract import IMAGE, needs_docker

from shoal.domain.clock import SystemClock
from shoal.engine import multinode
from shoal.executors.base import Exit, Handle, LaunchError, LaunchSpec

LOOPBACK = "127.0.0.1"
MAIN_IP = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where containers may mount host directories (at the same path)."""
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared: Path) -> Iterator[Server]:
    srv = start_engine_server(
        tmp_path_factory.mktemp("multinode"), "--host-vcpus", "64", "--volume-root", str(shared)
    )
    yield srv
    shutdown(srv)


@pytest.fixture
def batch(server: Server) -> Any:
    return server.client("batch")


@pytest.fixture
def logs(server: Server) -> Any:
    return server.client("logs")


# -- helpers ----------------------------------------------------------------------


def gated(gate: str, then: str = "true") -> str:
    """Shell that waits until `gate` exists (at most 30 s, so that a failed
    test leaves nothing behind for long), then runs `then`."""
    return f"i=0; until [ -e {gate} ] || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done; {then}"


def ended(pidfile: str) -> str:
    """A shell condition: the process whose pid is in `pidfile` has ended
    (and was reaped by its supervisor)."""
    return f"[ -s {pidfile} ] && ! kill -0 $(cat {pidfile}) 2>/dev/null"


def waits_for(*paths: str, then: str = "true", ended_pids: tuple[str, ...] = ()) -> str:
    """Shell that waits (at most 30 s) until every path exists and every
    process in `ended_pids` ended, then runs `then`."""
    condition = " && ".join([*(f"[ -e {p} ]" for p in paths), *map(ended, ended_pids)])
    return (
        f"i=0; until {{ {condition}; }} || [ $i -ge 600 ]; do sleep 0.05; i=$((i+1)); done; {then}"
    )


def container(script: str, vcpus: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "image": "busybox",
        "command": ["sh", "-c", script],
        "resourceRequirements": [
            {"type": "VCPU", "value": str(vcpus)},
            {"type": "MEMORY", "value": "64"},
        ],
        **extra,
    }


def mnp_env(
    batch: Any,
    prefix: str,
    ranges: dict[str, dict[str, Any]],
    *,
    num_nodes: int,
    main: int,
    max_vcpus: int = 16,
    ce_tags: dict[str, str] | None = None,
    **definition: Any,
) -> dict[str, str]:
    """A compute environment, a queue and a multinode definition (`ranges`:
    targetNodes -> container), all named after `prefix`."""
    ce = make_ce(batch, f"{prefix}-ce", max_vcpus=max_vcpus, tags=ce_tags or {})
    make_queue(batch, f"{prefix}-q", [ce])
    batch.register_job_definition(
        jobDefinitionName=f"{prefix}-mnp",
        type="multinode",
        nodeProperties={
            "numNodes": num_nodes,
            "mainNode": main,
            "nodeRangeProperties": [
                {"targetNodes": target, "container": props} for target, props in ranges.items()
            ],
        },
        **definition,
    )
    return {"queue": f"{prefix}-q", "definition": f"{prefix}-mnp"}


def run(batch: Any, env: dict[str, str], directory: Path, **kwargs: Any) -> str:
    job_id: str = batch.submit_job(
        jobName="mnp",
        jobQueue=env["queue"],
        jobDefinition=env["definition"],
        parameters={"dir": str(directory)},
        **kwargs,
    )["jobId"]
    return job_id


def nodes(batch: Any, job_id: str, count: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = batch.describe_jobs(jobs=[f"{job_id}#{i}" for i in range(count)])[
        "jobs"
    ]
    assert [n["nodeDetails"]["nodeIndex"] for n in found] == list(range(count)), found
    return found


def listed(batch: Any, job_id: str, status: str) -> list[dict[str, Any]]:
    page = batch.list_jobs(multiNodeJobId=job_id, jobStatus=status)
    summaries: list[dict[str, Any]] = page["jobSummaryList"]
    return sorted(summaries, key=lambda s: s["jobId"])


def read_env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


# -- the tests ----------------------------------------------------------------------


def test_nodes_get_their_variables_and_records(batch: Any, logs: Any, tmp_path: Path) -> None:
    # Nodes 0 and 2 report their environment and end; the main node (1, a
    # nested range overriding "0:2") reports its own once they have and the
    # test opens the gate.
    report = (
        "env | grep ^AWS_BATCH_ | sort > Ref::dir/.env-$AWS_BATCH_JOB_NODE_INDEX; "
        "mv Ref::dir/.env-$AWS_BATCH_JOB_NODE_INDEX Ref::dir/env-$AWS_BATCH_JOB_NODE_INDEX; "
        "echo node $AWS_BATCH_JOB_NODE_INDEX"
    )
    main = waits_for("Ref::dir/env-0", "Ref::dir/env-2", "Ref::dir/gate", then=report)
    env = mnp_env(
        batch,
        "vars",
        {"0:2": container(report), "1": container(main)},
        num_nodes=3,
        main=1,
    )
    job_id = run(batch, env, tmp_path)
    wait_for(batch, job_id, "RUNNING")  # nodes exist once the job runs
    # Nodes that end before the main node are recorded as they end.
    for i in (0, 2):
        assert wait_for(batch, f"{job_id}#{i}", timeout=15)["status"] == "SUCCEEDED"
    assert describe(batch, job_id)["status"] == "RUNNING"
    assert describe(batch, f"{job_id}#1")["status"] == "RUNNING"
    assert [s["jobId"] for s in listed(batch, job_id, "RUNNING")] == [f"{job_id}#1"]
    (tmp_path / "gate").touch()
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    assert detail["nodeProperties"]["numNodes"] == 3
    assert "nodeDetails" not in detail
    [attempt] = detail["attempts"]
    assert attempt["container"]["exitCode"] == 0

    for i in range(3):
        seen = read_env(tmp_path / f"env-{i}")
        assert seen["AWS_BATCH_JOB_NODE_INDEX"] == str(i)
        assert seen["AWS_BATCH_JOB_NUM_NODES"] == "3"
        assert seen["AWS_BATCH_JOB_MAIN_NODE_INDEX"] == "1"
        assert seen["AWS_BATCH_JOB_ID"] == f"{job_id}#{i}"
        assert seen["AWS_BATCH_JOB_ATTEMPT"] == "1"
        assert seen["AWS_BATCH_JQ_NAME"] == "vars-q"
        if i == 1:
            assert MAIN_IP not in seen  # only the other nodes are told where the main node is
        else:
            assert seen[MAIN_IP] == LOOPBACK

    found = nodes(batch, job_id, 3)
    streams = set()
    for i, node in enumerate(found):
        assert node["jobId"] == f"{job_id}#{i}"
        assert node["nodeDetails"] == {"nodeIndex": i, "isMainNode": i == 1}
        assert "nodeProperties" not in node
        assert node["status"] == "SUCCEEDED", node
        assert node["container"]["exitCode"] == 0
        [node_attempt] = node["attempts"]
        assert node_attempt["container"]["exitCode"] == 0
        stream = node["container"]["logStreamName"]
        assert stream.startswith("vars-mnp/default/")
        assert log_lines(logs, stream) == [f"node {i}"]
        streams.add(stream)
        assert node["startedAt"] <= node["stoppedAt"]
    assert len(streams) == 3  # a task id (and log stream) per node
    assert found[1]["container"]["command"] == ["sh", "-c", main.replace("Ref::dir", str(tmp_path))]
    # The job's record is its main node's.
    assert attempt["container"]["logStreamName"] == found[1]["container"]["logStreamName"]
    assert detail["startedAt"] == found[1]["startedAt"]

    summaries = listed(batch, job_id, "SUCCEEDED")
    assert [s["jobId"] for s in summaries] == [f"{job_id}#{i}" for i in range(3)]
    assert [s["nodeProperties"] for s in summaries] == [
        {"nodeIndex": i, "isMainNode": i == 1, "numNodes": 3} for i in range(3)
    ]
    parent = [
        s
        for s in batch.list_jobs(jobQueue="vars-q", jobStatus="SUCCEEDED")["jobSummaryList"]
        if s["jobId"] == job_id
    ]
    assert parent[0]["nodeProperties"] == {"numNodes": 3}


def test_main_node_exit_stops_the_others(batch: Any, tmp_path: Path) -> None:
    # The other nodes would wait for a gate that never opens; the main node
    # ends as soon as they run, and decides the job's outcome.
    worker = "echo $$ > Ref::dir/pid-$AWS_BATCH_JOB_NODE_INDEX; " + gated("Ref::dir/never")
    env = mnp_env(
        batch,
        "stop",
        {"0": container(waits_for("Ref::dir/pid-1", "Ref::dir/pid-2")), "1:": container(worker)},
        num_nodes=3,
        main=0,
    )
    job_id = run(batch, env, tmp_path)
    pids = [read_pid(tmp_path / f"pid-{i}", timeout=15) for i in (1, 2)]
    detail = wait_for(batch, job_id, timeout=15)  # well before the workers' 30 s
    assert detail["status"] == "SUCCEEDED", detail
    assert detail["statusReason"] == EXITED
    for pid in pids:
        assert not pid_alive(pid)
    main, *others = nodes(batch, job_id, 3)
    assert main["status"] == "SUCCEEDED"
    for node in others:
        assert node["status"] == "FAILED", node
        assert node["container"]["exitCode"] in (143, 137), node  # SIGTERM (or SIGKILL)


def test_a_failed_main_node_retries_the_whole_group(batch: Any, tmp_path: Path) -> None:
    # Each node marks its attempt; the main node waits for the others' marks,
    # then fails the first attempt and succeeds on the second.
    run_id = "$AWS_BATCH_JOB_NODE_INDEX-$AWS_BATCH_JOB_ATTEMPT"
    mark = f"echo $$ > Ref::dir/pid-{run_id}; touch Ref::dir/ran-{run_id}"
    main = waits_for(
        ended_pids=(
            "Ref::dir/pid-1-$AWS_BATCH_JOB_ATTEMPT",
            "Ref::dir/pid-2-$AWS_BATCH_JOB_ATTEMPT",
        ),
        then=f"{mark}; [ $AWS_BATCH_JOB_ATTEMPT = 2 ] || exit 1",
    )
    env = mnp_env(
        batch,
        "retry",
        {"0": container(main), "1:": container(mark)},
        num_nodes=3,
        main=0,
        retryStrategy={"attempts": 2},
    )
    job_id = run(batch, env, tmp_path)
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    first, second = detail["attempts"]
    assert first["container"]["exitCode"] == 1
    assert first["statusReason"] == EXITED
    assert second["container"]["exitCode"] == 0
    assert first["container"]["logStreamName"] != second["container"]["logStreamName"]
    ran = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ran-"))
    assert ran == [f"ran-{i}-{a}" for i in range(3) for a in (1, 2)]
    for i, node in enumerate(nodes(batch, job_id, 3)):
        assert node["status"] == "SUCCEEDED", node
        one, two = node["attempts"]
        assert one["container"]["exitCode"] == (1 if i == 0 else 0)
        assert two["container"]["exitCode"] == 0
        assert one["container"]["logStreamName"] != two["container"]["logStreamName"]


def test_node_count_override_and_a_failed_main_node(batch: Any, tmp_path: Path) -> None:
    worker = "echo $AWS_BATCH_JOB_NUM_NODES > Ref::dir/n-$AWS_BATCH_JOB_NODE_INDEX"
    files = [f"Ref::dir/n-{i}" for i in (1, 2, 3)]
    env = mnp_env(
        batch,
        "count",
        {"0": container(waits_for(*files, then="exit 5")), "1:": container(worker)},
        num_nodes=2,
        main=0,
    )
    job_id = run(batch, env, tmp_path, nodeOverrides={"numNodes": 4})
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "FAILED", detail
    assert detail["statusReason"] == EXITED
    assert detail["attempts"][0]["container"]["exitCode"] == 5
    assert detail["nodeProperties"]["numNodes"] == 4
    assert [(tmp_path / f"n-{i}").read_text().strip() for i in (1, 2, 3)] == ["4"] * 3
    found = nodes(batch, job_id, 4)
    assert found[0]["status"] == "FAILED"
    assert found[0]["container"]["exitCode"] == 5
    summary = [
        s
        for s in batch.list_jobs(jobQueue="count-q", jobStatus="FAILED")["jobSummaryList"]
        if s["jobId"] == job_id
    ]
    assert summary[0]["container"]["exitCode"] == 5
    assert batch.describe_jobs(jobs=[f"{job_id}#4"])["jobs"] == []


def test_the_gang_is_placed_whole(batch: Any, tmp_path: Path) -> None:
    env = make_env(batch, "gang", max_vcpus=4)
    two_by_two = {"0:1": container(gated("Ref::dir/gate"), vcpus=2)}
    batch.register_job_definition(
        jobDefinitionName="gang-fits",
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                {"targetNodes": t, "container": c} for t, c in two_by_two.items()
            ],
        },
    )
    batch.register_job_definition(
        jobDefinitionName="gang-too-big",
        type="multinode",
        nodeProperties={
            "numNodes": 3,
            "mainNode": 0,
            "nodeRangeProperties": [{"targetNodes": "0:", "container": container("true", 2)}],
        },
    )
    big = batch.submit_job(jobName="big", jobQueue="gang-q", jobDefinition="gang-too-big")["jobId"]
    detail = wait_for(batch, big, "RUNNABLE", reason_prefix="MISCONFIGURATION")
    assert "6 vCPU" in detail["statusReason"], detail

    gang = batch.submit_job(
        jobName="fits",
        jobQueue="gang-q",
        jobDefinition="gang-fits",
        parameters={"dir": str(tmp_path)},
    )["jobId"]
    wait_for(batch, gang, "RUNNING")
    # Its two nodes hold the compute environment's 4 vCPUs: a 1-vCPU job waits.
    single = submit(batch, env, ["true"], name="single")
    wait_for(batch, single, "RUNNABLE", reason_prefix="CAPACITY")
    (tmp_path / "gate").touch()
    assert wait_for(batch, gang)["status"] == "SUCCEEDED"
    assert wait_for(batch, single)["status"] == "SUCCEEDED"
    assert describe(batch, big)["status"] == "RUNNABLE"
    batch.cancel_job(jobId=big, reason="cleanup")
    assert describe(batch, big)["status"] == "FAILED"


def test_terminating_nodes_and_the_job(batch: Any, tmp_path: Path) -> None:
    gate = gated("Ref::dir/never")
    env = mnp_env(batch, "term", {"0:": container(gate)}, num_nodes=3, main=0)
    job_id = run(batch, env, tmp_path)
    wait_for(batch, job_id, "RUNNING")
    wait_until(lambda: len(listed(batch, job_id, "RUNNING")) == 3, what="3 running nodes")

    # CancelJob leaves a running node alone.
    batch.cancel_job(jobId=f"{job_id}#1", reason="not now")
    # A non-main node terminated ends alone; the job runs on.
    batch.terminate_job(jobId=f"{job_id}#2", reason="node down")
    node = wait_for(batch, f"{job_id}#2", timeout=15)
    assert node["status"] == "FAILED"
    assert node["statusReason"] == "node down"
    assert node["isTerminated"] is True
    assert describe(batch, job_id)["status"] == "RUNNING"
    assert describe(batch, f"{job_id}#1")["status"] == "RUNNING"

    # The main node is the job: terminating it terminates the job.
    batch.terminate_job(jobId=f"{job_id}#0", reason="main down")
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"] == "main down"
    assert detail["isTerminated"] is True
    assert len(detail["attempts"]) == 1  # never retried
    for node in nodes(batch, job_id, 3)[:2]:
        assert node["status"] == "FAILED", node
        assert node["statusReason"] == "main down"
        assert node["isTerminated"] is True


def test_terminating_the_job_stops_every_node(batch: Any, tmp_path: Path) -> None:
    script = "echo $$ > Ref::dir/pid-$AWS_BATCH_JOB_NODE_INDEX; " + gated("Ref::dir/never")
    env = mnp_env(
        batch,
        "termall",
        {"0:": container(script)},
        num_nodes=2,
        main=1,
        retryStrategy={"attempts": 3},
    )
    job_id = run(batch, env, tmp_path)
    pids = [read_pid(tmp_path / f"pid-{i}", timeout=15) for i in (0, 1)]
    wait_for(batch, job_id, "RUNNING")
    batch.terminate_job(jobId=job_id, reason="enough")
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"] == "enough"
    assert len(detail["attempts"]) == 1
    for pid in pids:
        wait_gone(pid)
    for node in nodes(batch, job_id, 2):
        assert node["status"] == "FAILED"
        assert node["statusReason"] == "enough"


def test_the_timeout_is_the_whole_job(batch: Any, tmp_path: Path) -> None:
    env = mnp_env(
        batch,
        "timeout",
        {"0:": container(gated("Ref::dir/never"))},
        num_nodes=2,
        main=0,
        timeout={"attemptDurationSeconds": 1},
        retryStrategy={"attempts": 2},
    )
    job_id = run(batch, env, tmp_path)
    detail = wait_for(batch, job_id, timeout=15)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"] == TIMEOUT_REASON
    assert len(detail["attempts"]) == 1  # a timeout is never retried
    for node in nodes(batch, job_id, 2):
        assert node["status"] == "FAILED"
        assert node["statusReason"] == TIMEOUT_REASON


# -- restart ----------------------------------------------------------------------


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for srv in reversed(started):  # the newest first: it shares the data dir
        shutdown(srv)


def test_a_running_gang_survives_a_kill(tmp_path: Path, servers: list[Server]) -> None:
    first = start_engine_server(tmp_path, "--host-vcpus", "8")
    servers.append(first)
    batch = first.client("batch")
    work = tmp_path / "work"
    work.mkdir()
    # Every node marks that it started (once per run), waits for the gate;
    # the main node ends only after the others did.
    start = "echo $$ >> Ref::dir/started-$AWS_BATCH_JOB_NODE_INDEX; "
    worker = start + gated("Ref::dir/gate")
    main = start + gated(
        "Ref::dir/gate",
        waits_for(ended_pids=("Ref::dir/started-1", "Ref::dir/started-2")),
    )
    env = mnp_env(
        batch, "crash", {"0": container(main), "1:": container(worker)}, num_nodes=3, main=0
    )
    job_id = run(batch, env, work)
    wait_for(batch, job_id, "RUNNING")
    for i in range(3):
        wait_until((work / f"started-{i}").exists, what=f"node {i} to start")
    wait_until(lambda: len(listed(batch, job_id, "RUNNING")) == 3, what="3 running nodes")

    first.stop(signal.SIGKILL)
    second = restart(first)
    servers.append(second)
    batch = second.client("batch")
    assert describe(batch, job_id)["status"] == "RUNNING"
    (work / "gate").touch()
    detail = wait_for(batch, job_id, timeout=20)
    assert detail["status"] == "SUCCEEDED", detail
    assert len(detail["attempts"]) == 1
    for i, node in enumerate(nodes(batch, job_id, 3)):
        assert node["status"] == "SUCCEEDED", node
        assert len(node["attempts"]) == 1
        assert len((work / f"started-{i}").read_text().split()) == 1  # never started twice


# -- docker -------------------------------------------------------------------------


MISSING_IMAGE = "shoal-test/does-not-exist:1"


@needs_docker
def test_docker_nodes(batch: Any, logs: Any, shared: Path) -> None:
    # The directory is mounted at the same path in every node's container.
    work = shared / "docker"
    work.mkdir()
    mount = {
        "volumes": [{"name": "work", "host": {"sourcePath": str(work)}}],
        "mountPoints": [{"sourceVolume": "work", "containerPath": str(work)}],
    }
    report = (
        "env | grep ^AWS_BATCH_ | sort > Ref::dir/.env-$AWS_BATCH_JOB_NODE_INDEX; "
        "mv Ref::dir/.env-$AWS_BATCH_JOB_NODE_INDEX Ref::dir/env-$AWS_BATCH_JOB_NODE_INDEX; "
        "echo node $AWS_BATCH_JOB_NODE_INDEX"
    )
    main = waits_for("Ref::dir/env-0", then=report)
    env = mnp_env(
        batch,
        "docker",
        {
            "0": container(report, image=IMAGE, **mount),
            "1": container(main, image=IMAGE, **mount),
            # A node that cannot start fails alone; the job runs on.
            "2": container("true", image=MISSING_IMAGE),
        },
        num_nodes=3,
        main=1,
        ce_tags={"shoal:executor": "docker"},
    )
    job_id = run(batch, env, work)
    detail = wait_for(batch, job_id, timeout=60)
    assert detail["status"] == "SUCCEEDED", detail
    worker, main_node, missing = nodes(batch, job_id, 3)
    assert read_env(work / "env-0")[MAIN_IP] == LOOPBACK  # host networking
    assert MAIN_IP not in read_env(work / "env-1")
    assert read_env(work / "env-1")["AWS_BATCH_JOB_NUM_NODES"] == "3"
    assert main_node["status"] == "SUCCEEDED"
    assert worker["status"] in ("SUCCEEDED", "FAILED")  # it may be stopped as it ends
    assert log_lines(logs, main_node["container"]["logStreamName"]) == ["node 1"]
    assert (missing["status"], missing["statusReason"]) == ("FAILED", "Task failed to start")
    assert missing["container"]["reason"].startswith("CannotPullContainerError:")

    # A main node that cannot start: the job fails to start, no node runs.
    batch.register_job_definition(
        jobDefinitionName="docker-nomain",
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                {"targetNodes": "0", "container": container("true", image=MISSING_IMAGE)},
                {"targetNodes": "1", "container": container("true", image=IMAGE)},
            ],
        },
    )
    job_id = batch.submit_job(jobName="nomain", jobQueue="docker-q", jobDefinition="docker-nomain")[
        "jobId"
    ]
    detail = wait_for(batch, job_id, timeout=60)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start")
    assert detail["attempts"][0]["container"]["reason"].startswith("CannotPullContainerError:")
    assert batch.list_jobs(multiNodeJobId=job_id, jobStatus="FAILED")["jobSummaryList"] == []


# -- the gang, with a scripted executor ---------------------------------------------


class Scripted:
    """An executor that runs nothing: launches and stops are recorded, the
    main node (task "t1") ends at once, the others when stopped."""

    name = "scripted"

    def __init__(self, started: set[str] | None = None) -> None:
        self.calls: list[tuple[str, str]] = []
        self.environments: dict[str, dict[str, str]] = {}
        self.started = started or set()
        self.stopped: dict[str, asyncio.Event] = {}

    def launch(self, spec: LaunchSpec) -> Awaitable[Handle]:
        async def go() -> Handle:
            self.calls.append(("launch", spec.task_id))
            self.environments[spec.task_id] = spec.environment
            if spec.task_id == "t2":
                raise LaunchError("CannotPullContainerError: no such image")
            await asyncio.sleep(0)
            self.calls.append(("launched", spec.task_id))
            return {"task": spec.task_id, "ip": "10.0.0.7"}

        return go()

    async def wait(self, handle: Handle) -> Exit:
        task = handle["task"]
        if task != "t1":
            await self.stopped.setdefault(task, asyncio.Event()).wait()
            return Exit(exit_code=143)
        return Exit(exit_code=3)

    async def stop(self, handle: Handle, grace_seconds: float) -> None:
        self.calls.append(("stop", handle["task"]))
        self.stopped.setdefault(handle["task"], asyncio.Event()).set()

    def home(self) -> dict[str, str]:
        return {}

    def recover(self, spec: LaunchSpec, home: dict[str, str] | None = None) -> Handle | None:
        return {"task": spec.task_id} if spec.task_id in self.started else None

    def release(self, handle: Handle) -> None:
        self.calls.append(("release", handle["task"]))


PROPS = {
    "numNodes": 4,
    "mainNode": 1,
    "nodeRangeProperties": [
        {"targetNodes": "0:", "container": {"command": ["all"]}},
        {"targetNodes": "1:2", "container": {"command": ["middle"]}},
        {"targetNodes": "1", "container": {"command": ["main"]}},
    ],
}


def gang(executor: Scripted) -> tuple[multinode.Gang, LaunchSpec]:
    specs = [
        LaunchSpec(
            job_id=f"j#{i}",
            attempt=1,
            task_id=f"t{i}",
            command=[],
            environment=multinode.node_environment(PROPS, i),
            options={"multinode": multinode.node_options("j", 1, PROPS, i)},
        )
        for i in range(4)
    ]
    store: Any = None  # never written to here
    made = multinode.Gang(
        executor,
        "j",
        {"nodeProperties": PROPS},
        store=store,
        clock=SystemClock(),
        grace_seconds=0,
        task_arn=lambda task: task,
    )
    return made, multinode.gang_spec(specs, 1)


def test_node_ranges_the_narrowest_wins() -> None:
    commands = [multinode.node_container(PROPS, i)["command"] for i in range(4)]
    assert commands == [["all"], ["main"], ["middle"], ["all"]]
    assert multinode.split_node_id("abc#12") == ("abc", 12)
    assert multinode.split_node_id("abc:1") is None


def test_the_gang_launches_the_main_node_first_and_ends_with_it() -> None:
    executor = Scripted()
    runner, spec = gang(executor)

    async def scenario() -> tuple[Handle, Exit]:
        handle = await runner.launch(spec)
        return handle, await runner.wait(handle)

    handle, exit_ = asyncio.run(scenario())
    # The main node's launch resolved before any other began.
    assert executor.calls[:2] == [("launch", "t1"), ("launched", "t1")]
    assert {c for c in executor.calls[2:] if c[0] == "launch"} == {
        ("launch", "t0"),
        ("launch", "t2"),
        ("launch", "t3"),
    }
    # Its executor said where it runs: the others are told.
    assert MAIN_IP not in executor.environments["t1"]
    assert {executor.environments[t][MAIN_IP] for t in ("t0", "t2", "t3")} == {"10.0.0.7"}
    assert handle["main"] == 1
    assert handle["nodes"]["2"]["failed"].startswith("CannotPullContainerError")
    # The main node's exit is the attempt's; the others were stopped, not the failed one.
    assert exit_.exit_code == 3
    assert {c for c in executor.calls if c[0] == "stop"} == {("stop", "t0"), ("stop", "t3")}
    runner.release(handle)
    assert {c for c in executor.calls if c[0] == "release"} == {
        ("release", "t0"),
        ("release", "t1"),
        ("release", "t3"),
    }
    assert multinode.task_ids(handle) == {"t0", "t1", "t2", "t3"}


def test_recovering_a_gang_that_was_starting() -> None:
    # The main node started: nodes that did not are failed, never started later.
    runner, spec = gang(Scripted(started={"t1", "t3"}))
    handle = runner.recover(spec)
    assert handle is not None
    assert sorted(handle["nodes"]) == ["0", "1", "2", "3"]
    assert [("failed" in handle["nodes"][k]) for k in "0123"] == [True, False, True, False]

    # The main node never started: what did is stopped and released.
    executor = Scripted(started={"t0"})
    runner, spec = gang(executor)

    async def scenario() -> Handle | None:
        found = runner.recover(spec)
        while ("release", "t0") not in executor.calls:
            await asyncio.sleep(0)
        return found

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) is None
    assert ("stop", "t0") in executor.calls
