"""A ListJobs query (`JobQuery`) as an SQL WHERE clause, for either store.

The filters are the same in SQLite and PostgreSQL; only the placeholder and
the three name comparisons differ (case-insensitive job names, a
case-sensitive definition-name prefix), which each store's `Dialect` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.store.base import JobQuery

Clause = tuple[str, Any]  # SQL with one placeholder, and its value


@dataclass(frozen=True, slots=True)
class Dialect:
    mark: str  # the placeholder: "?" or "%s"
    name_equals: Callable[[str], Clause]  # case-insensitive
    name_prefix: Callable[[str], Clause]  # case-insensitive
    definition_prefix: Callable[[str], Clause]  # case-sensitive


def like_prefix(prefix: str) -> str:
    """A LIKE pattern (escape character backslash) matching `prefix` literally."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


def where(query: JobQuery, dialect: Dialect) -> tuple[str, list[Any]]:
    """(" WHERE ..." or "", its values): every filter of `query` but the limit."""
    m = dialect.mark
    clauses: list[str] = []
    values: list[Any] = []

    def add(clause: str, *args: Any) -> None:
        clauses.append(clause)
        values.extend(args)

    def add_clause(clause: Clause) -> None:
        add(clause[0], clause[1])

    if query.queue is not None:
        add(f"queue = {m}", query.queue)
    if query.array_parent is not None:
        add(f"array_parent = {m}", query.array_parent)
    if query.top_level_only:
        add("array_parent IS NULL")
    if query.status is not None:
        add(f"status = {m}", query.status.value)
    if query.name_equals is not None:
        add_clause(dialect.name_equals(query.name_equals))
    if query.name_prefix is not None:
        add_clause(dialect.name_prefix(query.name_prefix))
    if query.definition_name is not None:
        add(f"def_name = {m}", query.definition_name)
    if query.definition_prefix is not None:
        add_clause(dialect.definition_prefix(query.definition_prefix))
    if query.definition_revision is not None:
        add(f"def_rev = {m}", query.definition_revision)
    if query.created_before is not None:
        add(f"created_at < {m}", query.created_before)
    if query.created_after is not None:
        add(f"created_at > {m}", query.created_after)
    if query.share_identifier is not None:
        add(f"share_identifier = {m}", query.share_identifier)
    if query.before_seq is not None:
        add(f"seq < {m}", query.before_seq)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), values
