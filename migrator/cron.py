"""Cron expressions, in UTC: when a CheckpointSchedule is due.

A CheckpointSchedule's ``spec.schedule`` is written the way people already write CronJobs, so
this module reads the same language (crontab(5), as Vixie cron reads it; CronJob's differs only
in corner cases, such as whether ``*/2`` in a day field counts as "restricted"):

* five fields, ``minute hour day-of-month month day-of-week``, each ``*``, a number, a range
  ``a-b``, a step ``*/n``, ``a-b/n`` or ``a/n`` (``a`` to the field's maximum), or a list of those
  separated by commas; months and weekdays also by name (``jan``..``dec``, ``sun``..``sat``,
  case-insensitive); weekday 0 and 7 are both Sunday; ``?`` is ``*`` in the two day fields;
* the macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``)
  and ``@hourly``;
* an optional sixth field, *leading*, for seconds (``*/10 * * * * *``): tests and demos need
  schedules shorter than a minute, and this is the spelling other cron libraries use for it.

Day-of-month and day-of-week combine as crontab(5) says: "If both fields are restricted (i.e.,
don't start with *), the command will be run when either field matches the current time";
otherwise a day must match both (a plain ``*`` matches every day, leaving the other field to
decide). ``0 0 1,15 * mon`` is the 1st, the 15th and every Monday; ``0 0 */2 * mon`` is the
Mondays that fall on odd days.

Times are UTC (the CRD says so; there is no ``CRON_TZ=``). A schedule that can never happen
(``0 0 30 2 *``: February 30th) is refused by ``parse``, naming the day-of-month field, rather
than found out later by a search that never ends. ``Cron.next_after`` jumps field by field
(to the next matching month, then day, hour, minute, second), so finding the next time costs a
few dozen steps even when it is years away (``0 0 29 2 *`` across 2100); its search is bounded
all the same, and ``Cron.latest_until`` (the latest time a schedule was due, which is what a
controller that was down for several periods fires once) is a binary search over it.
"""

from __future__ import annotations

import bisect
import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

# How far ``next_after`` looks. February 29th is at most 8 years away (2096 -> 2104); a date on a
# given weekday (``0 0 */14 feb mon``: the 1st or 15th of February, a Monday) up to 11 within a
# century, a few more across 2100. ``parse`` refuses what never happens, so this is a safety net.
SEARCH_YEARS: Final = 50

MACROS: Final = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES: Final = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
WEEKDAY_NAMES: Final = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# The most days each month can have (February in a leap year): what "can this day ever happen" asks.
LONGEST_MONTH: Final = {month: 29 if month == 2 else calendar.monthrange(2001, month)[1] for month in range(1, 13)}


class CronError(ValueError):
    """A schedule that is not a cron expression, or one that never happens; the message names the field."""


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


SECOND: Final = _Field("second", 0, 59)
MINUTE: Final = _Field("minute", 0, 59)
HOUR: Final = _Field("hour", 0, 23)
DAY_OF_MONTH: Final = _Field("day-of-month", 1, 31)
MONTH: Final = _Field("month", 1, 12, MONTH_NAMES)
DAY_OF_WEEK: Final = _Field("day-of-week", 0, 7, WEEKDAY_NAMES)  # 7 is Sunday too


def _number(text: str, field: _Field) -> int:
    value = field.names.get(text.lower()) if field.names else None
    if value is None:
        if not text.isdigit():
            raise CronError(f"{field.name} field: {text!r} is not a number{' or a name' if field.names else ''}")
        value = int(text)
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name} field: {value} is out of range {field.low}-{field.high}")
    return value


def _parse_field(text: str, field: _Field) -> tuple[frozenset[int], bool]:
    """The values one field allows, and whether it starts with ``*`` (unrestricted, for the day rule)."""
    if not text:
        raise CronError(f"{field.name} field is empty")
    values: set[int] = set()
    for term in text.split(","):
        if not term:
            raise CronError(f"{field.name} field {text!r}: empty list item")
        span, slash, step_text = term.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field.name} field {text!r}: step {step_text!r} is not a positive number")
            step = int(step_text)
        if span in ("*", "?") and (span == "*" or field in (DAY_OF_MONTH, DAY_OF_WEEK)):
            start, end = field.low, field.high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, end = _number(first, field), _number(last, field)
            if start > end:
                raise CronError(f"{field.name} field {text!r}: range {span} runs backwards")
        else:
            start = _number(span, field)
            end = field.high if slash else start  # "a/n" is "a-max/n"
        values.update(range(start, end + 1, step))
    if field is DAY_OF_WEEK and 7 in values:
        values = (values - {7}) | {0}
    return frozenset(values), text.startswith(("*", "?"))


def _next_value(values: tuple[int, ...], start: int) -> int | None:
    """The smallest of ``values`` (sorted) that is at least ``start``."""
    index = bisect.bisect_left(values, start)
    return values[index] if index < len(values) else None


@dataclass(frozen=True, kw_only=True)
class Cron:
    """A parsed schedule: the values each field allows (sorted), and how the two day fields combine."""

    text: str
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]  # of the month
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday
    either_day: bool  # both day fields restricted: a day matching either one is due (crontab(5))

    def day_matches(self, when: datetime) -> bool:
        in_month = when.day in self.days
        in_week = when.isoweekday() % 7 in self.weekdays
        return (in_month or in_week) if self.either_day else (in_month and in_week)

    def matches(self, when: datetime) -> bool:
        """Is the schedule due at ``when`` (to the second)?"""
        when = when.astimezone(UTC)
        return (
            when.second in self.seconds and when.minute in self.minutes and when.hour in self.hours
            and when.month in self.months and self.day_matches(when)
        )  # fmt: skip

    def next_after(self, when: datetime) -> datetime:
        """The first time strictly after ``when`` the schedule is due (UTC, whole seconds).

        Each step jumps to the next value its field allows, or carries into the next larger unit,
        so the search is a few steps per month searched, not one per minute. ``CronError`` if
        nothing is due in ``SEARCH_YEARS`` years (``parse`` already refuses schedules that never
        happen, so that means a bug, not a user's mistake).
        """
        if when.tzinfo is None:
            raise ValueError("next_after needs an aware datetime (cron schedules are in UTC)")
        t = when.astimezone(UTC).replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + SEARCH_YEARS
        while t.year <= limit:
            month = _next_value(self.months, t.month)
            if month is None:
                t = datetime(t.year + 1, 1, 1, tzinfo=UTC)
                continue
            if month != t.month:
                t = datetime(t.year, month, 1, tzinfo=UTC)
            if not self.day_matches(t):
                t = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
                continue
            hour = _next_value(self.hours, t.hour)
            if hour is None:
                t = datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1)
                continue
            if hour != t.hour:
                t = t.replace(hour=hour, minute=0, second=0)
            minute = _next_value(self.minutes, t.minute)
            if minute is None:
                t = t.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if minute != t.minute:
                t = t.replace(minute=minute, second=0)
            second = _next_value(self.seconds, t.second)
            if second is None:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            return t.replace(second=second)
        raise CronError(f"schedule {self.text!r} is not due in the {SEARCH_YEARS} years after {when.isoformat()}")

    def latest_until(self, when: datetime, *, after: datetime) -> datetime | None:
        """The latest time the schedule was due in ``(after, when]``, or None if it was not due then.

        A binary search for the last second ``s`` whose ``next_after(s)`` is still at or before
        ``when`` (the answer is then ``next_after(s)``): about 30 ``next_after`` calls for a window
        of decades, whatever the period, where stepping through the missed times could take millions.
        """
        if self.next_after(after) > when:
            return None
        # Invariant: next_after(low) <= when < next_after(high).
        low = after.astimezone(UTC).replace(microsecond=0)
        high = when.astimezone(UTC).replace(microsecond=0)
        while high - low > timedelta(seconds=1):
            middle = low + timedelta(seconds=(high - low) // timedelta(seconds=1) // 2)
            if self.next_after(middle) <= when:
                low = middle
            else:
                high = middle
        return self.next_after(low)


def parse(text: str) -> Cron:
    """Parse a schedule (see the module docstring); ``CronError`` with a one-line message naming the bad field."""
    source = text
    text = " ".join(text.split())
    if not text:
        raise CronError("the schedule is empty")
    if text.startswith("@"):
        expanded = MACROS.get(text.lower())
        if expanded is None:
            raise CronError(f"unknown macro {text!r} (known: {', '.join(MACROS)})")
        text = expanded
    if "=" in text.split(" ", 1)[0]:
        raise CronError(f"{text.split(' ', 1)[0]!r}: time zones are not supported, schedules are in UTC")
    parts = text.split(" ")
    if len(parts) == 5:
        parts = ["0", *parts]
    elif len(parts) != 6:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), got {len(parts)}")
    fields = (SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK)
    (seconds, _), (minutes, _), (hours, _), (days, any_day), (months, _), (weekdays, any_weekday) = (
        _parse_field(part, field) for part, field in zip(parts, fields, strict=True)
    )
    either_day = not any_day and not any_weekday
    if not either_day and not any(day <= LONGEST_MONTH[month] for day in days for month in months):
        named = ", ".join(calendar.month_abbr[m].lower() for m in sorted(months))
        raise CronError(f"day-of-month field {parts[3]!r}: no such day in {named}: the schedule would never run")
    return Cron(
        text=source.strip(),
        seconds=tuple(sorted(seconds)),
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=tuple(sorted(days)),
        months=tuple(sorted(months)),
        weekdays=tuple(sorted(weekdays)),
        either_day=either_day,
    )
