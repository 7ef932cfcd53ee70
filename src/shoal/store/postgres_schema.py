"""The PostgreSQL store's schema, as versioned migrations.

The tables mirror the SQLite store's, column for column, so that both stores
answer every query alike:

- Names that are listed in order or matched by prefix are `COLLATE "C"`:
  byte order, as SQLite's BINARY, whatever the database's locale. Under a
  linguistic collation ("a-b" < "aa" < "B") pages would come in another order
  than on SQLite, and a LIKE prefix could not use a plain index.
- `lower(job_name)` of a "C" column folds ASCII letters only, exactly as
  SQLite's NOCASE (job names are ASCII anyway; this keeps it locale-proof).
- JSON documents are TEXT written by `codec`, not JSONB: they are read and
  written whole and never queried inside (every filter is a column), TEXT
  keeps them byte for byte as sent (JSONB reorders keys) and skips a
  server-side parse per write. `ALTER ... TYPE jsonb USING doc::jsonb` is a
  migration away if a query inside them is ever needed.
- `seq` is an identity column; write transactions are serialised (see
  postgres.py), so seqs become visible in increasing order.

The version lives in `shoal_schema`: one row per applied migration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from shoal.store import migrations
from shoal.store.migrations import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        (
            'CREATE TABLE compute_environments (name TEXT COLLATE "C" PRIMARY KEY, '
            "doc TEXT NOT NULL)",
            'CREATE TABLE job_queues (name TEXT COLLATE "C" PRIMARY KEY, doc TEXT NOT NULL)',
            'CREATE TABLE scheduling_policies (name TEXT COLLATE "C" PRIMARY KEY, '
            "doc TEXT NOT NULL)",
            'CREATE TABLE definition_revisions (name TEXT COLLATE "C" PRIMARY KEY, '
            "last INTEGER NOT NULL)",
            """CREATE TABLE job_definitions (
                name TEXT COLLATE "C" NOT NULL,
                revision INTEGER NOT NULL,
                status TEXT NOT NULL,
                created_at BIGINT NOT NULL,
                doc TEXT NOT NULL,
                PRIMARY KEY (name, revision)
            )""",
            """CREATE TABLE jobs (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job_id TEXT NOT NULL UNIQUE,
                job_name TEXT COLLATE "C" NOT NULL,
                queue TEXT COLLATE "C" NOT NULL,
                def_name TEXT COLLATE "C" NOT NULL,
                def_rev INTEGER NOT NULL,
                status TEXT NOT NULL,
                status_reason TEXT,
                created_at BIGINT NOT NULL,
                started_at BIGINT,
                stopped_at BIGINT,
                share_identifier TEXT,
                array_parent TEXT,
                array_size INTEGER,
                is_cancelled BOOLEAN NOT NULL DEFAULT false,
                is_terminated BOOLEAN NOT NULL DEFAULT false,
                spec TEXT NOT NULL,
                runtime TEXT NOT NULL,
                tags TEXT NOT NULL,
                terminate_requested TEXT,
                -- The SDK invocation id of the SubmitJob that created the job.
                token TEXT
            )""",
            "CREATE UNIQUE INDEX jobs_token ON jobs (token) WHERE token IS NOT NULL",
            "CREATE INDEX jobs_queue_status ON jobs (queue, status, seq)",
            "CREATE INDEX jobs_status ON jobs (status, seq)",
            # ListJobs' JOB_NAME filter always lists top-level jobs only, so
            # array children (possibly thousands per array) stay out of it.
            "CREATE INDEX jobs_queue_name ON jobs (queue, lower(job_name), seq) "
            "WHERE array_parent IS NULL",
            "CREATE INDEX jobs_parent_status ON jobs (array_parent, status, seq) "
            "WHERE array_parent IS NOT NULL",
        ),
    ),
    Migration(
        2,
        (
            # EventBridge rules; next_fire is claimed compare-and-set by the
            # engine that fires it, so each scheduled time fires once.
            'CREATE TABLE event_rules (name TEXT COLLATE "C" PRIMARY KEY, '
            "doc TEXT NOT NULL, next_fire BIGINT)",
            "CREATE INDEX event_rules_next_fire ON event_rules (next_fire) "
            "WHERE next_fire IS NOT NULL",
        ),
    ),
)
SCHEMA_VERSION = migrations.latest(MIGRATIONS)

# Held (per database) while migrating: two servers starting at once against a
# new database must not both create the tables.
_MIGRATE_LOCK = 0x73686F616C00  # "shoal\0"


def _version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('shoal_schema') IS NOT NULL").fetchone()
    if row is None or not row[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM shoal_schema").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: psycopg.Connection[Any], steps: Sequence[Migration] = MIGRATIONS) -> int:
    """Bring the schema on `conn` (autocommit) up to the newest of `steps`, in
    one transaction; the version it is at now. Raises StoreError for a
    database newer than `steps`, psycopg.Error if a step fails (nothing of it
    stays)."""
    if not migrations.pending(steps, _version(conn)):
        return migrations.latest(steps)
    # READ COMMITTED whatever the server's default: after waiting for the
    # lock, the next statements must see what the other server committed.
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS shoal_schema (version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        # Again under the lock: another server may have migrated meanwhile.
        for step in migrations.pending(steps, _version(conn)):
            for statement in step.statements:
                conn.execute(statement, prepare=False)
            conn.execute("INSERT INTO shoal_schema (version) VALUES (%s)", (step.version,))
    return migrations.latest(steps)
