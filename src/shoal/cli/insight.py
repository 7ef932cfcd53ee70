"""`shoal cost`, `shoal explain` and `shoal interrupt`: client commands that
look into (or poke) a running shoal server, as `shoal logs` does.

cost and explain read through the Batch API with boto3, so they work against
anything that speaks it; interrupt calls shoal's own `POST /shoal/v1/interrupt`,
which AWS has no counterpart of.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click

_ENDPOINT = click.option(
    "--endpoint-url", default=None, help="shoal server [default: $AWS_ENDPOINT_URL]."
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.contextmanager
def _server_errors(endpoint_url: str | None) -> Iterator[None]:
    """The server's or the connection's error as one line and exit 1."""
    from botocore.exceptions import BotoCoreError, ClientError

    from shoal.cli.client import endpoint
    from shoal.cli.inventory import NotFound

    try:
        yield
    except ClientError as e:
        error = e.response.get("Error") or {}
        raise click.ClickException(str(error.get("Message") or e)) from None
    except BotoCoreError as e:
        # e.g. EndpointConnectionError: nothing listens at the URL.
        raise click.ClickException(f"{endpoint(endpoint_url)}: {e}") from None
    except NotFound as e:
        raise click.ClickException(str(e)) from None


@click.command()
@click.option(
    "--queue",
    "queues",
    multiple=True,
    metavar="QUEUE",
    help="Only this job queue (name or ARN); repeatable [default: every queue].",
)
@click.option("--share", default=None, help="Only jobs of this shareIdentifier.")
@click.option(
    "--since",
    default=None,
    metavar="TIME",
    help="Only attempts started since TIME: epoch ms, an ISO date/time, or an age (24h, 7d).",
)
@click.option(
    "--by",
    type=click.Choice(["queue", "job"]),
    default="queue",
    show_default=True,
    help="One line per queue (and share), or per job.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@click.option(
    "--prices",
    "prices_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A JSON object overriding prices of the default table (see the README).",
)
@_ENDPOINT
def cost(
    queues: tuple[str, ...],
    share: str | None,
    since: str | None,
    by: str,
    as_json: bool,
    prices_file: Path | None,
    endpoint_url: str | None,
) -> None:
    """What the jobs' attempts cost, per queue (and share) or per job, and what
    the same work would cost on EC2 on-demand, EC2 Spot, Fargate and Fargate
    Spot. Each attempt is priced by the type of the compute environment it ran
    on; running attempts count up to now."""
    from shoal.cli import cost as costs
    from shoal.cli import prices
    from shoal.cli.client import client

    now = _now_ms()
    try:
        table = prices.load(prices_file)
        since_ms = None if since is None else costs.parse_since(since, now)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    with _server_errors(endpoint_url):
        usages = costs.collect(
            client("batch", endpoint_url), queues=queues, share=share, since_ms=since_ms, now_ms=now
        )
    doc = costs.report(usages, table, by_job=by == "job", since_ms=since_ms, now_ms=now)
    click.echo(json.dumps(doc, indent=2) if as_json else costs.text(doc))


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
@_ENDPOINT
def explain(job_id: str, as_json: bool, endpoint_url: str | None) -> None:
    """The story of a job: what it is, its dependencies, each attempt and the
    retry decision after it, and what it waits for if it waits."""
    from shoal.cli import explain as story
    from shoal.cli.client import client

    with _server_errors(endpoint_url):
        doc = story.gather(client("batch", endpoint_url), job_id, _now_ms())
    click.echo(story.as_json(doc) if as_json else story.text(doc))


@click.command()
@click.argument("job_id", required=False)
@click.option(
    "--compute-environment",
    default=None,
    metavar="NAME",
    help="Interrupt every running job of this compute environment.",
)
@_ENDPOINT
def interrupt(
    job_id: str | None, compute_environment: str | None, endpoint_url: str | None
) -> None:
    """End running attempts as a Spot reclaim does (statusReason `Host EC2
    (instance i-...) terminated.`, no exit code), so that retry rules can be
    tried out. Prints the ids of the jobs interrupted."""
    from shoal.cli.client import endpoint

    if (job_id is None) == (compute_environment is None):
        raise click.UsageError("give a JOB_ID or --compute-environment NAME (one of them)")
    body = {"jobId": job_id} if job_id is not None else {"computeEnvironment": compute_environment}
    url = endpoint(endpoint_url).rstrip("/") + "/shoal/v1/interrupt"
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as e:
        raise click.ClickException(_message(e)) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise click.ClickException(f"{url}: {e}") from None
    interrupted = answer.get("interrupted") or []
    for interrupted_id in interrupted:
        click.echo(interrupted_id)
    if not interrupted:
        click.echo("no running attempt was interrupted", err=True)


def _message(error: urllib.error.HTTPError) -> str:
    """The message of an AWS-shaped error body, else the HTTP status."""
    with contextlib.suppress(ValueError, AttributeError):
        body = json.loads(error.read())
        message = body.get("message") or body.get("Message")
        if message:
            return str(message)
    return f"HTTP {error.code}: {error.reason}"
