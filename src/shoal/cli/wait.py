"""`shoal wait`: poll DescribeJobs until jobs end, showing their progress.

Progress goes to stderr and the outcome (one line per job) to stdout, so
that `shoal wait ID > outcome` keeps the result and a person still sees the
bar. On a terminal an array job's bar is redrawn in place (`\\r`); into a
file or a pipe each change is a line of its own, as a log reads best.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import click

from shoal.cli import inventory, screen
from shoal.cli.calls import ENDPOINT, NotFound, batch, server_errors
from shoal.cli.inventory import Json

STATUSES = ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED")
TERMINAL = ("SUCCEEDED", "FAILED")
BAR_WIDTH = 20
# DescribeJobs is cheap, but a wait may last hours: start quick, so that a
# short job's end shows at once, and slow down while nothing changes.
FIRST_INTERVAL = 0.2
MAX_INTERVAL = 1.0


class TimedOut(Exception):
    pass


def is_array(job: Json) -> bool:
    return inventory.is_array_parent(job)


def bar(job: Json, *, with_id: bool = True) -> str:
    """`ID  [#####.....]  done/size  STATUS n ...`: children ended (SUCCEEDED
    plus FAILED) of the array's size, and how many are in each status (the
    parent's own status while it has no children yet)."""
    props = job["arrayProperties"]
    size = int(props["size"])
    summary: dict[str, int] = props.get("statusSummary") or {}
    done = summary.get("SUCCEEDED", 0) + summary.get("FAILED", 0)
    filled = BAR_WIDTH * done // size if size else BAR_WIDTH
    counts = "  ".join(f"{s} {summary[s]}" for s in STATUSES if summary.get(s))
    graph = "#" * filled + "." * (BAR_WIDTH - filled)
    text = f"[{graph}]  {done}/{size}  {counts or job['status']}"
    return f"{job['jobId']}  {text}" if with_id else text


def outcome(job: Json, colour: bool = False) -> str:
    """`ID  STATUS` and, for a failure, its statusReason."""
    status = job["status"]
    line = f"{job['jobId']}  {screen.paint(status, colour)}"
    reason = job.get("statusReason")
    return f"{line}  {reason}" if status != "SUCCEEDED" and reason else line


class Progress:
    """Shows changes between polls: a plain job's new status, an array's bar.

    Terminal statuses of plain jobs are left to the caller's outcome lines,
    which would otherwise say the same thing twice."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.live = screen.is_terminal(stream)
        self.colour = screen.colour_on(stream)
        self.shown: dict[str, str] = {}
        self.drawn = ""  # the line being redrawn

    def update(self, jobs: Sequence[Json]) -> bool:
        """Show what changed; whether anything did."""
        changed = False
        live_line: str | None = None
        for job in jobs:
            ended = job["status"] in TERMINAL
            text = bar(job) if is_array(job) else f"{job['jobId']}  {job['status']}"
            if self.shown.get(job["jobId"]) != text:
                changed = True
                self.shown[job["jobId"]] = text
                if not is_array(job):
                    if not ended:
                        self._line(f"{job['jobId']}  {screen.paint(job['status'], self.colour)}")
                elif ended or not self.live:
                    self._line(text)
            # On a terminal one line is redrawn: the first array still running,
            # without its id if the id leaves the counts no room (the array's
            # last bar, a line of its own, has it).
            if self.live and live_line is None and is_array(job) and not ended:
                live_line = text if len(text) < self._room() else bar(job, with_id=False)
        if self.live and not self.quiet:
            self._draw(live_line or "")
        return changed

    def close(self) -> None:
        if self.live and not self.quiet:
            self._draw("")

    def _line(self, text: str) -> None:
        if self.quiet:
            return
        if self.live:
            self._draw("")
        self.stream.write(text + "\n")
        self.stream.flush()

    def _room(self) -> int:
        # One character short of the width: a line that fills it wraps on
        # some terminals, and `\r` would then redraw only its second half.
        return (screen.width(self.stream) or 80) - 1

    def _draw(self, text: str) -> None:
        text = screen.clip(text, self._room())
        if text == self.drawn:
            return
        # Spaces wipe a longer line drawn before; the cursor ends after the
        # text, or at the line's start when the line is wiped for good.
        wipe = "\r" + " " * len(self.drawn) if len(self.drawn) > len(text) else ""
        self.stream.write(wipe + "\r" + text)
        self.stream.flush()
        self.drawn = text


def until_done(
    client: Any, job_ids: Sequence[str], progress: Progress, timeout: float | None
) -> list[Json]:
    """The jobs' details once all have ended. Raises NotFound for an id the
    server does not know and TimedOut after `timeout` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    interval = FIRST_INTERVAL
    try:
        while True:
            jobs = inventory.describe_jobs(client, job_ids)
            known = {j["jobId"] for j in jobs}
            missing = [i for i in job_ids if i not in known]
            if missing:
                raise NotFound(f"Job {missing[0]} not found.")
            if progress.update(jobs):
                interval = FIRST_INTERVAL
            if all(j["status"] in TERMINAL for j in jobs):
                return jobs
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimedOut(_still_waiting(jobs, timeout or 0.0))
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 1.5, MAX_INTERVAL)
    finally:
        progress.close()


def _still_waiting(jobs: Sequence[Json], timeout: float) -> str:
    waiting = [j for j in jobs if j["status"] not in TERMINAL]
    named = ", ".join(f"{j['jobId']} {j['status']}" for j in waiting[:3])
    more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
    return f"timed out after {timeout:g} s; not finished: {named}{more}"


def wait_and_report(
    client: Any,
    job_ids: Sequence[str],
    *,
    timeout: float | None,
    quiet: bool,
    outcome_to: TextIO,
    endpoint_url: str | None,
) -> list[Json]:
    """Wait, print an outcome line per job to `outcome_to` (unless quiet)
    and return the jobs' last details."""
    progress = Progress(sys.stderr, quiet)
    with server_errors(endpoint_url):
        try:
            jobs = until_done(client, job_ids, progress, timeout)
        except TimedOut as e:
            raise click.ClickException(str(e)) from None
    if not quiet:
        colour = screen.colour_on(outcome_to)
        for job in jobs:
            click.echo(outcome(job, colour), file=outcome_to)
    return jobs


def exit_status(jobs: Sequence[Json]) -> int:
    return 0 if all(j["status"] == "SUCCEEDED" for j in jobs) else 1


@click.command()
@click.argument("job_ids", metavar="JOB_ID...", nargs=-1, required=True)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Give up after this many seconds (exit status 1) [default: wait for ever].",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing; only the exit status tells.")
@ENDPOINT
@click.pass_context
def wait(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    timeout: float | None,
    quiet: bool,
    endpoint_url: str | None,
) -> None:
    """Wait until the jobs end. Exit status 0 if all SUCCEEDED, 1 otherwise
    (a failure, a timeout, an unknown id). An array job shows a bar of its
    children: ended (SUCCEEDED+FAILED) of its size, and counts per status."""
    jobs = wait_and_report(
        batch(endpoint_url),
        list(dict.fromkeys(job_ids)),
        timeout=timeout,
        quiet=quiet,
        outcome_to=sys.stdout,
        endpoint_url=endpoint_url,
    )
    ctx.exit(exit_status(jobs))
