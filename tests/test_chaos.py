"""Chaos: two API processes and two engines on one PostgreSQL database, with
one of the four killed (SIGKILL) every couple of seconds and restarted at
once, while a mix of jobs (plain, retried, failing, dependent, arrays) is
submitted and run.

At the end every job is in the state its definition implies, none is
missing, and no attempt ran twice: each job's command appends one line per
attempt (`<job id> <attempt>`) to a file the test reads.

The SDK reaches the API processes through a small TCP balancer, as it would
through a load balancer: when an API process dies mid-call, the SDK's retry
(same invocation id) lands on a live one.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from conftest import CREDENTIALS, REGION, Server, make_ce, make_queue
from engine_support import ENGINE_ARGS, shutdown, wait_until
from test_store_contract import new_schema, pg_database  # noqa: F401  (a fixture)

JOBS = int(os.environ.get("SHOAL_CHAOS_JOBS", "5000"))
KILL_EVERY = 2.0


class Balancer:
    """Forwards each connection to the first upstream that accepts it."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        for port in random.sample(self.ports, len(self.ports)):
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=2)
                upstream.settimeout(None)
                break
            except OSError:
                continue
        if upstream is None:
            client.close()
            return
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(src, dst), daemon=True).start()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(65536):
            dst.sendall(chunk)
    except OSError:
        pass
    for s in (src, dst):
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


class Cluster:
    def __init__(self, tmp_path: Path, url: str) -> None:
        common = ["--store", url, "--kill-grace-seconds", "1"]
        self.specs: dict[str, tuple[Path, list[str]]] = {}
        for name in ("api1", "api2"):
            self.specs[name] = (tmp_path / name / "data", ["--role", "api", *common])
        for name in ("eng1", "eng2"):
            args = [*ENGINE_ARGS, "--role", "engine", "--host-vcpus", "8", *common]
            self.specs[name] = (tmp_path / name / "data", args)
        self.servers: dict[str, Server] = {}
        self.balancer = Balancer()
        self.kills: collections.Counter[str] = collections.Counter()
        for name in self.specs:
            self.start(name)

    def start(self, name: str) -> None:
        data_dir, args = self.specs[name]
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.servers[name] = Server(data_dir=data_dir, args=args).start(timeout=30)
        self.balancer.ports = [s.port for n, s in self.servers.items() if n.startswith("api")]

    def kill_and_restart(self, name: str) -> None:
        server = self.servers[name]
        if name.startswith("api"):  # take it out of the balancer first
            self.balancer.ports = [
                s.port for n, s in self.servers.items() if n.startswith("api") and n != name
            ]
        server.stop(signal.SIGKILL)
        self.kills[name] += 1
        self.start(name)

    def client(self) -> Any:
        return boto3.client(
            "batch",
            endpoint_url=f"http://127.0.0.1:{self.balancer.port}",
            region_name=REGION,
            config=Config(
                retries={"mode": "standard", "max_attempts": 10},
                connect_timeout=5,
                read_timeout=30,
            ),
            **CREDENTIALS,
        )

    def close(self) -> None:
        self.balancer.close()
        for server in self.servers.values():
            shutdown(server)


@pytest.fixture
def cluster(pg_database: str, tmp_path: Path) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, new_schema(pg_database))
    yield c
    c.close()


def chaos(cluster: Cluster, stop: threading.Event) -> None:
    rng = random.Random(7)
    while not stop.wait(KILL_EVERY):
        cluster.kill_and_restart(rng.choice(sorted(cluster.specs)))


def test_nothing_is_lost_or_run_twice_under_kills(cluster: Cluster, tmp_path: Path) -> None:
    batch = cluster.client()
    ce = make_ce(batch, "chaos-ce", max_vcpus=8)
    make_queue(batch, "chaos-q", [ce])
    lines = tmp_path / "attempts"
    mark = f'echo "$AWS_BATCH_JOB_ID $AWS_BATCH_JOB_ATTEMPT" >> {lines}'
    batch.register_job_definition(
        jobDefinitionName="chaos",
        type="container",
        containerProperties={
            "image": "busybox",
            "command": ["sh", "-c", f"{mark}; sleep 0.2"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
    )

    def submit(name: str, command: str | None = None, **kwargs: Any) -> str:
        overrides = {"command": ["sh", "-c", f"{mark}; {command}"]} if command else {}
        job_id: str = batch.submit_job(
            jobName=name,
            jobQueue="chaos-q",
            jobDefinition="chaos",
            containerOverrides=overrides,
            **kwargs,
        )["jobId"]
        return job_id

    expected: dict[str, tuple[str, int]] = {}  # job id -> (status, attempts)
    arrays: dict[str, int] = {}
    stop = threading.Event()
    killer = threading.Thread(target=chaos, args=(cluster, stop), daemon=True)
    killer.start()
    try:
        kinds = ["ok", "ok", "ok", "flaky", "bad", "dependent", "array"]
        made = 0
        i = 0
        while made < JOBS:
            kind = kinds[i % len(kinds)]
            i += 1
            if kind == "ok":
                expected[submit(f"ok{i}")] = ("SUCCEEDED", 1)
                made += 1
            elif kind == "flaky":
                job = submit(
                    f"flaky{i}",
                    '[ "$AWS_BATCH_JOB_ATTEMPT" -ge 2 ] || exit 1; sleep 0.2',
                    retryStrategy={"attempts": 3},
                )
                expected[job] = ("SUCCEEDED", 2)
                made += 1
            elif kind == "bad":
                bad = submit(f"bad{i}", "exit 3")
                expected[bad] = ("FAILED", 1)
                after = submit(f"after{i}", dependsOn=[{"jobId": bad}])
                expected[after] = ("FAILED", 0)
                made += 2
            elif kind == "dependent":
                first = submit(f"first{i}")
                then = submit(f"then{i}", dependsOn=[{"jobId": first}])
                expected[first] = ("SUCCEEDED", 1)
                expected[then] = ("SUCCEEDED", 1)
                made += 2
            else:
                parent = submit(f"array{i}", arrayProperties={"size": 4})
                arrays[parent] = 4
                expected[parent] = ("SUCCEEDED", 0)
                for index in range(4):
                    expected[f"{parent}:{index}"] = ("SUCCEEDED", 1)
                made += 5

        def finished() -> bool:
            ids = list(expected)
            for start in range(0, len(ids), 100):
                jobs = batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]
                if len(jobs) < len(ids[start : start + 100]):
                    return False
                if any(j["status"] not in ("SUCCEEDED", "FAILED") for j in jobs):
                    return False
            return True

        wait_until(finished, timeout=600, what="every job to finish")
    finally:
        stop.set()
        killer.join()
    assert sum(cluster.kills.values()) >= 3, cluster.kills  # the chaos really happened
    print(f"kills: {dict(cluster.kills)}; jobs: {len(expected)}")

    ran = collections.Counter(tuple(line.split()) for line in lines.read_text().splitlines())
    twice = [key for key, n in ran.items() if n > 1]
    assert not twice, f"attempts that ran more than once: {twice[:10]}"
    runs_by_job = collections.Counter(job for job, _ in ran)
    # No job was created twice by a retried SubmitJob: nothing ran that was
    # not submitted once, and the queue holds exactly the jobs submitted.
    assert set(runs_by_job) <= set(expected), set(runs_by_job) - set(expected)
    listed: list[str] = []
    kwargs: dict[str, Any] = {
        "jobQueue": "chaos-q",
        "filters": [{"name": "JOB_NAME", "values": ["*"]}],
    }
    while True:
        page = batch.list_jobs(**kwargs)
        listed += [summary["jobId"] for summary in page["jobSummaryList"]]
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    assert sorted(listed) == sorted(j for j in expected if ":" not in j)
    ids = list(expected)
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 100):
        for job in batch.describe_jobs(jobs=ids[start : start + 100])["jobs"]:
            found[job["jobId"]] = job
    assert set(found) == set(expected), "jobs went missing"
    wrong = []
    for job_id, (status, attempts) in expected.items():
        job = found[job_id]
        if job["status"] != status or len(job["attempts"]) != attempts:
            wrong.append((job_id, job["status"], len(job["attempts"]), status, attempts))
        elif runs_by_job[job_id] != attempts:
            wrong.append((job_id, "ran", runs_by_job[job_id], "attempts", attempts))
    assert not wrong, f"{len(wrong)} jobs not as their definition implies: {wrong[:10]}"
    for parent, size in arrays.items():
        summary = found[parent]["arrayProperties"]["statusSummary"]
        assert summary["SUCCEEDED"] == size, summary
