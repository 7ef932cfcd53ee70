"""What the insight commands (`shoal cost`, `shoal explain`) read from a
server, through the Batch API only: every page of queues, compute
environments and jobs, and the small facts derived from them (a compute
environment's pricing type, the compute environment an attempt ran on)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from shoal.domain.container import Resources, resources_of

Json = dict[str, Any]

DESCRIBE_BATCH = 100  # DescribeJobs takes at most 100 ids


class NotFound(Exception):
    """A job or queue the user named does not exist; the message says which."""


def name_of(ref: str) -> str:
    """A queue's or compute environment's name from its name or ARN
    (`arn:aws:batch:<region>:<account>:job-queue/<name>`)."""
    return ref.rsplit("/", 1)[-1] if ref.startswith("arn:") else ref


def job_queues(batch: Any) -> list[Json]:
    queues: list[Json] = []
    for page in batch.get_paginator("describe_job_queues").paginate():
        queues.extend(page["jobQueues"])
    return queues


def compute_environments(batch: Any, names: list[str] | None = None) -> dict[str, Json]:
    """Compute environments by name: all, or those in `names`."""
    found: dict[str, Json] = {}
    args: Json = {"computeEnvironments": names} if names else {}
    for page in batch.get_paginator("describe_compute_environments").paginate(**args):
        for ce in page["computeEnvironments"]:
            found[ce["computeEnvironmentName"]] = ce
    return found


def pricing_type(ce: Json | None) -> str:
    """EC2, SPOT, FARGATE or FARGATE_SPOT: how an attempt on `ce` is priced.
    UNMANAGED runs on instances the user provides: priced as EC2, as is a
    compute environment that is gone (None)."""
    if ce is None:
        return "EC2"
    kind = (ce.get("computeResources") or {}).get("type")
    return str(kind) if kind in ("EC2", "SPOT", "FARGATE", "FARGATE_SPOT") else "EC2"


def ce_of_task(task_arn: str | None) -> str | None:
    """The compute environment in a task ARN,
    `arn:aws:ecs:<region>:<account>:task/<ceName>_Batch/<taskId>`."""
    if not task_arn:
        return None
    parts = task_arn.split("/")
    if len(parts) < 3 or not parts[-2].endswith("_Batch"):
        return None
    return parts[-2][: -len("_Batch")]


def list_jobs(batch: Any, status: str, **scope: str) -> Iterator[Json]:
    """Summaries of the jobs in one status of a scope (jobQueue=..., or
    arrayJobId=...), every page."""
    for page in batch.get_paginator("list_jobs").paginate(jobStatus=status, **scope):
        yield from page["jobSummaryList"]


def describe_jobs(batch: Any, job_ids: Iterable[str]) -> list[Json]:
    """JobDetails of `job_ids`, 100 per call, in the order given (ids that
    are not found are left out)."""
    ids = list(dict.fromkeys(job_ids))
    found: dict[str, Json] = {}
    for start in range(0, len(ids), DESCRIBE_BATCH):
        for job in batch.describe_jobs(jobs=ids[start : start + DESCRIBE_BATCH])["jobs"]:
            found[job["jobId"]] = job
    return [found[i] for i in ids if i in found]


def is_array_parent(job: Json) -> bool:
    return "size" in (job.get("arrayProperties") or {})


def is_node(job: Json) -> bool:
    """A node `<jobId>#<n>` of a multi-node job: its parent's attempts
    stand for the whole group."""
    return "nodeDetails" in job or "#" in job["jobId"]


def resources(job: Json) -> Resources:
    """What a job holds while it runs: its container's VCPU, MEMORY and GPU
    (or the legacy vcpus/memory); a multi-node job, all its nodes at once."""
    if job.get("nodeProperties"):
        # Imported here: only multi-node jobs need the engine's gang arithmetic.
        from shoal.engine.multinode import need

        return need(job["nodeProperties"])
    return resources_of(job.get("container") or {})
