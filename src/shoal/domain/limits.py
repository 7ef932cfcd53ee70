"""AWS Batch's documented limits, checked on top of the service model's shapes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from shoal.domain.arns import JOB_NAME_RE, NAME_RE
from shoal.domain.errors import InvalidRequest

MAX_TAGS = 50
MAX_DEPENDENCIES = 20
MAX_SUBMIT_PAYLOAD = 30 * 1024
MAX_JOB_DEFINITION = 24 * 1024
MIN_ARRAY_SIZE, MAX_ARRAY_SIZE = 2, 10_000
MIN_ATTEMPTS, MAX_ATTEMPTS = 1, 10
MAX_EVALUATE_ON_EXIT = 5
MAX_DESCRIBE_JOBS = 100
MAX_BULK_JOBS = 50
MAX_REASON = 1024
MAX_CE_PER_QUEUE = 3
MAX_SCHEDULING_PRIORITY = 9999

# evaluateOnExit patterns: an exact string, or a prefix ending in one `*`.
_EXIT_CODE_PATTERN = re.compile(r"^[0-9]*\*?$")
_REASON_PATTERN = re.compile(r"^[A-Za-z0-9.: \t]*\*?$")


def check_name(value: str, what: str) -> None:
    if not NAME_RE.match(value):
        raise InvalidRequest(
            f"{what} {value!r} is invalid: it must be 1 to 128 characters of letters, "
            "numbers, hyphens (-) and underscores (_)."
        )


def check_job_name(value: str) -> None:
    if not JOB_NAME_RE.match(value):
        raise InvalidRequest(
            f"Job name should match valid pattern: {value!r} must be 1 to 128 letters, "
            "numbers, hyphens and underscores, starting with a letter or number."
        )


def check_tags(tags: Mapping[str, str]) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(f"A resource can have at most {MAX_TAGS} tags; got {len(tags)}.")
    for key, value in tags.items():
        if not 1 <= len(key) <= 128:
            raise InvalidRequest(f"Tag key {key!r} must be 1 to 128 characters long.")
        if len(value) > 256:
            raise InvalidRequest(f"The value of tag {key!r} must be at most 256 characters long.")
        if key.lower().startswith("aws:"):
            raise InvalidRequest(f"Tag key {key!r} uses the reserved prefix 'aws:'.")


def check_payload_size(size: int, limit: int, what: str) -> None:
    if size > limit:
        raise InvalidRequest(
            f"{what} is {size} bytes, over the limit of {limit} bytes ({limit // 1024} KiB)."
        )


def check_retry_strategy(strategy: Mapping[str, Any] | None) -> None:
    if not strategy:
        return
    attempts = strategy.get("attempts")
    if attempts is not None and not MIN_ATTEMPTS <= attempts <= MAX_ATTEMPTS:
        raise InvalidRequest(
            f"retryStrategy.attempts must be between {MIN_ATTEMPTS} and {MAX_ATTEMPTS}; "
            f"got {attempts}."
        )
    rules = strategy.get("evaluateOnExit") or []
    if len(rules) > MAX_EVALUATE_ON_EXIT:
        raise InvalidRequest(
            f"retryStrategy.evaluateOnExit takes at most {MAX_EVALUATE_ON_EXIT} entries; "
            f"got {len(rules)}."
        )
    for i, rule in enumerate(rules):
        where = f"retryStrategy.evaluateOnExit[{i}]"
        action = str(rule.get("action", ""))
        if action.upper() not in ("RETRY", "EXIT"):
            raise InvalidRequest(f"{where}.action must be RETRY or EXIT; got {action!r}.")
        for member, pattern in (
            ("onExitCode", _EXIT_CODE_PATTERN),
            ("onReason", _REASON_PATTERN),
            ("onStatusReason", _REASON_PATTERN),
        ):
            value = rule.get(member)
            if value is None:
                continue
            if len(value) > 512 or not pattern.match(value):
                kind = (
                    "digits" if member == "onExitCode" else "letters, numbers, '.', ':' and spaces"
                )
                raise InvalidRequest(
                    f"{where}.{member} {value!r} is invalid: use up to 512 {kind}, "
                    "optionally ending in '*'."
                )


def check_timeout(timeout: Mapping[str, Any] | None, min_seconds: int) -> None:
    if not timeout:
        return
    seconds = timeout.get("attemptDurationSeconds")
    if seconds is not None and seconds < min_seconds:
        raise InvalidRequest(
            f"timeout.attemptDurationSeconds must be at least {min_seconds}; got {seconds}."
        )


def check_environment(env: Iterable[Mapping[str, Any]] | None, where: str) -> None:
    for entry in env or ():
        name = entry.get("name")
        if name is not None and str(name).startswith("AWS_BATCH"):
            raise InvalidRequest(
                f"{where}: environment variable names starting with AWS_BATCH are reserved "
                f"by AWS Batch; got {name!r}."
            )


_WHOLE = re.compile(r"^[0-9]{1,9}$")
_DECIMAL = re.compile(r"^[0-9]{1,6}(\.[0-9]{1,6})?$")


def check_resource_requirements(
    requirements: Iterable[Mapping[str, Any]] | None, where: str
) -> None:
    seen: set[str] = set()
    for entry in requirements or ():
        kind = str(entry.get("type"))
        value = str(entry.get("value"))
        if kind in seen:
            raise InvalidRequest(f"{where}: resource requirement {kind} is given twice.")
        seen.add(kind)
        if kind == "VCPU":
            if not _DECIMAL.match(value) or float(value) <= 0:
                raise InvalidRequest(f"{where}: VCPU must be a positive number; got {value!r}.")
        elif kind == "MEMORY":
            if not _WHOLE.match(value) or int(value) < 4:
                raise InvalidRequest(
                    f"{where}: MEMORY must be a whole number of MiB, at least 4; got {value!r}."
                )
        elif kind == "GPU" and not _WHOLE.match(value):
            raise InvalidRequest(f"{where}: GPU must be a whole number of GPUs; got {value!r}.")


def check_array_size(size: int) -> None:
    if not MIN_ARRAY_SIZE <= size <= MAX_ARRAY_SIZE:
        raise InvalidRequest(
            f"arrayProperties.size must be between {MIN_ARRAY_SIZE} and {MAX_ARRAY_SIZE}; "
            f"got {size}."
        )


def check_reason(reason: str) -> None:
    if len(reason) > MAX_REASON:
        raise InvalidRequest(f"reason must be at most {MAX_REASON} characters long.")


def check_scheduling_priority(value: int | None, what: str) -> None:
    if value is not None and not 0 <= value <= MAX_SCHEDULING_PRIORITY:
        raise InvalidRequest(
            f"{what} must be between 0 and {MAX_SCHEDULING_PRIORITY}; got {value}."
        )
