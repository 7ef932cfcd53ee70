"""`shoal submit`: SubmitJob from the command line, optionally waiting."""

from __future__ import annotations

import shlex
import sys
from typing import Any

import click

from shoal.cli import calls, wait
from shoal.cli.calls import ENDPOINT, assignments, server_errors
from shoal.cli.inventory import Json, name_of

DEPENDENCY_TYPES = ("N_TO_N", "SEQUENTIAL")


def dependency(text: str) -> Json:
    """JOB_ID, JOB_ID:N_TO_N, or SEQUENTIAL alone (an array's children one
    after another: AWS's SEQUENTIAL names no job). Only a known type after
    the last colon is a type: an array child's id `<parentId>:<i>` has one."""
    if text == "SEQUENTIAL":
        return {"type": "SEQUENTIAL"}
    job_id, sep, kind = text.rpartition(":")
    if sep and kind in DEPENDENCY_TYPES and job_id:
        return {"jobId": job_id, "type": kind}
    return {"jobId": text}


def default_name(definition: str) -> str:
    """The definition's name: `name`, `name:3` and its ARN all give `name`."""
    ref = name_of(definition) if definition.startswith("arn:") else definition
    return ref.split(":", 1)[0]


def request(
    queue: str,
    definition: str,
    *,
    name: str | None,
    params: dict[str, str],
    env: dict[str, str],
    command: list[str] | None,
    vcpus: float | None,
    memory: int | None,
    array_size: int | None,
    depends_on: tuple[str, ...],
    attempts: int | None,
    timeout: int | None,
    share: str | None,
    priority: int | None,
) -> Json:
    """The SubmitJob request; only what was given, so that the definition's
    own values stand for the rest."""
    req: Json = {
        "jobName": name or default_name(definition),
        "jobQueue": queue,
        "jobDefinition": definition,
    }
    overrides: Json = {}
    if command is not None:
        overrides["command"] = command
    if env:
        overrides["environment"] = [{"name": k, "value": v} for k, v in env.items()]
    requirements = []
    if vcpus is not None:
        requirements.append({"type": "VCPU", "value": f"{vcpus:g}"})
    if memory is not None:
        requirements.append({"type": "MEMORY", "value": str(memory)})
    if requirements:
        overrides["resourceRequirements"] = requirements
    optional: Json = {
        "containerOverrides": overrides or None,
        "parameters": params or None,
        "arrayProperties": None if array_size is None else {"size": array_size},
        "dependsOn": [dependency(d) for d in depends_on] or None,
        "retryStrategy": None if attempts is None else {"attempts": attempts},
        "timeout": None if timeout is None else {"attemptDurationSeconds": timeout},
        "shareIdentifier": share,
        "schedulingPriorityOverride": priority,
    }
    req.update({k: v for k, v in optional.items() if v is not None})
    return req


@click.command()
@click.argument("queue")
@click.argument("definition")
@click.argument("argv", metavar="[-- CMD ARGS...]", nargs=-1, type=click.UNPROCESSED)
@click.option("--name", default=None, help="Job name [default: the definition's name].")
@click.option(
    "--param", "params", multiple=True, metavar="K=V", help="A parameter (Ref::K); repeatable."
)
@click.option(
    "--env", "env", multiple=True, metavar="K=V", help="An environment variable; repeatable."
)
@click.option(
    "--command",
    "command_line",
    default=None,
    metavar="'CMD ARGS'",
    help="The command, split as a shell would (no shell runs it); or give it after --.",
)
@click.option("--vcpus", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--memory", type=click.IntRange(min=1), default=None, metavar="MIB")
@click.option("--array-size", type=click.IntRange(min=2, max=10000), default=None)
@click.option(
    "--depends-on",
    multiple=True,
    metavar="JOB_ID[:N_TO_N]|SEQUENTIAL",
    help="A job this one waits for (N_TO_N: child by child, between arrays), or "
    "SEQUENTIAL: this array's children one after another; repeatable.",
)
@click.option("--attempts", type=click.IntRange(min=1, max=10), default=None, help="Retries.")
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=None,
    metavar="SECONDS",
    help="attemptDurationSeconds: the longest an attempt may run.",
)
@click.option("--share", default=None, help="shareIdentifier (fair-share queues).")
@click.option(
    "--priority", type=int, default=None, help="schedulingPriorityOverride (fair-share queues)."
)
@click.option("--wait", "wait_", is_flag=True, help="Wait until the job ends, as `shoal wait`.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print SubmitJob's reply as JSON (with --wait: the ended job, as DescribeJobs).",
)
@ENDPOINT
@click.pass_context
def submit(
    ctx: click.Context,
    queue: str,
    definition: str,
    argv: tuple[str, ...],
    name: str | None,
    params: tuple[str, ...],
    env: tuple[str, ...],
    command_line: str | None,
    vcpus: float | None,
    memory: int | None,
    array_size: int | None,
    depends_on: tuple[str, ...],
    attempts: int | None,
    timeout: int | None,
    share: str | None,
    priority: int | None,
    wait_: bool,
    as_json: bool,
    endpoint_url: str | None,
) -> None:
    """Submit a job to QUEUE with DEFINITION (name, name:revision or ARN) and
    print its id. A command replacing the definition's goes last, after `--`:

    shoal submit q def --env N=1 -- python run.py --fast"""
    if command_line is not None and argv:
        raise click.UsageError("give the command with --command or after --, not both")
    command = shlex.split(command_line) if command_line is not None else list(argv) or None
    req = request(
        queue,
        definition,
        name=name,
        params=assignments(params, "--param"),
        env=assignments(env, "--env"),
        command=command,
        vcpus=vcpus,
        memory=memory,
        array_size=array_size,
        depends_on=depends_on,
        attempts=attempts,
        timeout=timeout,
        share=share,
        priority=priority,
    )
    client: Any = calls.batch(endpoint_url)
    with server_errors(endpoint_url):
        reply = calls.plain(client.submit_job(**req))
    if not wait_:
        if as_json:
            calls.echo_json(reply)
        else:
            click.echo(reply["jobId"])
        return
    if not as_json:
        # The id first, so that it is known while the wait goes on.
        click.echo(reply["jobId"])
        sys.stdout.flush()
    jobs = wait.wait_and_report(
        client,
        [reply["jobId"]],
        timeout=None,
        quiet=False,
        outcome_to=sys.stderr,
        endpoint_url=endpoint_url,
    )
    if as_json:
        calls.echo_json(jobs[0])
    ctx.exit(wait.exit_status(jobs))
