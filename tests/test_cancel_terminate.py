"""CancelJob / TerminateJob and the bulk CancelJobs / TerminateJobs.

Nothing runs jobs yet, so every job here is SUBMITTED (queued) until it is
cancelled or terminated, and then FAILED with the caller's reason.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

FLAG = {"cancel": "isCancelled", "terminate": "isTerminated"}
OTHER_FLAG = {"cancel": "isTerminated", "terminate": "isCancelled"}


def submit(batch: Any, env: dict[str, str], name: str = "job", **kwargs: Any) -> str:
    job_id: str = batch.submit_job(
        jobName=name, jobQueue=env["queue"], jobDefinition=env["definition_name"], **kwargs
    )["jobId"]
    return job_id


def describe(batch: Any, job_id: str) -> dict[str, Any]:
    [detail] = batch.describe_jobs(jobs=[job_id])["jobs"]
    result: dict[str, Any] = detail
    return result


def stop(batch: Any, kind: str, job_id: str, reason: str) -> dict[str, Any]:
    call = batch.cancel_job if kind == "cancel" else batch.terminate_job
    response: dict[str, Any] = call(jobId=job_id, reason=reason)
    return response


def rejected(batch: Any, call: Any, **kwargs: Any) -> str:
    with pytest.raises(batch.exceptions.ClientException) as info:
        call(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = info.value.response["Error"]["Message"]
    return message


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_stop_submitted_job(batch: Any, env: dict[str, str], kind: str) -> None:
    job_id = submit(batch, env)
    other = submit(batch, env, "bystander")
    before = int(time.time() * 1000)
    response = stop(batch, kind, job_id, f"{kind}led by test")
    after = int(time.time() * 1000)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert {k: v for k, v in response.items() if k != "ResponseMetadata"} == {}

    detail = describe(batch, job_id)
    assert detail["status"] == "FAILED"
    assert detail["statusReason"] == f"{kind}led by test"
    assert detail[FLAG[kind]] is True
    assert OTHER_FLAG[kind] not in detail
    stopped = detail["stoppedAt"]
    assert type(stopped) is int
    assert detail["createdAt"] <= stopped
    assert before - 1000 <= stopped <= after + 1000
    assert "startedAt" not in detail
    assert detail["attempts"] == []

    # ListJobs shows it under FAILED, with the flag; the other job is untouched.
    failed = batch.list_jobs(jobQueue=env["queue"], jobStatus="FAILED")["jobSummaryList"]
    assert [(j["jobId"], j["statusReason"], j[FLAG[kind]]) for j in failed] == [
        (job_id, f"{kind}led by test", True)
    ]
    submitted = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED")["jobSummaryList"]
    assert [j["jobId"] for j in submitted] == [other]
    assert describe(batch, other)["status"] == "SUBMITTED"


@pytest.mark.parametrize("first", ["cancel", "terminate"])
@pytest.mark.parametrize("second", ["cancel", "terminate"])
def test_stopping_a_failed_job_is_a_noop(
    batch: Any, env: dict[str, str], first: str, second: str
) -> None:
    job_id = submit(batch, env)
    stop(batch, first, job_id, "first reason")
    before = describe(batch, job_id)
    response = stop(batch, second, job_id, "second reason")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    after = describe(batch, job_id)
    assert after == before
    assert after["statusReason"] == "first reason"
    assert after[FLAG[first]] is True
    if first != second:
        assert FLAG[second] not in after


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_stop_array_parent(batch: Any, env: dict[str, str], kind: str) -> None:
    parent = submit(batch, env, "array", arrayProperties={"size": 3})
    stop(batch, kind, parent, "no longer needed")
    detail = describe(batch, parent)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "no longer needed")
    assert detail[FLAG[kind]] is True
    assert detail["arrayProperties"]["size"] == 3


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
@pytest.mark.parametrize("job_id", ["missing", "uuid", "uuid:0"])
def test_stop_unknown_job(batch: Any, kind: str, job_id: str) -> None:
    ref = {"missing": "no-such-job", "uuid": str(uuid.uuid4()), "uuid:0": f"{uuid.uuid4()}:0"}[
        job_id
    ]
    call = batch.cancel_job if kind == "cancel" else batch.terminate_job
    message = rejected(batch, call, jobId=ref, reason="r")
    assert ref in message


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_reason_length(batch: Any, env: dict[str, str], kind: str) -> None:
    job_id = submit(batch, env)
    call = batch.cancel_job if kind == "cancel" else batch.terminate_job
    rejected(batch, call, jobId=job_id, reason="r" * 1025)
    assert describe(batch, job_id)["status"] == "SUBMITTED"
    call(jobId=job_id, reason="r" * 1024)
    detail = describe(batch, job_id)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "r" * 1024)


# -- CancelJobs / TerminateJobs (boto3 only: the aws CLI v1 model lacks them) -----


def bulk(batch: Any, kind: str, jobs: list[str], reason: str) -> dict[str, Any]:
    call = batch.cancel_jobs if kind == "cancel" else batch.terminate_jobs
    response: dict[str, Any] = call(jobs=jobs, reason=reason)
    return response


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_bulk_stop(batch: Any, env: dict[str, str], kind: str) -> None:
    targets = [submit(batch, env, f"t{i}") for i in range(3)]
    spared = submit(batch, env, "spared")
    unknown = [str(uuid.uuid4()), "not-a-job"]
    response = bulk(batch, kind, [targets[0], unknown[0], targets[1], unknown[1], targets[2]], "b")
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sorted(response["successful"]) == sorted(targets + unknown)
    assert response["errors"] == []
    for job_id in targets:
        detail = describe(batch, job_id)
        assert (detail["status"], detail["statusReason"]) == ("FAILED", "b")
        assert detail[FLAG[kind]] is True
        assert type(detail["stoppedAt"]) is int
    assert describe(batch, spared)["status"] == "SUBMITTED"
    assert batch.describe_jobs(jobs=unknown)["jobs"] == []


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_bulk_on_failed_jobs_is_a_noop(batch: Any, env: dict[str, str], kind: str) -> None:
    job_id = submit(batch, env)
    batch.cancel_job(jobId=job_id, reason="earlier")
    before = describe(batch, job_id)
    response = bulk(batch, kind, [job_id], "later")
    assert response["successful"] == [job_id]
    assert response["errors"] == []
    assert describe(batch, job_id) == before


@pytest.mark.parametrize("kind", ["cancel", "terminate"])
def test_bulk_limits(batch: Any, env: dict[str, str], kind: str) -> None:
    job_id = submit(batch, env)
    call = batch.cancel_jobs if kind == "cancel" else batch.terminate_jobs
    too_many = [job_id] + [str(uuid.uuid4()) for _ in range(50)]
    rejected(batch, call, jobs=too_many, reason="r")
    rejected(batch, call, jobs=[job_id], reason="r" * 1025)
    assert describe(batch, job_id)["status"] == "SUBMITTED"
    exactly_50 = [job_id] + [str(uuid.uuid4()) for _ in range(49)]
    response = call(jobs=exactly_50, reason="r" * 1024)
    assert sorted(response["successful"]) == sorted(exactly_50)
    detail = describe(batch, job_id)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "r" * 1024)
