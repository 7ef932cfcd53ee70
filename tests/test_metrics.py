"""GET /metrics: Prometheus text from a real `shoal server`, scraped over HTTP
as Prometheus does, compared with what the Batch API says."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, make_ce, make_queue, start_server, walk_pages
from engine_support import engine_server, make_env, sh, submit, wait_for, wait_until
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from test_store_contract import make_job, new_schema, postgres_database

from shoal.domain.records import JobStatus
from shoal.store.base import Store
from shoal.store.postgres import PostgresStore
from shoal.store.sqlite import SqliteStore

STATUSES = [s.value for s in JobStatus]
EXITED = "Essential container in task exited"


class Scrape:
    """One scrape of /metrics, parsed."""

    def __init__(self, server: Server) -> None:
        with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
            assert response.status == 200
            self.content_type: str = response.headers["Content-Type"]
            text = response.read().decode()
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 if none)."""
        return sum(
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def series(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.name == name]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An engine server; the host offers more vCPUs than the tests' compute
    environments, so their maxvCpus is what holds them."""
    with engine_server(tmp_path_factory.mktemp("metrics"), "--host-vcpus", "64") as srv:
        yield srv


@pytest.fixture(scope="module")
def batch(server: Server) -> Any:
    return server.client()


def list_count(batch: Any, queue: str, status: str) -> int:
    jobs, _ = walk_pages(batch.list_jobs, "jobSummaryList", 2, jobQueue=queue, jobStatus=status)
    return len(jobs)


def test_job_counts_match_list_jobs(server: Server, batch: Any, unique: str) -> None:
    off = make_env(batch, f"{unique}-off", ce_state="DISABLED")
    on = make_env(batch, f"{unique}-on")
    waiting = [submit(batch, off, name=f"w{i}") for i in range(3)]
    pending = submit(batch, off, name="p", dependsOn=[{"jobId": waiting[0]}])
    succeeded = [submit(batch, on, name=f"s{i}") for i in range(2)]
    failed = submit(batch, on, sh("exit 3"), name="f")
    array = submit(batch, on, name="a", arrayProperties={"size": 3})
    for job in waiting:
        wait_for(batch, job, "RUNNABLE")
    wait_for(batch, pending, "PENDING")
    for job in [*succeeded, array]:
        wait_for(batch, job, "SUCCEEDED")
    wait_for(batch, failed, "FAILED")

    scrape = Scrape(server)
    for queue in (off["queue_name"], on["queue_name"]):
        for status in STATUSES:
            listed = list_count(batch, queue, status)
            assert scrape.value("shoal_jobs", queue=queue, status=status) == listed, (
                queue,
                status,
            )
        # Every status of the queue is a series, 0 or not.
        series = [s for s in scrape.series("shoal_jobs") if s.labels["queue"] == queue]
        assert sorted(s.labels["status"] for s in series) == sorted(STATUSES)
    # What that means, spelled out: the array parent and its 3 children count.
    assert scrape.value("shoal_jobs", queue=on["queue_name"], status="SUCCEEDED") == 2 + 1 + 3
    assert scrape.value("shoal_jobs", queue=on["queue_name"], status="FAILED") == 1
    assert scrape.value("shoal_jobs", queue=off["queue_name"], status="RUNNABLE") == 3
    assert scrape.value("shoal_jobs", queue=off["queue_name"], status="PENDING") == 1
    assert scrape.value("shoal_jobs", queue=off["queue_name"], status="RUNNING") == 0


def test_histograms_and_counters_move(server: Server, batch: Any, unique: str) -> None:
    env = make_env(batch, unique, retry={"attempts": 2})
    queue = env["queue_name"]
    before = Scrape(server)
    jobs = [submit(batch, env, ["true"], name=f"ok{i}") for i in range(2)]
    jobs += [submit(batch, env, sh("exit 1"), name=f"bad{i}") for i in range(2)]
    details = [wait_for(batch, job) for job in jobs]
    assert [d["status"] for d in details] == ["SUCCEEDED"] * 2 + ["FAILED"] * 2
    attempts = sum(len(d["attempts"]) for d in details)
    assert attempts == 2 + 2 * 2

    def settled() -> Scrape | None:
        scrape = Scrape(server)
        return scrape if scrape.value("shoal_attempts_total", queue=queue) == attempts else None

    after = wait_until(settled, what="every attempt counted")
    assert after.value("shoal_job_run_seconds_count", queue=queue) == attempts
    assert after.value("shoal_job_run_seconds_sum", queue=queue) >= 0
    by_outcome = {
        outcome: after.value("shoal_attempts_total", queue=queue, outcome=outcome, reason=EXITED)
        for outcome in ("succeeded", "retried", "failed")
    }
    assert by_outcome == {"succeeded": 2, "retried": 2, "failed": 2}
    assert after.value("shoal_job_queue_wait_seconds_count", queue=queue) == attempts
    # Buckets are cumulative: +Inf holds every observation.
    inf = after.value("shoal_job_queue_wait_seconds_bucket", queue=queue, le="+Inf")
    assert inf == attempts
    started = after.value("shoal_dispatch_latency_seconds_count") - before.value(
        "shoal_dispatch_latency_seconds_count"
    )
    assert started == attempts


def test_capacity_in_use(server: Server, batch: Any, unique: str, tmp_path: Path) -> None:
    env = make_env(batch, unique, max_vcpus=4)
    gate = tmp_path / "gate"
    jobs = [
        submit(batch, env, sh(f"while [ ! -e {gate} ]; do sleep 0.05; done"), name=f"g{i}")
        for i in range(2)
    ]
    for job in jobs:
        wait_for(batch, job, "RUNNING")
    scrape = Scrape(server)
    ce = env["ce_name"]
    assert scrape.value("shoal_capacity_vcpus", compute_environment=ce, kind="in_use") == 2
    assert scrape.value("shoal_capacity_vcpus", compute_environment=ce, kind="max") == 4
    assert scrape.value("shoal_engine_dispatching") == 1
    gate.touch()
    for job in jobs:
        wait_for(batch, job, "SUCCEEDED")
    wait_until(
        lambda: (
            Scrape(server).value("shoal_capacity_vcpus", compute_environment=ce, kind="in_use") == 0
        ),
        what="the capacity freed",
    )


def test_launch_failure_is_an_executor_error(server: Server, batch: Any, unique: str) -> None:
    env = make_env(batch, unique)
    queue = env["queue_name"]
    before = Scrape(server).value("shoal_executor_errors_total", executor="process")
    job = submit(batch, env, ["shoal-no-such-program"])
    detail = wait_for(batch, job, "FAILED")
    assert detail["statusReason"] == "Task failed to start"

    def counted() -> Scrape | None:
        scrape = Scrape(server)
        return scrape if scrape.value("shoal_attempts_total", queue=queue) == 1 else None

    after = wait_until(counted, what="the attempt counted")
    assert after.value("shoal_executor_errors_total", executor="process") == before + 1
    assert (
        after.value("shoal_attempts_total", queue=queue, outcome="failed", reason="failed_to_start")
        == 1
    )
    # It was placed, but never ran.
    assert after.value("shoal_job_queue_wait_seconds_count", queue=queue) == 1
    assert after.value("shoal_job_run_seconds_count", queue=queue) == 0


def test_api_only_server_has_counts_and_no_capacity(tmp_path: Path, unique: str) -> None:
    server = start_server(tmp_path)  # --no-engine: jobs stay SUBMITTED
    try:
        batch = server.client()
        ce = make_ce(batch, f"{unique}-ce")
        full = make_queue(batch, f"{unique}-q", [ce])
        make_queue(batch, f"{unique}-empty", [ce])
        batch.register_job_definition(
            jobDefinitionName=f"{unique}-def",
            type="container",
            containerProperties={
                "image": "busybox",
                "command": ["true"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "128"},
                ],
            },
        )
        for i in range(2):
            batch.submit_job(jobName=f"j{i}", jobQueue=full, jobDefinition=f"{unique}-def")
        batch.submit_job(
            jobName="a", jobQueue=full, jobDefinition=f"{unique}-def", arrayProperties={"size": 5}
        )
        scrape = Scrape(server)
        assert scrape.content_type == CONTENT_TYPE_LATEST
        assert scrape.content_type.startswith("text/plain")
        # Children not made yet are not jobs ListJobs lists, nor counted.
        queue = f"{unique}-q"
        assert list_count(batch, queue, "SUBMITTED") == 3
        for status in STATUSES:
            assert scrape.value("shoal_jobs", queue=queue, status=status) == list_count(
                batch, queue, status
            )
        empty = [s for s in scrape.series("shoal_jobs") if s.labels["queue"] == f"{unique}-empty"]
        assert sorted(s.labels["status"] for s in empty) == sorted(STATUSES)
        assert all(s.value == 0 for s in empty)
        assert "shoal_capacity_vcpus" not in scrape.families
        assert scrape.value("shoal_engine_dispatching") == 0
        assert scrape.series("shoal_build_info")[0].value == 1
    finally:
        server.stop()


# -- the store's count, on both stores ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        sqlite = SqliteStore(tmp_path / "shoal.db")
        yield sqlite
        sqlite.close()
        return
    with postgres_database() as url:
        postgres = PostgresStore(new_schema(url))
        yield postgres
        postgres.close()


def test_store_counts_jobs_by_queue_and_status(store: Store) -> None:
    S = JobStatus
    with store.transaction() as tx:
        assert tx.count_jobs_by_queue_status() == {}
        tx.insert_job(make_job("a1", queue="a", status=S.RUNNABLE))
        tx.insert_job(make_job("a2", queue="a", status=S.RUNNABLE))
        tx.insert_job(make_job("a3", queue="a", status=S.FAILED))
        tx.insert_job(make_job("p", queue="b", status=S.PENDING, array_size=2))
        tx.insert_jobs(
            [
                make_job("p:0", queue="b", status=S.RUNNING, array_parent="p"),
                make_job("p:1", queue="b", status=S.SUCCEEDED, array_parent="p"),
            ]
        )
    with store.read() as tx:
        assert tx.count_jobs_by_queue_status() == {
            "a": {"RUNNABLE": 2, "FAILED": 1},
            "b": {"PENDING": 1, "RUNNING": 1, "SUCCEEDED": 1},
        }
