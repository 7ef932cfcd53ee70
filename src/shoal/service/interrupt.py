"""Spot interruptions on demand: `POST /shoal/v1/interrupt`.

Not an AWS API: a tool for testing retry rules before they matter. It ends
running attempts as AWS ends those on a reclaimed Spot instance, through the
engine of this process (interrupts go to the server that runs the jobs).
"""

from __future__ import annotations

from shoal.domain.errors import InvalidRequest, NotFound
from shoal.domain.records import JobStatus, Json
from shoal.service import compute_environments
from shoal.service.context import Context


def interrupt(ctx: Context, req: Json) -> Json:
    job_id, ce = req.get("jobId"), req.get("computeEnvironment")
    if (job_id is None) == (ce is None):
        raise InvalidRequest("Give exactly one of jobId and computeEnvironment.")
    if not all(isinstance(v, str) for v in (job_id, ce) if v is not None):
        raise InvalidRequest("jobId and computeEnvironment are strings.")
    now = ctx.clock.now_ms()
    with ctx.store.read() as tx:
        if job_id is not None:
            job = tx.get_jobs([job_id]).get(job_id)
            if job is None:
                raise NotFound(f"Job {job_id} not found.")
            if job.status not in (JobStatus.STARTING, JobStatus.RUNNING):
                raise InvalidRequest(
                    f"Job {job_id} is {job.status.value}: only a STARTING or RUNNING job can be "
                    "interrupted."
                )
        else:
            assert ce is not None
            found = compute_environments.live(tx, ce, now)
            if found is None:
                raise NotFound(f"Compute environment {ce} not found.")
            ce = found.name
    interrupted = ctx.notifier.interrupt(job_id, ce)
    if interrupted is None:
        raise InvalidRequest(
            "This server runs no engine: send interrupts to the server that runs the jobs."
        )
    return {"interrupted": interrupted}
