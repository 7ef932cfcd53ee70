"""The evaluateOnExit matrix: shoal.domain.retry.decide, without a server.

AWS's rules (spec 6.6): timeouts and Cancel/Terminate are never retried; no
attempts left means EXIT; otherwise the first entry all of whose given
conditions match decides, and no matching entry means RETRY. Patterns are
exact strings or prefixes ending in `*`.
"""

from __future__ import annotations

from typing import Any

import pytest

from shoal.domain.retry import AttemptOutcome, Decision, decide, matches

EXITED = "Essential container in task exited"
HOST_LOST = "Host EC2 (instance i-0abc123) terminated."
OOM = "OutOfMemoryError: Container killed due to memory usage"

RETRY, EXIT = Decision.RETRY, Decision.EXIT


def outcome(
    exit_code: int | None = 1,
    reason: str | None = None,
    status_reason: str = EXITED,
    retryable: bool = True,
) -> AttemptOutcome:
    return AttemptOutcome(
        exit_code=exit_code, reason=reason, status_reason=status_reason, retryable=retryable
    )


def strategy(*rules: dict[str, str], attempts: int = 3) -> dict[str, Any]:
    return {"attempts": attempts, "evaluateOnExit": list(rules)}


# -- the pattern language ------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("3", "3", True),
        ("3", "30", False),  # exact, not a prefix
        ("30", "3", False),
        ("3*", "30", True),  # trailing * is a prefix match
        ("3*", "3", True),  # the empty rest matches too
        ("3*", "13", False),
        ("*", "anything at all", True),
        ("*", "", True),
        ("*", None, True),  # '*' alone matches even an absent value
        ("3", None, False),  # anything else never matches an absent value
        ("3*", None, False),
        ("Host EC2*", HOST_LOST, True),
        ("Host EC2*", "host EC2 (instance i-1) terminated.", False),  # case-sensitive
        ("*EC2*", HOST_LOST, False),  # only a trailing * is a wildcard
        ("Host*terminated.", HOST_LOST, False),
        ("Host EC2 (instance i-0abc123) terminated.", HOST_LOST, True),
        ("Host EC2", HOST_LOST, False),  # exact means the whole string
        ("OutOfMemory*", OOM, True),
    ],
)
def test_pattern_matching(pattern: str, value: str | None, expected: bool) -> None:
    assert matches(pattern, value) is expected


# -- each condition, exact and prefix -------------------------------------------


@pytest.mark.parametrize(
    ("rule", "attempt", "expected"),
    [
        # onExitCode, exact
        ({"onExitCode": "3"}, outcome(3), EXIT),
        ({"onExitCode": "3"}, outcome(4), RETRY),
        ({"onExitCode": "3"}, outcome(33), RETRY),
        # onExitCode, trailing *
        ({"onExitCode": "1*"}, outcome(137), EXIT),
        ({"onExitCode": "1*"}, outcome(1), EXIT),
        ({"onExitCode": "1*"}, outcome(21), RETRY),
        ({"onExitCode": "*"}, outcome(255), EXIT),
        # onReason, exact and prefix
        ({"onReason": OOM}, outcome(137, OOM), EXIT),
        ({"onReason": "OutOfMemoryError*"}, outcome(137, OOM), EXIT),
        ({"onReason": "CannotPull*"}, outcome(137, OOM), RETRY),
        ({"onReason": "OutOfMemoryError"}, outcome(137, OOM), RETRY),
        # onStatusReason, exact and prefix
        ({"onStatusReason": EXITED}, outcome(1), EXIT),
        ({"onStatusReason": "Essential*"}, outcome(1), EXIT),
        ({"onStatusReason": "Host EC2*"}, outcome(1), RETRY),
        ({"onStatusReason": "Host EC2*"}, outcome(None, status_reason=HOST_LOST), EXIT),
    ],
)
def test_single_condition(
    rule: dict[str, str], attempt: AttemptOutcome, expected: Decision
) -> None:
    # The rule says EXIT; when it does not match, nothing does, and that is RETRY.
    assert decide(strategy({**rule, "action": "EXIT"}), 1, attempt) is expected


def test_rule_action_retry_wins_over_later_exit() -> None:
    rules = strategy({"onExitCode": "3", "action": "RETRY"}, {"onExitCode": "*", "action": "EXIT"})
    assert decide(rules, 1, outcome(3)) is RETRY
    assert decide(rules, 1, outcome(4)) is EXIT
    assert decide(rules, 1, outcome(30)) is EXIT


# -- all given conditions must hold -------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "attempt", "expected"),
    [
        ({"onExitCode": "137", "onReason": "OutOfMemory*"}, outcome(137, OOM), EXIT),
        ({"onExitCode": "137", "onReason": "OutOfMemory*"}, outcome(137, None), RETRY),
        ({"onExitCode": "137", "onReason": "OutOfMemory*"}, outcome(1, OOM), RETRY),
        (
            {"onExitCode": "137", "onReason": OOM, "onStatusReason": EXITED},
            outcome(137, OOM),
            EXIT,
        ),
        (
            {"onExitCode": "137", "onReason": OOM, "onStatusReason": "Host*"},
            outcome(137, OOM),
            RETRY,
        ),
        ({"onStatusReason": "Essential*", "onExitCode": "2"}, outcome(2), EXIT),
        ({"onStatusReason": "Essential*", "onExitCode": "2"}, outcome(3), RETRY),
    ],
)
def test_every_given_condition_must_match(
    rule: dict[str, str], attempt: AttemptOutcome, expected: Decision
) -> None:
    assert decide(strategy({**rule, "action": "EXIT"}), 1, attempt) is expected


def test_a_rule_with_no_conditions_matches_everything() -> None:
    assert decide(strategy({"action": "EXIT"}), 1, outcome(5)) is EXIT


# -- order, default, case ------------------------------------------------------------


def test_first_matching_rule_wins() -> None:
    rules = strategy(
        {"onExitCode": "4", "action": "EXIT"},
        {"onExitCode": "3*", "action": "RETRY"},
        {"onExitCode": "3", "action": "EXIT"},  # shadowed by the prefix rule above
        {"onExitCode": "*", "action": "EXIT"},
    )
    assert decide(rules, 1, outcome(3)) is RETRY
    assert decide(rules, 1, outcome(31)) is RETRY
    assert decide(rules, 1, outcome(4)) is EXIT
    assert decide(rules, 1, outcome(5)) is EXIT

    flipped = strategy(
        {"onExitCode": "3", "action": "EXIT"}, {"onExitCode": "3*", "action": "RETRY"}
    )
    assert decide(flipped, 1, outcome(3)) is EXIT
    assert decide(flipped, 1, outcome(31)) is RETRY


def test_no_matching_rule_means_retry() -> None:
    rules = strategy(
        {"onExitCode": "99", "action": "EXIT"},
        {"onReason": "CannotPull*", "action": "EXIT"},
        {"onStatusReason": "Host EC2*", "action": "EXIT"},
    )
    assert decide(rules, 1, outcome(1)) is RETRY
    assert decide(rules, 2, outcome(1, OOM)) is RETRY


def test_no_rules_means_retry_while_attempts_remain() -> None:
    for rules in ({"attempts": 3}, {"attempts": 3, "evaluateOnExit": []}):
        assert decide(rules, 1, outcome(1)) is RETRY
        assert decide(rules, 2, outcome(1, OOM)) is RETRY
        assert decide(rules, 3, outcome(1)) is EXIT


@pytest.mark.parametrize("action", ["EXIT", "exit", "Exit", "eXiT"])
def test_exit_action_is_case_insensitive(action: str) -> None:
    assert decide(strategy({"onExitCode": "1", "action": action}), 1, outcome(1)) is EXIT


@pytest.mark.parametrize("action", ["RETRY", "retry", "Retry", "rEtRy"])
def test_retry_action_is_case_insensitive(action: str) -> None:
    rules = strategy({"onExitCode": "1", "action": action}, {"onExitCode": "*", "action": "EXIT"})
    assert decide(rules, 1, outcome(1)) is RETRY
    assert decide(rules, 1, outcome(2)) is EXIT


# -- attempts ----------------------------------------------------------------------


def test_attempts_exhausted_means_exit_even_when_a_rule_says_retry() -> None:
    rules = strategy({"onExitCode": "*", "action": "RETRY"}, attempts=3)
    assert decide(rules, 1, outcome(1)) is RETRY
    assert decide(rules, 2, outcome(1)) is RETRY
    assert decide(rules, 3, outcome(1)) is EXIT
    assert decide(rules, 4, outcome(1)) is EXIT


@pytest.mark.parametrize("rules", [None, {}, {"attempts": 1}, {"attempts": None}])
def test_default_is_a_single_attempt(rules: dict[str, Any] | None) -> None:
    assert decide(rules, 1, outcome(1)) is EXIT


def test_ten_attempts() -> None:
    rules = {"attempts": 10}
    assert [decide(rules, n, outcome(1)) for n in range(1, 11)] == [RETRY] * 9 + [EXIT]


# -- never retried ------------------------------------------------------------------


@pytest.mark.parametrize(
    "status_reason", ["Job attempt duration exceeded timeout", "terminated by the operator"]
)
def test_non_retryable_outcomes_are_never_retried(status_reason: str) -> None:
    stopped = outcome(137, status_reason=status_reason, retryable=False)
    for rules in (
        {"attempts": 5},
        strategy({"onExitCode": "*", "action": "RETRY"}, attempts=5),
        strategy({"onStatusReason": "*", "action": "RETRY"}, attempts=5),
        strategy({"onStatusReason": status_reason, "action": "RETRY"}, attempts=5),
        strategy({"onExitCode": "99", "action": "EXIT"}, attempts=5),  # no match
    ):
        assert decide(rules, 1, stopped) is EXIT
    # The same outcome, were it retryable, would retry under the first rule set.
    assert decide({"attempts": 5}, 1, outcome(137, status_reason=status_reason)) is RETRY


# -- an absent exit code (the host was lost) ---------------------------------------


def test_condition_on_absent_exit_code_matches_only_star() -> None:
    lost = outcome(None, status_reason=HOST_LOST)
    assert decide(strategy({"onExitCode": "*", "action": "EXIT"}), 1, lost) is EXIT
    # Any other exit-code pattern does not match: the default applies.
    for pattern in ("0", "1", "137", "1*"):
        assert decide(strategy({"onExitCode": pattern, "action": "EXIT"}), 1, lost) is RETRY
    # ... even when combined with a condition that matches.
    both = {"onExitCode": "1*", "onStatusReason": "Host EC2*", "action": "EXIT"}
    assert decide(strategy(both), 1, lost) is RETRY
    both_star = {"onExitCode": "*", "onStatusReason": "Host EC2*", "action": "EXIT"}
    assert decide(strategy(both_star), 1, lost) is EXIT


def test_condition_on_absent_reason_matches_only_star() -> None:
    plain = outcome(1, reason=None)
    assert decide(strategy({"onReason": "*", "action": "EXIT"}), 1, plain) is EXIT
    assert decide(strategy({"onReason": "Out*", "action": "EXIT"}), 1, plain) is RETRY


def test_spot_idiom_retries_host_loss_and_exits_on_everything_else() -> None:
    rules = strategy(
        {"onStatusReason": "Host EC2*", "action": "RETRY"},
        {"onReason": "*", "action": "EXIT"},
    )
    assert decide(rules, 1, outcome(None, status_reason=HOST_LOST)) is RETRY
    assert decide(rules, 2, outcome(None, status_reason=HOST_LOST)) is RETRY
    assert decide(rules, 3, outcome(None, status_reason=HOST_LOST)) is EXIT  # none left
    assert decide(rules, 1, outcome(1)) is EXIT  # a plain failure, no reason at all
    assert decide(rules, 1, outcome(137, OOM)) is EXIT
