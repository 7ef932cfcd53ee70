"""Array jobs: children's ids, dependencies and the parent's status summary.

A parent of size N has children `<parentId>:0 .. :<N-1>`. They are made by the
engine a chunk at a time once the parent's own dependencies are met, so a
10,000-child array costs one row at submit. Until a child exists it counts as
waiting (RUNNABLE, or PENDING when children depend on something).
"""

from __future__ import annotations

import dataclasses

from shoal.domain.records import Job, JobStatus, Json

# Runtime keys of an array parent.
MADE = "childrenMade"  # how many children exist (present once the parent is PENDING on them)
STOP = "stopChildren"  # {"reason", "terminate"}: children still to be made are born FAILED


def child_id(parent_id: str, index: int) -> str:
    return f"{parent_id}:{index}"


def parent_of(job_id: str) -> str | None:
    parent, sep, index = job_id.rpartition(":")
    return parent if sep and index.isdigit() else None


def own_dependencies(spec: Json) -> list[str]:
    """The job ids the parent itself waits for (N_TO_N and SEQUENTIAL entries
    are its children's business)."""
    return [d["jobId"] for d in spec.get("dependsOn", []) if d.get("jobId") and not d.get("type")]


def child_dependencies(parent: Job, index: int, arrays: set[str]) -> list[Json]:
    """What child `index` waits for: child i of each N_TO_N array (a plain job
    given as N_TO_N is waited for whole), and child i-1 for SEQUENTIAL."""
    deps: list[Json] = []
    for dep in parent.spec.get("dependsOn", []):
        kind = dep.get("type")
        if kind == "N_TO_N":
            other = dep["jobId"]
            deps.append({"jobId": child_id(other, index) if other in arrays else other})
        elif kind == "SEQUENTIAL" and index > 0:
            deps.append({"jobId": child_id(parent.job_id, index - 1)})
    return deps


def has_child_dependencies(spec: Json) -> bool:
    return any(d.get("type") in ("N_TO_N", "SEQUENTIAL") for d in spec.get("dependsOn", []))


def make_child(parent: Job, index: int, deps: list[Json], now: int) -> Job:
    """Child `index`, RUNNABLE or PENDING on `deps`, or FAILED if the parent
    was stopped before it was made."""
    spec = {**parent.spec, "dependsOn": deps, "arrayIndex": index, "arraySize": parent.array_size}
    stop = parent.runtime.get(STOP)
    child = Job(
        job_id=child_id(parent.job_id, index),
        job_name=parent.job_name,
        queue=parent.queue,
        definition_name=parent.definition_name,
        definition_revision=parent.definition_revision,
        status=JobStatus.PENDING if deps else JobStatus.RUNNABLE,
        created_at=now,
        spec=spec,
        share_identifier=parent.share_identifier,
        array_parent=parent.job_id,
        runtime={} if deps else {"runnableAt": now},
    )
    if stop:
        child = dataclasses.replace(
            child,
            status=JobStatus.FAILED,
            status_reason=stop["reason"],
            stopped_at=now,
            is_cancelled=not stop.get("terminate"),
            is_terminated=bool(stop.get("terminate")),
            runtime={},
        )
    return child


def status_summary(parent: Job, counts: dict[str, int]) -> dict[str, int]:
    """All seven statuses, children not made yet counted as waiting."""
    summary = {status.value: 0 for status in JobStatus}
    summary.update(counts)
    size = parent.array_size or 0
    unmade = size - sum(counts.values())
    if unmade > 0 and not parent.status.terminal:
        if parent.runtime.get(STOP):
            waiting = JobStatus.FAILED
        elif MADE not in parent.runtime or has_child_dependencies(parent.spec):
            waiting = JobStatus.PENDING
        else:
            waiting = JobStatus.RUNNABLE
        summary[waiting.value] += unmade
    return summary
