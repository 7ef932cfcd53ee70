"""`shoal cancel` and `shoal terminate`: CancelJob / TerminateJob, one call
per id (so that each id's error is its own), then each job's status as it
stands after the call, so the user sees whether it took effect."""

from __future__ import annotations

from collections.abc import Sequence

import click

from shoal.cli import calls, inventory, screen
from shoal.cli.calls import ENDPOINT, server_errors
from shoal.cli.inventory import Json

STARTED = ("STARTING", "RUNNING")


def after(job: Json, verb: str, colour: bool) -> str:
    line = f"{job['jobId']}  {screen.paint(job['status'], colour)}"
    if job["status"] in STARTED:
        # AWS's CancelJob leaves a started job running; say so rather than
        # let "cancelled" suggest it stopped.
        note = (
            "already started: CancelJob leaves it running; use shoal terminate"
            if verb == "cancel"
            else "stopping"
        )
        return f"{line}  ({note})"
    reason = job.get("statusReason")
    return f"{line}  {reason}" if reason else line


def stop(verb: str, job_ids: Sequence[str], reason: str, endpoint_url: str | None) -> int:
    """Call per id; print each job's status after it (stdout) or the
    server's error for it (stderr). The exit status: 1 if any call failed."""
    from botocore.exceptions import ClientError

    client = calls.batch(endpoint_url)
    call = client.cancel_job if verb == "cancel" else client.terminate_job
    done: list[str] = []
    failed = False
    with server_errors(endpoint_url):
        for job_id in dict.fromkeys(job_ids):
            try:
                call(jobId=job_id, reason=reason)
            except ClientError as e:
                message = calls.message_of(e)
                where = "" if job_id in message else f"{job_id}: "
                click.echo(f"Error: {where}{message}", err=True)
                failed = True
            else:
                done.append(job_id)
        jobs = inventory.describe_jobs(client, done)
    colour = screen.colour_on()
    for job in jobs:
        click.echo(after(job, verb, colour))
    return 1 if failed else 0


_REASON = click.option(
    "--reason", required=True, help="Why; becomes the statusReason of the jobs it stops."
)
_IDS = click.argument("job_ids", metavar="JOB_ID...", nargs=-1, required=True)


@click.command()
@_IDS
@_REASON
@ENDPOINT
@click.pass_context
def cancel(
    ctx: click.Context, job_ids: tuple[str, ...], reason: str, endpoint_url: str | None
) -> None:
    """Cancel jobs that have not started (CancelJob): they fail with REASON.
    A job already STARTING or RUNNING keeps running, as on AWS."""
    ctx.exit(stop("cancel", job_ids, reason, endpoint_url))


@click.command()
@_IDS
@_REASON
@ENDPOINT
@click.pass_context
def terminate(
    ctx: click.Context, job_ids: tuple[str, ...], reason: str, endpoint_url: str | None
) -> None:
    """Terminate jobs (TerminateJob): queued ones fail at once, running ones
    are stopped (SIGTERM, then SIGKILL after the server's grace) and fail."""
    ctx.exit(stop("terminate", job_ids, reason, endpoint_url))
