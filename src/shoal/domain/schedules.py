"""EventBridge schedule expressions: `rate(...)` and `cron(...)`, parsed and run.

A scheduled rule stores its expression verbatim; this module validates it the
way AWS does (so a bad expression fails at PutRule, not at the first tick) and
answers the only question the scheduler asks: when does it fire next?

Grammar (spec 7.4, Quartz-flavoured, always UTC, minute resolution):

- `rate(<n> <unit>)`: unit minute(s)/hour(s)/day(s), singular iff n == 1;
  fires at anchor + k * period for k >= 1.
- `cron(<min> <hour> <day-of-month> <month> <day-of-week> <year>)`: exactly one
  day field is `?`; day-of-week counts 1 = SUN .. 7 = SAT (no 0).

Decisions where AWS is silent or unverified: reversed ranges (`10-5`,
`FRI-MON`) are rejected in every field; `*/n`, `a/n` and `a-b/n` are steps
(a step is 1..the field's span); `/` is not allowed in day-of-week (AWS's
table omits it); `L` alone in day-of-week means Saturday (Quartz); `nL`
(last weekday n) and `n#k` (k in 1..5) accept names (`FRIL`, `MON#2`);
`L`, `L-n`, `LW`, `nW`, `nL` and `n#k` must be their field's only term; `nW`
never leaves the month and, like a plain day, skips months too short to
hold day n; names are case-insensitive, keywords and units are lowercase;
runs of blanks between fields are accepted. A well-formed cron that can
never fire (`cron(0 0 30 2 ? *)`, years all past) is valid and yields None.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from shoal.domain.errors import InvalidRequest

MAX_EXPRESSION_LENGTH = 256  # EventBridge PutRule's limit on ScheduleExpression

_MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_YEAR_MIN, _YEAR_MAX = 1970, 2199
# Past this instant no cron can fire; checking first also keeps datetime
# arithmetic away from its year-9999 ceiling.
_END_MS = int((datetime(_YEAR_MAX + 1, 1, 1, tzinfo=UTC) - _EPOCH).total_seconds()) * 1000

_RATE_UNITS_MS: Mapping[str, int] = {
    "minute": _MINUTE_MS,
    "hour": 60 * _MINUTE_MS,
    "day": 24 * 60 * _MINUTE_MS,
}

_MONTH_NAMES: Mapping[str, int] = {
    name: i
    for i, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"),
        start=1,
    )
}
_DAY_NAMES: Mapping[str, int] = {
    name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)
}


class ScheduleError(InvalidRequest):
    """An invalid ScheduleExpression; the message says what is wrong."""


class Schedule(Protocol):
    # Read-only so that frozen dataclasses satisfy it; callers only read it.
    @property
    def expression(self) -> str: ...

    def next_after(self, after_ms: int, anchor_ms: int) -> int | None:
        """The first fire time strictly after `after_ms` (epoch milliseconds,
        UTC), or None if there is none (a cron whose years are all past).
        `anchor_ms` is when the schedule started counting (the rule's
        creation or last enabling): rate schedules fire at anchor + k*period
        for k >= 1; cron schedules ignore it."""
        ...


def parse_schedule(expression: str) -> Schedule:
    """Raises ScheduleError with a message naming the expression and the problem."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise _error(expression, f"longer than {MAX_EXPRESSION_LENGTH} characters")
    if expression.startswith("rate(") and expression.endswith(")"):
        return _parse_rate(expression, expression[5:-1])
    if expression.startswith("cron(") and expression.endswith(")"):
        return _parse_cron(expression, expression[5:-1])
    raise _error(expression, "must be 'rate(<value> <unit>)' or 'cron(<six fields>)'")


def _error(expression: str, problem: str) -> ScheduleError:
    return ScheduleError(f"Parameter ScheduleExpression is not valid: {expression}: {problem}")


# --- rate -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateSchedule:
    expression: str
    period_ms: int

    def next_after(self, after_ms: int, anchor_ms: int) -> int | None:
        k = max(1, (after_ms - anchor_ms) // self.period_ms + 1)
        return anchor_ms + k * self.period_ms


def _parse_rate(expression: str, body: str) -> RateSchedule:
    parts = body.split()
    if len(parts) != 2:
        raise _error(expression, "rate needs a value and a unit, e.g. rate(5 minutes)")
    value_text, unit = parts
    if not value_text.isascii() or not value_text.isdigit():
        raise _error(expression, f"rate value '{value_text}' is not a positive integer")
    value = int(value_text)
    if value == 0:
        raise _error(expression, "rate value must be a positive integer, not 0")
    singular = unit.removesuffix("s")
    if singular not in _RATE_UNITS_MS:
        raise _error(
            expression, f"unknown rate unit '{unit}' (minute(s), hour(s) or day(s) expected)"
        )
    if value == 1 and unit != singular:
        raise _error(expression, f"a rate of 1 takes the singular unit '{singular}'")
    if value != 1 and unit == singular:
        raise _error(expression, f"a rate of {value} takes the plural unit '{singular}s'")
    period_ms = value * _RATE_UNITS_MS[singular]
    if period_ms > _END_MS:
        # Longer than cron's whole calendar (1970-2199): it would never
        # fire, and its fire times need not fit the store's 64-bit integers.
        raise _error(
            expression, f"rate value {value} is too large: the period is longer than 230 years"
        )
    return RateSchedule(expression=expression, period_ms=period_ms)


# --- cron: day rules ------------------------------------------------------------
# Which days of a month fire depends on the month itself (its length, the
# weekday of the 1st), so the day fields become rules evaluated per month.


def _aws_weekday(first_weekday: int, day: int) -> int:
    """1 = Sunday .. 7 = Saturday, from calendar's Monday = 0 for the 1st."""
    return (first_weekday + day) % 7 + 1


def _nearest_weekday(first_weekday: int, ndays: int, day: int) -> int:
    weekday = _aws_weekday(first_weekday, day)
    if weekday == 7:  # Saturday: Friday before, unless that leaves the month
        return day - 1 if day > 1 else day + 2
    if weekday == 1:  # Sunday: Monday after, unless that leaves the month
        return day + 1 if day < ndays else day - 2
    return day


class _DayRule(Protocol):
    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        """The firing days of a month, ascending."""
        ...


@dataclass(frozen=True, slots=True)
class _DaysOfMonth:
    values: tuple[int, ...]

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        return [d for d in self.values if d <= ndays]


@dataclass(frozen=True, slots=True)
class _LastDayOfMonth:
    offset: int  # L-n

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        day = ndays - self.offset
        return [day] if day >= 1 else []


@dataclass(frozen=True, slots=True)
class _NearestWeekday:
    day: int | None  # None: LW, the last weekday of the month

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        day = ndays if self.day is None else self.day
        if day > ndays:
            return []
        return [_nearest_weekday(first_weekday, ndays, day)]


@dataclass(frozen=True, slots=True)
class _DaysOfWeek:
    values: frozenset[int]

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        return [d for d in range(1, ndays + 1) if _aws_weekday(first_weekday, d) in self.values]


@dataclass(frozen=True, slots=True)
class _LastWeekdayOfMonth:
    weekday: int  # nL

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        return [ndays - (_aws_weekday(first_weekday, ndays) - self.weekday) % 7]


@dataclass(frozen=True, slots=True)
class _NthWeekdayOfMonth:
    weekday: int
    nth: int  # n#k

    def days(self, first_weekday: int, ndays: int) -> Sequence[int]:
        first = 1 + (self.weekday - _aws_weekday(first_weekday, 1)) % 7
        day = first + 7 * (self.nth - 1)
        return [day] if day <= ndays else []


# --- cron -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    months: tuple[int, ...]
    years: tuple[int, ...]
    day_rule: _DayRule

    def next_after(self, after_ms: int, anchor_ms: int) -> int | None:
        if after_ms >= _END_MS:
            return None
        # Fire times are whole minutes: the first candidate is the next one.
        start = _EPOCH + timedelta(minutes=max(after_ms // _MINUTE_MS + 1, 0))
        lower = (start.year, start.month, start.day, start.hour, start.minute)
        for year in self.years[bisect_left(self.years, start.year) :]:
            for month in self.months:
                if (year, month) < lower[:2]:
                    continue
                first_weekday, ndays = calendar.monthrange(year, month)
                for day in self.day_rule.days(first_weekday, ndays):
                    if (year, month, day) < lower[:3]:
                        continue
                    same_day = (year, month, day) == lower[:3]
                    for hour in self.hours:
                        if same_day and hour < start.hour:
                            continue
                        same_hour = same_day and hour == start.hour
                        for minute in self.minutes:
                            if same_hour and minute < start.minute:
                                continue
                            ordinal = date(year, month, day).toordinal() - _EPOCH_ORDINAL
                            return ((ordinal * 24 + hour) * 60 + minute) * _MINUTE_MS
        return None


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: Mapping[str, int]
    specials: str  # the characters beyond digits and `, - *` this field allows


_MINUTES = _Field("minutes", 0, 59, {}, "/")
_HOURS = _Field("hours", 0, 23, {}, "/")
_DAY_OF_MONTH = _Field("day-of-month", 1, 31, {}, "/?LW")
_MONTH = _Field("month", 1, 12, _MONTH_NAMES, "/")
_DAY_OF_WEEK = _Field("day-of-week", 1, 7, _DAY_NAMES, "?L#")
_YEAR = _Field("year", _YEAR_MIN, _YEAR_MAX, {}, "/")

# Case-insensitive like Quartz; messages quote the user's own spelling.
_TERM = re.compile(r"(?:(\*)|([0-9]+|[A-Z]+)(?:-([0-9]+|[A-Z]+))?)(?:/([0-9]+))?", re.I)
_TOKENS = re.compile(r"[A-Z]+|[0-9]+|.", re.I)
_DOM_LAST = re.compile(r"L(?:-([0-9]+))?", re.I)
_DOM_WEEKDAY = re.compile(r"([0-9]+)W|LW", re.I)
_DOW_LAST = re.compile(r"([0-9]+|[A-Z]+)L", re.I)
_DOW_NTH = re.compile(r"([0-9]+|[A-Z]+)#([0-9]+)", re.I)


def _parse_cron(expression: str, body: str) -> CronSchedule:
    fields = body.split()
    if len(fields) != 6:
        raise _error(
            expression,
            f"cron needs 6 fields (minutes hours day-of-month month day-of-week year), "
            f"got {len(fields)}",
        )
    minute_text, hour_text, dom_text, month_text, dow_text, year_text = fields
    parser = _CronParser(expression)
    minutes = parser.values(_MINUTES, minute_text)
    hours = parser.values(_HOURS, hour_text)
    dom_rule = parser.day_of_month(dom_text)
    months = parser.values(_MONTH, month_text)
    dow_rule = parser.day_of_week(dow_text)
    years = parser.values(_YEAR, year_text)
    if dom_rule is not None and dow_rule is not None:
        raise _error(
            expression,
            "day-of-month and day-of-week cannot both be specified; one of them must be '?'",
        )
    day_rule = dom_rule if dom_rule is not None else dow_rule
    if day_rule is None:
        raise _error(expression, "day-of-month and day-of-week cannot both be '?'")
    return CronSchedule(
        expression=expression,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        months=tuple(sorted(months)),
        years=tuple(sorted(years)),
        day_rule=day_rule,
    )


def _dow_last(term: str) -> re.Match[str] | None:
    """`nL`, but not a name that merely ends in L (`JUL` is a month, not `JUL`)."""
    match = _DOW_LAST.fullmatch(term)
    if match and (match.group(1).isdigit() or match.group(1).upper() in _DAY_NAMES):
        return match
    return None


@dataclass(frozen=True, slots=True)
class _CronParser:
    expression: str

    def fail(self, problem: str) -> ScheduleError:
        return _error(self.expression, problem)

    def day_of_month(self, text: str) -> _DayRule | None:
        """None for `?`."""
        if self.is_question(_DAY_OF_MONTH, text):
            return None
        if last := _DOM_LAST.fullmatch(text):
            offset = int(last.group(1) or 0)
            if offset > 30:
                raise self.fail(f"day-of-month offset L-{offset} is out of range L-0 to L-30")
            return _LastDayOfMonth(offset)
        if weekday := _DOM_WEEKDAY.fullmatch(text):
            if weekday.group(1) is None:
                return _NearestWeekday(None)
            return _NearestWeekday(self.number(_DAY_OF_MONTH, weekday.group(1)))
        for term in text.split(","):
            if _DOM_LAST.fullmatch(term) or _DOM_WEEKDAY.fullmatch(term):
                raise self.fail(f"day-of-month term '{term}' cannot be combined with other values")
        return _DaysOfMonth(tuple(sorted(self.values(_DAY_OF_MONTH, text))))

    def day_of_week(self, text: str) -> _DayRule | None:
        """None for `?`."""
        if self.is_question(_DAY_OF_WEEK, text):
            return None
        terms = text.split(",")
        if sum("#" in term for term in terms) > 1:
            raise self.fail("day-of-week allows only one '#' term")
        if len(terms) == 1:
            if text.upper() == "L":  # Quartz: the last day of the week, Saturday
                return _DaysOfWeek(frozenset({7}))
            if last := _dow_last(text):
                return _LastWeekdayOfMonth(self.number(_DAY_OF_WEEK, last.group(1)))
            if nth := _DOW_NTH.fullmatch(text):
                weekday = self.number(_DAY_OF_WEEK, nth.group(1))
                k = int(nth.group(2))
                if not 1 <= k <= 5:
                    raise self.fail(f"day-of-week '{text}': the week number must be 1-5")
                return _NthWeekdayOfMonth(weekday, k)
        else:
            for term in terms:
                if term.upper() == "L" or _dow_last(term) or _DOW_NTH.fullmatch(term):
                    raise self.fail(
                        f"day-of-week term '{term}' cannot be combined with other values"
                    )
        return _DaysOfWeek(self.values(_DAY_OF_WEEK, text))

    def is_question(self, field: _Field, text: str) -> bool:
        if "?" not in text:
            return False
        if "?" not in field.specials:
            raise self.fail(f"'?' is not allowed in {field.name}")
        if text != "?":
            raise self.fail(f"'?' must stand alone in {field.name}")
        return True

    def values(self, field: _Field, text: str) -> frozenset[int]:
        self.is_question(field, text)  # `?` where it is not allowed
        result: set[int] = set()
        for term in text.split(","):
            result.update(self.term(field, term))
        return frozenset(result)

    def term(self, field: _Field, term: str) -> range:
        if not term:
            raise self.fail(f"empty value in the {field.name} list")
        self.check_tokens(field, term)
        match = _TERM.fullmatch(term)
        if match is None:
            raise self.fail(f"invalid {field.name} value '{term}'")
        star, first, last, step_text = match.groups()
        if star:
            low, high = field.low, field.high
        else:
            low = self.number(field, first)
            high = field.high if last is None and step_text else low
            if last is not None:
                high = self.number(field, last)
                if low > high:
                    raise self.fail(
                        f"{field.name} range '{first}-{last}' is reversed (start after end)"
                    )
        step = 1
        if step_text is not None:
            step = int(step_text)
            span = field.high - field.low + 1
            if not 1 <= step <= span:
                raise self.fail(f"{field.name} step '/{step_text}' must be 1-{span}")
        return range(low, high + 1, step)

    def check_tokens(self, field: _Field, term: str) -> None:
        """Name the offending character or word, not just the whole term."""
        for token in _TOKENS.findall(term):
            word = token.upper()
            if token.isdigit() or token in ",-*" or word in field.names:
                continue
            special = token in "/?#" or word in ("L", "W", "LW")
            if special and any(c not in field.specials for c in word):
                raise self.fail(f"'{token}' is not allowed in {field.name}")
            if special:
                continue  # allowed here, but misplaced: the term check says so
            if field.names and token.isalpha():
                raise self.fail(f"unknown {field.name} name '{token}'")
            raise self.fail(f"invalid {field.name} value '{term}'")

    def number(self, field: _Field, text: str) -> int:
        value = field.names.get(text.upper())
        if value is None:
            if not text.isdigit():
                kind = "name" if field.names else "value"
                raise self.fail(f"unknown {field.name} {kind} '{text}'")
            value = int(text)
        if not field.low <= value <= field.high:
            raise self.fail(f"{field.name} value {text} is out of range {field.low}-{field.high}")
        return value
