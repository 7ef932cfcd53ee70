"""Reading a job's output: the CloudWatch Logs API on the same port
(GetLogEvents, FilterLogEvents, DescribeLogStreams, DescribeLogGroups),
the real aws CLI, and `shoal logs`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, aws_cli
from engine_support import (
    LOG_GROUP,
    engine_server,
    job_log,
    log_events,
    make_env,
    sh,
    submit,
    wait_for,
)


def expected_line(n: int) -> str:
    return f"line-{n:02d} {'even' if n % 2 == 0 else 'odd'}"


LINES = [expected_line(n) for n in range(1, 31)]


def printing_script() -> str:
    """Three batches of ten lines, apart in time, so that events carry at least
    two distinct timestamps (output is collected every 0.2 s)."""
    parts = []
    for batch in range(3):
        chunk = LINES[batch * 10 : (batch + 1) * 10]
        parts.append("printf '%s\\n' " + " ".join(f"'{line}'" for line in chunk))
        if batch < 2:
            parts.append("sleep 0.6")
    return "; ".join(parts)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with engine_server(tmp_path_factory.mktemp("logs"), "--host-vcpus", "64") as server:
        yield server


@pytest.fixture(scope="module")
def batch(srv: Server) -> Any:
    return srv.client("batch")


@pytest.fixture(scope="module")
def logs(srv: Server) -> Any:
    return srv.client("logs")


@pytest.fixture(scope="module")
def job(batch: Any) -> dict[str, Any]:
    """A finished job that printed LINES; its detail plus the names used."""
    env = make_env(batch, "printer", command=sh(printing_script()))
    detail = wait_for(batch, submit(batch, env))
    assert detail["status"] == "SUCCEEDED", detail
    return {**env, "detail": detail, "stream": detail["container"]["logStreamName"]}


def get(logs: Any, stream: str, **kwargs: Any) -> dict[str, Any]:
    page: dict[str, Any] = logs.get_log_events(
        logGroupName=LOG_GROUP, logStreamName=stream, **kwargs
    )
    return page


def messages(page: dict[str, Any]) -> list[str]:
    return [e["message"] for e in page["events"]]


# -- GetLogEvents ----------------------------------------------------------------------


def test_whole_log_from_the_head(logs: Any, job: dict[str, Any]) -> None:
    events = log_events(logs, job["stream"])
    assert [e["message"] for e in events] == LINES
    stamps = [e["timestamp"] for e in events]
    assert all(type(t) is int for t in stamps)
    assert stamps == sorted(stamps)
    detail = job["detail"]
    assert detail["startedAt"] - 1000 <= stamps[0] <= stamps[-1] <= detail["stoppedAt"] + 1000
    assert all(type(e["ingestionTime"]) is int for e in events)


def test_from_head_with_limit_follows_forward_token(logs: Any, job: dict[str, Any]) -> None:
    seen: list[list[str]] = []
    page = get(logs, job["stream"], startFromHead=True, limit=7)
    seen.append(messages(page))
    token = page["nextForwardToken"]
    for _ in range(20):
        page = get(logs, job["stream"], startFromHead=True, limit=7, nextToken=token)
        if page["nextForwardToken"] == token:
            break  # the end: the token repeats, and there is nothing new
        seen.append(messages(page))
        token = page["nextForwardToken"]
    else:
        raise AssertionError(f"the forward token never repeated: {seen}")
    assert page["events"] == []
    assert seen == [LINES[0:7], LINES[7:14], LINES[14:21], LINES[21:28], LINES[28:30]]
    # At the end the same token keeps coming back.
    again = get(logs, job["stream"], startFromHead=True, nextToken=token)
    assert again["events"] == []
    assert again["nextForwardToken"] == token


def test_from_tail_by_default_and_backward_token(logs: Any, job: dict[str, Any]) -> None:
    default = get(logs, job["stream"], limit=7)
    explicit = get(logs, job["stream"], limit=7, startFromHead=False)
    assert messages(default) == messages(explicit) == LINES[23:30]  # the newest, in order

    pages = [messages(default)]
    token = default["nextBackwardToken"]
    for _ in range(20):
        page = get(logs, job["stream"], limit=7, nextToken=token)
        if not page["events"]:
            break
        pages.append(messages(page))
        token = page["nextBackwardToken"]
    else:
        raise AssertionError(f"paging backwards never reached the start: {pages}")
    assert pages == [LINES[23:30], LINES[16:23], LINES[9:16], LINES[2:9], LINES[0:2]]
    assert page["nextBackwardToken"] == token  # at the start it repeats

    # Forward from the newest page: nothing newer, the token repeats.
    forward = default["nextForwardToken"]
    tail = get(logs, job["stream"], nextToken=forward)
    assert tail["events"] == []
    assert tail["nextForwardToken"] == forward


def test_start_and_end_time(logs: Any, job: dict[str, Any]) -> None:
    events = log_events(logs, job["stream"])
    stamps = sorted({e["timestamp"] for e in events})
    assert len(stamps) >= 2, f"the job's batches were not apart in time: {stamps}"
    pivot = stamps[1]
    later = [e["message"] for e in events if e["timestamp"] >= pivot]
    earlier = [e["message"] for e in events if e["timestamp"] < pivot]
    assert earlier and later

    # startTime is inclusive, endTime exclusive; both directions agree.
    for head in (True, False):
        assert messages(get(logs, job["stream"], startFromHead=head, startTime=pivot)) == later
        assert messages(get(logs, job["stream"], startFromHead=head, endTime=pivot)) == earlier
    only = messages(
        get(logs, job["stream"], startFromHead=True, startTime=pivot, endTime=pivot + 1)
    )
    assert only == [e["message"] for e in events if e["timestamp"] == pivot]
    assert get(logs, job["stream"], startTime=stamps[-1] + 1)["events"] == []


# -- FilterLogEvents ---------------------------------------------------------------------


def test_filter_log_events_with_pattern_and_pages(logs: Any, job: dict[str, Any]) -> None:
    even = [line for line in LINES if line.endswith("even")]
    collected: list[dict[str, Any]] = []
    pages = 0
    kwargs: dict[str, Any] = {
        "logGroupName": LOG_GROUP,
        "logStreamNames": [job["stream"]],
        "filterPattern": "even",
        "limit": 4,
    }
    while pages < 20:
        page = logs.filter_log_events(**kwargs)
        pages += 1
        assert len(page["events"]) <= 4
        collected.extend(page["events"])
        assert [s["logStreamName"] for s in page["searchedLogStreams"]] == [job["stream"]]
        if "nextToken" not in page:
            break
        kwargs["nextToken"] = page["nextToken"]
    assert "nextToken" not in page, "FilterLogEvents kept returning a nextToken"
    assert [e["message"] for e in collected] == even
    assert pages >= 4
    assert {e["logStreamName"] for e in collected} == {job["stream"]}
    assert len({e["eventId"] for e in collected}) == len(collected)

    # botocore's paginator walks the same pages.
    paginator = logs.get_paginator("filter_log_events")
    via_paginator = [
        e["message"]
        for p in paginator.paginate(
            logGroupName=LOG_GROUP,
            logStreamNames=[job["stream"]],
            filterPattern="even",
            PaginationConfig={"PageSize": 4},
        )
        for e in p["events"]
    ]
    assert via_paginator == even


def test_filter_log_events_terms_and_prefix(logs: Any, job: dict[str, Any]) -> None:
    page = logs.filter_log_events(
        logGroupName=LOG_GROUP,
        logStreamNamePrefix=f"{job['definition_name']}/",
        filterPattern="line-2 odd",  # every term must occur
    )
    assert [e["message"] for e in page["events"]] == [expected_line(n) for n in range(21, 30, 2)]
    everything = logs.filter_log_events(logGroupName=LOG_GROUP, logStreamNames=[job["stream"]])
    assert [e["message"] for e in everything["events"]] == LINES
    assert "nextToken" not in everything


# -- DescribeLogStreams / DescribeLogGroups ----------------------------------------------


def test_describe_log_streams_with_prefix(batch: Any, logs: Any, unique: str) -> None:
    env = make_env(batch, unique, command=sh("echo one; echo two"))
    details = [wait_for(batch, submit(batch, env, name=f"j{i}")) for i in range(2)]
    names = sorted(d["container"]["logStreamName"] for d in details)

    found = logs.describe_log_streams(
        logGroupName=LOG_GROUP, logStreamNamePrefix=f"{env['definition_name']}/"
    )["logStreams"]
    assert [s["logStreamName"] for s in found] == names
    for stream in found:
        assert type(stream["creationTime"]) is int
        assert type(stream["firstEventTimestamp"]) is int
        assert stream["firstEventTimestamp"] <= stream["lastEventTimestamp"]
        assert stream["storedBytes"] > 0
        assert stream["arn"].endswith(f":log-stream:{stream['logStreamName']}")

    one = logs.describe_log_streams(
        logGroupName=LOG_GROUP, logStreamNamePrefix=f"{env['definition_name']}/", limit=1
    )
    assert [s["logStreamName"] for s in one["logStreams"]] == names[:1]
    rest = logs.describe_log_streams(
        logGroupName=LOG_GROUP,
        logStreamNamePrefix=f"{env['definition_name']}/",
        limit=1,
        nextToken=one["nextToken"],
    )
    assert [s["logStreamName"] for s in rest["logStreams"]] == names[1:]

    none = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{unique}-x/")
    assert none["logStreams"] == []


def test_describe_log_groups(logs: Any, job: dict[str, Any]) -> None:
    groups = logs.describe_log_groups()["logGroups"]
    assert LOG_GROUP in [g["logGroupName"] for g in groups]
    [group] = logs.describe_log_groups(logGroupNamePrefix="/aws/batch")["logGroups"]
    assert group["logGroupName"] == LOG_GROUP
    assert type(group["creationTime"]) is int
    assert group["storedBytes"] > 0
    assert logs.describe_log_groups(logGroupNamePrefix="/no/such")["logGroups"] == []


# -- errors ----------------------------------------------------------------------------


def raw_logs_call(srv: Server, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        srv.url + "/",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "X-Amz-Target": f"Logs_20140328.{operation}",
            "Content-Type": "application/x-amz-json-1.1",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_unknown_group_and_stream(srv: Server, logs: Any, job: dict[str, Any]) -> None:
    not_found = logs.exceptions.ResourceNotFoundException
    with pytest.raises(not_found) as info:
        logs.get_log_events(logGroupName="/no/such/group", logStreamName=job["stream"])
    assert info.value.response["Error"]["Message"] == "The specified log group does not exist."
    with pytest.raises(not_found) as info:
        logs.get_log_events(logGroupName=LOG_GROUP, logStreamName="no/such/stream")
    assert info.value.response["Error"]["Message"] == "The specified log stream does not exist."
    with pytest.raises(not_found):
        logs.describe_log_streams(logGroupName="/no/such/group")
    with pytest.raises(not_found):
        logs.filter_log_events(logGroupName="/no/such/group")

    for body in (
        {"logGroupName": "/no/such/group", "logStreamName": job["stream"]},
        {"logGroupName": LOG_GROUP, "logStreamName": "no/such/stream"},
    ):
        status, payload = raw_logs_call(srv, "GetLogEvents", body)
        assert status == 400
        assert payload["__type"].split("#")[-1] == "ResourceNotFoundException", payload
        assert "does not exist" in payload["message"]

    status, payload = raw_logs_call(
        srv, "GetLogEvents", {"logGroupName": LOG_GROUP, "logStreamName": job["stream"]}
    )
    assert status == 200
    assert [e["message"] for e in payload["events"]] == LINES


# -- clients -----------------------------------------------------------------------------


def test_aws_cli_reads_the_stream_named_by_describe_jobs(srv: Server, job: dict[str, Any]) -> None:
    described = json.loads(
        aws_cli(srv, "batch", "describe-jobs", "--jobs", job["detail"]["jobId"]).stdout
    )
    stream = described["jobs"][0]["container"]["logStreamName"]
    assert stream == job["stream"]
    result = aws_cli(
        srv,
        "logs",
        "get-log-events",
        "--log-group-name",
        LOG_GROUP,
        "--log-stream-name",
        stream,
        "--start-from-head",
    )
    assert [e["message"] for e in json.loads(result.stdout)["events"]] == LINES


def cli_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_shoal_logs_prints_the_job_output(srv: Server, job: dict[str, Any]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shoal", "logs", job["detail"]["jobId"], "--endpoint-url", srv.url],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == LINES


# -- a lot of output -----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_fifty_megabytes_of_output(tmp_path: Path) -> None:
    with engine_server(tmp_path) as server:
        assert server.proc is not None
        batch, logs = server.client("batch"), server.client("logs")
        env = make_env(batch, "big")
        # Warm up: the first job loads everything a job needs.
        warm = wait_for(batch, submit(batch, env, sh("echo warm")))
        assert job_log(logs, warm) == ["warm"]
        before = rss_kib(server.proc.pid)

        # 4,545,454 lines of "0123456789", then 6 bytes without a newline.
        job_id = submit(batch, env, sh("yes 0123456789 | head -c 50000000"))
        started = time.monotonic()
        # While the output is moved into the log store the API stays responsive.
        slowest = 0.0
        while True:
            t = time.monotonic()
            detail = batch.describe_jobs(jobs=[job_id])["jobs"][0]
            slowest = max(slowest, time.monotonic() - t)
            if detail["status"] in ("SUCCEEDED", "FAILED"):
                break
            assert time.monotonic() - started < 60, detail
            time.sleep(0.05)
        after = rss_kib(server.proc.pid)
        assert detail["status"] == "SUCCEEDED", detail
        assert after - before < 40 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        assert slowest < 2.0, f"a DescribeJobs call took {slowest:.1f} s during the job"

        stream = detail["container"]["logStreamName"]
        last = get(logs, stream, limit=2)
        assert messages(last) == ["0123456789", "012345"]
        [info] = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=stream)[
            "logStreams"
        ]
        assert info["storedBytes"] > 50_000_000
        first = get(logs, stream, startFromHead=True, limit=3)
        assert messages(first) == ["0123456789"] * 3
