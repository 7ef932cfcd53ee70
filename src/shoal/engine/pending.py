"""Jobs that wait for other jobs: dependencies and array parents.

The engine's cycle calls `step` inside its transaction. Work follows what
changed, never what is stored:
- new (SUBMITTED) jobs are evaluated a batch at a time;
- a job that ends wakes only the jobs waiting for it (`_waiters`, built from
  the PENDING jobs on the first cycle and kept since); every PENDING job is
  looked at again only after a change made outside the engine (CancelJob, a
  restart);
- an array parent whose own dependencies are met makes its children a chunk
  per cycle, and is settled (SUCCEEDED, or FAILED if a child failed) once its
  count of unfinished children reaches zero.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from shoal.domain import arrays
from shoal.domain.records import Job, JobStatus
from shoal.store.base import Transaction

log = logging.getLogger("shoal.engine")

DEPENDENCY_FAILED = "Dependent Job failed"
_BATCH = 500
_CHILDREN_PER_CYCLE = 1000  # about 10 ms of inserts: the API is never held up for long
_ROUNDS = 32  # dependency failures followed down a chain in one cycle
_UNFINISHED = (
    JobStatus.SUBMITTED,
    JobStatus.PENDING,
    JobStatus.RUNNABLE,
    JobStatus.STARTING,
    JobStatus.RUNNING,
)


@dataclass(slots=True)
class _Array:
    size: int
    unfinished: int | None  # children not yet SUCCEEDED/FAILED (unmade included); None: recount


class Pending:
    def __init__(self) -> None:
        self._waiters: dict[str, set[str]] = {}  # job id -> PENDING jobs waiting for it
        self._finished: set[str] = set()  # ended since the last step: wake their waiters
        self._arrays: dict[str, _Array] = {}  # parents PENDING on their children
        self._making: list[str] = []  # parents with children still to make
        self._epoch = 0  # moves on changes made outside the engine
        self._scanned = -1  # epoch of the last look at every PENDING job
        self.new_runnable: set[str] = set()  # queues that got RUNNABLE jobs in this step

    # -- what the engine tells us ---------------------------------------------
    def changed_elsewhere(self) -> None:
        """Jobs may have changed outside the engine: look at everything again."""
        self._epoch += 1
        for state in self._arrays.values():
            state.unfinished = None

    def forget_step(self) -> None:
        """The transaction of a step did not commit: trust nothing we counted."""
        self.changed_elsewhere()
        self._making = list(self._arrays)

    def ended(self, job: Job) -> None:
        """`job` became SUCCEEDED or FAILED in the current transaction."""
        self._finished.add(job.job_id)
        state = self._arrays.get(job.array_parent or "")
        if state is not None and state.unfinished is not None:
            state.unfinished -= 1

    def busy(self) -> bool:
        return bool(
            self._finished
            or self._making
            or self._scanned != self._epoch
            or any(s.unfinished is None or s.unfinished <= 0 for s in self._arrays.values())
        )

    # -- the step ---------------------------------------------------------------
    def step(self, tx: Transaction, now: int, *, new_jobs: bool) -> bool:
        """Evaluate, make children, settle parents; True if there is more to do."""
        self.new_runnable.clear()
        more = False
        if new_jobs:
            submitted = [j for _, j in tx.jobs_in_status((JobStatus.SUBMITTED,), _BATCH)]
            more = len(submitted) == _BATCH
            self._evaluate(tx, submitted, now)
        if self._scanned != self._epoch:
            self._scanned = self._epoch
            self._waiters.clear()
            cursor = 0
            while page := tx.jobs_in_status((JobStatus.PENDING,), _BATCH, cursor):
                cursor = page[-1][0]
                self._evaluate(tx, [j for _, j in page], now)
        self._wake_waiters(tx, now)
        more |= self._make_children(tx, now)
        self._wake_waiters(tx, now)
        self._settle(tx, now)
        return more or bool(self._finished)

    def _wake_waiters(self, tx: Transaction, now: int) -> None:
        for _ in range(_ROUNDS):
            if not self._finished:
                return
            finished, self._finished = self._finished, set()
            ids: set[str] = set()
            for job_id in finished:
                ids |= self._waiters.pop(job_id, set())
            if ids:
                waiting = [
                    j for j in tx.get_jobs(list(ids)).values() if j.status is JobStatus.PENDING
                ]
                self._evaluate(tx, waiting, now)

    # -- dependencies -------------------------------------------------------------
    def _evaluate(self, tx: Transaction, jobs: list[Job], now: int) -> None:
        """Dependencies decide PENDING, RUNNABLE or FAILED (array parents:
        whether their children can be made)."""
        wanted: dict[str, list[str]] = {}
        for job in jobs:
            if job.array_size is not None and arrays.MADE in job.runtime:
                self._track(job)  # PENDING on its children, not on dependencies
                continue
            wanted[job.job_id] = (
                arrays.own_dependencies(job.spec)
                if job.array_size is not None
                else [d["jobId"] for d in job.spec.get("dependsOn", []) if d.get("jobId")]
            )
        ids = {i for deps in wanted.values() for i in deps}
        ids |= {p for i in ids if (p := arrays.parent_of(i))}
        found = tx.get_jobs(list(ids)) if ids else {}
        for job in jobs:
            deps = wanted.get(job.job_id)
            if deps is None:
                continue
            status = _dependency_status(deps, found)
            if job.array_size is not None and (
                status is not JobStatus.PENDING or job.runtime.get(arrays.STOP)
            ):
                self._start_array(tx, job, failed=status is JobStatus.FAILED)
                continue
            reason = None
            if status is JobStatus.PENDING:
                for dep in deps:
                    self._waiters.setdefault(dep, set()).add(job.job_id)
                reason = _waiting_reason(deps, found)
            if status is job.status:
                if status is JobStatus.PENDING and job.status_reason != reason:
                    tx.update_job(dataclasses.replace(job, status_reason=reason), job.status)
                continue
            after = dataclasses.replace(job, status=status, status_reason=reason)
            if status is JobStatus.RUNNABLE:
                after = dataclasses.replace(after, runtime={**job.runtime, "runnableAt": now})
                self.new_runnable.add(job.queue)
            elif status is JobStatus.FAILED:
                after = dataclasses.replace(after, status_reason=DEPENDENCY_FAILED, stopped_at=now)
            if tx.update_job(after, job.status) and status is JobStatus.FAILED:
                self.ended(after)

    # -- array parents ------------------------------------------------------------
    def _track(self, parent: Job) -> None:
        if parent.job_id not in self._arrays:
            self._arrays[parent.job_id] = _Array(size=parent.array_size or 0, unfinished=None)
        unmade = parent.runtime.get(arrays.MADE, 0) < (parent.array_size or 0)
        if unmade and parent.job_id not in self._making:
            self._making.append(parent.job_id)

    def _start_array(self, tx: Transaction, parent: Job, *, failed: bool) -> None:
        """The parent's own dependencies are settled: PENDING on its children
        from now on (who are born FAILED if a dependency failed)."""
        runtime = {**parent.runtime, arrays.MADE: 0}
        if failed and not runtime.get(arrays.STOP):
            runtime[arrays.STOP] = {"reason": DEPENDENCY_FAILED}
        after = dataclasses.replace(parent, status=JobStatus.PENDING, runtime=runtime)
        if tx.update_job(after, parent.status):
            self._arrays[parent.job_id] = _Array(size=parent.array_size or 0, unfinished=None)
            self._making.append(parent.job_id)

    def _make_children(self, tx: Transaction, now: int) -> bool:
        budget = _CHILDREN_PER_CYCLE
        while self._making and budget > 0:
            parent = tx.get_jobs([self._making[0]]).get(self._making[0])
            if parent is None or parent.status.terminal or arrays.MADE not in parent.runtime:
                self._making.pop(0)
                continue
            made, size = int(parent.runtime[arrays.MADE]), parent.array_size or 0
            count = min(budget, size - made)
            try:
                targets = [
                    d["jobId"]
                    for d in parent.spec.get("dependsOn", [])
                    if d.get("type") == "N_TO_N"
                ]
                array_ids = {j.job_id for j in tx.get_jobs(targets).values() if j.array_size}
                children = [
                    arrays.make_child(
                        parent, i, arrays.child_dependencies(parent, i, array_ids), now
                    )
                    for i in range(made, made + count)
                ]
            except Exception as e:
                # One malformed parent must not stall the engine for everyone.
                log.exception("cannot make the children of %s", parent.job_id)
                self._making.pop(0)
                self._arrays.pop(parent.job_id, None)
                failed = dataclasses.replace(
                    parent,
                    status=JobStatus.FAILED,
                    status_reason=f"Cannot create the array's children: {e}"[:255],
                    stopped_at=now,
                )
                if tx.set_job_state(failed, parent.status):
                    self.ended(failed)
                continue
            tx.insert_jobs(children)
            runtime = {**parent.runtime, arrays.MADE: made + count}
            tx.set_job_state(dataclasses.replace(parent, runtime=runtime), parent.status)
            for child in children:
                if child.status is JobStatus.FAILED:
                    self.ended(child)
                elif child.status is JobStatus.RUNNABLE:
                    self.new_runnable.add(child.queue)
            self._evaluate(tx, [c for c in children if c.status is JobStatus.PENDING], now)
            budget -= count
            if made + count >= size:
                self._making.pop(0)
        return bool(self._making)

    def _settle(self, tx: Transaction, now: int) -> None:
        for parent_id, state in list(self._arrays.items()):
            if state.unfinished is not None and state.unfinished > 0:
                continue
            parent = tx.get_jobs([parent_id]).get(parent_id)
            if parent is None or parent.status is not JobStatus.PENDING:
                del self._arrays[parent_id]
                continue
            counts = tx.child_counts([parent_id])[parent_id]
            made = sum(counts.values())
            state.unfinished = (state.size - made) + sum(
                counts.get(s.value, 0) for s in _UNFINISHED
            )
            if state.unfinished > 0:
                continue
            failed = counts.get(JobStatus.FAILED.value, 0) > 0
            stop = parent.runtime.get(arrays.STOP)
            after = dataclasses.replace(
                parent,
                status=JobStatus.FAILED if failed else JobStatus.SUCCEEDED,
                status_reason=(stop or {}).get("reason") if failed else None,
                stopped_at=now,
            )
            if tx.set_job_state(after, JobStatus.PENDING):
                del self._arrays[parent_id]
                self.ended(after)


def _dependency_status(deps: list[str], found: dict[str, Job]) -> JobStatus:
    """FAILED if a dependency failed, RUNNABLE if all succeeded, else PENDING.
    A child not made yet waits, unless its parent already ended."""
    waiting = False
    for dep_id in deps:
        dep = found.get(dep_id)
        if dep is None:
            parent = found.get(arrays.parent_of(dep_id) or "")
            if parent is not None and parent.status is JobStatus.FAILED:
                return JobStatus.FAILED
            if parent is None or not parent.status.terminal:
                waiting = True
            continue
        if dep.status is JobStatus.FAILED:
            return JobStatus.FAILED
        if dep.status is not JobStatus.SUCCEEDED:
            waiting = True
    return JobStatus.PENDING if waiting else JobStatus.RUNNABLE


def _waiting_reason(deps: list[str], found: dict[str, Job]) -> str:
    """What a PENDING job waits for: the dependencies not done yet."""
    waiting: list[str] = []
    for dep_id in deps:
        dep = found.get(dep_id)
        if dep is None:
            waiting.append(f"{dep_id} (not created yet)")
        elif dep.status is not JobStatus.SUCCEEDED:
            waiting.append(f"{dep_id} ({dep.status.value})")
    shown = ", ".join(waiting[:3])
    more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
    return f"DEPENDENCY - Waiting for {shown}{more} to succeed."[:255]
