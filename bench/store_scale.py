"""Store-scale benchmark: API latency with 1,000,000 finished jobs stored, next to 1,000.

    python bench/store_scale.py [--jobs 1000000] [--quick]

Two stores of the same shape are built, one with 1,000 jobs and one with
`--jobs` (1,000,000; 100,000 with --quick):

- the compute environment, job queue and job definition are created through
  the API, and three template jobs are run for real by the server (`true`,
  `false`, and a `sleep` caught while RUNNING), so the rows below copy what
  the server itself writes;
- the server is stopped and the jobs are inserted straight into the store,
  through `SqliteStore.insert_job` in transactions of 200,000: copies of the
  templates (90% SUCCEEDED, 10% FAILED, 5 RUNNING) with fresh job ids, task
  ids, SDK invocation tokens and timestamps. Names: 50 jobs named
  `nightly-report` and 25 named `nightly-report-eu`, spread evenly over the
  store, among background names (`etl-0123`, `train-4711`, ...) that the
  filters of the requirement do not select, so each of them selects the same
  jobs in both stores.

Both stores are then served at once by `python -m shoal server --no-engine`
(the rows stay exactly as written: no engine reconciles the RUNNING ones),
and each call is made against one server and then the other, round after
round, with a plain keep-alive HTTP client (no boto3, whose own parsing
would add the same cost to both sides; the servers share one core and the
client has the other, so no server gets a better seat), and the ratio of the
medians is printed for:

- ListJobs(jobQueue, jobStatus=RUNNING): 5 jobs;
- ListJobs(jobQueue, JOB_NAME=nightly-report): 50 jobs;
- ListJobs(jobQueue, JOB_NAME=nightly-*): 75 jobs;
- DescribeJobs with 100 ids picked at random over the whole store (a new
  draw each round).

One more line, outside the requirement and without a target, shows a
JOB_NAME prefix that selects 1/8 of each store (`etl-*`): its first page of
100 costs in proportion to the jobs it matches.

Finally each store is served with the engine on (the default) and the CPU
time of the server's process tree (the server and its launcher, from
/proc/<pid>/stat utime+stime) is read over 10 s with nothing to do.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from shoal.domain.arns import new_job_id, new_task_id
from shoal.domain.records import Job, JobStatus
from shoal.store import codec
from shoal.store.sqlite import SqliteStore, _job_from_row

TARGET_RATIO = 1.5
TARGET_IDLE_CPU = 0.02  # of one core
SMALL = 1000
BATCH = 200_000
QUEUE = "bench"
EXACT_NAME = "nightly-report"
EXACT_COUNT = 50
EU_NAME = "nightly-report-eu"
EU_COUNT = 25
PREFIX = "nightly-*"
RUNNING_COUNT = 5
BACKGROUND = ("etl", "train", "render", "ingest", "sim", "backfill", "score", "export")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Shoal:
    def __init__(self, data_dir: Path, *, engine: bool, cpus: set[int] | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "shoal", "server", "--port", str(self.port)]
        args += ["--engine" if engine else "--no-engine", "--data-dir", str(data_dir)]
        args += ["--host-vcpus", "2"]
        pin = None if cpus is None else lambda: os.sched_setaffinity(0, cpus)
        self.proc = subprocess.Popen(args, stderr=subprocess.DEVNULL, preexec_fn=pin)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("shoal did not start")

    def client(self) -> Any:
        return boto3.client(
            "batch",
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class RawClient:
    """Calls as botocore sends them (rest-json POSTs), without the SDK's per-call work."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, path: str, body: dict[str, Any]) -> Any:
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(data)
        return json.loads(data)


# -- building a store ---------------------------------------------------------


def read_jobs(db: Path) -> dict[str, Job]:
    # Read-only peek (WAL allows a reader next to the running server).
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT * FROM jobs").fetchall()
    # The table's columns are _JOB_COLUMNS followed by the token.
    return {row[1]: _job_from_row(row[:20]) for row in rows}


def wait_for(what: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def make_templates(data_dir: Path) -> dict[JobStatus, Job]:
    """Create the resources through the API and run one job per status for real."""
    shoal = Shoal(data_dir, engine=True)
    db = data_dir / "shoal.db"
    try:
        batch = shoal.client()
        batch.create_compute_environment(
            computeEnvironmentName="bench",
            type="MANAGED",
            computeResources={"type": "EC2", "maxvCpus": 2, "minvCpus": 0},
        )
        batch.create_job_queue(
            jobQueueName=QUEUE,
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "bench"}],
        )
        batch.register_job_definition(
            jobDefinitionName="nightly",
            type="container",
            containerProperties={
                "image": "busybox",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"},
                ],
            },
            retryStrategy={"attempts": 1},
        )

        def submit(name: str, command: list[str]) -> str:
            return str(
                batch.submit_job(
                    jobName=name,
                    jobQueue=QUEUE,
                    jobDefinition="nightly",
                    containerOverrides={"command": command},
                )["jobId"]
            )

        ok = submit("template-ok", ["true"])
        bad = submit("template-bad", ["false"])
        run = submit("template-run", ["sleep", "60"])
        wait_for(
            lambda: (
                {j.status for j in read_jobs(db).values()}
                == {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.RUNNING}
            )
        )
        running = read_jobs(db)[run]
        batch.terminate_job(jobId=run, reason="template captured")
        wait_for(lambda: read_jobs(db)[run].status is JobStatus.FAILED)
        jobs = read_jobs(db)
        assert jobs[ok].status is JobStatus.SUCCEEDED and jobs[bad].status is JobStatus.FAILED
        return {
            JobStatus.SUCCEEDED: jobs[ok],
            JobStatus.FAILED: jobs[bad],
            JobStatus.RUNNING: running,
        }
    finally:
        shoal.stop()


class Template:
    """Copies of one job the server ran: fresh ids, the same life shifted in time.

    The runtime document is kept as its JSON text cut around the task id and
    the timestamps, so a copy is a join and a parse instead of a walk.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        runtime = job.runtime
        stamps = {job.created_at, job.started_at, job.stopped_at, runtime["runnableAt"]}
        for attempt in runtime.get("attempts", []):
            stamps |= {attempt["startedAt"], attempt["stoppedAt"]}
        tokens = [runtime["taskId"], *(str(s) for s in stamps if s)]
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, tokens)) + r")\b")
        # Odd items are the tokens found, even ones the text between them.
        self.parts = pattern.split(codec.dumps(runtime))
        self.task = runtime["taskId"]
        self.copy_job(job.job_name, job.created_at, self.task)  # self-check

    def copy_job(self, name: str, created_at: int, task: str | None = None) -> Job:
        job = self.job
        delta = created_at - job.created_at
        task = task or new_task_id()
        parts = self.parts[:]
        for i in range(1, len(parts), 2):
            parts[i] = task if parts[i] == self.task else str(int(parts[i]) + delta)
        runtime = codec.loads("".join(parts))
        if delta == 0 and task == self.task and runtime != job.runtime:
            raise AssertionError("the runtime template does not rebuild its own job")
        return dataclasses.replace(
            job,
            job_id=new_job_id(),
            job_name=name,
            created_at=created_at,
            started_at=None if job.started_at is None else job.started_at + delta,
            stopped_at=None if job.stopped_at is None else job.stopped_at + delta,
            runtime=runtime,
        )


def populate(
    data_dir: Path, total: int, templates: dict[JobStatus, Job], rng: random.Random
) -> tuple[list[str], float]:
    """Fill the store up to `total` jobs; (the ids inserted, seconds taken)."""
    db = data_dir / "shoal.db"
    count = total - len(read_jobs(db))
    special: dict[int, tuple[str, JobStatus | None]] = {}
    for n, name, status in (
        (EXACT_COUNT, EXACT_NAME, None),
        (EU_COUNT, EU_NAME, None),
        (RUNNING_COUNT, None, JobStatus.RUNNING),
    ):
        for k in range(n):
            i = (2 * k + 1) * count // (2 * n)
            while i in special:
                i += 1
            special[i] = (name or "", status)
    t0 = time.perf_counter()
    copies = {status: Template(job) for status, job in templates.items()}
    # A month of jobs, oldest first, as seq order has them.
    start = templates[JobStatus.SUCCEEDED].created_at - 30 * 86_400_000
    step = 30 * 86_400_000 // count
    ids: list[str] = []
    store = SqliteStore(db)
    # Room for a whole transaction's pages (this connection only; the file is
    # the same): random job ids and tokens touch most index pages each time.
    store._conn.execute("PRAGMA cache_size = -1048576")
    try:
        for first in range(0, count, BATCH):
            with store.transaction() as tx:
                for i in range(first, min(count, first + BATCH)):
                    name, status = special.get(i, ("", None))
                    if not name:
                        name = f"{BACKGROUND[i % len(BACKGROUND)]}-{rng.randrange(5000):04d}"
                    if status is None:
                        status = JobStatus.FAILED if i % 10 == 3 else JobStatus.SUCCEEDED
                    job = copies[status].copy_job(name, start + i * step)
                    # Every job submitted through boto3 carries its SDK invocation id.
                    tx.insert_job(job, str(uuid.uuid4()))
                    ids.append(job.job_id)
    finally:
        store.close()
    return ids, time.perf_counter() - t0


def build_store(data_dir: Path, total: int, rng: random.Random) -> tuple[list[str], float]:
    templates = make_templates(data_dir)
    return populate(data_dir, total, templates, rng)


# -- measuring ----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def side_by_side(
    clients: list[RawClient],
    make: Callable[[int], tuple[str, dict[str, Any]]],
    rounds: int,
    check: Callable[[int, Any], None],
    warmup: int = 10,
) -> list[list[float]]:
    """ms per call for each client, the clients taking turns call by call."""
    times: list[list[float]] = [[] for _ in clients]
    for r in range(-warmup, rounds):
        for k, client in enumerate(clients):
            path, body = make(k)
            t0 = time.perf_counter()
            out = client.call(path, body)
            elapsed = (time.perf_counter() - t0) * 1000
            check(k, out)
            if r >= 0:
                times[k].append(elapsed)
    return times


def tree_cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its descendants (the launcher), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = int(fields[11]) + int(fields[12])
    total = 0
    for p in cpu:
        q = p
        while q not in (pid, 0, 1) and q in parent:
            q = parent[q]
        if q == pid:
            total += cpu[p]
    return total / ticks


def idle_cpu(data_dir: Path, seconds: float) -> float:
    shoal = Shoal(data_dir, engine=True)
    try:
        time.sleep(3)  # start-up: reconciling the RUNNING rows, first engine cycles
        c0, t0 = tree_cpu_seconds(shoal.proc.pid), time.perf_counter()
        time.sleep(seconds)
        c1, t1 = tree_cpu_seconds(shoal.proc.pid), time.perf_counter()
        return (c1 - c0) / (t1 - t0)
    finally:
        shoal.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    args = parser.parse_args()
    big = 100_000 if args.quick else args.jobs
    rounds = 50 if args.quick else args.rounds
    rng = random.Random(1)

    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    dirs = [tmp / "small", tmp / "big"]
    try:
        small_ids, _ = build_store(dirs[0], SMALL, rng)
        big_ids, took = build_store(dirs[1], big, rng)
        size = sum(p.stat().st_size for p in dirs[1].glob("shoal.db*"))
        print(
            f"populated {big:,} jobs in {took:.1f} s ({big / took:,.0f} jobs/s, "
            f"SqliteStore.insert_job, {BATCH:,} per transaction); "
            f"database {size / 2**20:,.0f} MiB ({size / big:,.0f} bytes/job)"
        )
        labels = [f"{SMALL:,}", f"{big:,}"]
        id_sets = [small_ids, big_ids]
        # The servers share one core and this client has the other, so each
        # call crosses the same way (left to the scheduler, one server would
        # often sit on the client's core and the other not).
        cores = sorted(os.sched_getaffinity(0))
        pinned = len(cores) >= 2
        server_cpus = {cores[-1]} if pinned else None
        servers = [Shoal(d, engine=False, cpus=server_cpus) for d in dirs]
        if pinned:
            os.sched_setaffinity(0, set(cores[:-1]))
        try:
            clients = [RawClient(s.port) for s in servers]

            def expect(n: int) -> Callable[[int, Any], None]:
                def check(_k: int, out: Any) -> None:
                    got = len(out["jobSummaryList"])
                    if got != n:
                        raise RuntimeError(f"expected {n} jobs, got {got}")

                return check

            def check_describe(_k: int, out: Any) -> None:
                if len(out["jobs"]) != 100:
                    raise RuntimeError(f"expected 100 jobs, got {len(out['jobs'])}")

            def list_with(body: dict[str, Any]) -> Callable[[int], tuple[str, dict[str, Any]]]:
                return lambda _k: ("/v1/listjobs", body)

            def name_filter(value: str) -> dict[str, Any]:
                return {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [value]}]}

            cases: list[tuple[str, Callable[[int], tuple[str, dict[str, Any]]], Any]] = [
                (
                    f"ListJobs(jobStatus=RUNNING), {RUNNING_COUNT} jobs",
                    list_with({"jobQueue": QUEUE, "jobStatus": "RUNNING"}),
                    expect(RUNNING_COUNT),
                ),
                (
                    f"ListJobs(JOB_NAME={EXACT_NAME}), {EXACT_COUNT} jobs",
                    list_with(name_filter(EXACT_NAME)),
                    expect(EXACT_COUNT),
                ),
                (
                    f"ListJobs(JOB_NAME={PREFIX}), {EXACT_COUNT + EU_COUNT} jobs",
                    list_with(name_filter(PREFIX)),
                    expect(EXACT_COUNT + EU_COUNT),
                ),
                (
                    "DescribeJobs(100 random ids)",
                    lambda k: ("/v1/describejobs", {"jobs": rng.sample(id_sets[k], 100)}),
                    check_describe,
                ),
            ]

            def spread(small: list[float], large: list[float]) -> str:
                return (
                    f"{labels[0]} jobs p50 {statistics.median(small):.2f} ms "
                    f"p99 {percentile(small, 0.99):.2f} ms; {labels[1]} jobs p50 "
                    f"{statistics.median(large):.2f} ms p99 {percentile(large, 0.99):.2f} ms"
                )

            print(
                f"latency, servers with --no-engine, {rounds} calls each over plain keep-alive "
                f"HTTP, alternating between the {labels[0]}-job and the {labels[1]}-job store"
                + (f" (servers on CPU {cores[-1]}, client on the rest):" if pinned else ":")
            )
            for label, make, check in cases:
                small, large = side_by_side(clients, make, rounds, check)
                ratio = statistics.median(large) / statistics.median(small)
                ok = "ok" if ratio <= TARGET_RATIO else "BELOW TARGET"
                print(
                    f"  {label}: {spread(small, large)}; ratio {ratio:.2f} "
                    f"(target <= {TARGET_RATIO}) {ok}"
                )
            # Beyond the requirement: a prefix that selects 1/8 of each store
            # (all of one background word), of which a page of 100 is listed.
            few = max(5, rounds // 20)
            small, large = side_by_side(
                clients, list_with(name_filter(f"{BACKGROUND[0]}-*")), few, expect(100), warmup=2
            )
            ratio = statistics.median(large) / statistics.median(small)
            print(
                f"  not in the requirement, no target: ListJobs(JOB_NAME={BACKGROUND[0]}-*), "
                f"1/8 of each store matches, first page of 100, {few} calls: "
                f"{spread(small, large)}; ratio {ratio:.1f}"
            )
        finally:
            for s in servers:
                s.stop()
            os.sched_setaffinity(0, set(cores))
        for label, d in zip(labels, dirs, strict=True):
            share = idle_cpu(d, args.idle_seconds)
            ok = "ok" if share < TARGET_IDLE_CPU else "BELOW TARGET"
            print(
                f"idle server with the engine on, {label} jobs stored: {share * 100:.2f}% of one "
                f"core over {args.idle_seconds:.0f} s (server and launcher processes; "
                f"target < {TARGET_IDLE_CPU * 100:.0f}%) {ok}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
