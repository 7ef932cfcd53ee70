"""The schedule firer on real stores (SQLite and PostgreSQL) with a manual
clock: each scheduled time fires once, also with two engines and after a
crash between submitting and advancing; missed times follow the policy;
a Batch target's input reaches the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from test_store_contract import Backend, backend, pg_database  # noqa: F401  (fixtures)

from shoal.config import Settings
from shoal.domain.clock import ManualClock
from shoal.domain.records import Job
from shoal.engine.schedules import Scheduler
from shoal.service import compute_environments, events, job_definitions, job_queues
from shoal.service.context import Context
from shoal.store.base import JobQuery

START = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE = 60_000
QUEUE_ARN = "arn:aws:batch:us-east-1:123456789012:job-queue/nightly"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START + 5_000)


@pytest.fixture
def ctx(backend: Backend, clock: ManualClock, tmp_path: Path) -> Iterator[Context]:  # noqa: F811
    ctx = Context(store=backend.store(), clock=clock, settings=Settings(data_dir=tmp_path))
    compute_environments.create(
        ctx,
        {
            "computeEnvironmentName": "ce",
            "type": "MANAGED",
            "computeResources": {"type": "EC2", "maxvCpus": 4},
        },
    )
    job_queues.create(
        ctx,
        {
            "jobQueueName": "nightly",
            "priority": 1,
            "computeEnvironmentOrder": [{"order": 1, "computeEnvironment": "ce"}],
        },
    )
    job_definitions.register(
        ctx,
        {
            "jobDefinitionName": "etl",
            "type": "container",
            "parameters": {"day": "default-day"},
            "containerProperties": {
                "image": "busybox",
                "command": ["run", "Ref::day"],
                "resourceRequirements": [
                    {"type": "VCPU", "value": "1"},
                    {"type": "MEMORY", "value": "64"},
                ],
            },
        },
    )
    yield ctx


def put(ctx: Context, expression: str, **target: object) -> None:
    events.put_rule(ctx, {"Name": "nightly", "ScheduleExpression": expression})
    batch = {"JobDefinition": "etl", "JobName": "nightly-job"}
    entry = {"Id": "t1", "Arn": QUEUE_ARN, "BatchParameters": batch, **target}
    events.put_targets(ctx, {"Rule": "nightly", "Targets": [entry]})


def jobs(ctx: Context) -> list[Job]:
    """The queue's jobs, oldest first."""
    with ctx.store.read() as tx:
        found = tx.list_jobs(JobQuery(queue="nightly", limit=1000))
    return [job for _, job in reversed(found)]


def test_a_rate_rule_fires_once_per_period_from_its_creation(
    ctx: Context, clock: ManualClock
) -> None:
    put(ctx, "rate(1 minute)")
    scheduler = Scheduler(ctx)
    scheduler.run_due(clock.now_ms())
    assert jobs(ctx) == []  # not before a minute has passed
    clock.advance(MINUTE - 1)
    scheduler.run_due(clock.now_ms())
    assert jobs(ctx) == []
    clock.advance(1)
    scheduler.run_due(clock.now_ms())
    scheduler.run_due(clock.now_ms())  # the same time again: nothing new
    assert [j.job_name for j in jobs(ctx)] == ["nightly-job"]
    clock.advance(MINUTE)
    scheduler.run_due(clock.now_ms())
    assert len(jobs(ctx)) == 2


def test_two_engines_fire_each_time_once(
    ctx: Context,
    clock: ManualClock,
    backend: Backend,  # noqa: F811
) -> None:
    put(ctx, "cron(* * * * ? *)")
    other = Context(store=backend.store(), clock=clock, settings=ctx.settings)
    first, second = Scheduler(ctx), Scheduler(other)
    for _ in range(5):
        clock.advance(MINUTE)
        second.run_due(clock.now_ms())
        first.run_due(clock.now_ms())
    assert len(jobs(ctx)) == 5


def test_a_crash_between_submitting_and_advancing_makes_no_second_job(
    ctx: Context, clock: ManualClock
) -> None:
    put(ctx, "cron(* * * * ? *)")
    clock.advance(MINUTE)
    with ctx.store.read() as tx:
        [rule] = tx.due_rules(clock.now_ms(), 10)
    assert rule.next_fire_ms is not None
    # An engine submitted the jobs of this time, then died before it moved
    # the rule on; the next engine fires the same time again.
    made = events.fire(ctx, rule, rule.next_fire_ms)
    assert len(made) == 1
    Scheduler(ctx).run_due(clock.now_ms())
    assert [j.job_id for j in jobs(ctx)] == made


@pytest.mark.parametrize(("policy", "expected"), [("once", 1), ("all", 10), ("skip", 0)])
def test_times_missed_while_down_follow_the_policy(
    ctx: Context, clock: ManualClock, policy: str, expected: int
) -> None:
    put(ctx, "cron(0/10 * * * ? *)")  # every ten minutes
    clock.advance(100 * MINUTE)  # ten fire times pass with no engine
    scheduler = Scheduler(ctx, missed=policy)
    while scheduler.run_due(clock.now_ms()):
        pass
    assert len(jobs(ctx)) == expected
    # The rule goes on at the next time after now, whatever the policy.
    with ctx.store.read() as tx:
        rule = tx.get_rule("nightly")
    assert rule is not None
    assert rule.next_fire_ms == START + 110 * MINUTE


def test_a_disabled_rule_does_not_fire_and_counts_again_from_its_enabling(
    ctx: Context, clock: ManualClock
) -> None:
    put(ctx, "rate(5 minutes)")
    events.disable_rule(ctx, {"Name": "nightly"})
    clock.advance(20 * MINUTE)
    Scheduler(ctx).run_due(clock.now_ms())
    assert jobs(ctx) == []
    enabled_at = clock.now_ms()
    events.enable_rule(ctx, {"Name": "nightly"})
    with ctx.store.read() as tx:
        rule = tx.get_rule("nightly")
    assert rule is not None and rule.next_fire_ms == enabled_at + 5 * MINUTE


def test_the_target_input_reaches_the_job(ctx: Context, clock: ManualClock) -> None:
    text = orjson.dumps(
        {
            "Parameters": {"day": "2026-01-01"},
            "ContainerOverrides": {
                "Environment": [{"Name": "MODE", "Value": "nightly"}],
                "ResourceRequirements": [{"Type": "VCPU", "Value": "2"}],
            },
        }
    ).decode()
    batch = {
        "JobDefinition": "etl",
        "JobName": "nightly-job",
        "ArrayProperties": {"Size": 3},
        "RetryStrategy": {"Attempts": 2},
    }
    put(ctx, "rate(1 minute)", Input=text, BatchParameters=batch)
    clock.advance(MINUTE)
    Scheduler(ctx).run_due(clock.now_ms())
    [job] = jobs(ctx)
    assert job.array_size == 3
    assert job.spec["retryStrategy"] == {"attempts": 2}
    assert job.spec["parameters"] == {"day": "2026-01-01"}
    container = job.spec["container"]
    assert container["command"] == ["run", "2026-01-01"]
    assert {"name": "MODE", "value": "nightly"} in container["environment"]
    assert {"type": "VCPU", "value": "2"} in container["resourceRequirements"]


def test_a_target_whose_queue_is_disabled_is_skipped_and_the_rule_goes_on(
    ctx: Context, clock: ManualClock
) -> None:
    put(ctx, "rate(1 minute)")
    job_queues.update(ctx, {"jobQueue": "nightly", "state": "DISABLED"})
    clock.advance(MINUTE)
    Scheduler(ctx).run_due(clock.now_ms())
    assert jobs(ctx) == []
    with ctx.store.read() as tx:
        rule = tx.get_rule("nightly")
    assert rule is not None and rule.next_fire_ms == START + 5_000 + 2 * MINUTE
