"""Cron expressions: the syntax crontab(5) and CronJobs accept, the seconds field, and finding the next (and latest) time."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from migrator import cron
from migrator.cron import Cron, CronError, parse


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def times(expression: str, start: datetime, count: int) -> list[datetime]:
    schedule = parse(expression)
    found, t = [], start
    for _ in range(count):
        t = schedule.next_after(t)
        found.append(t)
    return found


def brute_next(schedule: Cron, after: datetime, *, step: timedelta, horizon: timedelta) -> datetime | None:
    """The next due time by looking at every ``step`` (minutes, or seconds), the slow obvious way."""
    t = after.replace(microsecond=0)
    t = t.replace(second=0) + step if step == timedelta(minutes=1) else t + step
    end = after + horizon
    while t <= end:
        if schedule.matches(t):
            return t
        t += step
    return None


# --- parsing --------------------------------------------------------------------------------------
def test_star_and_numbers() -> None:
    c = parse("30 4 * * *")
    assert c.seconds == (0,)
    assert c.minutes == (30,)
    assert c.hours == (4,)
    assert c.days == tuple(range(1, 32))
    assert c.months == tuple(range(1, 13))
    assert c.weekdays == tuple(range(7))
    assert not c.either_day


def test_lists_ranges_and_steps() -> None:
    c = parse("*/15 1-10/2 1,15,20-22 * *")
    assert c.minutes == (0, 15, 30, 45)
    assert c.hours == (1, 3, 5, 7, 9)
    assert c.days == (1, 15, 20, 21, 22)


def test_a_start_with_a_step_runs_to_the_end_of_the_field() -> None:
    assert parse("5/20 * * * *").minutes == (5, 25, 45)
    assert parse("0 0 10/10 * *").days == (10, 20, 30)


@pytest.mark.parametrize(
    ("expression", "months"),
    [("0 0 1 jan *", (1,)), ("0 0 1 JAN-mar *", (1, 2, 3)), ("0 0 1 jun,Dec *", (6, 12)), ("0 0 1 feb-apr/2 *", (2, 4))],
)
def test_month_names(expression: str, months: tuple[int, ...]) -> None:
    assert parse(expression).months == months


@pytest.mark.parametrize(
    ("field", "weekdays"),
    [
        ("mon-fri", (1, 2, 3, 4, 5)),
        ("SUN", (0,)),
        ("7", (0,)),
        ("0,7", (0,)),
        ("5-7", (0, 5, 6)),
        ("sat,sun", (0, 6)),
        ("*/2", (0, 2, 4, 6)),
    ],
)
def test_weekday_names_and_seven_is_sunday(field: str, weekdays: tuple[int, ...]) -> None:
    assert parse(f"0 0 * * {field}").weekdays == weekdays


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros(macro: str, same_as: str) -> None:
    ours, theirs = parse(macro), parse(same_as)
    assert (ours.seconds, ours.minutes, ours.hours, ours.days, ours.months, ours.weekdays, ours.either_day) == (
        theirs.seconds, theirs.minutes, theirs.hours, theirs.days, theirs.months, theirs.weekdays, theirs.either_day,
    )  # fmt: skip
    assert ours.text == macro


def test_six_fields_start_with_seconds() -> None:
    c = parse("*/10 * * * * *")
    assert c.seconds == (0, 10, 20, 30, 40, 50)
    assert c.minutes == tuple(range(60))
    assert parse("15,45 30 * * * *").seconds == (15, 45)


def test_whitespace_is_forgiven() -> None:
    assert parse("  */5\t*  * * *  ").minutes == tuple(range(0, 60, 5))


def test_question_mark_is_a_star_in_the_day_fields() -> None:
    c = parse("0 0 ? * mon")
    assert c.days == tuple(range(1, 32))
    assert not c.either_day


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "expected 5 fields"),
        ("* * * * * * *", "expected 5 fields"),
        ("60 * * * *", "minute field: 60 is out of range 0-59"),
        ("* 24 * * *", "hour field: 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month field: 32"),
        ("* * * 13 *", "month field: 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
        ("60 * * * * *", "second field: 60"),
        ("* * * foo *", "month field: 'foo' is not a number or a name"),
        ("* * * * funday", "day-of-week field: 'funday'"),
        ("mon * * * *", "minute field: 'mon' is not a number"),
        ("*/0 * * * *", "minute field '*/0': step '0'"),
        ("*/x * * * *", "step 'x'"),
        ("5-1 * * * *", "minute field '5-1': range 5-1 runs backwards"),
        ("1,,2 * * * *", "minute field '1,,2': empty list item"),
        ("1- * * * *", "minute field: '' is not a number"),
        ("-1 * * * *", "minute field: '' is not a number"),
        ("? * * * *", "minute field: '?' is not a number"),
        ("@reboot", "unknown macro '@reboot'"),
        ("@every 5m", "unknown macro"),
        ("CRON_TZ=Europe/Paris 0 0 * * *", "time zones are not supported"),
        ("0 0 30 2 *", "day-of-month field '30': no such day in feb"),
        ("0 0 31 apr,jun,sep,nov *", "no such day in apr, jun, sep, nov"),
    ],
)
def test_bad_schedules_say_which_field(expression: str, words: str) -> None:
    with pytest.raises(CronError) as caught:
        parse(expression)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message


def test_a_day_that_exists_in_one_of_the_months_is_fine() -> None:
    parse("0 0 31 jan,feb *")
    parse("0 0 29 2 *")
    parse("0 0 30 2 mon")  # both day fields restricted: every Monday of February


# --- next_after -----------------------------------------------------------------------------------
def test_next_is_strictly_after() -> None:
    assert parse("0 * * * *").next_after(at(2026, 3, 1, 10, 0)) == at(2026, 3, 1, 11, 0)
    assert parse("0 * * * *").next_after(at(2026, 3, 1, 9, 59, 59)) == at(2026, 3, 1, 10, 0)


def test_fractions_of_a_second_are_not_a_second() -> None:
    t = at(2026, 3, 1, 10, 0, 0) + timedelta(microseconds=500_000)
    assert parse("* * * * * *").next_after(t) == at(2026, 3, 1, 10, 0, 1)
    assert parse("0 * * * *").next_after(t) == at(2026, 3, 1, 11, 0)


def test_every_ten_seconds() -> None:
    assert times("*/10 * * * * *", at(2026, 3, 1, 10, 0, 55), 3) == [
        at(2026, 3, 1, 10, 1, 0),
        at(2026, 3, 1, 10, 1, 10),
        at(2026, 3, 1, 10, 1, 20),
    ]


def test_carries_into_the_next_day_month_and_year() -> None:
    assert parse("30 23 * * *").next_after(at(2026, 12, 31, 23, 30)) == at(2027, 1, 1, 23, 30)
    assert parse("0 0 1 * *").next_after(at(2026, 1, 31, 12)) == at(2026, 2, 1)
    assert parse("@yearly").next_after(at(2026, 1, 1)) == at(2027, 1, 1)
    assert parse("59 59 23 31 12 *").next_after(at(2026, 6, 1)) == at(2026, 12, 31, 23, 59, 59)


def test_short_months_are_skipped() -> None:
    assert times("0 0 31 * *", at(2026, 1, 31), 3) == [at(2026, 3, 31), at(2026, 5, 31), at(2026, 7, 31)]


def test_leap_day_is_years_away_across_2100() -> None:
    assert parse("0 0 29 2 *").next_after(at(2026, 3, 1)) == at(2028, 2, 29)
    assert parse("0 0 29 2 *").next_after(at(2096, 3, 1)) == at(2104, 2, 29)  # 2100 is not a leap year


def test_weekdays() -> None:
    # 2026-03-01 is a Sunday.
    assert times("0 9 * * mon-fri", at(2026, 3, 5, 10), 3) == [at(2026, 3, 6, 9), at(2026, 3, 9, 9), at(2026, 3, 10, 9)]
    assert parse("0 0 * * 7").next_after(at(2026, 3, 1)) == at(2026, 3, 8)
    assert parse("@weekly").next_after(at(2026, 3, 2)) == at(2026, 3, 8)


def test_both_day_fields_restricted_means_either() -> None:
    # The 13th, or any Friday (crontab(5)): March 2026 has Fridays 6, 13, 20, 27.
    assert times("0 0 13 * fri", at(2026, 3, 1), 5) == [
        at(2026, 3, 6), at(2026, 3, 13), at(2026, 3, 20), at(2026, 3, 27), at(2026, 4, 3),
    ]  # fmt: skip
    assert parse("0 0 13 * fri").either_day


def test_a_day_field_starting_with_a_star_means_both() -> None:
    # */2 in day-of-month starts with '*': it is not "restricted", so both must match (odd days that are Fridays).
    assert not parse("0 0 */2 * fri").either_day
    assert times("0 0 */2 * fri", at(2026, 3, 1), 3) == [at(2026, 3, 13), at(2026, 3, 27), at(2026, 4, 3)]
    assert times("0 0 * * fri", at(2026, 3, 1), 2) == [at(2026, 3, 6), at(2026, 3, 13)]


def test_the_answer_is_utc_whatever_the_question() -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    answer = parse("0 12 * * *").next_after(datetime(2026, 3, 1, 12, 30, tzinfo=paris))  # 11:30 UTC
    assert answer == at(2026, 3, 1, 12, 0)
    assert answer.tzinfo == UTC


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse("* * * * *").next_after(datetime(2026, 3, 1))


def test_the_search_is_bounded() -> None:
    # What parse would refuse (February 31st), built by hand.
    never = Cron(
        text="0 0 31 2 *", seconds=(0,), minutes=(0,), hours=(0,), days=(31,), months=(2,), weekdays=tuple(range(7)),
        either_day=False,
    )  # fmt: skip
    with pytest.raises(CronError, match=f"not due in the {cron.SEARCH_YEARS} years"):
        never.next_after(at(2026, 1, 1))


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/7 * * * *",
        "5,35 */3 * * *",
        "0 0 1,15 * *",
        "0 12 * * mon,wed",
        "15 10 13 * fri",
        "0 0 */3 * sun",
        "10-20/5 22-23 * jan,jul *",
        "0 0 31 * *",
        "@daily",
    ],
)
def test_agrees_with_looking_at_every_minute(expression: str) -> None:
    schedule = parse(expression)
    rng = random.Random(expression)
    for _ in range(25):
        start = at(2026, 1, 1) + timedelta(seconds=rng.randrange(366 * 86400))
        expected = brute_next(schedule, start, step=timedelta(minutes=1), horizon=timedelta(days=200))
        assert schedule.next_after(start) == expected, start


@pytest.mark.parametrize("expression", ["*/10 * * * * *", "7,53 * * * * *", "*/20 */2 * * * *"])
def test_agrees_with_looking_at_every_second(expression: str) -> None:
    schedule = parse(expression)
    rng = random.Random(expression)
    for _ in range(25):
        start = at(2026, 3, 1) + timedelta(seconds=rng.randrange(86400), microseconds=rng.randrange(1_000_000))
        expected = brute_next(schedule, start, step=timedelta(seconds=1), horizon=timedelta(hours=2))
        assert schedule.next_after(start) == expected, start


def test_every_result_matches() -> None:
    for expression in ("0 0 13 * fri", "*/15 9-17 * * mon-fri", "0 0 29 2 *", "*/10 * * * * *"):
        schedule = parse(expression)
        for t in times(expression, at(2026, 1, 1), 30):
            assert schedule.matches(t)


# --- latest_until ---------------------------------------------------------------------------------
def test_latest_until_is_the_last_missed_time() -> None:
    schedule = parse("*/10 * * * * *")
    assert schedule.latest_until(at(2026, 3, 1, 11, 0, 7), after=at(2026, 3, 1, 10, 0, 5)) == at(2026, 3, 1, 11, 0, 0)
    assert schedule.latest_until(at(2026, 3, 1, 10, 0, 10), after=at(2026, 3, 1, 10, 0, 0)) == at(2026, 3, 1, 10, 0, 10)


def test_latest_until_none_when_nothing_was_due() -> None:
    schedule = parse("0 * * * *")
    assert schedule.latest_until(at(2026, 3, 1, 10, 59, 59), after=at(2026, 3, 1, 10, 0)) is None
    assert schedule.latest_until(at(2026, 3, 1, 10, 0), after=at(2026, 3, 1, 10, 0)) is None  # after is excluded


def test_latest_until_over_years_of_seconds_is_quick() -> None:
    schedule = parse("* * * * * *")
    latest = schedule.latest_until(at(2031, 3, 1, 12, 0, 0, 400), after=at(2026, 3, 1))
    assert latest == at(2031, 3, 1, 12, 0, 0)


def test_latest_until_agrees_with_stepping_through() -> None:
    rng = random.Random(7)
    for expression in ("*/7 * * * *", "0 0 13 * fri", "*/10 * * * * *", "0 0 29 2 *"):
        schedule = parse(expression)
        for _ in range(10):
            after = at(2026, 1, 1) + timedelta(seconds=rng.randrange(86400 * 30))
            first = schedule.next_after(after)
            steps = rng.randrange(1, 30)
            expected = first
            for _ in range(steps - 1):
                expected = schedule.next_after(expected)
            until = expected + (schedule.next_after(expected) - expected) / 2  # between expected and the one after
            assert schedule.latest_until(until, after=after) == expected, (expression, after, steps)
