"""Acknowledged writes survive the death of the server.

Each test starts its own server on its own data directory, kills or stops it,
and starts a new server process on the same directory.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from conftest import Server, make_ce, make_definition, make_queue, start_server

THREADS = 4
BURST = 300


def restart(server: Server) -> Server:
    return Server(data_dir=server.data_dir, args=list(server.args)).start()


def setup_queue(batch: Any) -> None:
    ce = make_ce(batch, "ce")
    make_queue(batch, "q", [ce])
    make_definition(batch, "d")


def describe_all(batch: Any, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for i in range(0, len(ids), 100):
        for job in batch.describe_jobs(jobs=ids[i : i + 100])["jobs"]:
            found[job["jobId"]] = job
    return found


def count_submitted(batch: Any) -> int:
    pages = batch.get_paginator("list_jobs").paginate(jobQueue="q", jobStatus="SUBMITTED")
    return sum(len(p["jobSummaryList"]) for p in pages)


def test_acknowledged_jobs_survive_sigkill(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        setup_queue(server.client())
        # No retries: after the kill a call must fail, not be replayed later.
        clients = [
            server.client(retries={"total_max_attempts": 1}, connect_timeout=2, read_timeout=10)
            for _ in range(THREADS)
        ]
        acked: dict[str, str] = {}
        errors: list[BaseException] = []
        lock = threading.Condition()
        stop = threading.Event()

        def burst(worker: int, batch: Any) -> None:
            n = 0
            while not stop.is_set():
                name = f"w{worker}-{n}"
                try:
                    job_id = batch.submit_job(jobName=name, jobQueue="q", jobDefinition="d")[
                        "jobId"
                    ]
                except Exception as e:
                    if not stop.is_set():
                        errors.append(e)
                    return
                with lock:
                    acked[job_id] = name
                    lock.notify_all()
                n += 1

        threads = [
            threading.Thread(target=burst, args=(i, c), daemon=True) for i, c in enumerate(clients)
        ]
        for t in threads:
            t.start()
        # Kill the server while the burst is still going, once BURST jobs are acked.
        deadline = time.monotonic() + 60
        with lock:
            while len(acked) < BURST and not errors:
                assert time.monotonic() < deadline, f"only {len(acked)} jobs acknowledged"
                lock.wait(timeout=1)
        assert not errors, errors
        stop.set()
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()
        assert not errors, errors
        with lock:
            snapshot = dict(acked)
        assert len(snapshot) >= BURST
    finally:
        server.stop(signal.SIGKILL)

    again = restart(server)
    try:
        batch = again.client()
        found = describe_all(batch, list(snapshot))
        missing = set(snapshot) - set(found)
        assert not missing, f"{len(missing)} acknowledged jobs lost, e.g. {sorted(missing)[:3]}"
        for job_id, name in snapshot.items():
            job = found[job_id]
            assert (job["jobName"], job["status"]) == (name, "SUBMITTED")
            assert job["jobQueue"].endswith(":job-queue/q")
            assert job["jobDefinition"].endswith(":job-definition/d:1")
        # Jobs in flight at the kill may or may not exist; nothing else does.
        total = count_submitted(batch)
        assert len(snapshot) <= total <= len(snapshot) + THREADS
        # The restarted server keeps working on the same data.
        job_id = batch.submit_job(jobName="after", jobQueue="q", jobDefinition="d")["jobId"]
        assert describe_all(batch, [job_id])[job_id]["status"] == "SUBMITTED"
        assert count_submitted(batch) == total + 1
    finally:
        again.stop()


def strip(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def test_resources_survive_sigterm_restart(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        batch = server.client()
        ce = make_ce(batch, "ce", max_vcpus=32, tags={"team": "data"})
        queue = make_queue(batch, "q", [ce], priority=7, tags={"tier": "gold"})
        make_definition(batch, "d")
        second = make_definition(batch, "d", command=["echo", "two"])
        batch.deregister_job_definition(jobDefinition="d:1")
        policy = batch.create_scheduling_policy(
            name="fs", fairsharePolicy={"shareDistribution": [{"shareIdentifier": "a"}]}
        )["arn"]
        job_id = batch.submit_job(jobName="j", jobQueue="q", jobDefinition="d")["jobId"]
        batch.cancel_job(jobId=job_id, reason="kept")
        before = {
            "ce": strip(batch.describe_compute_environments(computeEnvironments=["ce"])),
            "queue": strip(batch.describe_job_queues(jobQueues=["q"])),
            "defs": strip(batch.describe_job_definitions(jobDefinitionName="d")),
            "policy": strip(batch.describe_scheduling_policies(arns=[policy])),
            "job": strip(batch.describe_jobs(jobs=[job_id])),
        }
        assert len(before["defs"]["jobDefinitions"]) == 2
        assert before["queue"]["jobQueues"][0]["jobQueueArn"] == queue
    finally:
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert server.stop(signal.SIGTERM) in (0, -signal.SIGTERM)

    again = restart(server)
    try:
        batch = again.client()
        after = {
            "ce": strip(batch.describe_compute_environments(computeEnvironments=["ce"])),
            "queue": strip(batch.describe_job_queues(jobQueues=["q"])),
            "defs": strip(batch.describe_job_definitions(jobDefinitionName="d")),
            "policy": strip(batch.describe_scheduling_policies(arns=[policy])),
            "job": strip(batch.describe_jobs(jobs=[job_id])),
        }
        assert after == before
        assert after["ce"]["computeEnvironments"][0]["tags"] == {"team": "data"}
        assert after["queue"]["jobQueues"][0]["priority"] == 7
        statuses = {d["revision"]: d["status"] for d in after["defs"]["jobDefinitions"]}
        assert statuses == {1: "INACTIVE", 2: "ACTIVE"}
        assert after["job"]["jobs"][0]["statusReason"] == "kept"
        # Revision numbers continue after the restart, never reused.
        assert second.endswith("/d:2")
        third = make_definition(batch, "d")
        assert third.endswith("/d:3")
        # And the restored queue and definition accept jobs.
        new = batch.submit_job(jobName="j2", jobQueue="q", jobDefinition="d")["jobId"]
        [detail] = batch.describe_jobs(jobs=[new])["jobs"]
        assert detail["jobDefinition"] == third
    finally:
        again.stop()


def test_invocation_id_survives_sigkill_restart(tmp_path: Path) -> None:
    """A reply lost to a crash: the SDK's retry reaches the restarted server."""
    server = start_server(tmp_path)
    token = str(uuid.uuid4())
    body = {"jobName": "once", "jobQueue": "q", "jobDefinition": "d"}
    try:
        setup_queue(server.client())
        first = raw_submit(server, body, token)
    finally:
        assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    again = restart(server)
    try:
        assert raw_submit(again, body, token) == first
        assert raw_submit(again, body, str(uuid.uuid4()))["jobId"] != first["jobId"]
        assert count_submitted(again.client()) == 2
    finally:
        again.stop()


def raw_submit(server: Server, body: dict[str, Any], invocation_id: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(
            "POST",
            "/v1/submitjob",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", "amz-sdk-invocation-id": invocation_id},
        )
        response = conn.getresponse()
        payload: dict[str, Any] = json.loads(response.read())
        assert response.status == 200, payload
        return payload
    finally:
        conn.close()
