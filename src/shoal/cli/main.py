"""`shoal` command-line entry point."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import click

from shoal import __version__
from shoal.cli.calls import assignments, server_errors
from shoal.cli.completion import completion
from shoal.cli.insight import cost, explain, interrupt
from shoal.cli.jobs import describe, jobs
from shoal.cli.resources import defs, envs, queues
from shoal.cli.secrets_cmd import secrets
from shoal.cli.stop import cancel, terminate
from shoal.cli.submit import submit
from shoal.cli.wait import wait
from shoal.config import Settings, default_data_dir


@click.group()
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """shoal: a self-hosted batch computing service that speaks the AWS Batch API."""


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _store_url(ctx: click.Context, param: click.Parameter, value: str) -> str | None:
    """--store: None for the embedded SQLite store, else a PostgreSQL URL."""
    if value == "sqlite":
        return None
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise click.BadParameter("give sqlite or a postgresql://user@host:port/dbname URL")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where state is kept [default: {default_data_dir()}].",
)
@click.option("--region", default="us-east-1", show_default=True, help="Region in ARNs.")
@click.option("--account-id", default="123456789012", show_default=True, help="Account in ARNs.")
@click.option(
    "--settle-delay-ms",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="How long compute environments and queues stay CREATING/UPDATING/DELETING.",
)
@click.option(
    "--min-timeout-seconds",
    default=60,
    show_default=True,
    type=click.IntRange(min=1),
    help="Smallest attemptDurationSeconds accepted (AWS: 60); lower it for tests.",
)
@click.option(
    "--store",
    default="sqlite",
    show_default=True,
    metavar="sqlite|postgresql://...",
    callback=_store_url,
    help="Where state is kept: sqlite (a file in the data dir), or a PostgreSQL URL "
    "(postgresql://user@host:port/dbname) that several servers can share; give the "
    "password through PGPASSWORD or ~/.pgpass rather than in the URL.",
)
@click.option(
    "--sqlite-sync",
    type=click.Choice(["NORMAL", "FULL"]),
    default="NORMAL",
    show_default=True,
    help="NORMAL survives a crash of shoal; FULL also a power loss (an fsync per commit).",
)
@click.option(
    "--engine/--no-engine",
    default=True,
    show_default=True,
    help="Run jobs; --no-engine serves the API only (jobs are accepted, not run).",
)
@click.option(
    "--role",
    type=click.Choice(["all", "api", "engine"]),
    default="all",
    show_default=True,
    help="api: serve the AWS APIs only (as --no-engine); engine: run jobs only (only "
    "/health answers); all: both. Any number of api processes may share a store; one "
    "engine dispatches (on PostgreSQL the others stand by).",
)
@click.option(
    "--kill-grace-seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Time between SIGTERM and SIGKILL on timeout and TerminateJob (AWS: 30).",
)
@click.option(
    "--host-vcpus",
    type=click.FloatRange(min=0.01),
    default=None,
    help="vCPUs this host offers to jobs [default: its CPU count].",
)
@click.option(
    "--host-memory-mib",
    type=click.IntRange(min=4),
    default=None,
    help="Memory this host offers to jobs [default: its RAM].",
)
@click.option(
    "--job-retention-seconds",
    type=click.FloatRange(min=0.1),
    default=7 * 24 * 3600.0,
    show_default=True,
    help="How long finished jobs stay visible before they are purged (AWS: 7 days).",
)
@click.option(
    "--default-executor",
    type=click.Choice(["process", "docker", "ray"]),
    default="process",
    show_default=True,
    help="Executor of compute environments without a shoal:executor tag.",
)
@click.option(
    "--job-env",
    multiple=True,
    metavar="NAME=VALUE",
    help="Add to every job's environment (e.g. AWS_ENDPOINT_URL); repeatable.",
)
@click.option(
    "--volume-root",
    multiple=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="A host directory docker jobs may mount from (volumes' sourcePath); repeatable.",
)
@click.option("--allow-privileged", is_flag=True, help="Let docker jobs run privileged containers.")
@click.option(
    "--ray-address",
    default=None,
    envvar="SHOAL_RAY_ADDRESS",
    metavar="HOST:PORT",
    help="Ray cluster of ray compute environments without a shoal:ray-address tag "
    "(the GCS address, or ray://HOST:PORT for Ray Client).",
)
@click.option(
    "--missed-schedules",
    type=click.Choice(["once", "all", "skip"]),
    default="once",
    show_default=True,
    help="Scheduled rule times missed while no engine ran: fire once for the latest, "
    "fire each, or skip them.",
)
@click.option(
    "--spot-interruption-rate",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Interruptions per instance-hour of SPOT and FARGATE_SPOT compute environments "
    "without a shoal:spot-interruption-rate tag (each running job counts as an instance).",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    envvar="SHOAL_CREDENTIALS",
    help="JSON file of access keys and their roles: every request must then be signed "
    "(SigV4) with one of them. Without it the server listens on loopback only.",
)
@click.option(
    "--job-user",
    default=None,
    metavar="USER",
    help="Run process-executor jobs as this unprivileged user (name or uid) instead of "
    "the server's user.",
)
@click.option(
    "--follow-wait-seconds",
    type=click.FloatRange(min=0.01),
    default=0.5,
    hidden=True,  # for tests of what happens while a job waits on a slot
    help="How long a job placed on a busy slot behind a short job waits there before it "
    "is RUNNABLE again.",
)
@click.option(
    "--follow-below-ms",
    type=click.FloatRange(min=0),
    default=50.0,
    hidden=True,  # for tests on a loaded machine, where short jobs run long
    help="Jobs of a compute environment whose recent jobs ran for less than this on "
    "average may be placed on a busy slot behind one of them.",
)
@click.option("--log-level", default="info", show_default=True)
def server(
    host: str,
    port: int,
    data_dir: Path | None,
    region: str,
    account_id: str,
    settle_delay_ms: int,
    min_timeout_seconds: int,
    store: str | None,
    sqlite_sync: str,
    engine: bool,
    role: str,
    kill_grace_seconds: float,
    host_vcpus: float | None,
    host_memory_mib: int | None,
    job_retention_seconds: float,
    default_executor: str,
    job_env: tuple[str, ...],
    volume_root: tuple[Path, ...],
    allow_privileged: bool,
    ray_address: str | None,
    missed_schedules: str,
    spot_interruption_rate: float,
    credentials: Path | None,
    job_user: str | None,
    follow_wait_seconds: float,
    follow_below_ms: float,
    log_level: str,
) -> None:
    """Run the shoal server in the foreground."""
    import uvicorn

    from shoal.api.protocol import WholeReplyProtocol
    from shoal.engine import exclusive
    from shoal.runtime import build
    from shoal.store.base import StoreError

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings(
        region=region,
        account_id=account_id,
        data_dir=data_dir or default_data_dir(),
        settle_delay_ms=settle_delay_ms,
        min_timeout_seconds=min_timeout_seconds,
        store_url=store,
        sqlite_synchronous=sqlite_sync,
        engine=engine and role != "api",
        serve_api=role != "engine",
        kill_grace_seconds=kill_grace_seconds,
        follow_wait_seconds=follow_wait_seconds,
        follow_below_ms=follow_below_ms,
        host_vcpus=host_vcpus,
        host_memory_mib=host_memory_mib,
        job_retention_seconds=job_retention_seconds,
        default_executor=default_executor,
        job_environment=assignments(job_env, "--job-env"),
        volume_roots=volume_root,
        allow_privileged=allow_privileged,
        ray_address=ray_address,
        missed_schedules=missed_schedules,
        spot_interruption_rate=spot_interruption_rate,
        credentials_file=credentials,
        job_user=job_user,
    )
    if credentials is None and not _loopback(host):
        raise click.ClickException(
            f"refusing to listen on {host} without --credentials: anyone who can reach it "
            "could run commands on this host. Give access keys (--credentials FILE), or "
            "listen on 127.0.0.1."
        )
    release_engine = None
    if settings.engine and settings.store_url is None:
        try:
            release_engine = exclusive.hold(settings.data_dir)
        except exclusive.EngineLocked as e:
            raise click.ClickException(str(e)) from None
    try:
        runtime = build(settings)
    except (StoreError, ValueError) as e:
        raise click.ClickException(str(e)) from e
    if credentials is None:
        click.echo(
            f"no --credentials: requests are not authenticated, so shoal listens on {host} "
            "only; anyone on this host can use it.",
            err=True,
        )
    if store is None:
        where = f"data in {settings.data_dir}"
    else:
        from shoal.store.postgres import redacted

        where = f"state in {redacted(store)}, files in {settings.data_dir}"
    click.echo(
        f"shoal {__version__}: AWS Batch API on http://{host}:{port} (region {region}, {where})",
        err=True,
    )
    config = uvicorn.Config(
        runtime.app,
        host=host,
        port=port,
        loop="uvloop",
        http=WholeReplyProtocol,
        lifespan="on",
        access_log=False,
        # No X-Forwarded-* rewriting: nothing reads the client's address, and
        # the middleware costs a few per cent of a short request.
        proxy_headers=False,
        # A request still running after this much of a stop is cut off: a
        # stop must not wait on a client (every reply is short; none streams).
        timeout_graceful_shutdown=5,
        log_level="warning" if log_level == "info" else log_level,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        if release_engine is not None:
            release_engine()


@cli.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing output until the job ends.")
@click.option("--attempt", type=int, default=None, help="Attempt number (default: the latest).")
@click.option("--endpoint-url", default=None, help="shoal server [default: $AWS_ENDPOINT_URL].")
def logs(job_id: str, follow: bool, attempt: int | None, endpoint_url: str | None) -> None:
    """Print the output of a job's attempt (CloudWatch Logs, as AWS stores it)."""
    from shoal.cli.client import client

    batch = client("batch", endpoint_url)
    logs_client = client("logs", endpoint_url)
    with server_errors(endpoint_url):
        _print_logs(batch, logs_client, job_id, follow, attempt)


def _print_logs(
    batch: Any, logs_client: Any, job_id: str, follow: bool, attempt: int | None
) -> None:
    import time

    token: str | None = None
    stream: str | None = None
    group = "/aws/batch/job"
    while True:
        jobs = batch.describe_jobs(jobs=[job_id])["jobs"]
        if not jobs:
            raise click.ClickException(f"Job {job_id} not found.")
        job = jobs[0]
        if stream is None:
            attempts = [a["container"].get("logStreamName") for a in job.get("attempts", [])]
            current = job.get("container", {}).get("logStreamName")
            if attempt is not None:
                stream = attempts[attempt - 1] if 0 < attempt <= len(attempts) else None
            else:
                stream = current or (attempts[-1] if attempts else None)
            options = (job.get("container", {}).get("logConfiguration") or {}).get("options")
            group = (options or {}).get("awslogs-group", group)
        finished = job["status"] in ("SUCCEEDED", "FAILED")
        if stream is not None:
            while True:
                args = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
                if token:
                    args["nextToken"] = token
                page = logs_client.get_log_events(**args)
                for event in page["events"]:
                    click.echo(event["message"])
                if page["nextForwardToken"] == token:
                    break
                token = page["nextForwardToken"]
        if not follow or finished:
            return
        time.sleep(0.5)


_TF_PATH = click.argument(
    "path", metavar="FILE.tf|DIR", type=click.Path(exists=True, path_type=Path)
)
_TF_VAR = click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a variable (repeatable); wins over TF_VAR_NAME and terraform.tfvars.",
)
_TF_PLAN = click.option("--plan", is_flag=True, help="Show what would change; change nothing.")
_TF_ENDPOINT = click.option(
    "--endpoint-url", default=None, help="shoal server [default: $AWS_ENDPOINT_URL]."
)
_TF_TIMEOUT = click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for a compute environment or queue to settle.",
)


def _terraform(command: str, options: object) -> None:
    from shoal.terraform import plan
    from shoal.terraform.errors import ApplyError

    assert isinstance(options, plan.Options)
    run = plan.apply if command == "apply" else plan.destroy
    try:
        run(options, click.echo, lambda message: click.echo(f"Warning: {message}", err=True))
    except ApplyError as e:
        raise click.ClickException(e.message) from None


@cli.command()
@_TF_PATH
@_TF_VAR
@_TF_PLAN
@click.option(
    "--repository-url",
    "repository_urls",
    multiple=True,
    metavar="NAME=URL",
    help="What an aws_ecr_repository's repository_url is (NAME: its name or address); "
    "by default the repository's name, i.e. a local image.",
)
@_TF_ENDPOINT
@_TF_TIMEOUT
def apply(
    path: Path,
    variables: tuple[str, ...],
    plan: bool,
    repository_urls: tuple[str, ...],
    endpoint_url: str | None,
    timeout: float,
) -> None:
    """Create or update the Batch setup a Terraform configuration (AWS provider)
    describes, on a running shoal server. Compute environments, job queues, job
    definitions, scheduling policies, EventBridge rules and targets and Scheduler
    schedules are made; everything else (VPC, IAM, S3, ECR ...) gets stand-in
    attributes so references resolve. Idempotent: resources are found by name."""
    from shoal.terraform.plan import Options

    options = Options(
        path=path,
        variables=assignments(variables, "--var"),
        repository_urls=assignments(repository_urls, "--repository-url"),
        endpoint_url=endpoint_url,
        plan_only=plan,
        timeout=timeout,
    )
    _terraform("apply", options)


@cli.command()
@_TF_PATH
@_TF_VAR
@_TF_PLAN
@_TF_ENDPOINT
@_TF_TIMEOUT
def destroy(
    path: Path,
    variables: tuple[str, ...],
    plan: bool,
    endpoint_url: str | None,
    timeout: float,
) -> None:
    """Delete what a Terraform configuration defines from a shoal server: targets,
    rules, queues, compute environments, job definitions (every ACTIVE revision),
    scheduling policies. What is already gone is fine."""
    from shoal.terraform.plan import Options

    options = Options(
        path=path,
        variables=assignments(variables, "--var"),
        endpoint_url=endpoint_url,
        plan_only=plan,
        timeout=timeout,
    )
    _terraform("destroy", options)


cli.add_command(cost)
cli.add_command(explain)
cli.add_command(interrupt)
cli.add_command(submit)
cli.add_command(jobs)
cli.add_command(describe)
cli.add_command(wait)
cli.add_command(cancel)
cli.add_command(terminate)
cli.add_command(queues)
cli.add_command(envs)
cli.add_command(defs)
cli.add_command(completion)


cli.add_command(secrets)


def main() -> None:
    cli()
