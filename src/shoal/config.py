"""Server settings, with the embedded defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("shoal", appauthor=False))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    region: str = "us-east-1"
    account_id: str = "123456789012"
    data_dir: Path = field(default_factory=default_data_dir)
    # How long CREATING/UPDATING/DELETING last before they settle. AWS takes
    # seconds to minutes; shoal has nothing to provision, so 0 by default.
    settle_delay_ms: int = 0
    # AWS's minimum attempt timeout is 60 s; tests lower it.
    min_timeout_seconds: int = 60
    # Where state is kept: None for the embedded SQLite file in data_dir, or a
    # PostgreSQL URL (postgresql://user@host:port/dbname) that several
    # servers may share.
    store_url: str | None = None
    # SQLite synchronous mode: NORMAL survives process death, FULL power loss.
    sqlite_synchronous: str = "NORMAL"
    # Run jobs (False: a pure control plane; jobs stay where they are).
    engine: bool = True
    # Answer the AWS APIs (False: an engine-only process; /health still answers).
    serve_api: bool = True
    # Executor of compute environments without a `shoal:executor` tag.
    default_executor: str = "process"
    # SIGTERM -> SIGKILL grace on timeout and TerminateJob (AWS: 30 s).
    kill_grace_seconds: float = 30.0
    follow_wait_seconds: float = 0.5  # see engine._FOLLOW_WAIT_SECONDS
    follow_below_ms: float = 50.0  # see engine._FOLLOW_BELOW_MS
    # What this host offers jobs of host-bound executors; None = all of it.
    host_vcpus: float | None = None
    host_memory_mib: int | None = None
    # Added to every job's environment (under what the job sets itself).
    job_environment: dict[str, str] = field(default_factory=dict)
    # Host paths that docker jobs may mount (volumes' sourcePath), and
    # whether they may run privileged.
    volume_roots: tuple[Path, ...] = ()
    allow_privileged: bool = False
    # How long SUCCEEDED and FAILED jobs stay visible (AWS: at least 7 days).
    job_retention_seconds: float = 7 * 24 * 3600.0
    # The Ray cluster of compute environments tagged shoal:executor=ray that
    # name none (shoal:ray-address): HOST:PORT of its GCS, or ray://HOST:PORT.
    ray_address: str | None = None
    # Scheduled rule times missed while no engine ran: once | all | skip
    # (engine/schedules.py).
    missed_schedules: str = "once"
    # Interruptions per instance-hour of SPOT and FARGATE_SPOT compute
    # environments without a shoal:spot-interruption-rate tag.
    spot_interruption_rate: float = 0.0
    # Access keys (JSON, api/auth.py) every request must be signed with;
    # None: no authentication, and the server keeps to loopback.
    credentials_file: Path | None = None
    # The unprivileged user (name or uid) the process executor runs jobs as;
    # None: as the server's own user.
    job_user: str | None = None
    # How often a running job's output is moved into the log store.
    log_poll_seconds: float = 0.2
