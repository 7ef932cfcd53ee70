"""Store benchmark: submit and dispatch throughput on PostgreSQL next to SQLite.

    python bench/stores.py [--jobs 2000] [--postgres URL] [--quick]

For each store, in the same run and on the same machine:
- submit: JOBS SubmitJob calls from 2 threads with a plain keep-alive HTTP
  client, while the compute environment is disabled (nothing runs);
- dispatch: the same jobs run to SUCCEEDED once the compute environment is
  enabled (the engine alone, 2 one-vCPU slots, `true` jobs).
PostgreSQL is the server at --postgres (default: $SHOAL_TEST_POSTGRES, else
127.0.0.1:5433, where .ci/run starts one); each run gets a new database.
With 2 engines on PostgreSQL one dispatches and the other stands by.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from engine import RawClient, Shoal, setup

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5433/postgres"


@contextmanager
def new_database(admin_url: str) -> Iterator[str]:
    name = f"shoal_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def counter(store_url: str | None, data_dir: Path) -> Callable[[str], int]:
    if store_url is None:

        def count_sqlite(status: str) -> int:
            with sqlite3.connect(f"file:{data_dir / 'shoal.db'}?mode=ro", uri=True) as conn:
                row = conn.execute("SELECT count(*) FROM jobs WHERE status = ?", (status,))
                return int(row.fetchone()[0])

        return count_sqlite
    conn = psycopg.connect(store_url, autocommit=True)

    def count_pg(status: str) -> int:
        row = conn.execute("SELECT count(*) FROM jobs WHERE status = %s", (status,)).fetchone()
        return int(row[0]) if row else 0

    return count_pg


def measure(store_url: str | None, jobs: int, engines: int = 1) -> tuple[float, float]:
    """(submits/s, dispatched jobs/s)."""
    tmp = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    extra = ["--store", store_url] if store_url else []
    shoal = Shoal(tmp / "data", *extra)
    others = [Shoal(tmp / f"engine{n}", *extra, "--role", "engine") for n in range(1, engines)]
    try:
        batch = shoal.client()
        setup(batch)
        batch.update_compute_environment(computeEnvironment="bench", state="DISABLED")
        count = counter(store_url, tmp / "data")
        per_thread = jobs // 2

        def submit() -> None:
            raw = RawClient(shoal.port)
            for i in range(per_thread):
                raw.submit_job(jobName=f"s{i}", jobQueue="bench", jobDefinition="true")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=submit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        submit_rate = 2 * per_thread / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        batch.update_compute_environment(computeEnvironment="bench", state="ENABLED")
        deadline = time.monotonic() + 600
        while count("SUCCEEDED") < 2 * per_thread:
            if time.monotonic() > deadline:
                raise RuntimeError("the jobs did not finish")
            time.sleep(0.02)
        return submit_rate, 2 * per_thread / (time.perf_counter() - t0)
    finally:
        for other in others:
            other.stop()
        shoal.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get("SHOAL_TEST_POSTGRES", DEFAULT_PG))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    jobs = 400 if args.quick else args.jobs

    lite_submit, lite_run = measure(None, jobs)
    print(f"SQLite, 1 engine: {lite_submit:.0f} submits/s; {lite_run:.0f} jobs/s dispatched")
    for engines in (1, 2):
        with new_database(args.postgres) as url:
            pg_submit, pg_run = measure(url, jobs, engines)
        print(
            f"PostgreSQL, {engines} engine{'s' if engines > 1 else ''}: {pg_submit:.0f} "
            f"submits/s ({pg_submit / lite_submit:.2f} of SQLite); {pg_run:.0f} jobs/s "
            f"dispatched ({pg_run / lite_run:.2f} of SQLite)"
        )
    print("(with 2 engines one dispatches and the other stands by: no more throughput, a spare)")


if __name__ == "__main__":
    main()
