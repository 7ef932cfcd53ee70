"""One contract suite for every Store: SQLite and PostgreSQL pass the same
tests, unchanged (each test runs once per store).

PostgreSQL comes from $SHOAL_TEST_POSTGRES (a postgresql:// URL of a role
that may create databases; .ci/run starts a server on 127.0.0.1 and sets it),
else the local default socket. Each module gets a database of its own with a
random name, dropped afterwards, and each test a schema of its own in it, so
xdist workers never meet. Without a reachable server the PostgreSQL cases are
skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg
import pytest
from conftest import free_port, make_ce, make_definition, make_queue, start_server
from engine_support import engine_server, wait_for
from psycopg.conninfo import conninfo_to_dict

from shoal.domain.records import (
    CeOrder,
    ComputeEnvironment,
    Job,
    JobDefinition,
    JobQueue,
    JobStatus,
    Lifecycle,
    ResourceStatus,
    SchedulingPolicy,
)
from shoal.store.base import DecodedOnUse, JobQuery, Store, StoreError
from shoal.store.postgres import PostgresStore, redacted
from shoal.store.sqlite import SqliteStore

S = JobStatus

# A duplicate job id or SDK token is rejected. The Store protocol names no
# exception for it yet: SQLite lets sqlite3.IntegrityError through, the
# PostgreSQL store raises StoreError.
REJECTED = (StoreError, sqlite3.IntegrityError)


# -- PostgreSQL for tests (also used by test_store_migrations) -------------------


def postgres_admin_url() -> str:
    return os.environ.get("SHOAL_TEST_POSTGRES") or "postgresql:///postgres"


def url_with(url: str, *, dbname: str | None = None, schema: str | None = None) -> str:
    """`url` naming another database, or with `schema` first on the search path."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if schema is not None:
        query.append(("options", f"-csearch_path={schema}"))
    path = parts.path if dbname is None else f"/{dbname}"
    # By hand: urlunsplit drops the "//" of a URL without a host (a socket).
    return f"{parts.scheme}://{parts.netloc}{path}" + (f"?{urlencode(query)}" if query else "")


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database with a random name; its URL. Dropped afterwards.

    It collates linguistically (ICU en-US) where the server can, so a query
    that forgot byte order ("B" < "a") fails here rather than in production."""
    admin_url = postgres_admin_url()
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        pytest.skip(
            f"no PostgreSQL at {admin_url} ({' '.join(str(e).split())}); "
            "set SHOAL_TEST_POSTGRES to a postgresql:// URL (.ci/run does)"
        )
    name = f"shoal_test_{uuid.uuid4().hex[:12]}"
    with admin:
        try:
            admin.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' "
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
        except psycopg.Error:
            admin.execute(f"CREATE DATABASE {name}")
        try:
            yield url_with(admin_url, dbname=name)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def new_schema(database_url: str) -> str:
    """A new, empty schema in the database; a URL that works in it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return url_with(database_url, schema=schema)


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with postgres_database() as url:
        yield url


# -- the stores under test ---------------------------------------------------------


@dataclass
class Backend:
    """Where a store keeps its data; `open()` gives another Store on the same
    data, as a second server process would have."""

    open: Callable[[], Store]
    opened: list[Store] = dataclasses.field(default_factory=list)

    def store(self) -> Store:
        store = self.open()
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        db = tmp_path / "shoal.db"
        backend = Backend(open=lambda: SqliteStore(db))
    else:
        url = new_schema(request.getfixturevalue("pg_database"))
        backend = Backend(open=lambda: PostgresStore(url))
    yield backend
    for store in backend.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store()


# -- records ------------------------------------------------------------------------


def make_job(job_id: str, **fields: Any) -> Job:
    values: dict[str, Any] = {
        "job_name": "job",
        "queue": "q",
        "definition_name": "def",
        "definition_revision": 1,
        "status": S.SUBMITTED,
        "created_at": 1_000,
        "spec": {"parameters": {"z": "1", "a": "2"}, "dependsOn": [], "container": {}},
    }
    values.update(fields)
    return Job(job_id=job_id, **values)


def ce_record(name: str, **fields: Any) -> ComputeEnvironment:
    values: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "type": "MANAGED",
        "state": "ENABLED",
        "lifecycle": Lifecycle(status=ResourceStatus.CREATING, settles_at=5),
        "compute_resources": {"type": "EC2", "maxvCpus": 8, "minvCpus": 0},
        "service_role": "arn:aws:iam::123456789012:role/batch",
        "extra": {"context": "ctx"},
        "tags": {"team": "été"},
        "created_at": 7,
    }
    values.update(fields)
    return ComputeEnvironment(name=name, **values)


def queue_record(name: str, **fields: Any) -> JobQueue:
    values: dict[str, Any] = {
        "state": "ENABLED",
        "lifecycle": Lifecycle(status=ResourceStatus.VALID),
        "priority": 3,
        "compute_environment_order": (
            CeOrder(order=1, compute_environment="ce-a"),
            CeOrder(order=2, compute_environment="ce-b"),
        ),
        "scheduling_policy": "fair",
        "job_state_time_limit_actions": (
            {"reason": "r", "state": "RUNNABLE", "maxTimeSeconds": 600, "action": "CANCEL"},
        ),
        "tags": {"k": "v"},
        "created_at": 9,
    }
    values.update(fields)
    return JobQueue(name=name, **values)


def policy_record(name: str, **fields: Any) -> SchedulingPolicy:
    values: dict[str, Any] = {
        "fairshare_policy": {"shareDecaySeconds": 3600, "shareDistribution": []},
        "tags": {"k": "v"},
        "created_at": 11,
    }
    values.update(fields)
    return SchedulingPolicy(name=name, **values)


def definition_record(name: str, revision: int, status: str = "ACTIVE") -> JobDefinition:
    return JobDefinition(
        name=name,
        revision=revision,
        status=status,
        type="container",
        body={"containerProperties": {"image": "busybox", "command": ["true"]}},
        tags={"rev": str(revision)},
        created_at=100 + revision,
    )


# Names whose byte order ("B" < "a" < "a-b" < "aa" < "b") differs from any
# linguistic order: pages must come in byte order, as SQLite's.
NAMES = ["b", "aa", "B", "a-b", "a"]
BYTE_ORDER = sorted(NAMES)

# (record builder, put, get, delete, list) for each kind of named document.
DOCUMENTS: dict[str, tuple[Callable[..., Any], str, str, str, str]] = {
    "compute_environment": (
        ce_record,
        "put_compute_environment",
        "get_compute_environment",
        "delete_compute_environment",
        "list_compute_environments",
    ),
    "job_queue": (
        queue_record,
        "put_job_queue",
        "get_job_queue",
        "delete_job_queue",
        "list_job_queues",
    ),
    "scheduling_policy": (
        policy_record,
        "put_scheduling_policy",
        "get_scheduling_policy",
        "delete_scheduling_policy",
        "list_scheduling_policies",
    ),
}


# -- compute environments, job queues, scheduling policies ---------------------------


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_named_documents_round_trip_replace_delete(store: Store, kind: str) -> None:
    make, put, get, delete, _ = DOCUMENTS[kind]
    records = {name: make(name) for name in NAMES}
    with store.transaction() as tx:
        for record in records.values():
            getattr(tx, put)(record)
    with store.read() as tx:
        for name, record in records.items():
            assert getattr(tx, get)(name) == record
        assert getattr(tx, get)("missing") is None
        assert getattr(tx, get)("A") is None  # names are case-sensitive
    changed = dataclasses.replace(records["aa"], tags={"new": "tag"})
    with store.transaction() as tx:
        getattr(tx, put)(changed)  # insert or replace by name
        getattr(tx, delete)("b")
        getattr(tx, delete)("missing")  # deleting nothing is fine
    with store.read() as tx:
        assert getattr(tx, get)("aa") == changed
        assert getattr(tx, get)("b") is None


@pytest.mark.parametrize("kind", list(DOCUMENTS))
def test_named_documents_pages_in_byte_order(store: Store, kind: str) -> None:
    make, put, _, _, list_ = DOCUMENTS[kind]
    with store.transaction() as tx:
        for name in NAMES:
            getattr(tx, put)(make(name))
    seen: list[str] = []
    after: str | None = None
    with store.read() as tx:
        while page := getattr(tx, list_)(after, 2):
            assert len(page) <= 2
            seen.extend(r.name for r in page)
            after = page[-1].name
        assert [r.name for r in getattr(tx, list_)(None, 100)] == BYTE_ORDER
        assert [r.name for r in getattr(tx, list_)("a-b", 100)] == ["aa", "b"]
    assert seen == BYTE_ORDER


# -- job definitions ------------------------------------------------------------------


def test_revisions_count_per_name(store: Store) -> None:
    with store.transaction() as tx:
        assert [tx.allocate_revision("d") for _ in range(3)] == [1, 2, 3]
        assert tx.allocate_revision("e") == 1
    with store.transaction() as tx:
        assert tx.allocate_revision("d") == 4  # never handed out twice
        assert tx.allocate_revision("D") == 1


def test_job_definitions_get_latest_active_and_replace(store: Store) -> None:
    with store.transaction() as tx:
        for revision in (1, 2, 3):
            tx.put_job_definition(definition_record("d", revision))
        tx.put_job_definition(definition_record("other", 9))
    with store.read() as tx:
        assert tx.get_job_definition("d", 2) == definition_record("d", 2)
        assert tx.get_job_definition("d", 4) is None
        latest = tx.latest_active_definition("d")
        assert latest is not None and latest.revision == 3
        assert tx.latest_active_definition("missing") is None
    with store.transaction() as tx:
        tx.put_job_definition(definition_record("d", 3, status="INACTIVE"))  # deregistered
    with store.read() as tx:
        assert tx.get_job_definition("d", 3) == definition_record("d", 3, status="INACTIVE")
        latest = tx.latest_active_definition("d")
        assert latest is not None and latest.revision == 2


def test_list_job_definitions_filters_and_pages(store: Store) -> None:
    with store.transaction() as tx:
        for name in NAMES:
            for revision in (2, 10, 1):  # revisions sort as numbers: 1, 2, 10
                status = "INACTIVE" if revision == 2 else "ACTIVE"
                tx.put_job_definition(definition_record(name, revision, status))
    everything = [(n, r) for n in BYTE_ORDER for r in (1, 2, 10)]

    def keys(defs: list[JobDefinition]) -> list[tuple[str, int]]:
        return [(d.name, d.revision) for d in defs]

    with store.read() as tx:
        assert keys(tx.list_job_definitions(name=None, status=None, after=None, limit=100)) == (
            everything
        )
        seen: list[tuple[str, int]] = []
        after: tuple[str, int] | None = None
        while page := tx.list_job_definitions(name=None, status=None, after=after, limit=4):
            seen.extend(keys(page))
            after = seen[-1]
        assert seen == everything
        by_name = tx.list_job_definitions(name="aa", status=None, after=None, limit=100)
        assert keys(by_name) == [("aa", 1), ("aa", 2), ("aa", 10)]
        active = tx.list_job_definitions(name=None, status="ACTIVE", after=None, limit=100)
        assert keys(active) == [k for k in everything if k[1] != 2]
        both = tx.list_job_definitions(name="B", status="INACTIVE", after=None, limit=100)
        assert keys(both) == [("B", 2)]
        later = tx.list_job_definitions(name="aa", status=None, after=("aa", 1), limit=100)
        assert keys(later) == [("aa", 2), ("aa", 10)]


# -- jobs: insert, get, compare-and-set -----------------------------------------------------


def test_jobs_round_trip_every_field(store: Store) -> None:
    full = make_job(
        "full",
        job_name="Full-Job",
        status=S.RUNNING,
        status_reason="why",
        started_at=2_000,
        stopped_at=3_000,
        share_identifier="blue",
        array_size=4,
        runtime={"attempts": [{"exitCode": 0}], "z": {"b": 1, "a": [1, 2.5, None, True]}},
        tags={"b": "2", "a": "ünïcode ✓"},
        is_cancelled=True,
        is_terminated=True,
        spec={"zeta": 1, "alpha": {"y": "x"}, "parameters": {"p": "Ref::p"}},
    )
    bare = make_job("bare")
    with store.transaction() as tx:
        tx.insert_job(full)
        tx.insert_job(bare, "token-1")
    with store.read() as tx:
        got = tx.get_jobs(["full", "bare", "missing", "full"])
        assert got == {"full": full, "bare": bare}
        # Documents come back as written, keys in their order.
        assert list(got["full"].spec) == ["zeta", "alpha", "parameters"]
        assert list(got["full"].tags) == ["b", "a"]
        assert tx.get_jobs([]) == {}


def test_update_job_is_compare_and_set(store: Store) -> None:
    job = make_job("j", status=S.RUNNABLE, tags={"a": "1"})
    with store.transaction() as tx:
        tx.insert_job(job)
    changed = dataclasses.replace(
        job,
        job_name="ignored",  # not mutable
        spec={"ignored": True},
        status=S.FAILED,
        status_reason="cancelled",
        started_at=5,
        stopped_at=6,
        is_cancelled=True,
        is_terminated=True,
        runtime={"attempts": []},
        tags={"b": "2"},
        terminate_requested="r",
    )
    with store.transaction() as tx:
        assert tx.update_job(changed, S.RUNNABLE)
    with store.transaction() as tx:
        # The status moved: nothing changes.
        assert not tx.update_job(dataclasses.replace(changed, tags={}), S.RUNNABLE)
        assert not tx.update_job(make_job("missing"), S.SUBMITTED)
    with store.read() as tx:
        assert tx.get_jobs(["j"])["j"] == dataclasses.replace(
            changed, job_name="job", spec=job.spec
        )


def test_set_job_state_leaves_what_others_own(store: Store) -> None:
    job = make_job("j", status=S.STARTING, tags={"a": "1"})
    with store.transaction() as tx:
        tx.insert_job(job)
    with store.transaction() as tx:
        # Meanwhile a user tagged the job and asked to terminate it.
        tx.update_job(
            dataclasses.replace(job, tags={"user": "tag"}, terminate_requested="stop"), S.STARTING
        )
    engine_view = dataclasses.replace(
        job,
        status=S.RUNNING,
        status_reason="started",
        started_at=50,
        stopped_at=None,
        is_terminated=True,
        runtime={"task": "t1"},
        is_cancelled=True,  # none of these three is the engine's to write
        tags={"stale": "copy"},
        terminate_requested=None,
    )
    with store.transaction() as tx:
        assert tx.set_job_state(engine_view, S.STARTING)
        assert not tx.set_job_state(engine_view, S.STARTING)  # already moved
    with store.read() as tx:
        stored = tx.get_jobs(["j"])["j"]
    assert stored == dataclasses.replace(
        engine_view, is_cancelled=False, tags={"user": "tag"}, terminate_requested="stop"
    )


def test_duplicate_job_id_is_rejected_and_rolled_back(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_job(make_job("j"))
    with pytest.raises(REJECTED), store.transaction() as tx:
        tx.insert_job(make_job("other"))
        tx.insert_job(make_job("j", job_name="again"))
    with store.read() as tx:
        assert set(tx.get_jobs(["j", "other"])) == {"j"}
        assert tx.get_jobs(["j"])["j"].job_name == "job"


def test_submit_tokens_are_unique(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_job(make_job("first"), "tok")
        tx.insert_job(make_job("no-token-1"))  # jobs without a token never collide
        tx.insert_job(make_job("no-token-2"), None)
    with store.read() as tx:
        assert tx.job_for_token("tok") == "first"
        assert tx.job_for_token("other") is None
    with pytest.raises(REJECTED), store.transaction() as tx:
        tx.insert_job(make_job("second"), "tok")
    with store.read() as tx:
        assert tx.get_jobs(["second"]) == {}
        assert tx.job_for_token("tok") == "first"


# -- jobs: listing ----------------------------------------------------------------


def _seed_jobs(store: Store) -> dict[str, int]:
    """A mixed population; returns each job's seq (insertion order)."""
    jobs = [
        make_job("a1", job_name="Alpha", status=S.RUNNING, created_at=100),
        make_job("a2", job_name="alpha", status=S.SUCCEEDED, created_at=200),
        make_job("a3", job_name="ALPHABET", definition_name="Def", created_at=300),
        make_job("b1", job_name="beta", queue="other", status=S.RUNNING, created_at=400),
        make_job("u1", job_name="a_b", share_identifier="blue", created_at=500),
        make_job("u2", job_name="axb", share_identifier="red", created_at=600),
        make_job("p1", job_name="alpha", array_size=2, definition_revision=2, created_at=700),
        make_job("c0", job_name="alpha", array_parent="p1", created_at=800),
        make_job("c1", job_name="alpha", array_parent="p1", status=S.RUNNING, created_at=900),
        make_job("pct", job_name="50%off", definition_name="d%f", created_at=1000),
    ]
    with store.transaction() as tx:
        for job in jobs:
            tx.insert_job(job)
    with store.read() as tx:
        rows = tx.list_jobs(JobQuery(limit=100))
    seqs = {job.job_id: seq for seq, job in rows}
    order = [job.job_id for job in jobs]
    assert sorted(seqs, key=seqs.__getitem__) == order  # seq follows insertion
    return seqs


def _ids(store: Store, **query: Any) -> list[str]:
    with store.read() as tx:
        return [job.job_id for _, job in tx.list_jobs(JobQuery(limit=100, **query))]


def test_list_jobs_newest_first_with_scopes(store: Store) -> None:
    _seed_jobs(store)
    assert _ids(store, queue="q") == ["pct", "c1", "c0", "p1", "u2", "u1", "a3", "a2", "a1"]
    assert _ids(store, queue="q", status=S.RUNNING) == ["c1", "a1"]
    assert _ids(store, queue="other") == ["b1"]
    assert _ids(store, queue="q", top_level_only=True, status=S.SUBMITTED) == [
        "pct",
        "p1",
        "u2",
        "u1",
        "a3",
    ]
    assert _ids(store, array_parent="p1") == ["c1", "c0"]
    assert _ids(store, array_parent="p1", status=S.SUBMITTED) == ["c0"]
    assert _ids(store, queue="missing") == []


def test_list_jobs_name_filters_ignore_case(store: Store) -> None:
    _seed_jobs(store)
    top = {"queue": "q", "top_level_only": True}
    assert _ids(store, name_equals="ALPHA", **top) == ["p1", "a2", "a1"]
    assert _ids(store, name_equals="alphab", **top) == []
    assert _ids(store, name_prefix="alpha", **top) == ["p1", "a3", "a2", "a1"]
    assert _ids(store, name_prefix="ALPHAB", **top) == ["a3"]
    assert _ids(store, name_prefix="", **top) == ["pct", "p1", "u2", "u1", "a3", "a2", "a1"]
    # LIKE's wildcards in a prefix are plain characters.
    assert _ids(store, name_prefix="a_", **top) == ["u1"]
    assert _ids(store, name_prefix="50%", **top) == ["pct"]
    assert _ids(store, name_prefix="5%", **top) == []
    # Array children match too when they are not excluded.
    assert _ids(store, name_equals="alpha", queue="q") == ["c1", "c0", "p1", "a2", "a1"]


def test_list_jobs_definition_filters(store: Store) -> None:
    _seed_jobs(store)
    top = {"queue": "q", "top_level_only": True}
    assert _ids(store, definition_name="def", **top) == ["p1", "u2", "u1", "a2", "a1"]
    assert _ids(store, definition_name="def", definition_revision=2, **top) == ["p1"]
    assert _ids(store, definition_name="Def", **top) == ["a3"]
    # A definition prefix is case-sensitive, and its wildcards are plain.
    assert _ids(store, definition_prefix="De", **top) == ["a3"]
    assert _ids(store, definition_prefix="de", **top) == ["p1", "u2", "u1", "a2", "a1"]
    assert _ids(store, definition_prefix="d%", **top) == ["pct"]
    assert _ids(store, definition_prefix="d_", **top) == []


def test_list_jobs_created_and_share_filters(store: Store) -> None:
    _seed_jobs(store)
    top = {"queue": "q", "top_level_only": True}
    assert _ids(store, created_before=300, **top) == ["a2", "a1"]  # strictly before
    assert _ids(store, created_after=600, **top) == ["pct", "p1"]  # strictly after
    assert _ids(store, created_after=100, created_before=500, **top) == ["a3", "a2"]
    assert _ids(store, share_identifier="blue", queue="q") == ["u1"]
    assert _ids(store, share_identifier="blue", queue="q", status=S.RUNNING) == []


def test_list_jobs_keyset_pages(store: Store) -> None:
    seqs = _seed_jobs(store)
    everything = _ids(store, queue="q")
    seen: list[str] = []
    before: int | None = None
    with store.read() as tx:
        while page := tx.list_jobs(JobQuery(queue="q", before_seq=before, limit=4)):
            assert len(page) <= 4
            seen.extend(job.job_id for _, job in page)
            before = page[-1][0]
    assert seen == everything
    assert [seqs[j] for j in seen] == sorted((seqs[j] for j in seen), reverse=True)
    assert _ids(store, queue="q", before_seq=seqs["u1"]) == ["a3", "a2", "a1"]


# -- jobs: the engine's views -------------------------------------------------------------


def test_queued_jobs_are_fifo(store: Store) -> None:
    with store.transaction() as tx:
        for i, status in enumerate([S.RUNNABLE, S.PENDING, S.RUNNABLE, S.RUNNING, S.RUNNABLE]):
            tx.insert_job(make_job(f"j{i}", status=status))
        tx.insert_job(make_job("elsewhere", queue="other", status=S.RUNNABLE))
    with store.read() as tx:
        assert [j.job_id for j in tx.queued_jobs("q", (S.RUNNABLE,), 10)] == ["j0", "j2", "j4"]
        assert [j.job_id for j in tx.queued_jobs("q", (S.RUNNABLE,), 2)] == ["j0", "j2"]
        both = tx.queued_jobs("q", (S.PENDING, S.RUNNABLE), 10)
        assert [j.job_id for j in both] == ["j0", "j1", "j2", "j4"]
        assert list(tx.queued_jobs("q", (S.FAILED,), 10)) == []


def test_queued_jobs_are_decoded_when_looked_at() -> None:
    """Each job of a queue's head is decoded when first looked at, and once:
    those after where the reader stopped never are."""
    decoded: list[str] = []

    def decode(row: str) -> Job:
        decoded.append(row)
        return make_job(row)

    jobs = DecodedOnUse(["a", "b", "c", "d"], decode)
    assert len(jobs) == 4 and decoded == []
    for job in jobs:
        if job.job_id == "b":
            break
    assert decoded == ["a", "b"]
    assert [j.job_id for j in jobs[1:3]] == ["b", "c"]
    assert jobs[-1].job_id == "d"
    assert decoded == ["a", "b", "c", "d"]  # each once
    assert list(jobs) == [make_job(x) for x in "abcd"]


def test_jobs_in_status_oldest_first_after_a_seq(store: Store) -> None:
    with store.transaction() as tx:
        for i, status in enumerate([S.RUNNING, S.STARTING, S.SUBMITTED, S.RUNNING]):
            tx.insert_job(make_job(f"j{i}", status=status, queue=f"q{i}"))
    with store.read() as tx:
        rows = tx.jobs_in_status((S.STARTING, S.RUNNING), 10)
        assert [j.job_id for _, j in rows] == ["j0", "j1", "j3"]
        assert [seq for seq, _ in rows] == sorted(seq for seq, _ in rows)
        after = tx.jobs_in_status((S.STARTING, S.RUNNING), 10, after_seq=rows[0][0])
        assert [j.job_id for _, j in after] == ["j1", "j3"]
        assert [j.job_id for _, j in tx.jobs_in_status((S.RUNNING,), 1)] == ["j0"]


# -- array children and retention ------------------------------------------------------


def test_array_children_counts_and_pages(store: Store) -> None:
    parent = make_job("p", array_size=5)
    children = [
        make_job(f"p:{i}", array_parent="p", status=S.SUCCEEDED if i < 2 else S.PENDING)
        for i in range(5)
    ]
    with store.transaction() as tx:
        tx.insert_job(parent)
        tx.insert_job(make_job("lonely", array_size=3))
        tx.insert_jobs(children)
        tx.insert_jobs([])
    with store.read() as tx:
        assert tx.get_jobs([c.job_id for c in children]) == {c.job_id: c for c in children}
        assert tx.child_counts(["p", "lonely", "missing"]) == {
            "p": {"SUCCEEDED": 2, "PENDING": 3},
            "lonely": {},
            "missing": {},
        }
        assert tx.child_counts([]) == {}
        pending = tx.child_jobs("p", (S.PENDING,), 10)
        assert [c.job_id for _, c in pending] == ["p:2", "p:3", "p:4"]
        page = tx.child_jobs("p", (S.PENDING, S.SUCCEEDED), 2, after_seq=pending[0][0])
        assert [c.job_id for _, c in page] == ["p:3", "p:4"]
        assert tx.child_jobs("lonely", (S.PENDING,), 10) == []


def test_insert_jobs_is_all_or_nothing(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_job(make_job("p:1", array_parent="p"))
    with pytest.raises(REJECTED), store.transaction() as tx:
        tx.insert_jobs([make_job(f"p:{i}", array_parent="p") for i in range(3)])
    with store.read() as tx:
        assert set(tx.get_jobs(["p:0", "p:1", "p:2"])) == {"p:1"}


def test_purge_takes_only_old_finished_jobs(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_job(make_job("old-ok", status=S.SUCCEEDED, stopped_at=10))
        tx.insert_job(make_job("old-failed", status=S.FAILED, stopped_at=20))
        tx.insert_job(make_job("recent", status=S.SUCCEEDED, stopped_at=5_000))
        tx.insert_job(make_job("running", status=S.RUNNING, started_at=1))
        tx.insert_job(make_job("never-stopped", status=S.FAILED))
    with store.transaction() as tx:
        assert tx.purge_jobs(stopped_before=1_000, limit=100) == 2
    with store.transaction() as tx:
        assert tx.purge_jobs(stopped_before=1_000, limit=100) == 0
    with store.read() as tx:
        assert set(tx.get_jobs(["old-ok", "old-failed", "recent", "running", "never-stopped"])) == {
            "recent",
            "running",
            "never-stopped",
        }


def test_purge_looks_at_the_oldest_n_per_status_only(store: Store) -> None:
    with store.transaction() as tx:
        # Created first, finished late: it holds back the older-finished ones.
        tx.insert_job(make_job("slow", status=S.SUCCEEDED, stopped_at=5_000))
        for i in range(3):
            tx.insert_job(make_job(f"ok{i}", status=S.SUCCEEDED, stopped_at=10))
        for i in range(3):
            tx.insert_job(make_job(f"bad{i}", status=S.FAILED, stopped_at=10))
    with store.transaction() as tx:
        # SUCCEEDED: of the 2 oldest ("slow", "ok0") only ok0 expired;
        # FAILED: the 2 oldest, bad0 and bad1.
        assert tx.purge_jobs(stopped_before=1_000, limit=2) == 3
    with store.read() as tx:
        left = tx.get_jobs(["slow", "ok0", "ok1", "ok2", "bad0", "bad1", "bad2"])
    assert set(left) == {"slow", "ok1", "ok2", "bad2"}


# -- transactions ------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_rolls_everything_back(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_job(make_job("kept", status=S.RUNNABLE))
        tx.allocate_revision("d")
    with pytest.raises(Boom), store.transaction() as tx:
        tx.put_compute_environment(ce_record("ce"))
        tx.put_job_queue(queue_record("q"))
        tx.put_scheduling_policy(policy_record("p"))
        tx.put_job_definition(definition_record("d", tx.allocate_revision("d")))
        tx.insert_job(make_job("new"), "tok")
        tx.insert_jobs([make_job("new:0", array_parent="new")])
        tx.update_job(make_job("kept", status=S.FAILED), S.RUNNABLE)
        raise Boom
    with store.read() as tx:
        assert tx.get_compute_environment("ce") is None
        assert tx.get_job_queue("q") is None
        assert tx.get_scheduling_policy("p") is None
        assert tx.list_job_definitions(name=None, status=None, after=None, limit=10) == []
        assert set(tx.get_jobs(["kept", "new", "new:0"])) == {"kept"}
        assert tx.get_jobs(["kept"])["kept"].status is S.RUNNABLE
        assert tx.job_for_token("tok") is None
    with store.transaction() as tx:
        assert tx.allocate_revision("d") == 2
    # The store still works after the failure.
    with store.transaction() as tx:
        tx.insert_job(make_job("after"))
    with store.read() as tx:
        assert "after" in tx.get_jobs(["after"])


def test_committed_writes_survive_closing(backend: Backend) -> None:
    first = backend.open()
    with first.transaction() as tx:
        tx.insert_job(make_job("j"), "tok")
        tx.put_compute_environment(ce_record("ce"))
    first.close()
    with backend.store().read() as tx:
        assert tx.job_for_token("tok") == "j"
        assert tx.get_compute_environment("ce") is not None


def test_read_is_a_snapshot(backend: Backend) -> None:
    reader, writer = backend.store(), backend.store()
    with reader.transaction() as tx:
        tx.insert_job(make_job("j", status=S.RUNNABLE))
    wrote = threading.Event()

    def write() -> None:
        with writer.transaction() as tx:
            tx.update_job(make_job("j", status=S.RUNNING), S.RUNNABLE)
            tx.insert_job(make_job("k"))
        wrote.set()

    thread = threading.Thread(target=write)
    with reader.read() as tx:
        assert tx.get_jobs(["j"])["j"].status is S.RUNNABLE
        thread.start()
        # A reader never holds up a writer (WAL; MVCC), and never sees what
        # the writer committed meanwhile.
        assert wrote.wait(10)
        assert tx.get_jobs(["j"])["j"].status is S.RUNNABLE
        assert tx.get_jobs(["k"]) == {}
        assert [j.job_id for _, j in tx.list_jobs(JobQuery(limit=10))] == ["j"]
    thread.join(10)
    assert wrote.is_set()
    with reader.read() as tx:
        assert tx.get_jobs(["j"])["j"].status is S.RUNNING
        assert "k" in tx.get_jobs(["k"])


def _hammer(stores: list[Store], work: Callable[[Store, int], None], rounds: int) -> None:
    """Run `work` from one thread per store (as separate server processes
    would), all starting together; re-raise the first failure."""
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def run(store: Store, worker: int) -> None:
        try:
            barrier.wait(10)
            for i in range(rounds):
                work(store, worker * rounds + i)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(s, n)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]


def test_compare_and_set_has_one_winner_across_stores(backend: Backend) -> None:
    stores = [backend.store() for _ in range(4)]
    with stores[0].transaction() as tx:
        tx.insert_jobs([make_job(f"j{i}", status=S.RUNNABLE) for i in range(20)])
    wins: list[tuple[str, int]] = []

    def claim(store: Store, n: int) -> None:
        for i in range(20):
            with store.transaction() as tx:
                job = make_job(f"j{i}", status=S.STARTING, status_reason=f"by {n}")
                if tx.set_job_state(job, S.RUNNABLE):
                    wins.append((f"j{i}", n))

    _hammer(stores, claim, 1)
    assert sorted(job for job, _ in wins) == sorted(f"j{i}" for i in range(20))  # each once
    with stores[0].read() as tx:
        stored = tx.get_jobs([f"j{i}" for i in range(20)])
    assert {job: f"by {n}" for job, n in wins} == {k: v.status_reason for k, v in stored.items()}


def test_read_modify_write_transactions_lose_no_update(backend: Backend) -> None:
    """Writers run one at a time, as with SQLite: a transaction that reads a
    job and writes it back never overwrites what another one wrote meanwhile."""
    stores = [backend.store() for _ in range(3)]
    with stores[0].transaction() as tx:
        tx.insert_job(make_job("j", status=S.RUNNABLE))

    def tag(store: Store, n: int) -> None:
        with store.transaction() as tx:
            job = tx.get_jobs(["j"])["j"]
            assert tx.update_job(
                dataclasses.replace(job, tags={**job.tags, f"k{n}": "v"}), S.RUNNABLE
            )

    _hammer(stores, tag, 15)
    with stores[0].read() as tx:
        assert len(tx.get_jobs(["j"])["j"].tags) == 45


def test_opening_nothing_is_a_store_error(backend: Backend, tmp_path: Path) -> None:
    kind = type(backend.store())
    if kind is SqliteStore:
        (tmp_path / "dir.db").mkdir()
        with pytest.raises(StoreError):
            SqliteStore(tmp_path / "dir.db")
    else:
        url = f"postgresql://nobody:secret@127.0.0.1:{free_port()}/x"
        with pytest.raises(StoreError, match="cannot open the PostgreSQL store") as info:
            PostgresStore(url, timeout=2)
        assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5/db?sslmode=require", "postgresql://u:***@h:5/db?sslmode=require"),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("postgresql:///db", "postgresql:///db"),
    ],
)
def test_passwords_stay_out_of_messages(url: str, shown: str) -> None:
    assert redacted(url) == shown
    conninfo = redacted("host=h password='p w' dbname=db")
    assert conninfo_to_dict(conninfo) == {"host": "h", "password": "***", "dbname": "db"}


# -- PostgreSQL only ----------------------------------------------------------------


def test_postgres_replaces_connections_the_server_dropped(pg_database: str) -> None:
    url = new_schema(pg_database)
    store = PostgresStore(url, pool_size=2)
    try:
        with store.transaction() as tx:
            tx.insert_job(make_job("before"))
        # A restart or failover of the database ends every session.
        with psycopg.connect(pg_database, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with store.transaction() as tx:
            tx.insert_job(make_job("after"))
        with store.read() as tx:
            assert set(tx.get_jobs(["before", "after"])) == {"before", "after"}
    finally:
        store.close()


# -- the server on PostgreSQL, through the wire -------------------------------------


def test_server_round_trip_on_postgres(pg_database: str, tmp_path: Path) -> None:
    url = new_schema(pg_database)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    server = start_server(tmp_path / "one", "--store", url)
    try:
        batch = server.client()
        ce = make_ce(batch, "ce")
        make_queue(batch, "q", [ce])
        make_definition(batch, "def")
        job = batch.submit_job(jobName="Hello-1", jobQueue="q", jobDefinition="def")
        [detail] = batch.describe_jobs(jobs=[job["jobId"]])["jobs"]
        assert detail["status"] == "SUBMITTED"
        assert detail["jobDefinition"].endswith(":job-definition/def:1")
        listed = batch.list_jobs(
            jobQueue="q", filters=[{"name": "JOB_NAME", "values": ["hello*"]}]
        )["jobSummaryList"]
        assert [j["jobId"] for j in listed] == [job["jobId"]]
    finally:
        server.stop()
    # A second server on the same database sees it all.
    with engine_server(tmp_path / "two", "--store", url) as again:
        batch = again.client()
        [queue] = batch.describe_job_queues(jobQueues=["q"])["jobQueues"]
        assert queue["state"] == "ENABLED"
        assert wait_for(batch, job["jobId"], timeout=30)["status"] == "SUCCEEDED"
        ran = batch.submit_job(jobName="second", jobQueue="q", jobDefinition="def")
        assert wait_for(batch, ran["jobId"], timeout=30)["status"] == "SUCCEEDED"
