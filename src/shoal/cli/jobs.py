"""`shoal jobs` (a listing through ListJobs) and `shoal describe` (DescribeJobs,
summed up for a person)."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import click

from shoal.cli import calls, inventory, screen
from shoal.cli.calls import ENDPOINT, NotFound, server_errors
from shoal.cli.inventory import Json, name_of
from shoal.cli.wait import STATUSES, is_array

# ListJobs' page limits: 100 with a filter, 1000 without.
FILTERED_PAGE = 100
PLAIN_PAGE = 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Scope:
    """One ListJobs scope: a queue or an array's children. `queue_arn` is
    what DescribeJobs calls the jobs' jobQueue (a summary lacks it)."""

    args: Json
    queue_arn: str


def _pages(client: Any, page_size: int, **args: Any) -> Iterator[Json]:
    while True:
        page = client.list_jobs(maxResults=page_size, **args)
        yield from page["jobSummaryList"]
        token = page.get("nextToken")
        if not token:
            return
        args["nextToken"] = token


def scopes(client: Any, queues: Sequence[str], array: str | None) -> list[Scope]:
    if array is not None:
        found = client.describe_jobs(jobs=[array])["jobs"]
        if not found or not is_array(found[0]):
            raise NotFound(f"Job {array} not found." if not found else f"{array} is no array job.")
        return [Scope({"arrayJobId": array}, found[0]["jobQueue"])]
    every = inventory.job_queues(client)
    by_ref = {q["jobQueueName"]: q for q in every} | {q["jobQueueArn"]: q for q in every}
    chosen = []
    for ref in dict.fromkeys(queues or [q["jobQueueName"] for q in every]):
        if ref not in by_ref:
            raise NotFound(f"JobQueue {ref} not found.")
        chosen.append(by_ref[ref])
    return [Scope({"jobQueue": q["jobQueueArn"]}, q["jobQueueArn"]) for q in chosen]


def _stream(
    client: Any, scope: Scope, statuses: Sequence[str], name: str | None, limit: int | None
) -> Iterator[Json]:
    """The newest jobs of one scope, newest first, at most `limit`.

    ListJobs ignores jobStatus when given a filter, so a name prefix is the
    JOB_NAME filter with statuses picked here; without a name, a queue's
    every status at once is the filter `*` (which, as any JOB_NAME filter,
    lists top-level jobs only). Else one listing per status, where array
    children are left out here: they belong to `--array`."""
    wanted = set(statuses or STATUSES)
    prefix = (name or "").lower()
    streams: list[Iterator[Json]] = []
    if "jobQueue" in scope.args and (name is not None or not statuses):
        page = FILTERED_PAGE if statuses or limit is None else min(limit, FILTERED_PAGE)
        job_filter = {"name": "JOB_NAME", "values": [f"{name or ''}*"]}
        streams.append(_pages(client, page, filters=[job_filter], **scope.args))
    else:
        # Left-out children or names would make small pages mean many calls.
        sifted = name is not None or "jobQueue" in scope.args
        page = PLAIN_PAGE if sifted or limit is None else min(limit, PLAIN_PAGE)
        for status in statuses or STATUSES:
            streams.append(_pages(client, page, jobStatus=status, **scope.args))
    for jobs in streams:
        taken = 0
        for job in jobs:
            if limit is not None and taken >= limit:
                break
            if job["status"] not in wanted or not job["jobName"].lower().startswith(prefix):
                continue
            if "jobQueue" in scope.args and "index" in (job.get("arrayProperties") or {}):
                continue
            taken += 1
            yield {**job, "jobQueue": scope.queue_arn}


def listing(
    client: Any,
    queues: Sequence[str],
    statuses: Sequence[str],
    name: str | None,
    array: str | None,
    limit: int | None,
) -> list[Json]:
    """Jobs newest first, at most `limit` (None: all). Each stream is newest
    first already, so each gives at most `limit` before the merge."""
    found: list[Json] = []
    for scope in scopes(client, queues, array):
        found.extend(_stream(client, scope, statuses, name, limit))
    # Stable: jobs created in the same millisecond keep ListJobs' order.
    found.sort(key=lambda j: j["createdAt"], reverse=True)
    return found if limit is None else found[:limit]


def jobs_table(jobs: Sequence[Json], now: int) -> str:
    head = ("JOB ID", "NAME", "QUEUE", "STATUS", "CREATED", "STARTED", "STOPPED", "REASON")
    body = [
        (
            j["jobId"],
            j["jobName"],
            name_of(j["jobQueue"]),
            j["status"],
            screen.ago(j["createdAt"], now),
            screen.ago(j.get("startedAt"), now),
            screen.ago(j.get("stoppedAt"), now),
            j.get("statusReason") or "",
        )
        for j in jobs
    ]
    # The reason, name and queue each keep a readable share before any is
    # cut further; the id, status and times are never cut.
    shrink = ((7, 24), (1, 16), (2, 12), (7, 0), (1, 0), (2, 0))
    return screen.table(head, body, shrink=shrink, status=(3,))


@click.command()
@click.option("--queue", "queues", multiple=True, help="Only this queue (name or ARN); repeatable.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(STATUSES, case_sensitive=False),
    help="Only jobs in this status; repeatable.",
)
@click.option("--name", default=None, metavar="PREFIX", help="Only jobs whose name starts so.")
@click.option("--array", default=None, metavar="JOB_ID", help="The children of this array job.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    help="At most this many jobs, the newest; 0: all.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {jobSummaryList: [...]}: ListJobs' summaries, each with its jobQueue ARN.",
)
@ENDPOINT
def jobs(
    queues: tuple[str, ...],
    statuses: tuple[str, ...],
    name: str | None,
    array: str | None,
    limit: int,
    as_json: bool,
    endpoint_url: str | None,
) -> None:
    """List jobs, newest first: every queue and status unless narrowed.
    Array children are listed with --array only."""
    if array is not None and queues:
        raise click.UsageError("--array lists one array's children; leave --queue out")
    client = calls.batch(endpoint_url)
    wanted = [s.upper() for s in statuses]
    with server_errors(endpoint_url):
        found = listing(client, queues, wanted, name, array, limit or None)
    if as_json:
        calls.echo_json({"jobSummaryList": found})
    elif found:
        click.echo(jobs_table(found, now_ms()))
    else:
        click.echo("no jobs", err=True)


# -- describe --------------------------------------------------------------------------


def _command(job: Json) -> str | None:
    command = (job.get("container") or {}).get("command")
    return shlex.join(command) if command else None


def _ran(item: Json) -> str:
    started, stopped = item.get("startedAt"), item.get("stoppedAt")
    if started and stopped:
        return f"ran {screen.duration((stopped - started) / 1000)}"
    return "did not start" if not started else "running"


def summary(job: Json, now: int) -> str:
    """A job for a person: where it stands and why, where it runs, its
    attempts with their exit codes, its log."""
    rows: list[tuple[str, str | None]] = [
        ("status", job["status"] + (f": {job['statusReason']}" if job.get("statusReason") else "")),
        ("queue", name_of(job.get("jobQueue") or "-")),
        ("definition", name_of(job.get("jobDefinition") or "-")),
        ("share", job.get("shareIdentifier")),
        ("command", _command(job)),
        ("created", screen.moment(job.get("createdAt"), now)),
        ("started", screen.moment(job["startedAt"], now) if job.get("startedAt") else None),
        ("stopped", screen.moment(job["stoppedAt"], now) if job.get("stoppedAt") else None),
    ]
    props = job.get("arrayProperties") or {}
    if "size" in props:
        counts = props.get("statusSummary") or {}
        parts = ", ".join(f"{s} {counts[s]}" for s in STATUSES if counts.get(s))
        rows.append(("array", f"size {props['size']}" + (f": {parts}" if parts else "")))
    elif "index" in props:
        rows.append(("array index", str(props["index"])))
    for dep in job.get("dependsOn") or []:
        rows.append(("depends on", dep["jobId"] + (f" ({dep['type']})" if dep.get("type") else "")))
    container = job.get("container") or {}
    if "exitCode" in container:
        rows.append(("exit code", str(container["exitCode"])))
    rows.append(("log stream", container.get("logStreamName")))
    lines = [f"{job['jobId']}  {job['jobName']}"]
    lines += [f"  {key + ':':<12} {value}" for key, value in rows if value]
    attempts = job.get("attempts") or []
    if attempts:
        lines.append(f"  {'attempts:':<12} {len(attempts)}")
    for number, attempt in enumerate(attempts, 1):
        box = attempt.get("container") or {}
        code = box.get("exitCode")
        words = [
            f"#{number}",
            "exit -" if code is None else f"exit {code}",
            _ran(attempt),
            attempt.get("statusReason") or "",
            box.get("reason") or "",
        ]
        lines.append("    " + "  ".join(w for w in words if w))
    return "\n".join(lines)


@click.command()
@click.argument("job_ids", metavar="JOB_ID...", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print DescribeJobs' reply: {jobs: [...]}.")
@ENDPOINT
def describe(job_ids: tuple[str, ...], as_json: bool, endpoint_url: str | None) -> None:
    """Show jobs: status and reason, queue, definition, times, attempts with
    their exit codes, log stream; an array's children by status."""
    client = calls.batch(endpoint_url)
    with server_errors(endpoint_url):
        found = inventory.describe_jobs(client, job_ids)
    if as_json:
        calls.echo_json({"jobs": found})
    elif found:
        now = now_ms()
        click.echo("\n\n".join(summary(job, now) for job in found))
    known = {j["jobId"] for j in found}
    missing = [i for i in job_ids if i not in known]
    if missing:
        word = "Job" if len(missing) == 1 else "Jobs"
        raise click.ClickException(f"{word} {', '.join(missing)} not found.")
