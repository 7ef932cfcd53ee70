from __future__ import annotations

from typing import Any


def test_submit_and_describe(batch: Any, env: dict[str, str]) -> None:
    job = batch.submit_job(
        jobName="smoke", jobQueue=env["queue_name"], jobDefinition=env["definition_name"]
    )
    [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
    assert detail["status"] == "SUBMITTED"
    assert detail["jobQueue"] == env["queue"]
    assert detail["jobDefinition"] == env["definition"]
