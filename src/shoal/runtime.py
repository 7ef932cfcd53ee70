"""The composition root: settings in, a running application out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.api.app import ShoalApp
from shoal.api.auth import KeyRing
from shoal.config import Settings
from shoal.domain.clock import SystemClock
from shoal.engine import exclusive
from shoal.engine.capacity import Limits
from shoal.engine.engine import Engine
from shoal.engine.schedules import Scheduler
from shoal.executors.cgroups import MemoryCgroups
from shoal.executors.docker import DockerExecutor
from shoal.executors.process import ProcessExecutor
from shoal.executors.ray import RayExecutor
from shoal.logs.store import LogStore
from shoal.metrics import Metrics
from shoal.service import retention
from shoal.service.context import Context
from shoal.store.base import Store
from shoal.store.sqlite import SqliteStore


@dataclass(slots=True)
class Runtime:
    ctx: Context
    app: ShoalApp
    logs: LogStore
    engine: Engine | None = None
    scheduler: Scheduler | None = None
    release_engine: Callable[[], None] | None = None  # the PostgreSQL engine lock


_STANDBY_POLL_SECONDS = 0.5  # how soon a standby engine takes over from a dead one


def job_user_ids(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) of the user jobs run as; ValueError for an unknown one."""
    if user is None:
        return None
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise ValueError(f"no user {user} on this host (--job-user)") from None
    if entry.pw_uid == 0:
        raise ValueError("--job-user must be an unprivileged user, not root")
    return entry.pw_uid, entry.pw_gid


def host_limits(settings: Settings) -> Limits:
    vcpus = settings.host_vcpus or float(os.cpu_count() or 1)
    memory = settings.host_memory_mib
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    return Limits(vcpus=vcpus, memory_mib=memory, gpus=0)


def host_name(data_dir: Path) -> str:
    """The name of a data directory's cgroup parent and run directory: one per
    data directory, so servers sharing a host never touch (or sweep) each
    other's attempts."""
    return f"shoal-{hashlib.sha1(str(data_dir.resolve()).encode()).hexdigest()[:12]}"


def installation(settings: Settings) -> str:
    """Names what this shoal keeps outside its store (its dispatcher on a Ray
    cluster): one per store, so engines sharing a store share it."""
    where = settings.store_url or str(settings.data_dir.resolve())
    return hashlib.sha1(where.encode()).hexdigest()[:12]


def run_dir(name: str) -> Path | None:
    """Where attempts keep the files that need only outlive the server's
    process: tmpfs if the host has a writable one, else (None) the data dir."""
    shm = Path("/dev/shm")
    try:
        with open("/proc/mounts") as mounts:
            tmpfs = any(
                line.split()[1] == str(shm) and line.split()[2] == "tmpfs" for line in mounts
            )
    except OSError:
        return None
    return shm / name if tmpfs and os.access(shm, os.W_OK) else None


def open_store(settings: Settings) -> Store:
    if settings.store_url is None:
        return SqliteStore(settings.data_dir / "shoal.db", synchronous=settings.sqlite_synchronous)
    from shoal.store.postgres import PostgresStore  # psycopg is loaded only when used

    return PostgresStore(settings.store_url)


def build(settings: Settings) -> Runtime:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings)
    ctx = Context(store=store, clock=SystemClock(), settings=settings)
    logs = LogStore(settings.data_dir / "logs")
    metrics = Metrics(ctx)
    runtime = Runtime(ctx=ctx, app=ShoalApp(ctx, logs=logs, metrics=metrics), logs=logs)
    background: list[asyncio.Task[None]] = []

    async def startup() -> None:
        purge = asyncio.create_task(
            retention.purge_forever(ctx, settings.job_retention_seconds), name="shoal-purge"
        )
        background.append(purge)
        if not settings.engine:
            return
        if settings.store_url is not None:
            # One engine per database dispatches; the others stand by, serving
            # the API, and the first to get the lock after it dies takes over.
            background.append(asyncio.create_task(standby(), name="shoal-standby"))
            return
        await start_engine()

    async def standby() -> None:
        assert settings.store_url is not None
        while True:
            release = await asyncio.to_thread(exclusive.try_hold_postgres, settings.store_url)
            if release is not None:
                break
            await asyncio.sleep(_STANDBY_POLL_SECONDS)
        runtime.release_engine = release
        logging.getLogger("shoal").info("this server's engine dispatches now")
        await start_engine()

    async def start_engine() -> None:
        name = host_name(settings.data_dir)
        process = ProcessExecutor(
            settings.data_dir / "attempts",
            logs,
            run_dir=run_dir(name),
            cgroups=MemoryCgroups(name),
            log_poll_seconds=settings.log_poll_seconds,
            job_user=job_user_ids(settings.job_user),
        )
        docker = DockerExecutor(
            logs,
            owner=name,
            allowed_roots=list(settings.volume_roots),
            allow_privileged=settings.allow_privileged,
        )
        ray_executor = RayExecutor(
            logs,
            state_dir=(run_dir(name) or settings.data_dir / "run") / "ray",
            installation=installation(settings),
            default_address=settings.ray_address,
            allowed_roots=list(settings.volume_roots),
            allow_privileged=settings.allow_privileged,
        )
        engine = Engine(
            ctx,
            {process.name: process, docker.name: docker, ray_executor.name: ray_executor},
            logs,
            default_executor=settings.default_executor,
            host=host_limits(settings),
            kill_grace_seconds=settings.kill_grace_seconds,
            follow_wait_seconds=settings.follow_wait_seconds,
            follow_below_ms=settings.follow_below_ms,
            job_environment=settings.job_environment,
            spot_interruption_rate=settings.spot_interruption_rate,
            metrics=metrics,
        )
        ray_executor.on_capacity = engine.wake
        ctx.notifier.on_wake.append(engine.wake)
        ctx.notifier.on_submit.append(engine.submitted)
        ctx.notifier.on_terminate.append(engine.terminate)
        ctx.notifier.on_interrupt.append(lambda job, ce: engine.interrupt(job_id=job, ce=ce))
        ctx.notifier.on_front.append(engine.front_of)
        runtime.engine = engine
        await engine.start()
        metrics.attach_engine(engine.capacity_vcpus, engine.executors)
        scheduler = Scheduler(ctx, missed=settings.missed_schedules)
        ctx.notifier.on_wake.append(scheduler.wake)
        runtime.scheduler = scheduler
        scheduler.start()

    async def shutdown() -> None:
        for task in background:
            task.cancel()
        if runtime.scheduler is not None:
            runtime.scheduler.stop()
        if runtime.engine is not None:
            metrics.attach_engine(None)
            await runtime.engine.stop()
        if runtime.release_engine is not None:
            runtime.release_engine()
        store.close()

    keys = KeyRing.load(settings.credentials_file) if settings.credentials_file else None
    runtime.app = ShoalApp(
        ctx, logs=logs, on_startup=startup, on_shutdown=shutdown, metrics=metrics, keys=keys
    )
    return runtime
