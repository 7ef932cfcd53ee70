"""The shared store: PostgreSQL, for several shoal processes (or hosts) on one
control plane. Same contract and same answers as the SQLite store.

Isolation. A write transaction runs at READ COMMITTED and first takes one
transaction-scoped advisory lock, so writers run one at a time across every
process, exactly as SQLite's `BEGIN IMMEDIATE` makes them:

- the service layer reads, decides and writes inside one transaction
  (create a queue if the name is free, add a tag to a job, check a token and
  insert): serial writers make each of those atomic, where row-level
  compare-and-set alone would let two processes lose each other's tags or
  flags, and REPEATABLE READ would fail them with serialization errors that
  only the caller could retry;
- a seq is allocated and committed under the lock, so seqs become visible in
  increasing order and the engine's "seq above the last one seen" scans
  never skip a job that committed late;
- READ COMMITTED, not REPEATABLE READ: once the lock is granted, each
  statement must see what the previous writer committed while we waited.

The compare-and-set updates (`UPDATE ... WHERE status = expected`) stay as in
SQLite and would hold on their own too. A read transaction is a REPEATABLE
READ READ ONLY snapshot: it never waits for writers, and writes through it
fail.

Connections come from a small pool: the server uses one at a time from its
event loop, the pool replaces connections the server dropped, and threads
(tests, tools) get their own. Database errors surface as StoreError.
"""

from __future__ import annotations

import contextlib
import logging
import re
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from shoal.domain.records import (
    ComputeEnvironment,
    EventRule,
    Job,
    JobDefinition,
    JobQueue,
    JobStatus,
    SchedulingPolicy,
)
from shoal.store import codec, job_filters, postgres_schema
from shoal.store.base import DecodedOnUse, JobQuery, StoreError

Conn = psycopg.Connection[tuple[Any, ...]]

# The key of the advisory lock that serialises write transactions.
_WRITE_LOCK = 0x73686F616C01  # "shoal\1"
# One round trip: BEGIN and the lock as one simple query.
_BEGIN_WRITE = f"BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({_WRITE_LOCK})"
_BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
# Per session: a writer waits this long for the lock, then fails (a 500 that
# SDKs retry) rather than stall the event loop, like SQLite's busy_timeout;
# and a process hung mid-transaction cannot hold the lock forever.
_SESSION = "SET lock_timeout = '5s'; SET idle_in_transaction_session_timeout = '60s'"

# libpq also takes the password as a URL parameter.
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)

_JOB_COLUMNS = (
    "seq, job_id, job_name, queue, def_name, def_rev, status, status_reason, created_at, "
    "started_at, stopped_at, share_identifier, array_parent, array_size, is_cancelled, "
    "is_terminated, spec, runtime, tags, terminate_requested"
)
_INSERT_COLUMNS = (
    "job_id, job_name, queue, def_name, def_rev, status, status_reason, created_at, "
    "started_at, stopped_at, share_identifier, array_parent, array_size, is_cancelled, "
    "is_terminated, spec, runtime, tags, token"
)
_DEFINITION_COLUMNS = "name, revision, status, created_at, doc"


def _job_from_row(row: Sequence[Any]) -> Job:
    return Job(
        job_id=row[1],
        job_name=row[2],
        queue=row[3],
        definition_name=row[4],
        definition_revision=row[5],
        status=JobStatus(row[6]),
        status_reason=row[7],
        created_at=row[8],
        started_at=row[9],
        stopped_at=row[10],
        share_identifier=row[11],
        array_parent=row[12],
        array_size=row[13],
        is_cancelled=row[14],
        is_terminated=row[15],
        spec=codec.loads(row[16]),
        runtime=codec.loads(row[17]),
        tags=codec.loads(row[18]),
        terminate_requested=row[19],
    )


def _job_values(job: Job, token: str | None) -> tuple[Any, ...]:
    return (
        job.job_id,
        job.job_name,
        job.queue,
        job.definition_name,
        job.definition_revision,
        job.status.value,
        job.status_reason,
        job.created_at,
        job.started_at,
        job.stopped_at,
        job.share_identifier,
        job.array_parent,
        job.array_size,
        job.is_cancelled,
        job.is_terminated,
        codec.dumps(job.spec),
        codec.dumps(job.runtime),
        codec.dumps(job.tags),
        token,
    )


def _definition(row: Sequence[Any]) -> JobDefinition:
    return codec.definition_from_row(row[0], row[1], row[2], row[3], codec.loads(row[4]))


# lower() of a "C" column folds ASCII only: values are folded the same way
# here (not with the database's locale), as SQLite's NOCASE does.
_DIALECT = job_filters.Dialect(
    mark="%s",
    name_equals=lambda name: ("lower(job_name) = %s", name.translate(_ASCII_LOWER)),
    name_prefix=lambda prefix: (
        "lower(job_name) LIKE %s",
        job_filters.like_prefix(prefix.translate(_ASCII_LOWER)),
    ),
    definition_prefix=lambda prefix: ("def_name LIKE %s", job_filters.like_prefix(prefix)),
)


def _statuses(statuses: Sequence[JobStatus]) -> list[str]:
    return [s.value for s in statuses]


class PostgresTransaction:
    def __init__(self, conn: Conn) -> None:
        self._c = conn

    # -- documents keyed by name ---------------------------------------------
    def _get_doc(self, table: str, name: str) -> Any:
        row = self._c.execute(f"SELECT doc FROM {table} WHERE name = %s", (name,)).fetchone()
        return None if row is None else codec.loads(row[0])

    def _put_doc(self, table: str, name: str, doc: Any) -> None:
        self._c.execute(
            f"INSERT INTO {table} (name, doc) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc",
            (name, codec.dumps(doc)),
        )

    def _delete_doc(self, table: str, name: str) -> None:
        self._c.execute(f"DELETE FROM {table} WHERE name = %s", (name,))

    def _list_docs(self, table: str, after: str | None, limit: int) -> list[Any]:
        rows = self._c.execute(
            f"SELECT doc FROM {table} WHERE name > %s ORDER BY name LIMIT %s",
            (after or "", limit),
        ).fetchall()
        return [codec.loads(r[0]) for r in rows]

    def get_compute_environment(self, name: str) -> ComputeEnvironment | None:
        doc = self._get_doc("compute_environments", name)
        return None if doc is None else codec.ce_from_doc(doc)

    def put_compute_environment(self, ce: ComputeEnvironment) -> None:
        self._put_doc("compute_environments", ce.name, codec.ce_to_doc(ce))

    def delete_compute_environment(self, name: str) -> None:
        self._delete_doc("compute_environments", name)

    def list_compute_environments(self, after: str | None, limit: int) -> list[ComputeEnvironment]:
        return [codec.ce_from_doc(d) for d in self._list_docs("compute_environments", after, limit)]

    def get_job_queue(self, name: str) -> JobQueue | None:
        doc = self._get_doc("job_queues", name)
        return None if doc is None else codec.queue_from_doc(doc)

    def put_job_queue(self, queue: JobQueue) -> None:
        self._put_doc("job_queues", queue.name, codec.queue_to_doc(queue))

    def delete_job_queue(self, name: str) -> None:
        self._delete_doc("job_queues", name)

    def list_job_queues(self, after: str | None, limit: int) -> list[JobQueue]:
        return [codec.queue_from_doc(d) for d in self._list_docs("job_queues", after, limit)]

    # -- EventBridge rules ----------------------------------------------------
    def get_rule(self, name: str) -> EventRule | None:
        row = self._c.execute(
            "SELECT doc, next_fire FROM event_rules WHERE name = %s", (name,)
        ).fetchone()
        return None if row is None else codec.rule_from_doc(codec.loads(row[0]), row[1])

    def put_rule(self, rule: EventRule) -> None:
        self._c.execute(
            "INSERT INTO event_rules (name, doc, next_fire) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET doc = excluded.doc, next_fire = excluded.next_fire",
            (rule.name, codec.dumps(codec.rule_to_doc(rule)), rule.next_fire_ms),
        )

    def delete_rule(self, name: str) -> None:
        self._c.execute("DELETE FROM event_rules WHERE name = %s", (name,))

    def list_rules(self, after: str | None, limit: int) -> list[EventRule]:
        rows = self._c.execute(
            "SELECT doc, next_fire FROM event_rules WHERE name > %s ORDER BY name LIMIT %s",
            (after or "", limit),
        ).fetchall()
        return [codec.rule_from_doc(codec.loads(r[0]), r[1]) for r in rows]

    def due_rules(self, now_ms: int, limit: int) -> list[EventRule]:
        rows = self._c.execute(
            "SELECT doc, next_fire FROM event_rules WHERE next_fire <= %s "
            "ORDER BY next_fire LIMIT %s",
            (now_ms, limit),
        ).fetchall()
        return [codec.rule_from_doc(codec.loads(r[0]), r[1]) for r in rows]

    def next_rule_fire(self) -> int | None:
        row = self._c.execute("SELECT min(next_fire) FROM event_rules").fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def advance_rule(self, name: str, expected_ms: int, next_ms: int | None) -> bool:
        cur = self._c.execute(
            "UPDATE event_rules SET next_fire = %s WHERE name = %s AND next_fire = %s",
            (next_ms, name, expected_ms),
        )
        return bool(cur.rowcount == 1)

    def get_scheduling_policy(self, name: str) -> SchedulingPolicy | None:
        doc = self._get_doc("scheduling_policies", name)
        return None if doc is None else codec.policy_from_doc(doc)

    def put_scheduling_policy(self, policy: SchedulingPolicy) -> None:
        self._put_doc("scheduling_policies", policy.name, codec.policy_to_doc(policy))

    def delete_scheduling_policy(self, name: str) -> None:
        self._delete_doc("scheduling_policies", name)

    def list_scheduling_policies(self, after: str | None, limit: int) -> list[SchedulingPolicy]:
        docs = self._list_docs("scheduling_policies", after, limit)
        return [codec.policy_from_doc(d) for d in docs]

    # -- job definitions ------------------------------------------------------
    def allocate_revision(self, name: str) -> int:
        row = self._c.execute(
            "INSERT INTO definition_revisions AS r (name, last) VALUES (%s, 1) "
            "ON CONFLICT (name) DO UPDATE SET last = r.last + 1 RETURNING last",
            (name,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def put_job_definition(self, definition: JobDefinition) -> None:
        self._c.execute(
            f"INSERT INTO job_definitions ({_DEFINITION_COLUMNS}) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (name, revision) DO UPDATE SET "
            "status = excluded.status, doc = excluded.doc",
            (
                definition.name,
                definition.revision,
                definition.status,
                definition.created_at,
                codec.dumps(codec.definition_to_doc(definition)),
            ),
        )

    def get_job_definition(self, name: str, revision: int) -> JobDefinition | None:
        row = self._c.execute(
            f"SELECT {_DEFINITION_COLUMNS} FROM job_definitions WHERE name = %s AND revision = %s",
            (name, revision),
        ).fetchone()
        return None if row is None else _definition(row)

    def latest_active_definition(self, name: str) -> JobDefinition | None:
        row = self._c.execute(
            f"SELECT {_DEFINITION_COLUMNS} FROM job_definitions "
            "WHERE name = %s AND status = 'ACTIVE' ORDER BY revision DESC LIMIT 1",
            (name,),
        ).fetchone()
        return None if row is None else _definition(row)

    def list_job_definitions(
        self,
        *,
        name: str | None,
        status: str | None,
        after: tuple[str, int] | None,
        limit: int,
    ) -> list[JobDefinition]:
        where: list[str] = []
        args: list[Any] = []
        if name is not None:
            where.append("name = %s")
            args.append(name)
        if status is not None:
            where.append("status = %s")
            args.append(status)
        if after is not None:
            where.append("(name, revision) > (%s, %s)")
            args.extend(after)
        sql = f"SELECT {_DEFINITION_COLUMNS} FROM job_definitions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY name, revision LIMIT %s"
        rows = self._c.execute(sql, (*args, limit)).fetchall()
        return [_definition(r) for r in rows]

    # -- jobs -----------------------------------------------------------------
    def insert_job(self, job: Job, token: str | None = None) -> None:
        self._c.execute(
            f"INSERT INTO jobs ({_INSERT_COLUMNS}) VALUES "
            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            _job_values(job, token),
        )

    def get_jobs(self, job_ids: Sequence[str]) -> dict[str, Job]:
        if not job_ids:
            return {}
        rows = self._c.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ANY(%s)", (list(job_ids),)
        ).fetchall()
        return {row[1]: _job_from_row(row) for row in rows}

    def update_job(self, job: Job, expected: JobStatus) -> bool:
        cur = self._c.execute(
            "UPDATE jobs SET status = %s, status_reason = %s, started_at = %s, stopped_at = %s, "
            "is_cancelled = %s, is_terminated = %s, runtime = %s, tags = %s, "
            "terminate_requested = %s WHERE job_id = %s AND status = %s",
            (
                job.status.value,
                job.status_reason,
                job.started_at,
                job.stopped_at,
                job.is_cancelled,
                job.is_terminated,
                codec.dumps(job.runtime),
                codec.dumps(job.tags),
                job.terminate_requested,
                job.job_id,
                expected.value,
            ),
        )
        return cur.rowcount == 1

    def set_job_state(self, job: Job, expected: JobStatus) -> bool:
        cur = self._c.execute(
            "UPDATE jobs SET status = %s, status_reason = %s, started_at = %s, stopped_at = %s, "
            "is_terminated = %s, runtime = %s WHERE job_id = %s AND status = %s",
            (
                job.status.value,
                job.status_reason,
                job.started_at,
                job.stopped_at,
                job.is_terminated,
                codec.dumps(job.runtime),
                job.job_id,
                expected.value,
            ),
        )
        return cur.rowcount == 1

    def list_jobs(self, query: JobQuery) -> list[tuple[int, Job]]:
        clause, args = job_filters.where(query, _DIALECT)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs{clause} ORDER BY seq DESC LIMIT %s"
        # Never a prepared (generic) plan: a LIKE prefix uses the name index
        # only when the planner sees the pattern.
        rows = self._c.execute(sql, (*args, query.limit), prepare=False).fetchall()
        return [(row[0], _job_from_row(row)) for row in rows]

    def queued_jobs(self, queue: str, statuses: Sequence[JobStatus], limit: int) -> Sequence[Job]:
        rows = self._c.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE queue = %s AND status = ANY(%s) "
            "ORDER BY seq LIMIT %s",
            (queue, _statuses(statuses), limit),
        ).fetchall()
        return DecodedOnUse(rows, _job_from_row)

    def share_heads(self, queue: str, per_share: int) -> list[Job]:
        rows = self._c.execute(
            f"SELECT {_JOB_COLUMNS} FROM (SELECT *, row_number() OVER "
            "(PARTITION BY share_identifier ORDER BY seq) AS place FROM jobs "
            "WHERE queue = %s AND status = 'RUNNABLE') AS heads WHERE place <= %s ORDER BY seq",
            (queue, per_share),
        ).fetchall()
        return [_job_from_row(r) for r in rows]

    def jobs_in_status(
        self, statuses: Sequence[JobStatus], limit: int, after_seq: int = 0
    ) -> list[tuple[int, Job]]:
        rows = self._c.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status = ANY(%s) AND seq > %s "
            "ORDER BY seq LIMIT %s",
            (_statuses(statuses), after_seq, limit),
        ).fetchall()
        return [(r[0], _job_from_row(r)) for r in rows]

    def count_jobs_by_queue_status(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        # The planner picks a (parallel) index-only scan of (queue, status,
        # seq) for rows of real width: about 0.1 s per million jobs.
        rows = self._c.execute(
            "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"
        ).fetchall()
        for queue, status, n in rows:
            counts.setdefault(queue, {})[status] = n
        return counts

    def job_for_token(self, token: str) -> str | None:
        row = self._c.execute("SELECT job_id FROM jobs WHERE token = %s", (token,)).fetchone()
        return None if row is None else str(row[0])

    # -- array jobs and retention ----------------------------------------------
    def insert_jobs(self, jobs: Sequence[Job]) -> None:
        # COPY: one stream for a whole array's children instead of a round
        # trip (or a pipelined statement) per child.
        with (
            self._c.cursor() as cur,
            cur.copy(f"COPY jobs ({_INSERT_COLUMNS}) FROM STDIN") as copy,
        ):
            for job in jobs:
                copy.write_row(_job_values(job, None))

    def child_counts(self, parent_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {p: {} for p in parent_ids}
        if not parent_ids:
            return counts
        rows = self._c.execute(
            "SELECT array_parent, status, count(*) FROM jobs "
            "WHERE array_parent = ANY(%s) GROUP BY array_parent, status",
            (list(parent_ids),),
        ).fetchall()
        for parent, status, n in rows:
            counts[parent][status] = n
        return counts

    def child_jobs(
        self, parent_id: str, statuses: Sequence[JobStatus], limit: int, after_seq: int = 0
    ) -> list[tuple[int, Job]]:
        rows = self._c.execute(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE array_parent = %s AND status = ANY(%s) "
            "AND seq > %s ORDER BY seq LIMIT %s",
            (parent_id, _statuses(statuses), after_seq, limit),
        ).fetchall()
        return [(r[0], _job_from_row(r)) for r in rows]

    def purge_jobs(self, stopped_before: int, limit: int) -> int:
        # As in SQLite: only the `limit` oldest finished jobs per status are
        # looked at, so the work is bounded however many jobs are stored.
        gone = 0
        for status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
            cur = self._c.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM (SELECT seq, stopped_at "
                "FROM jobs WHERE status = %s ORDER BY seq LIMIT %s) AS oldest "
                "WHERE stopped_at < %s)",
                (status.value, limit, stopped_before),
            )
            gone += cur.rowcount
        return gone


def redacted(url: str) -> str:
    """`url` (a URL or a key=value conninfo) without its password, for messages."""
    if "://" not in url:
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error:
            return "(an unreadable conninfo)"
        if "password" in params:
            params["password"] = "***"
        return make_conninfo("", **params)
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    # By hand: urlunsplit drops the "//" of a URL without a host (a socket).
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def _configure(conn: Conn) -> None:
    conn.execute(_SESSION, prepare=False)


class PostgresStore:
    """A Store on a PostgreSQL database, given as a libpq URL or conninfo
    (postgresql://user@host:port/dbname?options=-csearch_path%3Dshoal, ...).
    Passwords are best left to PGPASSWORD or ~/.pgpass."""

    def __init__(self, url: str, *, pool_size: int = 4, timeout: float = 5.0) -> None:
        where = redacted(url)
        try:
            conninfo = url
            if "connect_timeout" not in conninfo_to_dict(url):  # libpq waits forever
                conninfo = make_conninfo(url, connect_timeout=max(2, int(timeout)))
            with psycopg.connect(conninfo, autocommit=True) as conn:
                postgres_schema.migrate(conn, postgres_schema.MIGRATIONS)
        except psycopg.Error as e:
            raise StoreError(f"cannot open the PostgreSQL store at {where}: {e}") from e
        # The pool logs every checkout at INFO; that is noise at our default level.
        pool_log = logging.getLogger("psycopg.pool")
        if pool_log.level == logging.NOTSET:
            pool_log.setLevel(logging.WARNING)
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="shoal-store",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as e:
            self._pool.close()
            raise StoreError(f"cannot open the PostgreSQL store at {where}: {e}") from e

    def _begin(self, begin: str) -> Conn:
        """A pooled connection inside a new transaction. A connection that the
        server dropped while it sat in the pool (a restart, a failover) is
        replaced once: nothing of the caller's has run yet, so that is safe."""
        for attempt in range(2):
            conn = self._pool.getconn()
            try:
                conn.execute(begin, prepare=False)
                return conn
            except psycopg.OperationalError:
                self._release(conn)
                if attempt or not conn.broken:
                    raise
                self._pool.check()  # drop the other dead ones too
        raise AssertionError("unreachable")

    def _release(self, conn: Conn) -> None:
        if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK", prepare=False)
        self._pool.putconn(conn)

    @contextmanager
    def _transaction(self, begin: str, end: str) -> Iterator[PostgresTransaction]:
        try:
            conn = self._begin(begin)
            try:
                yield PostgresTransaction(conn)
                conn.execute(end, prepare=False)
            finally:
                self._release(conn)  # rolls back what is not committed
        except psycopg.Error as e:
            raise StoreError(f"PostgreSQL: {e}") from e

    def transaction(self) -> contextlib.AbstractContextManager[PostgresTransaction]:
        return self._transaction(_BEGIN_WRITE, "COMMIT")

    def read(self) -> contextlib.AbstractContextManager[PostgresTransaction]:
        return self._transaction(_BEGIN_READ, "ROLLBACK")

    def close(self) -> None:
        self._pool.close()
