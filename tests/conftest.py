"""Fixtures that start a real `shoal server` and point real clients at it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "AKIDSHOALTEST", "aws_secret_access_key": "secret"}


ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"


def client_error(call: Callable[..., Any], **kwargs: Any) -> str:
    """Call, expect a ClientException (HTTP 400), return its message."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    assert response["Error"]["Code"] == "ClientException", response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = response["Error"]["Message"]
    return message


def poll(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 15.0) -> Any:
    """Call `fetch` until `done(result)` or the deadline; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {timeout}s; last: {value!r}")
        time.sleep(0.05)


def walk_pages(
    call: Callable[..., Any], key: str, page_size: int, **kwargs: Any
) -> tuple[list[Any], list[str]]:
    """Follow nextToken by hand: every item of every page, and the tokens seen.
    Asserts each page respects `page_size` and no token comes back twice."""
    items: list[Any] = []
    tokens: list[str] = []
    while True:
        page = call(maxResults=page_size, **kwargs)
        assert len(page[key]) <= page_size
        items.extend(page[key])
        token = page.get("nextToken")
        if not token:
            return items, tokens
        assert token not in tokens
        tokens.append(token)
        kwargs["nextToken"] = token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A `shoal server` subprocess on a free loopback port."""

    data_dir: Path
    args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Server:
        self.port = free_port()
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shoal",
                "server",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            # A server that will not stop prints where each thread is (stop()).
            env={**os.environ, "PYTHONFAULTHANDLER": "1"},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"shoal server exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("shoal server did not become healthy in time")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack
            self.proc.wait()
            assert self.log_path is not None
            tail = self.log_path.read_text(errors="replace")[-6000:]
            raise AssertionError(f"shoal server did not stop in {timeout} s:\n{tail}") from None

    def client(self, service: str = "batch", **config: Any) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            config=Config(**config) if config else None,
            **CREDENTIALS,
        )


def start_server(tmp_path: Path, *args: str) -> Server:
    """A server on a fresh data dir. It serves the API only (`--no-engine`:
    jobs stay where the control plane puts them) unless `--engine` is given."""
    flags = list(args) if "--engine" in args else [*args, "--no-engine"]
    return Server(data_dir=tmp_path / "data", args=flags).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per test module; tests use unique names (see `unique`)."""
    srv = start_server(tmp_path_factory.mktemp("shoal"), "--min-timeout-seconds", "1")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def batch(server: Server) -> Any:
    return server.client()


@pytest.fixture
def unique() -> str:
    """A name prefix no other test uses."""
    return "t" + uuid.uuid4().hex[:10]


def aws_cli(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the real aws CLI against the server, configured only by environment."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": server.url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
    }
    aws = str(Path(sys.executable).parent / "aws")
    result = subprocess.run(
        [aws, *args, "--output", "json"], env=env, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"aws {' '.join(args)} failed: {result.stderr}")
    return result


# -- small builders shared by the tests ---------------------------------------


def make_ce(batch: Any, name: str, *, kind: str = "EC2", max_vcpus: int = 16, **kw: Any) -> str:
    resources: dict[str, Any] = {"type": kind, "maxvCpus": max_vcpus}
    if kind not in ("FARGATE", "FARGATE_SPOT"):
        resources["minvCpus"] = 0
    arn: str = batch.create_compute_environment(
        computeEnvironmentName=name, type="MANAGED", computeResources=resources, **kw
    )["computeEnvironmentArn"]
    return arn


def make_queue(batch: Any, name: str, ces: list[str], *, priority: int = 1, **kw: Any) -> str:
    arn: str = batch.create_job_queue(
        jobQueueName=name,
        priority=priority,
        computeEnvironmentOrder=[
            {"order": i + 1, "computeEnvironment": ce} for i, ce in enumerate(ces)
        ],
        **kw,
    )["jobQueueArn"]
    return arn


def make_definition(batch: Any, name: str, **container: Any) -> str:
    props: dict[str, Any] = {
        "image": "busybox",
        "command": ["true"],
        "resourceRequirements": [
            {"type": "VCPU", "value": "1"},
            {"type": "MEMORY", "value": "128"},
        ],
    }
    props.update(container)
    arn: str = batch.register_job_definition(
        jobDefinitionName=name, type="container", containerProperties=props
    )["jobDefinitionArn"]
    return arn


@pytest.fixture
def env(batch: Any, unique: str) -> dict[str, str]:
    """A compute environment, a queue on it and a definition, all fresh."""
    ce = make_ce(batch, f"{unique}-ce")
    queue = make_queue(batch, f"{unique}-q", [ce])
    definition = make_definition(batch, f"{unique}-def")
    return {
        "ce": ce,
        "queue": queue,
        "queue_name": f"{unique}-q",
        "definition": definition,
        "definition_name": f"{unique}-def",
    }


def fails_cleanly(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    """Exit 1 with a one-line message, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
