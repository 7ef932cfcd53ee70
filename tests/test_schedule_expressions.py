"""EventBridge schedule expressions: shoal.domain.schedules, without a server.

Spec 7.4: `rate(n unit)` fires at anchor + k * period (k >= 1); `cron(...)` has
six UTC fields, day-of-week 1 = SUN .. 7 = SAT, exactly one day field `?`, and
Quartz's `L`, `W` and `#`. Expected fire times below are worked out by hand
from a calendar (weekdays noted), not by the code under test.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from shoal.domain.errors import InvalidRequest
from shoal.domain.schedules import (
    CronSchedule,
    RateSchedule,
    ScheduleError,
    parse_schedule,
)


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp()) * 1000


def as_datetime(epoch_ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=epoch_ms)


def fire_times(expression: str, after_ms: int, count: int) -> list[datetime | None]:
    schedule = parse_schedule(expression)
    result: list[datetime | None] = []
    after: int | None = after_ms
    for _ in range(count):
        assert after is not None
        after = schedule.next_after(after, 0)
        result.append(None if after is None else as_datetime(after))
        if after is None:
            break
    return result


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# --- cron: fire times ---------------------------------------------------------

CRON_CASES = [
    # Daily 02:00: strictly after a fire time, across a year end and Feb 29.
    ("cron(0 2 * * ? *)", ms(2024, 12, 31, 2), [at(2025, 1, 1, 2), at(2025, 1, 2, 2)]),
    ("cron(0 2 * * ? *)", ms(2024, 2, 28, 3), [at(2024, 2, 29, 2), at(2024, 3, 1, 2)]),
    ("cron(0 2 * * ? *)", ms(2024, 3, 1, 1, 59, 59) + 999, [at(2024, 3, 1, 2)]),
    # Weekdays 18:00: Fri 2024-05-31 -> Mon 2024-06-03.
    ("cron(0 18 ? * MON-FRI *)", ms(2024, 5, 31, 18), [at(2024, 6, 3, 18), at(2024, 6, 4, 18)]),
    ("cron(0 18 ? * mon-fri *)", ms(2024, 6, 3, 17, 59, 59) + 999, [at(2024, 6, 3, 18)]),
    # Every 15 minutes, across midnight into March of a leap year.
    (
        "cron(0/15 * * * ? *)",
        ms(2024, 2, 29, 23, 50),
        [at(2024, 3, 1, 0, 0), at(2024, 3, 1, 0, 15)],
    ),
    ("cron(*/15 * * * ? *)", ms(2024, 2, 29, 23, 44, 59), [at(2024, 2, 29, 23, 45)]),
    ("cron(0/15 * * * ? *)", ms(2024, 2, 29, 23, 45) + 1, [at(2024, 3, 1, 0, 0)]),
    ("cron(1/10 * * * ? *)", ms(2024, 1, 1), [at(2024, 1, 1, 0, 1), at(2024, 1, 1, 0, 11)]),
    (
        "cron(10-20/5 3 * * ? *)",
        ms(2024, 1, 1, 3, 16),
        [at(2024, 1, 1, 3, 20), at(2024, 1, 2, 3, 10)],
    ),
    # First of the month 08:00, across a year end.
    ("cron(0 8 1 * ? *)", ms(2024, 12, 1, 8), [at(2025, 1, 1, 8), at(2025, 2, 1, 8)]),
    # L: the last day of each month, leap and common Februaries.
    (
        "cron(0 0 L * ? *)",
        ms(2024, 2, 1),
        [at(2024, 2, 29), at(2024, 3, 31), at(2024, 4, 30)],
    ),
    ("cron(0 0 L * ? *)", ms(2023, 2, 1), [at(2023, 2, 28)]),
    ("cron(0 0 L * ? *)", ms(2024, 12, 31), [at(2025, 1, 31)]),
    ("cron(0 0 L-2 * ? *)", ms(2024, 2, 1), [at(2024, 2, 27), at(2024, 3, 29)]),
    # 2#1: the first Monday. Mon 2024-01-01 is one; Feb 5, Apr 1 2024 too.
    ("cron(0 9 ? * 2#1 *)", ms(2024, 1, 1), [at(2024, 1, 1, 9), at(2024, 2, 5, 9)]),
    ("cron(0 9 ? * MON#1 *)", ms(2024, 3, 4, 9), [at(2024, 4, 1, 9)]),
    ("cron(0 9 ? * 3#2 *)", ms(2024, 6, 1), [at(2024, 6, 11, 9)]),  # 2nd Tuesday
    # 1#5: fifth Sunday; Jan and Feb 2024 have four, Sun 2024-03-31 is one.
    ("cron(0 0 ? * 1#5 *)", ms(2024, 1, 1), [at(2024, 3, 31), at(2024, 6, 30)]),
    # 15W: Sat 2024-06-15 -> Fri 14; Thu 2024-08-15 stays; Sun 2024-09-15 -> Mon 16.
    ("cron(0 0 15W * ? *)", ms(2024, 6, 1), [at(2024, 6, 14), at(2024, 7, 15)]),
    ("cron(0 0 15W * ? *)", ms(2024, 8, 1), [at(2024, 8, 15), at(2024, 9, 16)]),
    # 1W never reaches back into the previous month: Sat 2024-06-01 -> Mon 3,
    # Sat 2025-02-01 -> Mon 3, Sun 2024-09-01 -> Mon 2.
    ("cron(0 0 1W * ? *)", ms(2024, 5, 15), [at(2024, 6, 3), at(2024, 7, 1)]),
    ("cron(0 0 1W * ? *)", ms(2025, 1, 15), [at(2025, 2, 3)]),
    ("cron(0 0 1W * ? *)", ms(2024, 8, 15), [at(2024, 9, 2)]),
    # 31W never leaves the month either: Sun 2024-03-31 -> Fri 29; 30-day
    # April is skipped; Fri 2024-05-31 stays; Sat 2024-08-31 -> Fri 30.
    ("cron(0 0 31W * ? *)", ms(2024, 3, 1), [at(2024, 3, 29), at(2024, 5, 31)]),
    ("cron(0 0 31W * ? *)", ms(2024, 8, 1), [at(2024, 8, 30)]),
    # LW: Sat 2024-08-31 -> Fri 30; Mon 2024-09-30 stays; Sat 2024-11-30 -> Fri 29.
    ("cron(0 0 LW * ? *)", ms(2024, 8, 1), [at(2024, 8, 30), at(2024, 9, 30)]),
    ("cron(0 0 LW * ? *)", ms(2024, 11, 1), [at(2024, 11, 29)]),
    # 6L: last Friday. Fri 2024-05-31 is one; June 2024 ends on Sun 30 -> Fri 28.
    ("cron(0 12 ? * 6L *)", ms(2024, 5, 1), [at(2024, 5, 31, 12)]),
    ("cron(0 12 ? * 6L *)", ms(2024, 5, 31, 12), [at(2024, 6, 28, 12), at(2024, 7, 26, 12)]),
    ("cron(0 12 ? * FRIL *)", ms(2024, 5, 31, 12), [at(2024, 6, 28, 12)]),
    # Day-of-week numbering: 1 = Sunday, 7 = Saturday (Sat 2024-06-01).
    ("cron(0 0 ? * 1 *)", ms(2024, 5, 31), [at(2024, 6, 2), at(2024, 6, 9)]),
    ("cron(0 0 ? * SUN *)", ms(2024, 5, 31), [at(2024, 6, 2)]),
    ("cron(0 0 ? * 7 *)", ms(2024, 5, 31), [at(2024, 6, 1), at(2024, 6, 8)]),
    ("cron(0 0 ? * 2,4,6 *)", ms(2024, 6, 1), [at(2024, 6, 3), at(2024, 6, 5), at(2024, 6, 7)]),
    # L alone in day-of-week: Saturday (Sat 2024-08-03).
    ("cron(0 0 ? * L *)", ms(2024, 8, 1), [at(2024, 8, 3), at(2024, 8, 10)]),
    # Feb 29 only: the next leap year, and 2100 is not one.
    ("cron(0 0 29 2 ? *)", ms(2024, 2, 29), [at(2028, 2, 29), at(2032, 2, 29)]),
    ("cron(0 0 29 2 ? *)", ms(2023, 3, 1), [at(2024, 2, 29)]),
    ("cron(0 0 29 2 ? *)", ms(2097, 1, 1), [at(2104, 2, 29)]),
    # Plain day 31 skips short months.
    ("cron(0 0 31 * ? *)", ms(2024, 4, 1), [at(2024, 5, 31), at(2024, 7, 31)]),
    # Months and years: names, lists, steps, far-future single years.
    ("cron(0 0 1 JAN,jul ? *)", ms(2024, 2, 1), [at(2024, 7, 1), at(2025, 1, 1)]),
    ("cron(0 0 1 */4 ? *)", ms(2024, 2, 1), [at(2024, 5, 1), at(2024, 9, 1), at(2025, 1, 1)]),
    ("cron(0 0 1 1 ? 2150)", ms(2024, 6, 1), [at(2150, 1, 1), None]),
    ("cron(0 0 1 1 ? 2030/10)", ms(2024, 6, 1), [at(2030, 1, 1), at(2040, 1, 1)]),
    ("cron(30 23 31 12 ? 2199)", ms(2199, 12, 31, 23, 29), [at(2199, 12, 31, 23, 30), None]),
    # Before 1970 the first candidate is the epoch.
    ("cron(0 0 * * ? *)", -1, [at(1970, 1, 1), at(1970, 1, 2)]),
]


@pytest.mark.parametrize(("expression", "after_ms", "expected"), CRON_CASES)
def test_cron_next_fire_times(
    expression: str, after_ms: int, expected: list[datetime | None]
) -> None:
    assert fire_times(expression, after_ms, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "after_ms"),
    [
        ("cron(0 0 1 1 ? 2000-2010)", ms(2024, 1, 1)),  # every year is past
        ("cron(0 0 * * ? 2024)", ms(2024, 12, 31)),
        ("cron(0 0 * * ? *)", ms(2199, 12, 31)),
        ("cron(0 0 * * ? *)", ms(3000, 1, 1)),  # beyond the last year AWS allows
        ("cron(0 0 30 2 ? *)", ms(2024, 1, 1)),  # well-formed but never fires
    ],
)
def test_cron_with_no_future_fire_time_gives_none(expression: str, after_ms: int) -> None:
    assert parse_schedule(expression).next_after(after_ms, 0) is None


def test_cron_fires_at_second_zero_and_ignores_the_anchor() -> None:
    schedule = parse_schedule("cron(0/15 * * * ? *)")
    after = ms(2024, 6, 1, 10, 7, 31) + 123
    fire = schedule.next_after(after, 0)
    assert fire == ms(2024, 6, 1, 10, 15)
    assert schedule.next_after(after, ms(2024, 6, 1, 10, 14)) == fire


# Plain fields (lists, ranges, steps, names) against a minute-by-minute oracle.
ORACLE_CASES = [
    ("cron(5,35 */6 ? * MON,WED-FRI *)", {5, 35}, {0, 6, 12, 18}, None, {0, 2, 3, 4}),
    ("cron(0-10/5 22-23 28-31 * ? *)", {0, 5, 10}, {22, 23}, {28, 29, 30, 31}, None),
    ("cron(59 23 ? * SAT,1 *)", {59}, {23}, None, {5, 6}),
]


@pytest.mark.parametrize(("expression", "minutes", "hours", "days", "weekdays"), ORACLE_CASES)
@pytest.mark.parametrize(
    "start",
    [ms(2024, 2, 27, 21, 59, 59) + 999, ms(2024, 12, 30, 23, 5), ms(2023, 2, 26, 6, 35)],
)
def test_cron_matches_a_minute_by_minute_oracle(
    expression: str,
    minutes: set[int],
    hours: set[int],
    days: set[int] | None,
    weekdays: set[int] | None,  # Python's numbering, Monday = 0
    start: int,
) -> None:
    def fires(t: datetime) -> bool:
        return (
            t.minute in minutes
            and t.hour in hours
            and (days is None or t.day in days)
            and (weekdays is None or t.weekday() in weekdays)
        )

    schedule = parse_schedule(expression)
    after = start
    for _ in range(5):
        candidate = as_datetime(after - after % 60_000) + timedelta(minutes=1)
        while not fires(candidate):
            candidate += timedelta(minutes=1)
        fire = schedule.next_after(after, 0)
        assert fire is not None
        assert as_datetime(fire) == candidate
        after = fire


def test_sparse_crons_are_fast() -> None:
    deadline = time.perf_counter() + 2.0
    leap_days = fire_times("cron(0 0 29 2 ? *)", ms(1970, 1, 1), 50)
    assert leap_days[0] == at(1972, 2, 29)
    assert leap_days[-1] == at(2172, 2, 29)  # 2100 is not a leap year
    assert all(t is not None and (t.month, t.day) == (2, 29) for t in leap_days)
    fifth_sundays = fire_times("cron(0 0 ? * 1#5 *)", ms(1970, 1, 1), 50)
    assert all(t is not None and t.weekday() == 6 and t.day >= 29 for t in fifth_sundays)
    assert fire_times("cron(0 0 1 1 ? 2199)", ms(1970, 1, 1), 2) == [at(2199, 1, 1), None]
    for _ in range(20):
        assert parse_schedule("cron(0 0 31 2 ? *)").next_after(0, 0) is None
    assert time.perf_counter() < deadline


# --- rate ---------------------------------------------------------------------

ANCHOR = ms(2024, 2, 28, 12, 34, 56) + 789  # not on a minute: rates keep the anchor's phase
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000


@pytest.mark.parametrize(
    ("expression", "after_ms", "expected"),
    [
        ("rate(5 minutes)", ANCHOR, ANCHOR + 5 * MINUTE),  # first fire = anchor + period
        ("rate(5 minutes)", ANCHOR - DAY, ANCHOR + 5 * MINUTE),  # before the anchor
        ("rate(5 minutes)", ANCHOR + 5 * MINUTE - 1, ANCHOR + 5 * MINUTE),
        ("rate(5 minutes)", ANCHOR + 5 * MINUTE, ANCHOR + 10 * MINUTE),  # strictly after
        ("rate(5 minutes)", ANCHOR + HOUR + 1, ANCHOR + 65 * MINUTE),
        ("rate(1 minute)", ANCHOR + 30 * MINUTE, ANCHOR + 31 * MINUTE),
        ("rate(1 hour)", ANCHOR, ANCHOR + HOUR),
        ("rate(2 hours)", ANCHOR + 3 * HOUR, ANCHOR + 4 * HOUR),
        ("rate(1 day)", ANCHOR + DAY, ANCHOR + 2 * DAY),  # across Feb 29 2024
        ("rate(7 days)", ANCHOR + 365 * DAY, ANCHOR + 371 * DAY),
    ],
)
def test_rate_next_fire_times(expression: str, after_ms: int, expected: int) -> None:
    assert parse_schedule(expression).next_after(after_ms, ANCHOR) == expected


def test_parse_returns_the_schedule_kinds() -> None:
    rate = parse_schedule("rate(3 hours)")
    assert isinstance(rate, RateSchedule)
    assert rate.period_ms == 3 * HOUR
    assert rate.expression == "rate(3 hours)"
    cron = parse_schedule("cron(0 2 * * ? *)")
    assert isinstance(cron, CronSchedule)
    assert cron.expression == "cron(0 2 * * ? *)"
    assert issubclass(ScheduleError, InvalidRequest)


# --- invalid expressions ------------------------------------------------------

INVALID = [
    ("", "must be 'rate("),
    ("hourly", "must be 'rate("),
    ("Cron(0 2 * * ? *)", "must be 'rate("),
    ("cron(0 2 * * ? *", "must be 'rate("),
    ("cron()", "6 fields"),
    ("cron(0 2 * * ?)", "got 5"),
    ("cron(0 2 * * ? * *)", "got 7"),
    ("cron(a b c d e f)", "invalid minutes value 'a'"),
    ("cron(60 * * * ? *)", "minutes value 60 is out of range 0-59"),
    ("cron(0 24 * * ? *)", "hours value 24 is out of range 0-23"),
    ("cron(0 0 0 * ? *)", "day-of-month value 0 is out of range 1-31"),
    ("cron(0 0 32 * ? *)", "day-of-month value 32 is out of range 1-31"),
    ("cron(0 0 1 13 ? *)", "month value 13 is out of range 1-12"),
    ("cron(0 0 ? * 0 *)", "day-of-week value 0 is out of range 1-7"),
    ("cron(0 0 ? * 8 *)", "day-of-week value 8 is out of range 1-7"),
    ("cron(0 0 * * ? 1969)", "year value 1969 is out of range 1970-2199"),
    ("cron(0 0 * * ? 2200)", "year value 2200 is out of range 1970-2199"),
    ("cron(0 0 * * * *)", "cannot both be specified"),
    ("cron(0 0 1 * MON *)", "cannot both be specified"),
    ("cron(0 0 ? * ? *)", "cannot both be '?'"),
    ("cron(? 0 * * ? *)", "'?' is not allowed in minutes"),
    ("cron(0 0 * ? ? *)", "'?' is not allowed in month"),
    ("cron(0 0 * * ? ?)", "'?' is not allowed in year"),
    ("cron(0 0 ?,1 * ? *)", "'?' must stand alone in day-of-month"),
    ("cron(0 L * * ? *)", "'L' is not allowed in hours"),
    ("cron(0 0 1 L ? *)", "'L' is not allowed in month"),
    ("cron(5W 0 * * ? *)", "'W' is not allowed in minutes"),
    ("cron(0 0 ? * 2W *)", "'W' is not allowed in day-of-week"),
    ("cron(0 0 1#2 * ? *)", "'#' is not allowed in day-of-month"),
    ("cron(0 0 ? * 1/2 *)", "'/' is not allowed in day-of-week"),
    ("cron(0 0 1W,15 * ? *)", "'1W' cannot be combined"),
    ("cron(0 0 L,15 * ? *)", "'L' cannot be combined"),
    ("cron(0 0 1-5W * ? *)", "invalid day-of-month value '1-5W'"),
    ("cron(0 0 32W * ? *)", "day-of-month value 32 is out of range 1-31"),
    ("cron(0 0 L-31 * ? *)", "L-31 is out of range"),
    ("cron(0 0 ? * 6L,2 *)", "'6L' cannot be combined"),
    ("cron(0 0 ? * 2#1,3 *)", "'2#1' cannot be combined"),
    ("cron(0 0 ? * 2#1,3#2 *)", "only one '#' term"),
    ("cron(0 0 ? * 2#6 *)", "week number must be 1-5"),
    ("cron(0 0 ? * 2#0 *)", "week number must be 1-5"),
    ("cron(0 0 ? * 8#1 *)", "day-of-week value 8 is out of range 1-7"),
    ("cron(0 0 ? * 0L *)", "day-of-week value 0 is out of range 1-7"),
    ("cron(0/0 * * * ? *)", "minutes step '/0' must be 1-60"),
    ("cron(*/61 * * * ? *)", "minutes step '/61' must be 1-60"),
    ("cron(0 0 1 */0 ? *)", "month step '/0'"),
    ("cron(30-10 * * * ? *)", "minutes range '30-10' is reversed"),
    ("cron(0 0 ? * FRI-MON *)", "day-of-week range 'FRI-MON' is reversed"),
    ("cron(0 0 1 DEC-JAN ? *)", "month range 'DEC-JAN' is reversed"),
    ("cron(0 0 1 * ? 2030-2020)", "year range '2030-2020' is reversed"),
    ("cron(0 0 ? * FUNDAY *)", "unknown day-of-week name 'FUNDAY'"),
    ("cron(0 0 ? * MONDAY *)", "unknown day-of-week name 'MONDAY'"),
    ("cron(0 0 ? * JUL *)", "unknown day-of-week name 'JUL'"),
    ("cron(0 0 1 JANUARY ? *)", "unknown month name 'JANUARY'"),
    ("cron(0 0 1 MON ? *)", "unknown month name 'MON'"),
    ("cron(MON 0 * * ? *)", "invalid minutes value 'MON'"),
    ("cron(0,,5 0 * * ? *)", "empty value in the minutes list"),
    ("cron(1-2-3 0 * * ? *)", "invalid minutes value '1-2-3'"),
    ("cron(-1 0 * * ? *)", "invalid minutes value '-1'"),
    ("cron(0 0 1-L * ? *)", "unknown day-of-month value 'L'"),
    ("rate()", "needs a value and a unit"),
    ("rate(5)", "needs a value and a unit"),
    ("rate(5 minutes please)", "needs a value and a unit"),
    ("rate(0 minutes)", "positive integer, not 0"),
    ("rate(-5 minutes)", "'-5' is not a positive integer"),
    ("rate(1.5 hours)", "'1.5' is not a positive integer"),
    ("rate(five minutes)", "'five' is not a positive integer"),
    ("rate(5 weeks)", "unknown rate unit 'weeks'"),
    ("rate(5 seconds)", "unknown rate unit 'seconds'"),
    ("rate(5 Minutes)", "unknown rate unit 'Minutes'"),
    ("rate(1 hours)", "singular unit 'hour'"),
    ("rate(1 minutes)", "singular unit 'minute'"),
    ("rate(5 hour)", "plural unit 'hours'"),
    ("rate(2 day)", "plural unit 'days'"),
    ("rate(" + "1" * 300 + " days)", "longer than 256 characters"),
]


@pytest.mark.parametrize(("expression", "problem"), INVALID)
def test_invalid_expressions_say_what_is_wrong(expression: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(expression)
    message = caught.value.message
    assert message.startswith(f"Parameter ScheduleExpression is not valid: {expression}: ")
    assert problem in message
