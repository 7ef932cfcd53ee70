"""The wire itself: bad bodies, bad types, unknown paths, error encoding.

Every rejected request must come back as a 4xx with `{"__type", "message"}` and
`x-amzn-ErrorType`, never a 5xx or a traceback, and must leave the store as it
was.
"""

from __future__ import annotations

import base64
import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import boto3
import pytest
from botocore.config import Config
from conftest import CREDENTIALS, REGION, Server, make_ce, make_definition, make_queue

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"
SEED = "wireseed"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    server: Server,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    if isinstance(body, dict | list):
        body = json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json"} if body is not None else {}
    all_headers.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


def assert_error(reply: Reply, status: int, code: str, *words: str) -> str:
    """An AWS-shaped error: status, type in body and header, a telling message."""
    assert reply.status == status, reply
    assert 400 <= reply.status < 500
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-amzn-errortype"] == code
    assert reply.headers.get("x-amzn-requestid")
    text = reply.body.decode()
    assert "Traceback" not in text
    assert 'File "' not in text
    doc = reply.json()
    assert set(doc) == {"__type", "message"}
    assert doc["__type"] == code
    message: str = doc["message"]
    for word in words:
        assert word in message, (word, message)
    return message


def snapshot(batch: Any) -> dict[str, Any]:
    """Everything a rejected request must not change."""

    def collect(operation: str, key: str) -> list[Any]:
        pages = batch.get_paginator(operation).paginate()
        return [item for page in pages for item in page[key]]

    return {
        "ce": collect("describe_compute_environments", "computeEnvironments"),
        "queues": collect("describe_job_queues", "jobQueues"),
        "definitions": collect("describe_job_definitions", "jobDefinitions"),
        "policies": collect("list_scheduling_policies", "schedulingPolicies"),
    }


def assert_no_server_traceback(server: Server) -> None:
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "ServerException" not in log


def token(operation: str, key: Any) -> str:
    raw = json.dumps({"op": operation, "k": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.fixture(scope="module")
def seeded(batch: Any) -> dict[str, str]:
    """A few resources, so that 'unchanged' means something."""
    ce = make_ce(batch, f"{SEED}-ce")
    queue = make_queue(batch, f"{SEED}-q", [ce], priority=5)
    definition = make_definition(batch, f"{SEED}-def")
    policy = batch.create_scheduling_policy(name=f"{SEED}-sp")["arn"]
    return {"ce": ce, "queue": queue, "definition": definition, "policy": policy}


_QUEUE_ARN_ENC = quote(f"{ARN_PREFIX}:job-queue/{SEED}-q", safe="")
_CE_ORDER = [{"order": 1, "computeEnvironment": f"{SEED}-ce"}]

# (id, method, path, body, status, code, words in the message)
BAD: list[tuple[str, str, str, Any, int, str, tuple[str, ...]]] = [
    # -- bodies that are not a JSON object --
    (
        "malformed-json",
        "POST",
        "/v1/createcomputeenvironment",
        b'{"computeEnvironmentName": "wire-x", "type": "UNMANAGED"',
        400,
        "ClientException",
        ("not valid JSON",),
    ),
    (
        "json-array",
        "POST",
        "/v1/createcomputeenvironment",
        [{"computeEnvironmentName": "wire-x", "type": "UNMANAGED"}],
        400,
        "ClientException",
        ("JSON object",),
    ),
    ("json-string", "POST", "/v1/createjobqueue", b'"q"', 400, "ClientException", ("object",)),
    ("json-null", "POST", "/v1/createjobqueue", b"null", 400, "ClientException", ("object",)),
    (
        "invalid-utf8",
        "POST",
        "/v1/createcomputeenvironment",
        b'{"computeEnvironmentName": "\xff\xfe", "type": "UNMANAGED"}',
        400,
        "ClientException",
        ("not valid JSON",),
    ),
    (
        "too-deep",
        "POST",
        "/v1/describecomputeenvironments",
        b'{"computeEnvironments": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        400,
        "ClientException",
        ("not valid JSON",),
    ),
    (
        "lone-surrogate",
        "POST",
        "/v1/createcomputeenvironment",
        b'{"computeEnvironmentName": "\\ud800", "type": "UNMANAGED"}',
        400,
        "ClientException",
        ("not valid JSON",),
    ),
    # -- members of the wrong type --
    (
        "string-for-integer",
        "POST",
        "/v1/createjobqueue",
        {"jobQueueName": "wire-q", "priority": "1", "computeEnvironmentOrder": _CE_ORDER},
        400,
        "ClientException",
        ("priority", "expected integer", "got string"),
    ),
    (
        "integer-for-string",
        "POST",
        "/v1/createcomputeenvironment",
        {"computeEnvironmentName": 42, "type": "UNMANAGED"},
        400,
        "ClientException",
        ("computeEnvironmentName", "expected string", "got number"),
    ),
    (
        "boolean-for-integer",
        "POST",
        "/v1/updatejobqueue",
        {"jobQueue": f"{SEED}-q", "priority": True},
        400,
        "ClientException",
        ("priority", "expected integer", "got boolean"),
    ),
    (
        "float-for-integer",
        "POST",
        "/v1/updatejobqueue",
        {"jobQueue": f"{SEED}-q", "priority": 1.5},
        400,
        "ClientException",
        ("priority", "expected integer"),
    ),
    (
        "nested-string-for-integer",
        "POST",
        "/v1/createcomputeenvironment",
        {
            "computeEnvironmentName": "wire-x",
            "type": "MANAGED",
            "computeResources": {"type": "EC2", "maxvCpus": "4"},
        },
        400,
        "ClientException",
        ("computeResources.maxvCpus", "expected integer"),
    ),
    (
        "list-for-structure",
        "POST",
        "/v1/registerjobdefinition",
        {"jobDefinitionName": "wire-d", "type": "container", "containerProperties": []},
        400,
        "ClientException",
        ("containerProperties", "expected object", "got list"),
    ),
    (
        "string-for-list",
        "POST",
        "/v1/registerjobdefinition",
        {
            "jobDefinitionName": "wire-d",
            "type": "container",
            "containerProperties": {"image": "busybox", "command": "echo hi"},
        },
        400,
        "ClientException",
        ("containerProperties.command", "expected list"),
    ),
    (
        "number-in-string-map",
        "POST",
        f"/v1/tags/{_QUEUE_ARN_ENC}",
        {"tags": {"a": 1}},
        400,
        "ClientException",
        ("tags.a", "expected string"),
    ),
    (
        "bad-enum",
        "POST",
        "/v1/createcomputeenvironment",
        {"computeEnvironmentName": "wire-x", "type": "managed"},
        400,
        "ClientException",
        ("type", "'managed'", "MANAGED, UNMANAGED"),
    ),
    (
        "integer-out-of-range",
        "POST",
        "/v1/updatejobqueue",
        {"jobQueue": f"{SEED}-q", "priority": 2**31},
        400,
        "ClientException",
        ("priority", "out of range"),
    ),
    (
        "integer-beyond-64-bits",
        "POST",
        "/v1/createcomputeenvironment",
        b'{"computeEnvironmentName": "wire-x", "type": "MANAGED", '
        b'"computeResources": {"type": "EC2", "maxvCpus": 18446744073709551615}}',
        400,
        "ClientException",
        ("maxvCpus", "out of range"),
    ),
    # -- missing required members --
    (
        "missing-priority",
        "POST",
        "/v1/createjobqueue",
        {"jobQueueName": "wire-q", "computeEnvironmentOrder": _CE_ORDER},
        400,
        "ClientException",
        ("Missing required parameter priority",),
    ),
    (
        "missing-nested-maxvcpus",
        "POST",
        "/v1/createcomputeenvironment",
        {
            "computeEnvironmentName": "wire-x",
            "type": "MANAGED",
            "computeResources": {"type": "EC2"},
        },
        400,
        "ClientException",
        ("Missing required parameter computeResources.maxvCpus",),
    ),
    (
        "missing-type",
        "POST",
        "/v1/registerjobdefinition",
        {"jobDefinitionName": "wire-d", "containerProperties": {"image": "busybox"}},
        400,
        "ClientException",
        ("Missing required parameter type",),
    ),
    (
        "empty-body-delete",
        "POST",
        "/v1/deletecomputeenvironment",
        b"",
        400,
        "ClientException",
        ("Missing required parameter computeEnvironment",),
    ),
    (
        "untag-without-keys",
        "DELETE",
        f"/v1/tags/{_QUEUE_ARN_ENC}",
        None,
        400,
        "ClientException",
        ("tagKeys",),
    ),
    (
        "tag-without-tags",
        "POST",
        f"/v1/tags/{_QUEUE_ARN_ENC}",
        {},
        400,
        "ClientException",
        ("Missing required parameter tags",),
    ),
    # -- paths and methods --
    (
        "unknown-operation",
        "POST",
        "/v1/nosuchop",
        {},
        404,
        "UnknownOperationException",
        ("/v1/nosuchop",),
    ),
    (
        "unknown-top-level-get",
        "GET",
        "/nothing/here",
        None,
        404,
        "UnknownOperationException",
        ("/nothing/here",),
    ),
    (
        "unknown-top-level-post",
        "POST",
        "/createcomputeenvironment",
        {"computeEnvironmentName": "wire-x", "type": "UNMANAGED"},
        404,
        "UnknownOperationException",
        ("/createcomputeenvironment",),
    ),
    (
        "unknown-under-prefix",
        "POST",
        "/prefix/v1/nosuchop",
        {},
        404,
        "UnknownOperationException",
        ("/v1/nosuchop",),
    ),
    (
        "get-on-post-operation",
        "GET",
        "/v1/createcomputeenvironment",
        None,
        405,
        "ClientException",
        ("CreateComputeEnvironment", "POST"),
    ),
    ("put-on-tags", "PUT", f"/v1/tags/{_QUEUE_ARN_ENC}", None, 405, "ClientException", ("PUT",)),
    ("tags-bad-arn", "GET", "/v1/tags/%ZZnot-an-arn", None, 400, "ClientException", ("%ZZ",)),
    # -- values that parse but name nothing sensible --
    (
        "forged-ce-token",
        "POST",
        "/v1/describecomputeenvironments",
        {"nextToken": token("DescribeComputeEnvironments", {"a": 1})},
        400,
        "ClientException",
        ("nextToken",),
    ),
    (
        "forged-queue-token",
        "POST",
        "/v1/describejobqueues",
        {"nextToken": token("DescribeJobQueues", [1, 2])},
        400,
        "ClientException",
        ("nextToken",),
    ),
    (
        "forged-policy-token",
        "POST",
        "/v1/listschedulingpolicies",
        {"nextToken": token("ListSchedulingPolicies", {"a": 1})},
        400,
        "ClientException",
        ("nextToken",),
    ),
    (
        "forged-definition-token-int",
        "POST",
        "/v1/describejobdefinitions",
        {"nextToken": token("DescribeJobDefinitions", 5)},
        400,
        "ClientException",
        ("nextToken",),
    ),
    (
        "forged-definition-token-short",
        "POST",
        "/v1/describejobdefinitions",
        {"nextToken": token("DescribeJobDefinitions", ["x"])},
        400,
        "ClientException",
        ("nextToken",),
    ),
    (
        "huge-revision-describe",
        "POST",
        "/v1/describejobdefinitions",
        {"jobDefinitions": [f"{SEED}-def:99999999999999999999"]},
        400,
        "ClientException",
        ("99999999999999999999", "out of range"),
    ),
    (
        "huge-revision-deregister",
        "POST",
        "/v1/deregisterjobdefinition",
        {"jobDefinition": f"{SEED}-def:99999999999999999999"},
        400,
        "ClientException",
        ("out of range",),
    ),
    (
        "huge-revision-tags",
        "GET",
        "/v1/tags/"
        + quote(f"{ARN_PREFIX}:job-definition/{SEED}-def:99999999999999999999", safe=""),
        None,
        400,
        "ClientException",
        ("out of range",),
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "words"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_rejected_request(
    server: Server,
    batch: Any,
    seeded: dict[str, str],
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    words: tuple[str, ...],
) -> None:
    before = snapshot(batch)
    reply = send(server, method, path, body)
    assert_error(reply, status, code, *words)
    assert snapshot(batch) == before
    assert_no_server_traceback(server)


def test_botocore_maps_server_side_type_errors(server: Server, seeded: dict[str, str]) -> None:
    """With client-side validation off, the server's 400 still reaches the caller
    as the modelled ClientException."""
    unchecked = server.client(parameter_validation=False)
    before = snapshot(unchecked)
    with pytest.raises(unchecked.exceptions.ClientException) as info:
        unchecked.update_job_queue(jobQueue=f"{SEED}-q", priority="9")
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "priority" in error["Error"]["Message"]
    with pytest.raises(unchecked.exceptions.ClientException) as info:
        unchecked.create_job_queue(jobQueueName="wire-missing")
    assert "Missing required parameter priority" in info.value.response["Error"]["Message"]
    assert snapshot(unchecked) == before
    [queue] = unchecked.describe_job_queues(jobQueues=[f"{SEED}-q"])["jobQueues"]
    assert queue["priority"] == 5


def test_unknown_members_are_ignored(server: Server, batch: Any, unique: str) -> None:
    body = {
        "computeEnvironmentName": unique,
        "type": "MANAGED",
        "futureTopLevel": {"anything": [1, 2, 3]},
        "state": None,  # null is the same as absent
        "computeResources": {
            "type": "EC2",
            "minvCpus": 0,
            "maxvCpus": 8,
            "futureNested": "ignored",
        },
    }
    reply = send(server, "POST", "/v1/createcomputeenvironment", body)
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "computeEnvironmentName": unique,
        "computeEnvironmentArn": f"{ARN_PREFIX}:compute-environment/{unique}",
    }
    [ce] = batch.describe_compute_environments(computeEnvironments=[unique])["computeEnvironments"]
    assert ce["state"] == "ENABLED"
    assert ce["computeResources"] == {"type": "EC2", "minvCpus": 0, "maxvCpus": 8}
    assert "futureTopLevel" not in ce

    # And an empty body is an input with no members.
    reply = send(server, "POST", "/v1/describejobqueues", b"")
    assert reply.status == 200
    assert "jobQueues" in reply.json()


def test_success_responses_carry_request_id(server: Server) -> None:
    reply = send(server, "POST", "/v1/describecomputeenvironments", {})
    assert reply.status == 200
    assert reply.headers.get("x-amzn-requestid")
    assert "x-amzn-errortype" not in reply.headers


def test_endpoint_url_with_path_prefix(server: Server, unique: str) -> None:
    prefixed = boto3.client(
        "batch",
        endpoint_url=server.url + "/prefix",
        region_name=REGION,
        config=Config(retries={"max_attempts": 1}),
        **CREDENTIALS,
    )
    paths: list[str] = []
    prefixed.meta.events.register(
        "before-send.batch.*", lambda request, **_: paths.append(request.url)
    )
    ce = make_ce(prefixed, f"{unique}-ce")
    queue = make_queue(prefixed, f"{unique}-q", [ce])
    definition = make_definition(prefixed, f"{unique}-def")
    [found] = prefixed.describe_job_queues(jobQueues=[queue])["jobQueues"]
    assert found["computeEnvironmentOrder"] == [{"order": 1, "computeEnvironment": ce}]
    prefixed.tag_resource(resourceArn=definition, tags={"via": "prefix"})
    assert prefixed.list_tags_for_resource(resourceArn=definition)["tags"] == {"via": "prefix"}
    assert paths
    assert all(p.startswith(server.url + "/prefix/v1/") for p in paths)

    # Errors keep their shape through the prefix too.
    with pytest.raises(prefixed.exceptions.ClientException) as info:
        prefixed.update_job_queue(jobQueue=f"{unique}-nope", priority=1)
    assert info.value.response["Error"]["Message"] == f"JobQueue {unique}-nope not found."
