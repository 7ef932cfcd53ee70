"""ListJobs over the wire: default status, scopes, filters, pagination."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest import make_queue

PREFIX = "arn:aws:batch:us-east-1:123456789012"


def rejected(batch: Any, **kwargs: Any) -> str:
    with pytest.raises(batch.exceptions.ClientException) as info:
        batch.list_jobs(**kwargs)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = info.value.response["Error"]["Message"]
    return message


def submit(batch: Any, env: dict[str, str], name: str, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("jobQueue", env["queue_name"])
    kwargs.setdefault("jobDefinition", env["definition_name"])
    response: dict[str, Any] = batch.submit_job(jobName=name, **kwargs)
    return response


def ids(batch: Any, **kwargs: Any) -> list[str]:
    """Job ids of one ListJobs page (asserting it is the only page)."""
    response = batch.list_jobs(**kwargs)
    assert "nextToken" not in response
    return [j["jobId"] for j in response["jobSummaryList"]]


def all_pages(batch: Any, **kwargs: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow nextToken by hand; returns the summaries and the page count."""
    summaries: list[dict[str, Any]] = []
    pages = 0
    token: str | None = None
    while True:
        response = batch.list_jobs(**kwargs, **({"nextToken": token} if token else {}))
        pages += 1
        assert pages < 100, "pagination does not end"
        summaries.extend(response["jobSummaryList"])
        token = response.get("nextToken")
        if not token:
            return summaries, pages


def test_default_lists_running_only(batch: Any, env: dict[str, str]) -> None:
    submit(batch, env, "a")
    submit(batch, env, "b")
    response = batch.list_jobs(jobQueue=env["queue_name"])
    assert response["jobSummaryList"] == []
    assert "nextToken" not in response
    assert ids(batch, jobQueue=env["queue"], jobStatus="RUNNING") == []


def test_submitted_lists_newest_first(batch: Any, env: dict[str, str]) -> None:
    before = int(time.time() * 1000)
    submitted = [submit(batch, env, f"job{i}") for i in range(5)]
    after = int(time.time() * 1000)
    response = batch.list_jobs(jobQueue=env["queue_name"], jobStatus="SUBMITTED")
    summaries = response["jobSummaryList"]
    assert [s["jobId"] for s in summaries] == [j["jobId"] for j in reversed(submitted)]
    created = [s["createdAt"] for s in summaries]
    assert created == sorted(created, reverse=True)
    newest = summaries[0]
    job = submitted[-1]
    assert newest["jobArn"] == job["jobArn"] == f"{PREFIX}:job/{job['jobId']}"
    assert newest["jobName"] == "job4"
    assert newest["status"] == "SUBMITTED"
    assert newest["jobDefinition"] == env["definition"]
    assert type(newest["createdAt"]) is int
    assert before - 1000 <= newest["createdAt"] <= after + 1000
    for absent in ("startedAt", "stoppedAt", "isCancelled", "isTerminated", "container"):
        assert absent not in newest, absent
    # Other statuses do not show them; the queue ARN works like its name.
    assert ids(batch, jobQueue=env["queue"], jobStatus="RUNNABLE") == []
    assert ids(batch, jobQueue=env["queue"], jobStatus="FAILED") == []
    assert len(ids(batch, jobQueue=env["queue"], jobStatus="SUBMITTED")) == 5


def test_status_is_per_queue(batch: Any, env: dict[str, str], unique: str) -> None:
    other = make_queue(batch, f"{unique}-other", [env["ce"]])
    mine = submit(batch, env, "mine")["jobId"]
    theirs = submit(batch, env, "theirs", jobQueue=other)["jobId"]
    assert ids(batch, jobQueue=env["queue"], jobStatus="SUBMITTED") == [mine]
    assert ids(batch, jobQueue=other, jobStatus="SUBMITTED") == [theirs]


@pytest.mark.parametrize(
    "scopes",
    [
        {},
        {"jobQueue": "Q", "arrayJobId": "x"},
        {"jobQueue": "Q", "multiNodeJobId": "x"},
        {"arrayJobId": "x", "multiNodeJobId": "y"},
    ],
)
def test_exactly_one_scope(batch: Any, env: dict[str, str], scopes: dict[str, str]) -> None:
    scopes = {k: env["queue_name"] if v == "Q" else v for k, v in scopes.items()}
    rejected(batch, jobStatus="SUBMITTED", **scopes)


def test_array_scope_lists_children(batch: Any, env: dict[str, str]) -> None:
    parent = submit(batch, env, "arr", arrayProperties={"size": 3})["jobId"]
    # No engine yet: no child has been spawned, and the scope is valid.
    assert ids(batch, arrayJobId=parent, jobStatus="SUBMITTED") == []
    assert ids(batch, arrayJobId=parent) == []


def test_unknown_queue(batch: Any, unique: str) -> None:
    assert rejected(batch, jobQueue=f"{unique}-nope") == f"JobQueue {unique}-nope not found."
    rejected(batch, jobQueue=f"{PREFIX}:job-queue/{unique}-nope", jobStatus="SUBMITTED")


# -- filters --------------------------------------------------------------------


def name_filter(value: str) -> list[dict[str, Any]]:
    return [{"name": "JOB_NAME", "values": [value]}]


def def_filter(value: str) -> list[dict[str, Any]]:
    return [{"name": "JOB_DEFINITION", "values": [value]}]


def test_job_name_filter(batch: Any, env: dict[str, str]) -> None:
    test1 = submit(batch, env, "test1")["jobId"]
    test10 = submit(batch, env, "Test10")["jobId"]
    other = submit(batch, env, "other-test1")["jobId"]
    queue = env["queue_name"]
    # Case-insensitive equality.
    assert ids(batch, jobQueue=queue, filters=name_filter("TEST1")) == [test1]
    assert ids(batch, jobQueue=queue, filters=name_filter("test10")) == [test10]
    assert ids(batch, jobQueue=queue, filters=name_filter("test")) == []
    # A trailing `*` is a (case-insensitive) prefix match.
    assert ids(batch, jobQueue=queue, filters=name_filter("test1*")) == [test10, test1]
    assert ids(batch, jobQueue=queue, filters=name_filter("OTHER*")) == [other]
    assert ids(batch, jobQueue=queue, filters=name_filter("*")) == [other, test10, test1]
    assert ids(batch, jobQueue=queue, filters=name_filter("nomatch*")) == []


def test_job_name_filter_treats_like_wildcards_literally(batch: Any, env: dict[str, str]) -> None:
    plain = submit(batch, env, "a_b")["jobId"]
    submit(batch, env, "axb")
    assert ids(batch, jobQueue=env["queue"], filters=name_filter("a_*")) == [plain]
    assert ids(batch, jobQueue=env["queue"], filters=name_filter("a_b")) == [plain]


def test_filter_ignores_job_status_and_lists_all_statuses(batch: Any, env: dict[str, str]) -> None:
    kept = submit(batch, env, "flt-kept")["jobId"]
    cancelled = submit(batch, env, "flt-cancelled")["jobId"]
    batch.cancel_job(jobId=cancelled, reason="stop")
    for status in ("RUNNING", "SUBMITTED", "FAILED", None):
        extra = {"jobStatus": status} if status else {}
        got = ids(batch, jobQueue=env["queue"], filters=name_filter("flt-*"), **extra)
        assert got == [cancelled, kept], status
    summaries = batch.list_jobs(jobQueue=env["queue"], filters=name_filter("flt-cancelled"))[
        "jobSummaryList"
    ]
    assert [(s["status"], s["statusReason"], s["isCancelled"]) for s in summaries] == [
        ("FAILED", "stop", True)
    ]


@pytest.fixture
def definitions(batch: Any, unique: str) -> dict[str, str]:
    """`<unique>-etl` revisions 1 and 2, and `<unique>-etl2` (shares the prefix)."""
    out: dict[str, str] = {}
    for key, name in (("rev1", "etl"), ("rev2", "etl"), ("other", "etl2")):
        out[key] = batch.register_job_definition(
            jobDefinitionName=f"{unique}-{name}",
            type="container",
            containerProperties={
                "image": "busybox",
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"},
                ],
            },
        )["jobDefinitionArn"]
    assert out["rev1"].endswith(":1") and out["rev2"].endswith(":2")
    return out


def test_job_definition_filter(
    batch: Any, env: dict[str, str], unique: str, definitions: dict[str, str]
) -> None:
    on_rev1 = submit(batch, env, "r1", jobDefinition=definitions["rev1"])["jobId"]
    on_rev2 = submit(batch, env, "r2", jobDefinition=f"{unique}-etl")["jobId"]
    on_other = submit(batch, env, "o", jobDefinition=f"{unique}-etl2")["jobId"]
    unrelated = submit(batch, env, "u")["jobId"]
    queue = env["queue"]
    # A bare name matches every revision of that name, and only that name.
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}-etl")) == [on_rev2, on_rev1]
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}-etl2")) == [on_other]
    # `name*` is a prefix match.
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}-etl*")) == [
        on_other,
        on_rev2,
        on_rev1,
    ]
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}*")) == [
        unrelated,
        on_other,
        on_rev2,
        on_rev1,
    ]
    # A revisioned ARN matches only that revision.
    assert ids(batch, jobQueue=queue, filters=def_filter(definitions["rev1"])) == [on_rev1]
    assert ids(batch, jobQueue=queue, filters=def_filter(definitions["rev2"])) == [on_rev2]
    # Case-sensitive.
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}-ETL")) == []
    assert ids(batch, jobQueue=queue, filters=def_filter(f"{unique}-ETL*")) == []


def wait_for_clock_past(ms: int, timeout: float = 5.0) -> None:
    """Poll the wall clock until it is past `ms` (epoch milliseconds)."""
    deadline = time.monotonic() + timeout
    while int(time.time() * 1000) <= ms:
        assert time.monotonic() < deadline, "clock did not advance"
        time.sleep(0.001)


def test_created_at_filters(batch: Any, env: dict[str, str]) -> None:
    queue = env["queue"]
    old = submit(batch, env, "old")["jobId"]
    [old_detail] = batch.describe_jobs(jobs=[old])["jobs"]
    wait_for_clock_past(old_detail["createdAt"] + 2)
    new = submit(batch, env, "new")["jobId"]
    [new_detail] = batch.describe_jobs(jobs=[new])["jobs"]
    assert new_detail["createdAt"] >= old_detail["createdAt"] + 2
    between = str(old_detail["createdAt"] + 1)

    def created(name: str, value: str) -> list[str]:
        return ids(batch, jobQueue=queue, filters=[{"name": name, "values": [value]}])

    assert created("BEFORE_CREATED_AT", between) == [old]
    assert created("AFTER_CREATED_AT", between) == [new]
    assert created("AFTER_CREATED_AT", str(old_detail["createdAt"] - 1)) == [new, old]
    assert created("BEFORE_CREATED_AT", str(new_detail["createdAt"] + 1)) == [new, old]
    assert created("BEFORE_CREATED_AT", str(old_detail["createdAt"] - 1)) == []
    assert created("AFTER_CREATED_AT", str(new_detail["createdAt"] + 1)) == []
    # jobStatus is ignored with these filters too.
    got = ids(
        batch,
        jobQueue=queue,
        jobStatus="RUNNING",
        filters=[{"name": "AFTER_CREATED_AT", "values": ["0"]}],
    )
    assert got == [new, old]


@pytest.mark.parametrize(
    "filters",
    [
        [{"name": "NOT_A_FILTER", "values": ["x"]}],
        [{"name": "job_name", "values": ["x"]}],
        [{"name": "BEFORE_CREATED_AT", "values": ["yesterday"]}],
    ],
)
def test_bad_filter_rejected(batch: Any, env: dict[str, str], filters: list[Any]) -> None:
    rejected(batch, jobQueue=env["queue"], filters=filters)


# -- pagination -----------------------------------------------------------------


@pytest.fixture
def many(batch: Any, env: dict[str, str]) -> list[str]:
    """23 jobs, oldest first."""
    return [submit(batch, env, f"page-{i:02d}")["jobId"] for i in range(23)]


@pytest.mark.parametrize("page_size", [1, 5, 7, 23])
def test_pagination_by_hand(
    batch: Any, env: dict[str, str], many: list[str], page_size: int
) -> None:
    summaries, pages = all_pages(
        batch, jobQueue=env["queue_name"], jobStatus="SUBMITTED", maxResults=page_size
    )
    got = [s["jobId"] for s in summaries]
    assert got == list(reversed(many))  # none missing, no duplicates, newest first
    assert pages in (-(-23 // page_size), -(-23 // page_size) + 1)
    first = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED", maxResults=page_size)
    assert len(first["jobSummaryList"]) == page_size
    if page_size < 23:
        assert first["nextToken"]


def test_pagination_with_filter(batch: Any, env: dict[str, str], many: list[str]) -> None:
    summaries, pages = all_pages(
        batch, jobQueue=env["queue"], filters=name_filter("PAGE-*"), maxResults=4
    )
    assert [s["jobId"] for s in summaries] == list(reversed(many))
    assert pages >= 6


def test_boto3_paginator(batch: Any, env: dict[str, str], many: list[str]) -> None:
    paginator = batch.get_paginator("list_jobs")
    pages = list(
        paginator.paginate(
            jobQueue=env["queue_name"],
            jobStatus="SUBMITTED",
            PaginationConfig={"PageSize": 6},
        )
    )
    assert len(pages) >= 4
    assert all(len(p["jobSummaryList"]) <= 6 for p in pages)
    got = [s["jobId"] for p in pages for s in p["jobSummaryList"]]
    assert got == list(reversed(many))
    # build_full_result and MaxItems go through the same tokens.
    result = paginator.paginate(
        jobQueue=env["queue"], jobStatus="SUBMITTED", PaginationConfig={"PageSize": 5}
    ).build_full_result()
    assert [s["jobId"] for s in result["jobSummaryList"]] == list(reversed(many))
    limited = paginator.paginate(
        jobQueue=env["queue"],
        jobStatus="SUBMITTED",
        PaginationConfig={"PageSize": 5, "MaxItems": 12},
    ).build_full_result()
    assert [s["jobId"] for s in limited["jobSummaryList"]] == list(reversed(many))[:12]


def test_pagination_is_stable_while_jobs_are_added(
    batch: Any, env: dict[str, str], many: list[str]
) -> None:
    first = batch.list_jobs(jobQueue=env["queue"], jobStatus="SUBMITTED", maxResults=10)
    submit(batch, env, "late")
    second = batch.list_jobs(
        jobQueue=env["queue"], jobStatus="SUBMITTED", maxResults=10, nextToken=first["nextToken"]
    )
    got = [s["jobId"] for s in first["jobSummaryList"] + second["jobSummaryList"]]
    assert got == list(reversed(many))[:20]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "bm90LWEtdG9rZW4",  # not-a-token
        "eyJvcCI6IkZvbyIsImsiOjF9",  # {"op":"Foo","k":1}
        "WzFd",  # [1]
        "eyJvcCI6Ikxpc3RKb2JzIiwiayI6ImFiYyJ9",  # {"op":"ListJobs","k":"abc"}
        "eyJvcCI6Ikxpc3RKb2JzIiwiayI6WzFdfQ",  # {"op":"ListJobs","k":[1]}
    ],
)
def test_invalid_next_token(batch: Any, env: dict[str, str], token: str) -> None:
    rejected(batch, jobQueue=env["queue"], jobStatus="SUBMITTED", nextToken=token)


def test_next_token_from_another_operation_rejected(batch: Any, env: dict[str, str]) -> None:
    for i in range(3):
        batch.register_job_definition(
            jobDefinitionName=f"{env['definition_name']}-{i}",
            type="container",
            containerProperties={"image": "busybox", "vcpus": 1, "memory": 8},
        )
    token = batch.describe_job_definitions(maxResults=1)["nextToken"]
    rejected(batch, jobQueue=env["queue"], jobStatus="SUBMITTED", nextToken=token)


@pytest.mark.parametrize("size", [0, 1001])
def test_max_results_out_of_range(batch: Any, env: dict[str, str], size: int) -> None:
    rejected(batch, jobQueue=env["queue"], jobStatus="SUBMITTED", maxResults=size)
