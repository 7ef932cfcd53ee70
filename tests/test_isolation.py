"""Secrets and job isolation on a live engine server: `containerProperties.
secrets` are resolved from the local secret store (`shoal secrets put`)
into the job's environment and appear nowhere else (DescribeJobs, the log,
the dashboard, /metrics); a missing one fails the attempt to start; jobs of
a server with `--job-user` run as that unprivileged user."""

from __future__ import annotations

import hashlib
import pwd
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Server
from engine_support import (
    job_log,
    make_env,
    sh,
    shutdown,
    start_engine_server,
    submit,
    wait_for,
)

SECRET = "s3cr3t-value-that-must-not-leak"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password-AbCdEf"


def shoal(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_engine_server(tmp_path_factory.mktemp("isolation"))
    yield srv
    shutdown(srv)


def test_a_secret_reaches_the_job_and_nothing_else(server: Server) -> None:
    put = shoal("secrets", "put", "db-password", "--data-dir", str(server.data_dir), stdin=SECRET)
    assert put.returncode == 0, put.stderr
    listed = shoal("secrets", "list", "--data-dir", str(server.data_dir))
    assert listed.stdout.split() == ["db-password"]  # names only
    assert SECRET not in listed.stdout
    batch = server.client("batch")
    env = make_env(batch, "with-secret", secrets=[{"name": "DB_PASSWORD", "valueFrom": ARN}])
    # The job proves it has the value without printing it: its SHA-256.
    job_id = submit(batch, env, sh('printf %s "$DB_PASSWORD" | sha256sum'))
    detail = wait_for(batch, job_id, timeout=30)
    assert detail["status"] == "SUCCEEDED", detail
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert job_log(server.client("logs"), detail)[0].split()[0] == digest
    # Nowhere else: the job as described, the dashboard's page and JSON, metrics.
    assert detail["container"]["secrets"] == [{"name": "DB_PASSWORD", "valueFrom": ARN}]
    seen = [str(batch.describe_jobs(jobs=[job_id]))]
    for path in (f"/ui/jobs/{job_id}", f"/ui/api/jobs/{job_id}", "/metrics"):
        with urllib.request.urlopen(server.url + path, timeout=10) as reply:
            seen.append(reply.read().decode())
    assert all(SECRET not in text for text in seen)
    assert SECRET not in server.log_path.read_text() if server.log_path else True


def test_a_missing_secret_fails_the_attempt_to_start(server: Server) -> None:
    batch = server.client("batch")
    missing = "arn:aws:ssm:us-east-1:123456789012:parameter/prod/not-there"
    env = make_env(batch, "missing-secret", secrets=[{"name": "X", "valueFrom": missing}])
    detail = wait_for(batch, submit(batch, env, ["true"]), timeout=30)
    assert (detail["status"], detail["statusReason"]) == ("FAILED", "Task failed to start")
    assert detail["container"]["reason"].startswith("ResourceInitializationError:")
    assert "not-there" in detail["container"]["reason"]


def test_secret_names_and_values_are_checked(server: Server) -> None:
    bad = shoal("secrets", "put", "no spaces", "--data-dir", str(server.data_dir), stdin="x")
    assert bad.returncode == 1 and "not valid" in bad.stderr
    gone = shoal("secrets", "delete", "never-there", "--data-dir", str(server.data_dir))
    assert gone.returncode == 1 and "no secret" in gone.stderr


def test_jobs_run_as_the_configured_unprivileged_user(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    srv = start_engine_server(tmp_path, "--job-user", "nobody")
    try:
        batch = srv.client("batch")
        env = make_env(batch, "as-nobody")
        private = tmp_path / "root-only"
        private.write_text("root's")
        private.chmod(0o600)
        script = f"id -u; id -g; touch here && echo wrote-workdir; cat {private} || echo denied"
        detail = wait_for(batch, submit(batch, env, sh(script)), timeout=30)
        assert detail["status"] == "SUCCEEDED", detail
        lines = job_log(srv.client("logs"), detail)
        assert lines[:2] == [str(nobody.pw_uid), str(nobody.pw_gid)]
        assert "wrote-workdir" in lines  # its working directory is its own
        assert lines[-1] == "denied" and "root's" not in lines
    finally:
        shutdown(srv)


def test_root_is_refused_as_the_job_user(tmp_path: Path) -> None:
    result = shoal(
        "server", "--data-dir", str(tmp_path / "data"), "--port", "0", "--job-user", "root"
    )
    assert result.returncode != 0
    assert "unprivileged" in result.stderr
