"""`shoal queues`, `shoal envs` and `shoal defs`: what a server holds, as
tables or as the Describe* JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from shoal.cli import calls, inventory, screen
from shoal.cli.calls import ENDPOINT, server_errors
from shoal.cli.inventory import Json, name_of
from shoal.cli.wait import STATUSES
from shoal.domain.container import resources_of

EXECUTOR_TAG = "shoal:executor"
COUNT_PAGE = 1000  # ListJobs' largest page without a filter


def job_counts(client: Any, queue_arn: str) -> dict[str, int]:
    """Jobs of a queue by status, as ListJobs lists them (array children
    included): a call per status and page, fine for modest queues."""
    counts: dict[str, int] = {}
    for status in STATUSES:
        counts[status] = sum(
            len(page["jobSummaryList"])
            for page in client.get_paginator("list_jobs").paginate(
                jobQueue=queue_arn,
                jobStatus=status,
                PaginationConfig={"PageSize": COUNT_PAGE},
            )
        )
    return counts


def counts_text(counts: dict[str, int] | None) -> str:
    if counts is None:
        return "-"
    return ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts.get(s)) or "none"


def queues_table(queues: Sequence[Json], with_counts: bool) -> str:
    head = ["NAME", "STATE", "STATUS", "PRIORITY", "COMPUTE ENVS", "POLICY"]
    body = []
    for q in queues:
        order = sorted(q.get("computeEnvironmentOrder") or [], key=lambda e: e["order"])
        policy = q.get("schedulingPolicyArn")
        row = [
            q["jobQueueName"],
            q.get("state", "-"),
            q.get("status", "-"),
            str(q.get("priority", "-")),
            ", ".join(name_of(e["computeEnvironment"]) for e in order) or "-",
            name_of(policy) if policy else "-",
        ]
        if with_counts:
            row.append(counts_text(q.get("jobCounts")))
        body.append(row)
    if with_counts:
        head.append("JOBS")
    shrink = ((6, 24), (4, 16), (5, 12), (6, 0), (4, 0), (5, 0), (0, 0))
    return screen.table(head, body, shrink=shrink, right=(3,), status=(1, 2))


@click.command()
@click.option(
    "--counts/--no-counts",
    default=True,
    help="Count the jobs of each queue by status (a ListJobs per status) [default: on].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {jobQueues: [...]} as DescribeJobQueues returns them, each with "
    "jobCounts {STATUS: n} unless --no-counts.",
)
@ENDPOINT
def queues(counts: bool, as_json: bool, endpoint_url: str | None) -> None:
    """Job queues: state, priority, compute environments in order, scheduling
    policy and how many jobs are in each status."""
    from botocore.exceptions import ClientError

    client = calls.batch(endpoint_url)
    with server_errors(endpoint_url):
        found = sorted(inventory.job_queues(client), key=lambda q: q["jobQueueName"])
        if counts:
            for q in found:
                try:
                    q["jobCounts"] = job_counts(client, q["jobQueueArn"])
                except ClientError:
                    # Deleted between the two calls: nothing to count.
                    q["jobCounts"] = None
    if as_json:
        calls.echo_json({"jobQueues": found})
    elif found:
        click.echo(queues_table(found, counts))
    else:
        click.echo("no job queues", err=True)


def envs_table(envs: Sequence[Json]) -> str:
    head = ("NAME", "TYPE", "RESOURCES", "STATE", "STATUS", "MAX VCPUS", "EXECUTOR")
    body = []
    for ce in envs:
        resources = ce.get("computeResources") or {}
        max_vcpus = resources.get("maxvCpus", ce.get("unmanagedvCpus"))
        body.append(
            (
                ce["computeEnvironmentName"],
                ce.get("type", "-"),
                resources.get("type", "-"),
                ce.get("state", "-"),
                ce.get("status", "-"),
                "-" if max_vcpus is None else str(max_vcpus),
                # Without the tag the server's --default-executor decides.
                (ce.get("tags") or {}).get(EXECUTOR_TAG, "default"),
            )
        )
    return screen.table(head, body, shrink=((0, 0),), right=(5,), status=(3, 4))


@click.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {computeEnvironments: [...]} as DescribeComputeEnvironments returns them.",
)
@ENDPOINT
def envs(as_json: bool, endpoint_url: str | None) -> None:
    """Compute environments: type, resource type, state, status, maxvCpus and
    executor (the shoal:executor tag)."""
    client = calls.batch(endpoint_url)
    with server_errors(endpoint_url):
        found = sorted(
            inventory.compute_environments(client).values(),
            key=lambda ce: ce["computeEnvironmentName"],
        )
    if as_json:
        calls.echo_json({"computeEnvironments": found})
    elif found:
        click.echo(envs_table(found))
    else:
        click.echo("no compute environments", err=True)


def latest(definitions: Sequence[Json]) -> list[Json]:
    """The highest revision of each name."""
    best: dict[str, Json] = {}
    for d in definitions:
        name = d["jobDefinitionName"]
        if name not in best or d["revision"] > best[name]["revision"]:
            best[name] = d
    return list(best.values())


def main_container(d: Json) -> Json:
    """The container that describes a definition: its own, or a multi-node
    definition's main node's (else its first range's)."""
    if d.get("containerProperties"):
        return dict(d["containerProperties"])
    nodes = d.get("nodeProperties") or {}
    ranges = nodes.get("nodeRangeProperties") or []
    main = nodes.get("mainNode", 0)
    for r in ranges:
        # targetNodes: "2", "0:3", "0:" (to the last node), ":3" (from the first).
        first, sep, last = str(r.get("targetNodes", "")).partition(":")
        low = int(first) if first.isdigit() else 0
        high = int(last) if last.isdigit() else (main if sep else low)
        if low <= main <= high and r.get("container"):
            return dict(r["container"])
    return dict(ranges[0].get("container") or {}) if ranges else {}


def defs_table(definitions: Sequence[Json], with_status: bool) -> str:
    head = ["DEFINITION", "TYPE", "IMAGE", "VCPUS", "MEMORY", "ATTEMPTS", "TIMEOUT"]
    body = []
    for d in definitions:
        container = main_container(d)
        res = resources_of(container)
        timeout = (d.get("timeout") or {}).get("attemptDurationSeconds")
        row = [
            f"{d['jobDefinitionName']}:{d['revision']}",
            d.get("type", "-"),
            container.get("image") or "-",
            "-" if res.vcpus is None else f"{res.vcpus:g}",
            "-" if res.memory_mib is None else f"{res.memory_mib} MiB",
            str((d.get("retryStrategy") or {}).get("attempts", 1)),
            "-" if timeout is None else f"{timeout}s",
        ]
        if with_status:
            row.append(d.get("status", "-"))
        body.append(row)
    if with_status:
        head.append("STATUS")
    shrink = ((2, 16), (0, 20), (2, 0), (0, 0))
    return screen.table(head, body, shrink=shrink, right=(3, 4, 5, 6), status=(7,))


@click.command()
@click.option("--all", "every", is_flag=True, help="Every revision, INACTIVE ones too.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {jobDefinitions: [...]} as DescribeJobDefinitions returns them.",
)
@ENDPOINT
def defs(every: bool, as_json: bool, endpoint_url: str | None) -> None:
    """Job definitions: the latest ACTIVE revision of each (--all: every
    revision), with type, image, vCPUs, memory, retry attempts, timeout."""
    client = calls.batch(endpoint_url)
    args = {} if every else {"status": "ACTIVE"}
    with server_errors(endpoint_url):
        found: list[Json] = []
        for page in client.get_paginator("describe_job_definitions").paginate(**args):
            found.extend(page["jobDefinitions"])
    chosen = found if every else latest(found)
    chosen.sort(key=lambda d: (d["jobDefinitionName"], d["revision"]))
    if as_json:
        calls.echo_json({"jobDefinitions": chosen})
    elif chosen:
        click.echo(defs_table(chosen, every))
    else:
        click.echo("no job definitions", err=True)
