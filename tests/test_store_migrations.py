"""Schema migrations: a database written by an older shoal opens in a newer
one with every job still readable; only the missing steps run, in order, all
in one transaction; a database newer than the code is refused.

SQLite is migrated for real (version 1, as first released, to the newest:
2, an index; 3, EventBridge rules); so is PostgreSQL (1 to 2, EventBridge
rules), and the tests of step ordering add steps of their own after the
newest.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from test_store_contract import make_job, new_schema, postgres_database

from shoal.domain.records import Job, JobStatus
from shoal.store import migrations, postgres_schema
from shoal.store import sqlite as sqlite_store
from shoal.store.base import JobQuery, Store, StoreError
from shoal.store.migrations import Migration
from shoal.store.postgres import PostgresStore
from shoal.store.sqlite import SqliteStore

# The SQLite schema exactly as shoal first shipped it (schema version 1).
V1_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS compute_environments (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS job_queues (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scheduling_policies (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS definition_revisions (name TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job_definitions (
    name TEXT NOT NULL,
    revision INTEGER NOT NULL,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (name, revision)
);
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    job_name TEXT NOT NULL,
    queue TEXT NOT NULL,
    def_name TEXT NOT NULL,
    def_rev INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    stopped_at INTEGER,
    share_identifier TEXT,
    array_parent TEXT,
    array_size INTEGER,
    is_cancelled INTEGER NOT NULL DEFAULT 0,
    is_terminated INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    runtime TEXT NOT NULL,
    tags TEXT NOT NULL,
    terminate_requested TEXT,
    -- The SDK invocation id of the SubmitJob that created the job: a retry
    -- carrying it finds this job instead of creating another.
    token TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_token ON jobs (token) WHERE token IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue_status ON jobs (queue, status, seq);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_queue_name ON jobs (queue, job_name COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS jobs_parent_status ON jobs (array_parent, status, seq)
    WHERE array_parent IS NOT NULL;
"""


def population() -> list[Job]:
    """Top-level jobs, an array with children, every status."""
    jobs = [
        make_job(f"job-{i}", job_name=f"Name-{i % 3}", status=status, created_at=i)
        for i, status in enumerate(JobStatus)
    ]
    jobs.append(make_job("parent", job_name="Name-0", array_size=3, created_at=50))
    jobs += [make_job(f"parent:{i}", job_name="Name-0", array_parent="parent") for i in range(3)]
    return jobs


def write(store: Store, jobs: list[Job]) -> None:
    with store.transaction() as tx:
        for job in jobs:
            tx.insert_job(job, f"token-{job.job_id}" if job.array_parent is None else None)


def assert_all_readable(store: Store, jobs: list[Job]) -> None:
    ids = [j.job_id for j in jobs]
    with store.read() as tx:
        assert tx.get_jobs(ids) == {j.job_id: j for j in jobs}
        assert tx.job_for_token("token-job-0") == "job-0"
        listed = tx.list_jobs(JobQuery(queue="q", limit=1000))
        assert sorted(j.job_id for _, j in listed) == sorted(ids)
        named = tx.list_jobs(JobQuery(queue="q", name_equals="name-0", top_level_only=True))
        assert [j.job_id for _, j in named] == ["parent", "job-6", "job-3", "job-0"]
        prefixed = tx.list_jobs(JobQuery(queue="q", name_prefix="NAME-", top_level_only=True))
        assert len(prefixed) == len(JobStatus) + 1
        assert tx.child_counts(["parent"]) == {"parent": {"SUBMITTED": 3}}
    # And the store takes new work.
    with store.transaction() as tx:
        tx.insert_job(make_job("after-migration"), "token-after")
    with store.read() as tx:
        assert tx.job_for_token("token-after") == "after-migration"


def test_steps_must_be_numbered_in_order() -> None:
    assert migrations.pending([], 0) == []
    steps = [Migration(1, ("a",)), Migration(2, ("b",))]
    assert migrations.pending(steps, 0) == steps
    assert migrations.pending(steps, 1) == steps[1:]
    assert migrations.pending(steps, 2) == []
    with pytest.raises(StoreError, match="newer shoal"):
        migrations.pending(steps, 3)
    with pytest.raises(ValueError):
        migrations.pending([Migration(1, ()), Migration(3, ())], 0)


# -- SQLite -------------------------------------------------------------------------


def sqlite_version(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def sqlite_schema(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name"
        ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def released_v1_database(db: Path) -> None:
    """A database as shoal with schema version 1 created it."""
    with sqlite3.connect(db) as conn:
        conn.executescript(V1_SQLITE_SCHEMA)
        conn.execute("PRAGMA user_version = 1")


def test_sqlite_version_1_is_the_released_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    released_v1_database(tmp_path / "released.db")
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS[:1])
    SqliteStore(tmp_path / "v1.db").close()
    assert sqlite_version(tmp_path / "v1.db") == 1
    assert sqlite_schema(tmp_path / "v1.db") == sqlite_schema(tmp_path / "released.db")


def test_sqlite_version_1_database_migrates_with_every_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shoal.db"
    released_v1_database(db)
    jobs = population()
    with monkeypatch.context() as m:  # the version-1 code writes the jobs
        m.setattr(sqlite_store, "MIGRATIONS", sqlite_store.MIGRATIONS[:1])
        v1 = SqliteStore(db)
        write(v1, jobs)
        v1.close()
    assert sqlite_version(db) == 1
    store = SqliteStore(db)
    try:
        assert sqlite_version(db) == sqlite_store.SCHEMA_VERSION == 3
        assert_all_readable(store, jobs)
    finally:
        store.close()
    tables = {name for kind, name, _ in sqlite_schema(db) if kind == "table"}
    assert "event_rules" in tables  # version 3
    indexes = {name for kind, name, _ in sqlite_schema(db) if kind == "index"}
    assert "jobs_queue_name_parent" in indexes
    assert "jobs_queue_name" not in indexes
    # What version 2 is for: a JOB_NAME filter reads the index alone.
    with sqlite3.connect(db) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT seq FROM jobs WHERE queue = ? AND array_parent IS NULL "
            "AND job_name = ? COLLATE NOCASE ORDER BY seq DESC LIMIT 100",
            ("q", "name-0"),
        ).fetchall()
    assert any("COVERING INDEX jobs_queue_name_parent" in row[-1] for row in plan), plan


def test_sqlite_applies_only_the_missing_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shoal.db"
    current = sqlite_store.MIGRATIONS
    n = len(current)
    # Step n+1 would fail if it ran twice; step n+2 depends on it.
    three = Migration(n + 1, ("CREATE TABLE extra (n INTEGER)", "INSERT INTO extra VALUES (3)"))
    four = Migration(n + 2, ("INSERT INTO extra VALUES (4)",))
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", (*current, three))
    SqliteStore(db).close()
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", (*current, three, four))
    SqliteStore(db).close()
    SqliteStore(db).close()
    assert sqlite_version(db) == n + 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT n FROM extra ORDER BY rowid").fetchall() == [(3,), (4,)]


def test_sqlite_failed_migration_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "shoal.db"
    jobs = population()
    store = SqliteStore(db)
    write(store, jobs)
    store.close()
    before = sqlite_schema(db)
    n = sqlite_store.SCHEMA_VERSION
    broken = (
        Migration(n + 1, ("CREATE TABLE extra (n INTEGER)", "DELETE FROM jobs")),
        Migration(n + 2, ("INSERT INTO no_such_table VALUES (1)",)),
    )
    monkeypatch.setattr(sqlite_store, "MIGRATIONS", (*sqlite_store.MIGRATIONS, *broken))
    with pytest.raises(StoreError, match="no_such_table"):
        SqliteStore(db)
    assert sqlite_version(db) == n
    assert sqlite_schema(db) == before
    monkeypatch.undo()
    store = SqliteStore(db)
    try:
        assert_all_readable(store, jobs)
    finally:
        store.close()


def test_sqlite_refuses_a_newer_database(tmp_path: Path) -> None:
    db = tmp_path / "shoal.db"
    SqliteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    newest = sqlite_store.SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"newer shoal \(schema 99 > {newest}\)"):
        SqliteStore(db)


# -- PostgreSQL ---------------------------------------------------------------------

PG_NEWEST = postgres_schema.SCHEMA_VERSION
# A plausible next step: a column with a value for the jobs already stored,
# and an index on it.
PG_STEP_2 = Migration(
    PG_NEWEST + 1,
    (
        "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
        "UPDATE jobs SET attempts = 1 WHERE status IN ('SUCCEEDED', 'FAILED')",
        "CREATE INDEX jobs_attempts ON jobs (attempts)",
    ),
)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    return new_schema(pg_database)


def pg_versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM shoal_schema ORDER BY version")]


def test_postgres_version_1_database_migrates_with_every_job(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = population()
    current = postgres_schema.MIGRATIONS
    with monkeypatch.context() as m:  # the version-1 code writes the jobs
        m.setattr(postgres_schema, "MIGRATIONS", current[:1])
        v1 = PostgresStore(pg_url)
        write(v1, jobs)
        v1.close()
    assert pg_versions(pg_url) == [1]
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", (*current, PG_STEP_2))
    store = PostgresStore(pg_url)
    try:
        assert pg_versions(pg_url) == list(range(1, PG_NEWEST + 2))
        assert_all_readable(store, jobs)
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        finished = conn.execute("SELECT count(*) FROM jobs WHERE attempts = 1").fetchone()
    assert finished == (2,)  # the step's UPDATE ran on the stored jobs


def test_postgres_applies_only_the_missing_steps(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = postgres_schema.MIGRATIONS
    # Its first step would fail if it ran twice (ADD COLUMN); the next depends on it.
    three = Migration(PG_NEWEST + 2, ("CREATE INDEX jobs_attempts_seq ON jobs (attempts, seq)",))
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", (*current, PG_STEP_2))
    PostgresStore(pg_url).close()
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", (*current, PG_STEP_2, three))
    PostgresStore(pg_url).close()
    PostgresStore(pg_url).close()
    assert pg_versions(pg_url) == list(range(1, PG_NEWEST + 3))


def test_postgres_failed_migration_changes_nothing(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = population()
    store = PostgresStore(pg_url)
    write(store, jobs)
    store.close()
    broken = Migration(
        PG_NEWEST + 1, (*PG_STEP_2.statements, "INSERT INTO no_such_table VALUES (1)")
    )
    monkeypatch.setattr(postgres_schema, "MIGRATIONS", (*postgres_schema.MIGRATIONS, broken))
    with pytest.raises(StoreError, match="no_such_table"):
        PostgresStore(pg_url)
    assert pg_versions(pg_url) == list(range(1, PG_NEWEST + 1))
    with psycopg.connect(pg_url) as conn:
        columns = conn.execute(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'jobs' AND column_name = 'attempts'"
            " AND table_schema = current_schema()"
        ).fetchone()
    assert columns == (0,)
    monkeypatch.undo()
    store = PostgresStore(pg_url)
    try:
        assert_all_readable(store, jobs)
    finally:
        store.close()


def test_postgres_refuses_a_newer_database(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO shoal_schema (version) VALUES (99)")
    with pytest.raises(StoreError, match=rf"newer shoal \(schema 99 > {PG_NEWEST}\)"):
        PostgresStore(pg_url)


def test_postgres_servers_starting_together_migrate_once(pg_url: str) -> None:
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait(10)
            stores.append(PostgresStore(pg_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert not errors, errors
    assert len(stores) == 4
    assert pg_versions(pg_url) == list(range(1, PG_NEWEST + 1))
