"""Docker executor benchmark.

    python bench/docker.py [--runs 10] [--jobs 200] [--quick]

Needs dockerd and the shoal-test/busybox:1 image (scripts/build-test-images).
Prints
- the wall time of one trivial container (`true` in shoal-test/busybox:1),
  median of RUNS: `docker run --rm --network host` from the CLI, and a job
  through shoal from SubmitJob to SUCCEEDED (the job's status peeked at in
  the store every 5 ms), and their ratio (target <= 1.2);
- the throughput of JOBS such jobs on a compute environment of 2 vCPUs (two
  at a time), next to `docker run --rm` of the same, two at a time.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from engine import RawClient, Shoal

IMAGE = "shoal-test/busybox:1"
TARGET_RATIO = 1.2


def docker_run() -> None:
    subprocess.run(
        ["docker", "run", "--rm", "--network", "host", IMAGE, "true"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def docker_run_rate(jobs: int, in_flight: int = 2) -> float:
    left = list(range(jobs))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not left:
                    return
                left.pop()
            docker_run()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return jobs / (time.perf_counter() - t0)


def status(db: Path, job_id: str) -> str | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


def count(db: Path, status_: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT count(*) FROM jobs WHERE status = ?", (status_,)).fetchone()
    return int(row[0])


def setup(batch: Any) -> None:
    batch.create_compute_environment(
        computeEnvironmentName="docker",
        type="MANAGED",
        computeResources={"type": "EC2", "maxvCpus": 2, "minvCpus": 0},
        tags={"shoal:executor": "docker"},
    )
    batch.create_job_queue(
        jobQueueName="docker",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "docker"}],
    )
    batch.register_job_definition(
        jobDefinitionName="true",
        type="container",
        containerProperties={
            "image": IMAGE,
            "command": ["true"],
            "resourceRequirements": [
                {"type": "VCPU", "value": "1"},
                {"type": "MEMORY", "value": "64"},
            ],
        },
    )


def one_job(shoal: Shoal, raw: RawClient) -> float:
    db = shoal.data_dir / "shoal.db"
    t0 = time.perf_counter()
    job_id = raw.submit_job(jobName="one", jobQueue="docker", jobDefinition="true")["jobId"]
    while (s := status(db, job_id)) not in ("SUCCEEDED", "FAILED"):
        time.sleep(0.005)
    if s != "SUCCEEDED":
        raise RuntimeError(f"job {job_id} failed")
    return time.perf_counter() - t0


def many_jobs(shoal: Shoal, raw: RawClient, jobs: int) -> float:
    db = shoal.data_dir / "shoal.db"
    before = count(db, "SUCCEEDED")
    t0 = time.perf_counter()
    for i in range(jobs):
        raw.submit_job(jobName=f"m{i}", jobQueue="docker", jobDefinition="true")
    deadline = time.monotonic() + 1200
    while count(db, "SUCCEEDED") < before + jobs:
        if time.monotonic() > deadline or count(db, "FAILED"):
            raise RuntimeError("the jobs did not all succeed")
        time.sleep(0.05)
    return jobs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs, jobs = (5, 40) if args.quick else (args.runs, args.jobs)

    docker_run()  # warm the image and dockerd
    reference = []
    for _ in range(runs):
        t0 = time.perf_counter()
        docker_run()
        reference.append(time.perf_counter() - t0)
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    shoal = Shoal(tmp / "data")
    try:
        setup(shoal.client())
        raw = RawClient(shoal.port)
        one_job(shoal, raw)  # warm
        through = [one_job(shoal, raw) for _ in range(runs)]
        ref, ours = statistics.median(reference), statistics.median(through)
        ok = "ok" if ours / ref <= TARGET_RATIO else "BELOW TARGET"
        print(
            f"one `true` container, median of {runs}: docker run --rm {ref * 1000:.0f} ms; "
            f"through shoal (SubmitJob to SUCCEEDED) {ours * 1000:.0f} ms; "
            f"ratio {ours / ref:.2f} (target <= {TARGET_RATIO}) {ok}"
        )
        rate = many_jobs(shoal, raw, jobs)
        reference_rate = docker_run_rate(jobs)
        print(
            f"{jobs} container jobs on 2 vCPUs of capacity: {rate:.1f} jobs/s; "
            f"docker run --rm two at a time: {reference_rate:.1f} /s; ratio "
            f"{rate / reference_rate:.2f}"
        )
    finally:
        shoal.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
