"""SubmitJob idempotency on the SDK's `amz-sdk-invocation-id`.

botocore sends one invocation id per API call and keeps it on every retry,
so a retry after a lost reply must return the job created the first time.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from conftest import CREDENTIALS, REGION, Server


def raw_submit(server: Server, body: dict[str, Any], invocation_id: str | None) -> dict[str, Any]:
    """A plain POST /v1/submitjob, as botocore would send it (unsigned)."""
    headers = {"Content-Type": "application/json"}
    if invocation_id is not None:
        headers["amz-sdk-invocation-id"] = invocation_id
        headers["amz-sdk-request"] = "attempt=1; max=3"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/v1/submitjob", body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
        assert response.status == 200, payload
        assert response.getheader("Content-Type") == "application/json"
        result: dict[str, Any] = payload
        return result
    finally:
        conn.close()


def submitted(batch: Any, queue: str) -> list[str]:
    pages = batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus="SUBMITTED")
    return [s["jobId"] for page in pages for s in page["jobSummaryList"]]


def body(env: dict[str, str], name: str = "idem") -> dict[str, Any]:
    return {"jobName": name, "jobQueue": env["queue_name"], "jobDefinition": env["definition_name"]}


def test_same_invocation_id_returns_same_job(
    server: Server, batch: Any, env: dict[str, str]
) -> None:
    token = str(uuid.uuid4())
    first = raw_submit(server, body(env), token)
    second = raw_submit(server, body(env), token)
    assert second == first
    assert set(first) == {"jobArn", "jobName", "jobId"}
    assert submitted(batch, env["queue"]) == [first["jobId"]]


def test_different_invocation_ids_create_two_jobs(
    server: Server, batch: Any, env: dict[str, str]
) -> None:
    first = raw_submit(server, body(env), str(uuid.uuid4()))
    second = raw_submit(server, body(env), str(uuid.uuid4()))
    assert first["jobId"] != second["jobId"]
    assert sorted(submitted(batch, env["queue"])) == sorted([first["jobId"], second["jobId"]])


def test_no_invocation_id_creates_a_job_each_time(
    server: Server, batch: Any, env: dict[str, str]
) -> None:
    first = raw_submit(server, body(env), None)
    second = raw_submit(server, body(env), None)
    assert first["jobId"] != second["jobId"]
    assert len(submitted(batch, env["queue"])) == 2


def test_rejected_submit_does_not_consume_the_invocation_id(
    server: Server, batch: Any, env: dict[str, str]
) -> None:
    token = str(uuid.uuid4())
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        bad = {**body(env), "jobName": "-bad-name"}
        conn.request(
            "POST",
            "/v1/submitjob",
            body=json.dumps(bad),
            headers={"Content-Type": "application/json", "amz-sdk-invocation-id": token},
        )
        response = conn.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["__type"] == "ClientException"
    finally:
        conn.close()
    good = raw_submit(server, body(env), token)
    assert submitted(batch, env["queue"]) == [good["jobId"]]


# -- a real lost reply ------------------------------------------------------------


_INJECTED_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Content-Type: application/json\r\n"
    b"x-amzn-ErrorType: ServerException\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 53\r\n\r\n"
    b'{"__type":"ServerException","message":"injected 500"}'
)


class DropFirstSubmitReply:
    """A TCP proxy on 127.0.0.1 that forwards everything, except the reply to
    the first SubmitJob request, once it starts to arrive (the server has
    committed the job): `fault="drop"` drops the connection, `fault="500"`
    answers an AWS-shaped HTTP 500 in its place."""

    def __init__(self, upstream_port: int, fault: str = "drop") -> None:
        assert len(_INJECTED_500.split(b"\r\n\r\n", 1)[1]) == 53
        self.fault = fault
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.submits_seen = 0
        self.dropped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        _close(self.listener)  # shutdown() wakes the thread blocked in accept()
        with self._lock:
            for s in self._sockets:
                _close(s)
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets += [client, upstream]
            drop_reply = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, upstream, drop_reply), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(upstream, client, drop_reply), daemon=True
            ).start()

    def _requests(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        try:
            while chunk := src.recv(65536):
                if b"POST /v1/submitjob " in chunk:
                    with self._lock:
                        self.submits_seen += 1
                        if self.submits_seen == 1:
                            drop.set()  # before forwarding: the reply cannot beat it
                dst.sendall(chunk)
        except OSError:
            pass
        _close(dst)

    def _replies(self, src: socket.socket, dst: socket.socket, drop: threading.Event) -> None:
        try:
            while chunk := src.recv(65536):
                if drop.is_set():
                    assert chunk.startswith(b"HTTP/1.1 200"), chunk[:100]
                    self.dropped.set()
                    if self.fault == "500":
                        dst.sendall(_INJECTED_500)
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        _close(dst)
        _close(src)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()


@pytest.fixture(params=["drop", "500"])
def proxy(server: Server, request: pytest.FixtureRequest) -> Any:
    p = DropFirstSubmitReply(server.port, fault=request.param)
    yield p
    p.close()


@pytest.mark.parametrize("mode", ["standard", "legacy"])
def test_sdk_retry_after_lost_reply_creates_one_job(
    batch: Any, env: dict[str, str], proxy: DropFirstSubmitReply, mode: str
) -> None:
    """A dropped connection, or a 5xx, after the server committed the job."""
    through_proxy = boto3.client(
        "batch",
        endpoint_url=f"http://127.0.0.1:{proxy.port}",
        region_name=REGION,
        config=Config(retries={"mode": mode, "max_attempts": 3}, read_timeout=10),
        **CREDENTIALS,
    )
    response = through_proxy.submit_job(
        jobName="lost-reply", jobQueue=env["queue_name"], jobDefinition=env["definition_name"]
    )
    # The fault really happened: the first reply was dropped and the SDK retried.
    assert proxy.dropped.is_set()
    assert proxy.submits_seen == 2
    assert response["ResponseMetadata"]["RetryAttempts"] == 1
    # ...and the retry got the job the first attempt created: exactly one job.
    assert submitted(batch, env["queue"]) == [response["jobId"]]
    [detail] = batch.describe_jobs(jobs=[response["jobId"]])["jobs"]
    assert detail["jobName"] == "lost-reply"
    # Later calls through the same proxy and client are new jobs.
    again = through_proxy.submit_job(
        jobName="next", jobQueue=env["queue_name"], jobDefinition=env["definition_name"]
    )
    assert again["jobId"] != response["jobId"]
    assert sorted(submitted(batch, env["queue"])) == sorted([response["jobId"], again["jobId"]])
