"""Authentication and authorization on a live server started with access
keys: real boto3 clients and the aws CLI sign with right and wrong keys;
each rule answers as AWS does and a refused request changes nothing. Also
the safe default: without keys the server keeps to loopback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import REGION, Server, free_port, make_ce, make_definition, make_queue

ADMIN = ("AKIDADMIN0000000001", "admin-secret")
READER = ("AKIDREAD00000000001", "read-secret")
SUBMITTER = ("AKIDSUBMIT000000001", "submit-secret")
TEMPORARY = ("ASIATEMP00000000001", "temp-secret", "the-session-token")
LIMITED = ("AKIDLIMIT0000000001", "limit-secret")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("auth")
    credentials = tmp / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "keys": [
                    {"accessKeyId": ADMIN[0], "secretAccessKey": ADMIN[1], "role": "admin"},
                    {"accessKeyId": READER[0], "secretAccessKey": READER[1], "role": "read"},
                    {
                        "accessKeyId": SUBMITTER[0],
                        "secretAccessKey": SUBMITTER[1],
                        "role": "submit",
                        "queues": ["open-q"],
                    },
                    {
                        "accessKeyId": TEMPORARY[0],
                        "secretAccessKey": TEMPORARY[1],
                        "sessionToken": TEMPORARY[2],
                        "role": "admin",
                    },
                ]
            }
        )
    )
    srv = Server(data_dir=tmp / "data", args=["--no-engine", "--credentials", str(credentials)])
    srv.start()
    yield srv
    srv.stop()


def client(server: Server, key: tuple[str, ...], service: str = "batch", **config: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        aws_session_token=key[2] if len(key) > 2 else None,
        config=Config(retries={"max_attempts": 1}, **config),
    )


def error(call: Any, **kwargs: Any) -> tuple[str, int, str]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    response = info.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


@pytest.fixture(scope="module")
def admin(server: Server) -> Any:
    batch = client(server, ADMIN)
    for queue in ("open-q", "closed-q"):
        ce = make_ce(batch, f"{queue}-ce")
        make_queue(batch, queue, [ce])
    make_definition(batch, "def")
    return batch


def test_the_right_keys_work_for_every_service(server: Server, admin: Any) -> None:
    assert admin.describe_job_queues()["jobQueues"]
    logs = client(server, ADMIN, "logs")
    assert "logGroups" in logs.describe_log_groups()
    events = client(server, ADMIN, "events")
    events.put_rule(Name="signed", ScheduleExpression="rate(1 day)")
    assert events.describe_rule(Name="signed")["Name"] == "signed"


def test_an_unknown_key_is_refused(server: Server, admin: Any) -> None:
    code, status, message = error(client(server, ("AKIDNOBODY000000001", "x")).describe_job_queues)
    assert (code, status) == ("UnrecognizedClientException", 403)
    assert message == "The security token included in the request is invalid."


def test_a_wrong_secret_is_refused_and_changes_nothing(server: Server, admin: Any) -> None:
    forged = client(server, (ADMIN[0], "not-the-secret"))
    code, status, _ = error(
        forged.submit_job, jobName="forged", jobQueue="open-q", jobDefinition="def"
    )
    assert (code, status) == ("InvalidSignatureException", 403)
    assert admin.list_jobs(jobQueue="open-q", jobStatus="SUBMITTED")["jobSummaryList"] == []


def test_session_tokens_must_match(server: Server, admin: Any) -> None:
    assert client(server, TEMPORARY).describe_job_queues()["jobQueues"]
    code, status, _ = error(client(server, (*TEMPORARY[:2], "another-token")).describe_job_queues)
    assert (code, status) == ("UnrecognizedClientException", 403)
    code, _, _ = error(client(server, TEMPORARY[:2]).describe_job_queues)  # no token at all
    assert code == "UnrecognizedClientException"


def test_an_unsigned_request_is_refused(server: Server, admin: Any) -> None:
    request = urllib.request.Request(
        server.url + "/v1/describejobqueues", data=b"{}", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 403
    assert json.loads(info.value.read())["__type"] == "MissingAuthenticationTokenException"
    # /health stays open: load balancers and tests probe it.
    with urllib.request.urlopen(server.url + "/health", timeout=10) as reply:
        assert reply.status == 200


def test_a_clock_too_far_off_is_refused(server: Server, admin: Any) -> None:
    # A signature made 20 minutes ago, sent now, by botocore's own signer.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(
        method="POST",
        url=server.url + "/v1/describejobqueues",
        data=b"{}",
        headers={"Content-Type": "application/json"},
    )
    auth = SigV4Auth(Credentials(*ADMIN), "batch", REGION)
    import datetime as dt
    import unittest.mock

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=20)
    with unittest.mock.patch("botocore.auth.get_current_datetime", return_value=past):
        auth.add_auth(request)
    prepared = request.prepare()
    sent = urllib.request.Request(
        prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(sent, timeout=10)
    body = json.loads(info.value.read())
    assert (info.value.code, body["__type"]) == (403, "InvalidSignatureException")
    assert body["message"].startswith("Signature expired:")


def test_a_read_only_key_reads_and_may_not_write(server: Server, admin: Any) -> None:
    reader = client(server, READER)
    assert reader.describe_compute_environments()["computeEnvironments"]
    assert reader.list_jobs(jobQueue="open-q")["jobSummaryList"] == []
    code, status, message = error(
        reader.submit_job, jobName="nope", jobQueue="open-q", jobDefinition="def"
    )
    assert (code, status) == ("AccessDeniedException", 403)
    assert "SubmitJob" in message and READER[0] in message
    code, _, _ = error(
        reader.create_job_queue,
        jobQueueName="x",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": "open-q-ce"}],
    )
    assert code == "AccessDeniedException"
    assert not admin.describe_job_queues(jobQueues=["x"])["jobQueues"]
    events = client(server, READER, "events")
    assert error(events.put_rule, Name="r", ScheduleExpression="rate(1 day)")[0] == (
        "AccessDeniedException"
    )


def test_a_submit_key_submits_to_its_queues_only(server: Server, admin: Any) -> None:
    submitter = client(server, SUBMITTER)
    job = submitter.submit_job(jobName="mine", jobQueue="open-q", jobDefinition="def")
    submitter.cancel_job(jobId=job["jobId"], reason="changed my mind")
    code, status, message = error(
        submitter.submit_job, jobName="theirs", jobQueue="closed-q", jobDefinition="def"
    )
    assert (code, status) == ("AccessDeniedException", 403)
    assert "closed-q" in message
    other = admin.submit_job(jobName="other", jobQueue="closed-q", jobDefinition="def")
    code, _, _ = error(submitter.terminate_job, jobId=other["jobId"], reason="not mine")
    assert code == "AccessDeniedException"
    assert admin.describe_jobs(jobs=[other["jobId"]])["jobs"][0]["status"] == "SUBMITTED"
    code, _, _ = error(submitter.update_job_queue, jobQueue="open-q", priority=9)
    assert code == "AccessDeniedException"


def test_the_aws_cli_signs_and_is_checked(server: Server, admin: Any) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ENDPOINT_URL": server.url,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_PAGER": "",
    }
    aws = str(Path(sys.executable).parent / "aws")
    ok = subprocess.run(
        [aws, "batch", "describe-job-queues"],
        env={**env, "AWS_ACCESS_KEY_ID": READER[0], "AWS_SECRET_ACCESS_KEY": READER[1]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [aws, "batch", "describe-job-queues"],
        env={**env, "AWS_ACCESS_KEY_ID": READER[0], "AWS_SECRET_ACCESS_KEY": "wrong"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "InvalidSignatureException" in bad.stderr


def test_metrics_take_basic_authentication_with_a_key(server: Server, admin: Any) -> None:
    def get(authorization: str | None) -> int:
        request = urllib.request.Request(server.url + "/metrics")
        if authorization:
            request.add_header("Authorization", authorization)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def basic(key: str, secret: str) -> str:
        return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()

    assert get(None) == 401  # asks for a login
    assert get(basic(READER[0], "wrong")) == 403
    assert get(basic(*READER)) == 200


def test_without_keys_the_server_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoal",
            "server",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
            "--data-dir",
            str(tmp_path / "data"),
            "--no-engine",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--credentials" in result.stderr


def test_a_key_over_its_rate_is_throttled(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "keys": [{"accessKeyId": LIMITED[0], "secretAccessKey": LIMITED[1]}],
                "rateLimit": {"requestsPerSecond": 1, "burst": 3},
            }
        )
    )
    srv = Server(
        data_dir=tmp_path / "data", args=["--no-engine", "--credentials", str(credentials)]
    )
    srv.start()
    try:
        batch = client(srv, LIMITED)
        codes = []
        for _ in range(8):
            try:
                batch.describe_job_queues()
                codes.append("ok")
            except ClientError as e:
                codes.append(e.response["Error"]["Code"])
                assert e.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        # The burst passes; the rest, sent faster than one a second, do not all.
        assert codes[:3] == ["ok", "ok", "ok"]
        assert "TooManyRequestsException" in codes[3:]
    finally:
        srv.stop()
