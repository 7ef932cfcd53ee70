"""The Store interface.

A store hands out transactions; every read and write of shoal's state goes
through one. A write transaction is all-or-nothing and is durable against the
death of the process once `transaction()` has exited without an exception:
the service layer commits before it replies, so an acknowledged write is
never lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, overload

from shoal.domain.records import (
    ComputeEnvironment,
    EventRule,
    Job,
    JobDefinition,
    JobQueue,
    JobStatus,
    SchedulingPolicy,
)


class DecodedOnUse(Sequence[Job]):
    """Jobs read as rows, each decoded the first time it is looked at. The
    engine reads the head of a queue a few jobs at a time and stops at the
    first that does not fit, and decoding a job's documents costs more than
    reading its row: a tenth of the server's time, with a queue backlog,
    went to decoding jobs it never looked at."""

    __slots__ = ("_decode", "_jobs", "_rows")

    def __init__(self, rows: Sequence[Any], decode: Callable[[Any], Job]) -> None:
        self._rows = rows
        self._decode = decode
        self._jobs: list[Job | None] = [None] * len(rows)

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Job: ...

    @overload
    def __getitem__(self, index: slice) -> list[Job]: ...

    def __getitem__(self, index: int | slice) -> Job | list[Job]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        job = self._jobs[index]
        if job is None:
            job = self._jobs[index] = self._decode(self._rows[index])
        return job


class StoreError(Exception):
    """The store could not do what was asked (I/O, corruption): a server fault."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobQuery:
    """A ListJobs query in store terms. Results are newest first (seq descending)."""

    queue: str | None = None
    array_parent: str | None = None
    status: JobStatus | None = None
    name_equals: str | None = None  # case-insensitive
    name_prefix: str | None = None  # case-insensitive
    definition_name: str | None = None
    definition_prefix: str | None = None
    definition_revision: int | None = None
    created_before: int | None = None
    created_after: int | None = None
    share_identifier: str | None = None
    top_level_only: bool = False  # exclude array children
    before_seq: int | None = None  # keyset cursor
    limit: int = 100


class Transaction(Protocol):
    # -- compute environments -------------------------------------------------
    def get_compute_environment(self, name: str) -> ComputeEnvironment | None: ...
    def put_compute_environment(self, ce: ComputeEnvironment) -> None:
        """Insert or replace by name."""

    def delete_compute_environment(self, name: str) -> None: ...
    def list_compute_environments(self, after: str | None, limit: int) -> list[ComputeEnvironment]:
        """By name ascending, names strictly after `after`."""
        ...

    # -- job queues -----------------------------------------------------------
    def get_job_queue(self, name: str) -> JobQueue | None: ...
    def put_job_queue(self, queue: JobQueue) -> None: ...
    def delete_job_queue(self, name: str) -> None: ...
    def list_job_queues(self, after: str | None, limit: int) -> list[JobQueue]: ...

    # -- scheduling policies --------------------------------------------------
    def get_scheduling_policy(self, name: str) -> SchedulingPolicy | None: ...
    def put_scheduling_policy(self, policy: SchedulingPolicy) -> None: ...
    def delete_scheduling_policy(self, name: str) -> None: ...
    def list_scheduling_policies(self, after: str | None, limit: int) -> list[SchedulingPolicy]: ...

    # -- EventBridge rules ----------------------------------------------------
    def get_rule(self, name: str) -> EventRule | None: ...
    def put_rule(self, rule: EventRule) -> None:
        """Create or replace the rule (targets and next fire time included)."""
        ...

    def delete_rule(self, name: str) -> None: ...
    def list_rules(self, after: str | None, limit: int) -> list[EventRule]: ...
    def due_rules(self, now_ms: int, limit: int) -> list[EventRule]:
        """Rules whose next fire time is at or before `now_ms`, earliest first."""
        ...

    def next_rule_fire(self) -> int | None:
        """The earliest next fire time of any rule."""
        ...

    def advance_rule(self, name: str, expected_ms: int, next_ms: int | None) -> bool:
        """Move the rule's next fire time from `expected_ms` to `next_ms`;
        False (nothing changed) if it is not `expected_ms` any more: another
        engine fired it, or the rule changed. Compare-and-set, so each
        scheduled time is claimed once."""
        ...

    # -- job definitions ------------------------------------------------------
    def allocate_revision(self, name: str) -> int:
        """The next revision number for `name`; numbers are never handed out twice."""
        ...

    def put_job_definition(self, definition: JobDefinition) -> None: ...
    def get_job_definition(self, name: str, revision: int) -> JobDefinition | None: ...
    def latest_active_definition(self, name: str) -> JobDefinition | None: ...
    def list_job_definitions(
        self,
        *,
        name: str | None,
        status: str | None,
        after: tuple[str, int] | None,
        limit: int,
    ) -> list[JobDefinition]:
        """By (name, revision) ascending, strictly after `after`."""
        ...

    # -- jobs -----------------------------------------------------------------
    def insert_job(self, job: Job, token: str | None = None) -> None:
        """Insert a new job; its id (and `token`, the SDK invocation id of the
        SubmitJob that created it, if given) must be new."""

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs that exist among `job_ids`, by id."""
        ...

    def update_job(self, job: Job, expected: JobStatus) -> bool:
        """Compare-and-set: replace the job's mutable state if its stored status
        is still `expected`. Returns False (and changes nothing) otherwise."""
        ...

    def set_job_state(self, job: Job, expected: JobStatus) -> bool:
        """Compare-and-set of what the engine owns while a job runs: status,
        statusReason, timestamps, isTerminated and runtime — never tags,
        cancellation or a pending terminate request, which others may write
        meanwhile. Returns False (and changes nothing) if the status moved."""
        ...

    def list_jobs(self, query: JobQuery) -> list[tuple[int, Job]]:
        """(seq, job) pairs matching the query, newest first, at most query.limit."""
        ...

    def queued_jobs(self, queue: str, statuses: Sequence[JobStatus], limit: int) -> Sequence[Job]:
        """Jobs of `queue` in `statuses`, oldest first (FIFO order), each
        decoded when first looked at (`DecodedOnUse`)."""
        ...

    def share_heads(self, queue: str, per_share: int) -> list[Job]:
        """The first `per_share` RUNNABLE jobs (oldest first) of each share
        identifier in the queue, oldest first: a fair-share queue's choice."""
        ...

    def jobs_in_status(
        self, statuses: Sequence[JobStatus], limit: int, after_seq: int = 0
    ) -> list[tuple[int, Job]]:
        """(seq, job) of any queue in `statuses` with seq above `after_seq`, oldest first."""
        ...

    def job_for_token(self, token: str) -> str | None:
        """The id of the job whose SubmitJob carried invocation id `token`, if any."""
        ...

    def count_jobs_by_queue_status(self) -> dict[str, dict[str, int]]:
        """Per queue, how many jobs are stored in each status (statuses with
        none are absent): every row counts, array parents and the children
        made so far alike. One pass over the (queue, status, seq) index."""
        ...

    # -- array jobs and retention ----------------------------------------------
    def insert_jobs(self, jobs: Sequence[Job]) -> None:
        """Insert many new jobs at once (array children)."""
        ...

    def child_counts(self, parent_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per array parent: how many of its (materialised) children are in each status."""
        ...

    def child_jobs(
        self, parent_id: str, statuses: Sequence[JobStatus], limit: int, after_seq: int = 0
    ) -> list[tuple[int, Job]]:
        """(seq, child) of an array parent in `statuses`, seq above `after_seq`, in seq order."""
        ...

    def purge_jobs(self, stopped_before: int, limit: int) -> int:
        """Delete up to `limit` of the oldest finished jobs that stopped before
        `stopped_before` (epoch ms); how many went."""
        ...


class Store(Protocol):
    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction: committed on normal exit, rolled back on error."""
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only snapshot. Writes through it are an error."""
        ...

    def close(self) -> None: ...


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
