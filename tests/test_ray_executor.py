"""The ray executor on a real three-node Ray cluster on loopback: node loss
seen as AWS shows a lost instance (and retried or not by the job's rules),
no orphaned process on a lost node, capacity from maxvCpus (MANAGED) or from
the cluster's nodes as they join (UNMANAGED). The executor contract itself
is in test_executor_contract.py."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_definition, make_queue
from engine_support import (
    describe,
    job_log,
    read_pid,
    sh,
    shutdown,
    start_engine_server,
    wait_for,
    wait_gone,
    wait_until,
)
from ray_support import RayCluster, in_ray_group, needs_ray, ray_cluster  # noqa: F401
from test_executor_contract import IMAGE, needs_docker

pytestmark = [needs_ray, in_ray_group]

HOST_LOST = "Host EC2 (instance "
SPOT_RULES = [
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onReason": "*", "action": "EXIT"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(tmp_path_factory.mktemp("ray"), "--kill-grace-seconds", "1")
    yield srv
    shutdown(srv)


@pytest.fixture
def batch(server: Server) -> Any:
    return server.client("batch")


@pytest.fixture
def cluster(ray_cluster: RayCluster) -> Iterator[RayCluster]:  # noqa: F811
    yield ray_cluster
    # A test that lost a node gives the next ones a whole cluster again.
    for ip in ("127.0.0.3", "127.0.0.4"):
        if ray_cluster.raylet_pid(ip) is None:
            ray_cluster.remove(ip)
            ray_cluster.add_worker(ip)


def ray_queue(batch: Any, address: str, *, managed_vcpus: int | None = 16) -> dict[str, str]:
    name = f"ray-{uuid.uuid4().hex[:8]}"
    tags = {"shoal:executor": "ray", "shoal:ray-address": address}
    if managed_vcpus is None:
        batch.create_compute_environment(computeEnvironmentName=name, type="UNMANAGED", tags=tags)
    else:
        make_ce(batch, name, max_vcpus=managed_vcpus, tags=tags)
    make_queue(batch, name, [name])
    requirements = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
    make_definition(batch, name, resourceRequirements=requirements)
    return {"queue": name, "definition": name}


def submit(batch: Any, env: dict[str, str], command: list[str], **kwargs: Any) -> str:
    overrides = kwargs.pop("overrides", {})
    job_id: str = batch.submit_job(
        jobName="ray",
        jobQueue=env["queue"],
        jobDefinition=env["definition"],
        containerOverrides={"command": command, **overrides},
        **kwargs,
    )["jobId"]
    return job_id


def held(tmp_path: Path, name: str) -> tuple[list[str], Path, Path]:
    """A job that writes its pid (the first attempt only) and its attempt
    number, then waits for a gate file."""
    pid, gate = tmp_path / f"{name}.pid", tmp_path / f"{name}.go"
    script = (
        f'[ "$AWS_BATCH_JOB_ATTEMPT" = 1 ] && echo $$ > {pid}; '
        f'echo "attempt $AWS_BATCH_JOB_ATTEMPT"; '
        f"until [ -e {gate} ]; do sleep 0.05; done"
    )
    return sh(script), pid, gate


def lose_node_of(cluster: RayCluster, pid: int) -> str:
    ip = cluster.node_of(pid)
    assert ip in ("127.0.0.3", "127.0.0.4"), f"job process {pid} is not on a worker node"
    cluster.kill_raylet(ip)
    return ip


def test_a_lost_node_is_a_lost_host_and_retried_by_the_spot_rule(
    batch: Any, server: Server, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address)
    command, pid_file, gate = held(tmp_path, "spot")
    job_id = submit(
        batch, env, command, retryStrategy={"attempts": 2, "evaluateOnExit": SPOT_RULES}
    )
    wait_for(batch, job_id, "RUNNING", timeout=60)
    pid = read_pid(pid_file, timeout=30)
    lose_node_of(cluster, pid)
    # No orphan: the job's process dies with its node's raylet.
    wait_gone(pid, timeout=30)
    # The first attempt ended as AWS ends one whose instance went away, and
    # the rule retried it on the node that is left.
    detail = wait_until(
        lambda: (d := describe(batch, job_id))["attempts"] and d["status"] == "RUNNING" and d,
        timeout=60,
        what="the second attempt running",
    )
    [first] = detail["attempts"]
    assert first["statusReason"].startswith(HOST_LOST), first
    assert first["statusReason"].endswith(" terminated.")
    assert "exitCode" not in first["container"]
    gate.touch()
    done = wait_for(batch, job_id, timeout=60)
    assert done["status"] == "SUCCEEDED"
    assert len(done["attempts"]) == 2
    logs = server.client("logs")
    assert job_log(logs, done, attempt=1) == ["attempt 1"]
    assert job_log(logs, done, attempt=2) == ["attempt 2"]


def containers_of(job_id: str) -> dict[str, str]:
    """The job's containers on this machine's dockerd: name -> Ray node IP."""
    listed = subprocess.run(
        [
            "docker",
            "ps",
            "-a",
            "--filter",
            f"label=shoal.job={job_id}",
            "--format",
            '{{.Names}} {{.Label "shoal.ray-node"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split() for line in listed.splitlines() if line.strip())


@needs_docker
def test_a_job_in_a_container_on_a_lost_node_leaves_no_container_and_is_retried(
    batch: Any, server: Server, cluster: RayCluster
) -> None:
    name = f"ray-docker-{uuid.uuid4().hex[:8]}"
    tags = {
        "shoal:executor": "ray",
        "shoal:ray-address": cluster.address,
        "shoal:ray-container": "docker",
    }
    make_ce(batch, name, max_vcpus=16, tags=tags)
    make_queue(batch, name, [name])
    requirements = [{"type": "VCPU", "value": "1"}, {"type": "MEMORY", "value": "64"}]
    make_definition(batch, name, image=IMAGE, resourceRequirements=requirements)
    env = {"queue": name, "definition": name}
    # /.dockerenv exists in every docker container, and not on this host.
    command = sh('test -e /.dockerenv && echo "in a container"; sleep 300')
    job_id = submit(
        batch, env, command, retryStrategy={"attempts": 2, "evaluateOnExit": SPOT_RULES}
    )
    wait_for(batch, job_id, "RUNNING", timeout=60)
    first = wait_until(lambda: containers_of(job_id), timeout=30, what="the container")
    [(container, ip)] = first.items()
    assert ip in ("127.0.0.3", "127.0.0.4"), first
    cluster.kill_raylet(ip)
    # The lost node's container goes with it (its docker client cannot take
    # it along), and the spot rule runs the job again on the other node.
    wait_until(
        lambda: container not in containers_of(job_id), timeout=30, what="the container removed"
    )
    detail = wait_until(
        lambda: (d := describe(batch, job_id))["attempts"] and d["status"] == "RUNNING" and d,
        timeout=60,
        what="the second attempt running",
    )
    assert detail["attempts"][0]["statusReason"].startswith(HOST_LOST)
    second = wait_until(lambda: containers_of(job_id), timeout=30, what="the second container")
    assert list(second.values()) == [next(o for o in ("127.0.0.3", "127.0.0.4") if o != ip)]
    logs = server.client("logs")
    wait_until(lambda: job_log(logs, describe(batch, job_id)), timeout=30, what="output")
    assert job_log(logs, describe(batch, job_id), attempt=1) == ["in a container"]
    assert job_log(logs, describe(batch, job_id)) == ["in a container"]  # the second
    batch.terminate_job(jobId=job_id, reason="done")
    assert wait_for(batch, job_id, timeout=60)["status"] == "FAILED"
    wait_until(lambda: not containers_of(job_id), timeout=30, what="no container left")


def test_a_lost_node_fails_the_job_when_no_rule_retries_it(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address)
    command, pid_file, gate = held(tmp_path, "exit")
    rules = [{"onStatusReason": "Host EC2*", "action": "EXIT"}]
    job_id = submit(batch, env, command, retryStrategy={"attempts": 3, "evaluateOnExit": rules})
    wait_for(batch, job_id, "RUNNING", timeout=60)
    pid = read_pid(pid_file, timeout=30)
    lose_node_of(cluster, pid)
    detail = wait_for(batch, job_id, timeout=60)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"].startswith(HOST_LOST)
    assert len(detail["attempts"]) == 1
    assert "exitCode" not in detail["container"]
    wait_gone(pid, timeout=30)
    gate.touch()


def test_a_job_killed_as_its_node_dies_ends_with_its_host_not_its_exit_code(
    batch: Any, cluster: RayCluster
) -> None:
    """A Ray worker SIGKILLs its jobs as it exits, as it does when its raylet
    dies, and can still send their exit (137) on its way out: the attempt
    ends as lost with its host, as on AWS, not as a job killed by a signal."""
    env = ray_queue(batch, cluster.address)
    # The job kills its node's raylet (its worker's parent), then itself.
    script = "set -- $(cat /proc/$PPID/stat); kill -9 $4; kill -9 $$"
    job_id = submit(batch, env, ["sh", "-c", script], retryStrategy={"attempts": 1})
    detail = wait_for(batch, job_id, timeout=60)
    lost = [ip for ip in ("127.0.0.3", "127.0.0.4") if cluster.raylet_pid(ip) is None]
    assert len(lost) == 1, "the job did not kill its node's raylet"
    assert detail["status"] == "FAILED"
    assert detail["statusReason"].startswith(HOST_LOST), detail["statusReason"]
    assert "exitCode" not in detail["container"]


def test_managed_capacity_is_capped_by_max_vcpus(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address, managed_vcpus=1)
    gate = tmp_path / "managed.go"
    hold = sh(f"until [ -e {gate} ]; do sleep 0.05; done")
    first = submit(batch, env, hold)
    wait_for(batch, first, "RUNNING", timeout=60)
    second = submit(batch, env, hold)
    # The cluster has room (4 CPUs); the compute environment does not.
    waiting = wait_for(batch, second, "RUNNABLE", timeout=30, reason_prefix="CAPACITY:INSUFFICIENT")
    assert "0 of 1 vCPU free" in waiting["statusReason"]
    gate.touch()
    assert wait_for(batch, second, timeout=60)["status"] == "SUCCEEDED"


def test_unmanaged_capacity_follows_the_cluster_as_nodes_join(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address, managed_vcpus=None)
    # No node has 3 CPUs: the job can never run on this cluster as it is.
    three = [{"type": "VCPU", "value": "3"}, {"type": "MEMORY", "value": "64"}]
    big = submit(batch, env, ["true"], overrides={"resourceRequirements": three})
    never = wait_for(batch, big, "RUNNABLE", timeout=30, reason_prefix="MISCONFIGURATION")
    assert "at most 2 vCPU" in never["statusReason"]
    # Two nodes with 2 CPUs each: four 1-vCPU jobs run, and 20 more (the
    # least shoal keeps queued in Ray: ray._QUEUED_VCPUS) wait in Ray's queue
    # (STARTING: placed, not yet running); the next waits here.
    gate = tmp_path / "unmanaged.go"
    hold = sh(f"until [ -e {gate} ]; do sleep 0.05; done")
    queued = 20
    running = [submit(batch, env, hold) for _ in range(4 + queued)]

    def statuses() -> dict[str, int]:
        found = [j["status"] for j in batch.describe_jobs(jobs=running)["jobs"]]
        return {status: found.count(status) for status in set(found)}

    wait_until(
        lambda: statuses() == {"RUNNING": 4, "STARTING": queued},
        timeout=60,
        what="four running, the rest queued in Ray",
    )
    fifth = submit(batch, env, hold)
    waiting = wait_for(batch, fifth, "RUNNABLE", timeout=30, reason_prefix="CAPACITY:INSUFFICIENT")
    assert f"has 0 of {4 + queued} vCPU free" in waiting["statusReason"]
    assert f"(its cluster's 4 vCPU, and {queued} more waiting" in waiting["statusReason"]
    assert statuses() == {"RUNNING": 4, "STARTING": queued}
    # A node with 4 CPUs joins: four of the queued run on it, and the one
    # waiting here and the big job (which a 4-CPU node can hold) are placed.
    cluster.cpus = 4
    try:
        cluster.add_worker("127.0.0.5")
    finally:
        cluster.cpus = 2
    try:
        wait_until(lambda: statuses().get("RUNNING") == 8, timeout=60, what="eight running")
        wait_for(batch, big, ("STARTING", "RUNNING", "SUCCEEDED"), timeout=60)
        wait_for(batch, fifth, ("STARTING", "RUNNING"), timeout=60)
        gate.touch()
        for job_id in [*running, fifth, big]:
            assert wait_for(batch, job_id, timeout=60)["status"] == "SUCCEEDED"
    finally:
        gate.touch()
        cluster.remove("127.0.0.5")


def test_background_processes_end_with_the_job(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    # As with the process executor (and a container's processes): what the
    # job left running in its process group ends when its main process does.
    env = ray_queue(batch, cluster.address)
    pidfile = tmp_path / "bg.pid"
    job_id = submit(batch, env, sh(f"sleep 300 & echo $! > {pidfile}; exit 0"))
    assert wait_for(batch, job_id, timeout=60)["status"] == "SUCCEEDED"
    wait_gone(read_pid(pidfile, timeout=30), timeout=30)


def test_terminate_kills_the_whole_process_group_on_the_node(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address)
    child = tmp_path / "child.pid"
    # A background child in the job's process group, which ignores nothing.
    job_id = submit(batch, env, sh(f"sleep 300 & echo $! > {child}; wait"))
    wait_for(batch, job_id, "RUNNING", timeout=60)
    pid = read_pid(child, timeout=30)
    assert os.getpgid(pid) != os.getpgid(0)
    batch.terminate_job(jobId=job_id, reason="enough")
    detail = wait_for(batch, job_id, timeout=60)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "enough")
    wait_gone(pid, timeout=30)


def test_a_job_that_cannot_start_on_the_node_fails_to_start(
    batch: Any, cluster: RayCluster
) -> None:
    env = ray_queue(batch, cluster.address)
    job_id = submit(batch, env, ["/no/such/program"], retryStrategy={"attempts": 1})
    detail = wait_for(batch, job_id, timeout=60)
    # As AWS reports a container whose command cannot be run.
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start")
    reason = detail["container"]["reason"]
    assert reason == (
        'CannotStartContainerError: exec: "/no/such/program": executable file not found in $PATH'
    ), reason
    assert "exitCode" not in detail["container"]


def test_a_cluster_out_of_reach_leaves_jobs_runnable_with_the_reason(tmp_path: Path) -> None:
    # A server of its own: the module's is connected to the test cluster.
    srv = start_engine_server(tmp_path)
    try:
        batch = srv.client("batch")
        env = ray_queue(batch, "127.0.0.9:1", managed_vcpus=None)
        job_id = submit(batch, env, ["true"])
        detail = wait_for(
            batch,
            job_id,
            "RUNNABLE",
            timeout=90,
            reason_prefix="CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY - compute environment",
        )
        wait_until(
            lambda: (
                "Ray cluster at 127.0.0.9:1 cannot be reached"
                in (describe(batch, job_id).get("statusReason") or "")
            ),
            timeout=90,
            what="the reason to name the unreachable cluster",
        )
        assert describe(batch, job_id)["status"] == "RUNNABLE"
        assert "attempts" not in detail or not detail["attempts"]
    finally:
        shutdown(srv)


def test_a_multinode_job_spans_nodes_and_its_main_node_decides(
    batch: Any, cluster: RayCluster, tmp_path: Path
) -> None:
    env = ray_queue(batch, cluster.address)
    d = tmp_path
    script = (
        f"i=$AWS_BATCH_JOB_NODE_INDEX; echo $$ > {d}/node$i.pid; "
        f'echo "${{AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS:-none}}" > {d}/node$i.main; '
        f'if [ "$i" = 0 ]; then until [ -e {d}/go ]; do sleep 0.05; done; exit 3; '
        "else exec sleep 300; fi"
    )
    name = f"{env['definition']}-mnp"
    batch.register_job_definition(
        jobDefinitionName=name,
        type="multinode",
        nodeProperties={
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                {
                    "targetNodes": "0:1",
                    "container": {
                        "image": "busybox",
                        "command": sh(script),
                        "resourceRequirements": [
                            {"type": "VCPU", "value": "1"},
                            {"type": "MEMORY", "value": "64"},
                        ],
                    },
                }
            ],
        },
    )
    job_id = batch.submit_job(jobName="mnp", jobQueue=env["queue"], jobDefinition=name)["jobId"]
    main_pid = read_pid(d / "node0.pid", timeout=60)
    other_pid = read_pid(d / "node1.pid", timeout=60)
    main_ip, other_ip = cluster.node_of(main_pid), cluster.node_of(other_pid)
    # A placement group spreads the gang over the cluster's two worker nodes.
    assert {main_ip, other_ip} == {"127.0.0.3", "127.0.0.4"}
    main_seen = wait_until(lambda: (d / "node1.main").read_text().strip(), what="node 1's env")
    assert main_seen == main_ip
    assert (d / "node0.main").read_text().strip() == "none"
    # The node rows are written with the job's RUNNING, once every node launched.
    want = [f"{job_id}#0", f"{job_id}#1"]
    wait_until(
        lambda: (
            sorted(
                n["jobId"]
                for n in batch.list_jobs(multiNodeJobId=job_id, jobStatus="RUNNING")[
                    "jobSummaryList"
                ]
            )
            == want
        ),
        timeout=30,
        what="both nodes listed RUNNING",
    )
    (d / "go").touch()
    detail = wait_for(batch, job_id, timeout=60)
    # The main node's exit is the job's; the other node is stopped with it.
    assert detail["status"] == "FAILED"
    assert detail["attempts"][0]["container"]["exitCode"] == 3
    wait_gone(other_pid, timeout=30)
    other = describe(batch, f"{job_id}#1")
    assert other["status"] == "FAILED"
    assert other["nodeDetails"] == {"nodeIndex": 1, "isMainNode": False}
