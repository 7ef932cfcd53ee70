"""What happens after a failed attempt: AWS Batch's retry rules, exactly.

1. A timeout, a Cancel/Terminate, or an invalid job is never retried.
2. With no attempts left the job fails.
3. No `evaluateOnExit` entries: retry.
4. Otherwise the first entry all of whose given conditions match decides
   (`onStatusReason` vs the attempt's statusReason, `onReason` vs
   `container.reason`, `onExitCode` vs the decimal exit code).
5. No entry matches: retry.

Patterns are exact strings, or a prefix when they end in `*` (`*` alone
matches anything). A condition on a value the attempt does not have (no exit
code after a host was lost) matches only the pattern `*`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Decision(StrEnum):
    RETRY = "RETRY"
    EXIT = "EXIT"


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptOutcome:
    exit_code: int | None
    reason: str | None  # container.reason, e.g. "OutOfMemoryError: ..."
    status_reason: str  # e.g. "Essential container in task exited"
    retryable: bool = True  # False for timeouts, cancel/terminate


def matches(pattern: str, value: str | None) -> bool:
    if pattern == "*":
        return True
    if value is None:
        return False
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _rule_matches(rule: Mapping[str, Any], outcome: AttemptOutcome) -> bool:
    checks = (
        ("onStatusReason", outcome.status_reason),
        ("onReason", outcome.reason),
        ("onExitCode", None if outcome.exit_code is None else str(outcome.exit_code)),
    )
    given = [(rule[key], value) for key, value in checks if rule.get(key) is not None]
    return all(matches(pattern, value) for pattern, value in given)


def decide(
    strategy: Mapping[str, Any] | None, attempt_number: int, outcome: AttemptOutcome
) -> Decision:
    """RETRY or EXIT for a failed attempt numbered `attempt_number` (1-based)."""
    if not outcome.retryable:
        return Decision.EXIT
    attempts = int((strategy or {}).get("attempts") or 1)
    if attempt_number >= attempts:
        return Decision.EXIT
    rules: Sequence[Mapping[str, Any]] = (strategy or {}).get("evaluateOnExit") or ()
    for rule in rules:
        if _rule_matches(rule, outcome):
            return Decision(str(rule["action"]).upper())
    return Decision.RETRY
