"""Array and dependency benchmark.

    python bench/arrays.py [--size 10000] [--chain 1000] [--quick]

Prints
- the machine's bare process-spawn rate (as in bench/engine.py), this run;
- a SIZE-child array of `true`: how long SubmitJob took to answer, how long
  until the parent was SUCCEEDED, children per second and that rate as a
  ratio to the bare spawn rate and to single jobs (the run-only figure of
  bench/engine.py, measured here on the same server), and the server's peak
  RSS (its own, not its jobs');
- a chain of CHAIN jobs, each depending on the one before: jobs per second.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from engine import Shoal, bare_spawn_rate, count_status, run_only, setup

TARGET_ACCEPT_MS = 200.0
TARGET_CHAIN = 200.0


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def array_run(shoal: Shoal, size: int) -> tuple[float, float]:
    """(ms to accept the SubmitJob, s until the parent SUCCEEDED)."""
    batch = shoal.client()
    t0 = time.perf_counter()
    parent = batch.submit_job(
        jobName="big", jobQueue="bench", jobDefinition="true", arrayProperties={"size": size}
    )["jobId"]
    accepted = (time.perf_counter() - t0) * 1000
    # The parent's status is peeked at in the store, as bench/engine.py does:
    # a DescribeJobs of the parent counts its 10,000 children each time.
    db = shoal.data_dir / "shoal.db"
    deadline = time.monotonic() + 1200
    while (status := job_status(db, parent)) not in ("SUCCEEDED", "FAILED"):
        if time.monotonic() > deadline:
            raise RuntimeError("the array did not finish")
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    if status != "SUCCEEDED":
        raise RuntimeError(f"the array failed: {batch.describe_jobs(jobs=[parent])}")
    return accepted, elapsed


def job_status(db: Path, job_id: str) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT status FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return str(row[0])


def chain_run(shoal: Shoal, length: int) -> float:
    """jobs/s through a chain of `length` jobs, each depending on the previous."""
    batch = shoal.client()
    db = shoal.data_dir / "shoal.db"
    done_before = count_status(db, "SUCCEEDED")
    t0 = time.perf_counter()
    previous: list[dict[str, str]] = []
    for i in range(length):
        job_id = batch.submit_job(
            jobName=f"c{i}", jobQueue="bench", jobDefinition="true", dependsOn=previous
        )["jobId"]
        previous = [{"jobId": job_id}]
    deadline = time.monotonic() + 600
    while count_status(db, "SUCCEEDED") < done_before + length:
        if time.monotonic() > deadline:
            raise RuntimeError("the chain did not finish")
        time.sleep(0.01)
    return length / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    size, chain = (2000, 200) if args.quick else (args.size, args.chain)

    spawn = bare_spawn_rate(1000 if args.quick else 4000)
    print(f"bare spawn (posix_spawn /bin/true, 2 in flight): {spawn:.0f} /s")
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    shoal = Shoal(tmp / "data")
    try:
        setup(shoal.client())
        single = run_only(shoal, min(size, 2000))
        accepted, elapsed = array_run(shoal, size)
        rate = size / elapsed
        ok = "ok" if accepted <= TARGET_ACCEPT_MS and rate >= single else "BELOW TARGET"
        print(
            f"{size}-child array of `true`: SubmitJob answered in {accepted:.0f} ms "
            f"(target <= {TARGET_ACCEPT_MS:.0f}); parent SUCCEEDED after {elapsed:.1f} s; "
            f"{rate:.0f} children/s, ratio to bare spawn {rate / spawn:.2f}, to single jobs "
            f"run on this server ({single:.0f} /s) {rate / single:.2f} (target >= 1.00) {ok}"
        )
        chained = chain_run(shoal, chain)
        ok = "ok" if chained >= TARGET_CHAIN else "BELOW TARGET"
        print(
            f"{chain}-job dependency chain: {chained:.0f} jobs/s "
            f"(target >= {TARGET_CHAIN:.0f}) {ok}"
        )
        print(f"server peak RSS: {peak_rss_mib(shoal.proc.pid):.0f} MiB")
    finally:
        shoal.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
