"""Create/Update/Delete/DescribeJobQueues and GetJobQueueSnapshot over the wire."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from conftest import client_error, make_ce, make_definition, make_queue, poll, start_server

ARN_PREFIX = "arn:aws:batch:us-east-1:123456789012"

# More vCPUs than a 16-vCPU compute environment has: jobs of such a definition
# stay queued whether or not the server runs an engine, so nothing else
# (placement, completion) races with what a test looks at.
UNPLACEABLE = [{"type": "VCPU", "value": "64"}, {"type": "MEMORY", "value": "128"}]


def ce_arn(name: str) -> str:
    return f"{ARN_PREFIX}:compute-environment/{name}"


def queue_arn(name: str) -> str:
    return f"{ARN_PREFIX}:job-queue/{name}"


def describe_one(batch: Any, ref: str) -> dict[str, Any] | None:
    found = batch.describe_job_queues(jobQueues=[ref])["jobQueues"]
    assert len(found) <= 1
    return found[0] if found else None


def order_of(queue: dict[str, Any]) -> list[tuple[int, str]]:
    return sorted((o["order"], o["computeEnvironment"]) for o in queue["computeEnvironmentOrder"])


def fair_share_policy(batch: Any, name: str) -> str:
    arn: str = batch.create_scheduling_policy(
        name=name, fairsharePolicy={"shareDecaySeconds": 60, "computeReservation": 10}
    )["arn"]
    return arn


# -- create -------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_create_with_one_to_three_ces(batch: Any, unique: str, count: int) -> None:
    ces = [make_ce(batch, f"{unique}-ce{i}") for i in range(count)]
    out = batch.create_job_queue(
        jobQueueName=unique,
        priority=7,
        computeEnvironmentOrder=[
            {"order": (i + 1) * 10, "computeEnvironment": ce} for i, ce in enumerate(ces)
        ],
    )
    assert out["jobQueueName"] == unique
    assert out["jobQueueArn"] == queue_arn(unique)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["jobQueueName"] == unique
    assert queue["jobQueueArn"] == queue_arn(unique)
    assert queue["priority"] == 7
    assert queue["state"] == "ENABLED"
    assert queue["status"] == "VALID"
    assert order_of(queue) == [((i + 1) * 10, ce) for i, ce in enumerate(ces)]


def test_ces_by_name_and_arn_come_back_as_arns(batch: Any, unique: str) -> None:
    make_ce(batch, f"{unique}-a")
    b = make_ce(batch, f"{unique}-b")
    batch.create_job_queue(
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[
            {"order": 2, "computeEnvironment": f"{unique}-a"},  # by name
            {"order": 1, "computeEnvironment": b},  # by ARN
        ],
    )
    for ref in (unique, queue_arn(unique)):
        queue = describe_one(batch, ref)
        assert queue is not None
        assert order_of(queue) == [(1, ce_arn(f"{unique}-b")), (2, ce_arn(f"{unique}-a"))]


def test_create_disabled_with_tags(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce], priority=0, state="DISABLED", tags={"team": "data"})
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["state"] == "DISABLED"
    assert queue["priority"] == 0
    assert queue["tags"] == {"team": "data"}


def test_more_than_three_ces_rejected(batch: Any, unique: str) -> None:
    ces = [make_ce(batch, f"{unique}-ce{i}") for i in range(4)]
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[
            {"order": i + 1, "computeEnvironment": ce} for i, ce in enumerate(ces)
        ],
    )
    assert "1 to 3" in message
    assert "got 4" in message
    assert describe_one(batch, unique) is None


def test_no_ces_rejected(batch: Any, unique: str) -> None:
    message = client_error(
        batch.create_job_queue, jobQueueName=unique, priority=1, computeEnvironmentOrder=[]
    )
    assert "computeEnvironmentOrder" in message
    message = client_error(batch.create_job_queue, jobQueueName=unique, priority=1)
    assert "computeEnvironmentOrder" in message
    assert describe_one(batch, unique) is None


@pytest.mark.parametrize(("first", "second"), [("EC2", "FARGATE"), ("SPOT", "FARGATE_SPOT")])
def test_mixing_ec2_and_fargate_rejected(batch: Any, unique: str, first: str, second: str) -> None:
    a = make_ce(batch, f"{unique}-a", kind=first)
    b = make_ce(batch, f"{unique}-b", kind=second)
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": a},
            {"order": 2, "computeEnvironment": b},
        ],
    )
    assert "cannot mix" in message
    assert "FARGATE" in message
    assert describe_one(batch, unique) is None


def test_ec2_with_spot_and_fargate_with_fargate_spot_allowed(batch: Any, unique: str) -> None:
    ec2 = make_ce(batch, f"{unique}-ec2")
    spot = make_ce(batch, f"{unique}-spot", kind="SPOT")
    fg = make_ce(batch, f"{unique}-fg", kind="FARGATE")
    fgs = make_ce(batch, f"{unique}-fgs", kind="FARGATE_SPOT")
    make_queue(batch, f"{unique}-q1", [ec2, spot])
    make_queue(batch, f"{unique}-q2", [fg, fgs])
    assert describe_one(batch, f"{unique}-q1") is not None
    assert describe_one(batch, f"{unique}-q2") is not None


def test_unknown_ce_rejected(batch: Any, unique: str) -> None:
    good = make_ce(batch, f"{unique}-ce")
    for missing in (f"{unique}-nope", ce_arn(f"{unique}-nope")):
        message = client_error(
            batch.create_job_queue,
            jobQueueName=unique,
            priority=1,
            computeEnvironmentOrder=[
                {"order": 1, "computeEnvironment": good},
                {"order": 2, "computeEnvironment": missing},
            ],
        )
        assert missing in message
        assert "does not exist" in message
    assert describe_one(batch, unique) is None


def test_duplicate_order_rejected(batch: Any, unique: str) -> None:
    a = make_ce(batch, f"{unique}-a")
    b = make_ce(batch, f"{unique}-b")
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": a},
            {"order": 1, "computeEnvironment": b},
        ],
    )
    assert "order 1" in message
    assert "twice" in message
    assert describe_one(batch, unique) is None


def test_same_ce_twice_rejected(batch: Any, unique: str) -> None:
    a = make_ce(batch, f"{unique}-a")
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": a},
            {"order": 2, "computeEnvironment": f"{unique}-a"},
        ],
    )
    assert f"{unique}-a" in message
    assert "twice" in message
    assert describe_one(batch, unique) is None


def test_duplicate_and_invalid_names_rejected(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce], priority=3)
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=9,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    assert "already exists" in message
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["priority"] == 3

    message = client_error(
        batch.create_job_queue,
        jobQueueName=f"{unique} bad",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    assert "jobQueueName" in message


def test_negative_priority_rejected(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=-1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    assert "priority" in message
    assert describe_one(batch, unique) is None


# -- describe -----------------------------------------------------------------


def test_describe_unknown_omitted_and_pagination(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    mine = [f"{unique}-q{i}" for i in range(5)]
    for name in mine:
        make_queue(batch, name, [ce])
    found = batch.describe_job_queues(jobQueues=[mine[1], f"{unique}-nope", queue_arn(mine[0])])
    assert sorted(q["jobQueueName"] for q in found["jobQueues"]) == [mine[0], mine[1]]

    seen: list[str] = []
    kwargs: dict[str, Any] = {"maxResults": 2}
    pages = 0
    while True:
        page = batch.describe_job_queues(**kwargs)
        pages += 1
        assert len(page["jobQueues"]) <= 2
        seen.extend(q["jobQueueName"] for q in page["jobQueues"])
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    assert pages >= 3
    assert [n for n in seen if n.startswith(unique)] == mine
    assert len(seen) == len(set(seen))


# -- SubmitJob against the queue's state --------------------------------------


def test_disabled_queue_rejects_submit_job(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce])
    make_definition(batch, f"{unique}-def", resourceRequirements=UNPLACEABLE)
    batch.submit_job(jobName="ok", jobQueue=unique, jobDefinition=f"{unique}-def")

    batch.update_job_queue(jobQueue=unique, state="DISABLED")
    message = client_error(
        batch.submit_job, jobName="nope", jobQueue=unique, jobDefinition=f"{unique}-def"
    )
    assert unique in message
    assert "DISABLED" in message

    batch.update_job_queue(jobQueue=queue_arn(unique), state="ENABLED")
    job = batch.submit_job(jobName="again", jobQueue=unique, jobDefinition=f"{unique}-def")
    assert job["jobName"] == "again"


def test_submit_to_unknown_queue(batch: Any, unique: str) -> None:
    make_definition(batch, f"{unique}-def")
    message = client_error(
        batch.submit_job, jobName="x", jobQueue=unique, jobDefinition=f"{unique}-def"
    )
    assert message == f"JobQueue {unique} not found."


# -- update -------------------------------------------------------------------


def test_update_priority_state_and_ce_order(batch: Any, unique: str) -> None:
    a = make_ce(batch, f"{unique}-a")
    b = make_ce(batch, f"{unique}-b")
    c = make_ce(batch, f"{unique}-c")
    make_queue(batch, unique, [a, b], priority=1)

    out = batch.update_job_queue(jobQueue=unique, priority=50)
    assert out["jobQueueName"] == unique
    assert out["jobQueueArn"] == queue_arn(unique)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["priority"] == 50
    assert queue["state"] == "ENABLED"
    assert order_of(queue) == [(1, a), (2, b)]

    batch.update_job_queue(jobQueue=queue_arn(unique), state="DISABLED")
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["state"] == "DISABLED"
    assert queue["priority"] == 50
    assert queue["status"] == "VALID"

    batch.update_job_queue(
        jobQueue=unique,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": f"{unique}-c"},
            {"order": 2, "computeEnvironment": a},
            {"order": 3, "computeEnvironment": b},
        ],
    )
    queue = describe_one(batch, unique)
    assert queue is not None
    assert order_of(queue) == [(1, c), (2, a), (3, b)]
    assert queue["priority"] == 50
    assert queue["state"] == "DISABLED"


def test_update_rejects_bad_order_and_keeps_old(batch: Any, unique: str) -> None:
    ec2 = make_ce(batch, f"{unique}-ec2")
    fg = make_ce(batch, f"{unique}-fg", kind="FARGATE")
    make_queue(batch, unique, [ec2])
    message = client_error(
        batch.update_job_queue,
        jobQueue=unique,
        computeEnvironmentOrder=[
            {"order": 1, "computeEnvironment": ec2},
            {"order": 2, "computeEnvironment": fg},
        ],
    )
    assert "cannot mix" in message
    message = client_error(
        batch.update_job_queue,
        jobQueue=unique,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": f"{unique}-gone"}],
    )
    assert f"{unique}-gone" in message
    queue = describe_one(batch, unique)
    assert queue is not None
    assert order_of(queue) == [(1, ec2)]


def test_update_unknown_queue(batch: Any, unique: str) -> None:
    message = client_error(batch.update_job_queue, jobQueue=unique, priority=2)
    assert message == f"JobQueue {unique} not found."


# -- delete -------------------------------------------------------------------


def test_delete_requires_disabled(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce])
    message = client_error(batch.delete_job_queue, jobQueue=unique)
    assert "DISABLED" in message
    assert unique in message
    assert describe_one(batch, unique) is not None

    batch.update_job_queue(jobQueue=unique, state="DISABLED")
    out = batch.delete_job_queue(jobQueue=queue_arn(unique))
    assert set(out) == {"ResponseMetadata"}
    assert describe_one(batch, unique) is None
    message = client_error(batch.delete_job_queue, jobQueue=unique)
    assert message == f"JobQueue {unique} not found."

    # The CE is detached now; and the queue name is free again.
    make_queue(batch, unique, [ce], priority=4)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["priority"] == 4


def test_delete_fails_waiting_jobs(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce])
    make_definition(batch, f"{unique}-def", resourceRequirements=UNPLACEABLE)
    job = batch.submit_job(jobName="waiting", jobQueue=unique, jobDefinition=f"{unique}-def")
    batch.update_job_queue(jobQueue=unique, state="DISABLED")
    batch.delete_job_queue(jobQueue=unique)
    [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert detail["status"] == "FAILED"
    assert detail["jobQueue"] == queue_arn(unique)


# -- scheduling policies ------------------------------------------------------


def test_scheduling_policy_at_create(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    policy = fair_share_policy(batch, f"{unique}-sp")
    make_queue(batch, unique, [ce], schedulingPolicyArn=policy)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["schedulingPolicyArn"] == policy == f"{ARN_PREFIX}:scheduling-policy/{unique}-sp"

    # A fair-share queue's policy can be replaced.
    other = fair_share_policy(batch, f"{unique}-sp2")
    batch.update_job_queue(jobQueue=unique, schedulingPolicyArn=other)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["schedulingPolicyArn"] == other


def test_unknown_scheduling_policy_rejected(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    missing = f"{ARN_PREFIX}:scheduling-policy/{unique}-nope"
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        schedulingPolicyArn=missing,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
    )
    assert missing in message
    assert describe_one(batch, unique) is None


def test_policy_cannot_be_added_to_fifo_queue(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce])
    policy = fair_share_policy(batch, f"{unique}-sp")
    message = client_error(batch.update_job_queue, jobQueue=unique, schedulingPolicyArn=policy)
    assert "FIFO" in message
    assert unique in message
    queue = describe_one(batch, unique)
    assert queue is not None
    assert "schedulingPolicyArn" not in queue


# -- jobStateTimeLimitActions -------------------------------------------------


def _action(**kw: Any) -> dict[str, Any]:
    action: dict[str, Any] = {
        "reason": "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT",
        "state": "RUNNABLE",
        "maxTimeSeconds": 600,
        "action": "CANCEL",
    }
    action.update(kw)
    return action


def test_time_limit_actions_stored_and_echoed(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    actions = [
        _action(),
        _action(reason="CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY", maxTimeSeconds=86400),
    ]
    make_queue(batch, unique, [ce], jobStateTimeLimitActions=actions)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["jobStateTimeLimitActions"] == actions

    replaced = [_action(maxTimeSeconds=1200)]
    batch.update_job_queue(jobQueue=unique, jobStateTimeLimitActions=replaced)
    queue = describe_one(batch, unique)
    assert queue is not None
    assert queue["jobStateTimeLimitActions"] == replaced


@pytest.mark.parametrize(
    ("action", "word"),
    [
        (_action(maxTimeSeconds=599), "maxTimeSeconds"),
        (_action(maxTimeSeconds=86401), "maxTimeSeconds"),
        (_action(action="TERMINATE"), "CANCEL"),
    ],
)
def test_time_limit_actions_validated(
    batch: Any, unique: str, action: dict[str, Any], word: str
) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    message = client_error(
        batch.create_job_queue,
        jobQueueName=unique,
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}],
        jobStateTimeLimitActions=[action],
    )
    assert "jobStateTimeLimitActions[0]" in message
    assert word in message
    assert describe_one(batch, unique) is None


# -- GetJobQueueSnapshot ------------------------------------------------------


def test_snapshot_of_empty_queue(batch: Any, unique: str) -> None:
    ce = make_ce(batch, f"{unique}-ce")
    make_queue(batch, unique, [ce])
    before = int(time.time() * 1000)
    for ref in (unique, queue_arn(unique)):
        snap = batch.get_job_queue_snapshot(jobQueue=ref)
        front = snap["frontOfQueue"]
        assert front["jobs"] == []
        assert isinstance(front["lastUpdatedAt"], int)
        assert before - 60_000 <= front["lastUpdatedAt"] <= int(time.time() * 1000) + 60_000

    message = client_error(batch.get_job_queue_snapshot, jobQueue=f"{unique}-nope")
    assert message == f"JobQueue {unique}-nope not found."


# -- asynchronous status, with a server that takes its time -------------------


def test_status_transitions_with_settle_delay(tmp_path: Path, unique: str) -> None:
    server = start_server(tmp_path, "--settle-delay-ms", "600")
    try:
        batch = server.client()

        def ce_status() -> str:
            [ce] = batch.describe_compute_environments(computeEnvironments=[f"{unique}-ce"])[
                "computeEnvironments"
            ]
            return str(ce["status"])

        def queue_status() -> str | None:
            queue = describe_one(batch, unique)
            return None if queue is None else str(queue["status"])

        make_ce(batch, f"{unique}-ce")
        assert poll(ce_status, lambda s: s != "CREATING") == "VALID"

        make_queue(batch, unique, [f"{unique}-ce"])
        assert queue_status() == "CREATING"
        assert poll(queue_status, lambda s: s != "CREATING") == "VALID"

        batch.update_job_queue(jobQueue=unique, state="DISABLED", priority=3)
        queue = describe_one(batch, unique)
        assert queue is not None
        assert (queue["status"], queue["state"], queue["priority"]) == ("UPDATING", "DISABLED", 3)
        assert poll(queue_status, lambda s: s != "UPDATING") == "VALID"

        batch.delete_job_queue(jobQueue=unique)
        assert queue_status() == "DELETING"
        message = client_error(batch.update_job_queue, jobQueue=unique, priority=4)
        assert "being deleted" in message
        assert poll(queue_status, lambda s: s != "DELETING") is None
    finally:
        server.stop()
