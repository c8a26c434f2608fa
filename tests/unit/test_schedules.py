"""Schedules: cron parsing and next instants (checked against cronsim), intervals, DST."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from listener.schedules import Schedule, parse_cron, parse_every, parse_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


def _instants(schedule: Schedule, start: datetime, count: int) -> list[datetime]:
    found, when = [], start
    for _ in range(count):
        when = schedule.next_after(when)
        found.append(when)
    return found


def _library_instants(expr: str, start: datetime, count: int) -> list[datetime]:
    instants = CronSim(expr, start)
    return [next(instants).astimezone(UTC) for _ in range(count)]


@pytest.mark.parametrize(
    ("expr", "start"),
    [
        ("0 8 * * *", _utc(2026, 12, 1, 9, 0)),
        ("*/15 * * * *", _utc(2026, 12, 1, 9, 7, 30)),
        ("0 0 31 * *", _utc(2026, 1, 15)),  # only months with a 31st
        ("0 0 L * *", _utc(2026, 1, 15)),  # the last day of each month
        ("0 0 29 2 *", _utc(2026, 1, 1)),  # leap days: 2028, 2032, ...
        ("30 23 28-31 * *", _utc(2026, 2, 27)),  # month ends of every length
        ("0 9 * * MON-FRI", _utc(2026, 12, 4, 10)),  # a Friday: next is Monday
        ("0 12 1 * 0", _utc(2026, 11, 30)),  # day-of-month OR day-of-week, as cron does
    ],
)
def test_utc_cron_instants_match_cronsim(expr: str, start: datetime) -> None:
    schedule = Schedule(cron=expr)
    assert _instants(schedule, start, 12) == _library_instants(expr, start, 12)


def test_month_end_cron_skips_short_months_and_finds_leap_days() -> None:
    thirty_first = _instants(Schedule(cron="0 0 31 * *"), _utc(2026, 1, 15), 4)
    assert [d.date().isoformat() for d in thirty_first] == [
        "2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31",
    ]  # fmt: skip
    leap_days = _instants(Schedule(cron="0 0 29 2 *"), _utc(2026, 1, 1), 2)
    assert leap_days == [_utc(2028, 2, 29), _utc(2032, 2, 29)]


def test_cron_in_a_time_zone_fires_at_local_time_across_dst() -> None:
    schedule = Schedule(cron="0 8 * * *", tz="Europe/Berlin")
    winter, summer = _instants(schedule, _utc(2026, 3, 27, 12), 3)[::2]
    assert (winter.hour, summer.hour) == (7, 6)  # 08:00 CET = 07:00 UTC, CEST = 06:00 UTC
    start = datetime(2026, 3, 27, 12, tzinfo=BERLIN)
    assert _instants(schedule, start, 10) == _library_instants("0 8 * * *", start, 10)


def test_spring_forward_runs_a_nonexistent_time_once_at_the_end_of_the_gap() -> None:
    # 2026-03-29, Europe/Berlin: 02:00 CET jumps to 03:00 CEST; 02:30 never happens.
    schedule = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    start = datetime(2026, 3, 28, 12, tzinfo=BERLIN)
    instants = _instants(schedule, start, 3)
    assert instants == _library_instants("30 2 * * *", start, 3)
    assert [i.astimezone(BERLIN).strftime("%m-%d %H:%M %Z") for i in instants] == [
        "03-29 03:00 CEST", "03-30 02:30 CEST", "03-31 02:30 CEST",
    ]  # fmt: skip


def test_fall_back_runs_a_repeated_time_once_at_its_first_occurrence() -> None:
    # 2026-10-25, Europe/Berlin: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
    schedule = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    start = datetime(2026, 10, 24, 12, tzinfo=BERLIN)
    instants = _instants(schedule, start, 3)
    assert instants == _library_instants("30 2 * * *", start, 3)
    assert instants[:2] == [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)]


def test_inside_the_repeated_hour_the_next_run_is_tomorrow_not_the_past_first_pass() -> None:
    # 02:15 CET (second pass, 01:15 UTC): today's 02:30 already ran at 02:30 CEST.
    # cronsim, started from this wall clock, answers that past instant; we move on.
    second_pass = _utc(2026, 10, 25, 1, 15)
    assert next(CronSim("30 2 * * *", second_pass.astimezone(BERLIN))) < second_pass
    schedule = Schedule(cron="30 2 * * *", tz="Europe/Berlin")
    assert schedule.next_after(second_pass) == _utc(2026, 10, 26, 1, 30)
    assert schedule.latest_at_or_before(second_pass) == _utc(2026, 10, 25, 0, 30)


def test_interval_crons_keep_running_through_both_passes_of_the_repeated_hour() -> None:
    schedule = Schedule(cron="*/30 * * * *", tz="Europe/Berlin")
    instants = _instants(schedule, _utc(2026, 10, 24, 23, 45), 5)
    assert instants == [_utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * i) for i in range(5)]


@pytest.mark.parametrize(
    ("expr", "tz"),
    [
        ("30 2 * * *", "Europe/Berlin"),
        ("0 8 * * *", "UTC"),
        ("*/7 * * * *", "America/New_York"),
        ("0 0 L * *", "Australia/Lord_Howe"),  # a half-hour DST shift
    ],
)
def test_latest_instant_is_at_or_before_and_the_next_one_after(expr: str, tz: str) -> None:
    schedule = Schedule(cron=expr, tz=tz)
    for day in ("2026-03-29", "2026-10-25", "2026-11-01", "2026-04-05", "2026-12-31"):
        base = datetime.fromisoformat(f"{day}T00:00:00+00:00") - timedelta(hours=3)
        for minutes in range(0, 8 * 60, 17):
            when = base + timedelta(minutes=minutes, seconds=7)
            latest = schedule.latest_at_or_before(when)
            assert latest <= when < schedule.next_after(latest), (expr, tz, when)


def test_an_instant_is_its_own_latest_and_not_its_own_next() -> None:
    schedule = Schedule(cron="0 8 * * *")
    assert schedule.latest_at_or_before(_utc(2026, 12, 1, 8)) == _utc(2026, 12, 1, 8)
    assert schedule.next_after(_utc(2026, 12, 1, 8)) == _utc(2026, 12, 2, 8)


def test_every_instants_are_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = Schedule(every_s=15 * 60)
    assert _instants(schedule, _utc(2026, 12, 1, 9, 7, 30), 3) == [
        _utc(2026, 12, 1, 9, 15), _utc(2026, 12, 1, 9, 30), _utc(2026, 12, 1, 9, 45),
    ]  # fmt: skip
    assert schedule.latest_at_or_before(_utc(2026, 12, 1, 9, 15)) == _utc(2026, 12, 1, 9, 15)
    assert schedule.next_after(_utc(2026, 12, 1, 9, 15)) == _utc(2026, 12, 1, 9, 30)
    every_second = Schedule(every_s=1)
    assert every_second.next_after(_utc(2026, 12, 1, 9, 0, 0) + timedelta(microseconds=1)) == (
        _utc(2026, 12, 1, 9, 0, 1)
    )


def test_every_ignores_local_time_and_dst() -> None:
    schedule = Schedule(every_s=3600)
    instants = _instants(schedule, _utc(2026, 10, 24, 23, 30), 4)
    assert [b - a for a, b in itertools.pairwise(instants)] == [timedelta(hours=1)] * 3


@pytest.mark.parametrize(
    ("text", "seconds"), [("15s", 15), ("1s", 1), ("5m", 300), ("2h", 7200), (" 90s ", 90)]
)
def test_every_takes_seconds_minutes_or_hours(text: str, seconds: int) -> None:
    assert parse_every(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-5s", "1.5s", "1d", "15", "s", "15 s", "1e2s", ""])
def test_every_refuses_anything_but_a_whole_number_and_s_m_or_h(text: str) -> None:
    with pytest.raises(ValueError, match=r"every=.* is not an interval like '15s'"):
        parse_every(text)


def test_cron_is_normalised_to_single_spaces() -> None:
    assert parse_cron("  0   8 * *\t*  ") == "0 8 * * *"


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("61 * * * *", "Bad minute"),
        ("0 24 * * *", "Bad hour"),
        ("0 0 32 * *", "Bad day-of-month"),
        ("0 0 * 13 *", "Bad month"),
        ("0 0 * * 8", "Bad day-of-week"),
        ("0 0 30 2 *", "Bad day-of-month"),  # February never has a 30th
        ("* * * *", "must have 5 fields"),
        ("0 * * * * *", "must have 5 fields"),  # no seconds field
        ("@daily", "must have 5 fields"),
        ("a b c d e", "Bad minute"),
    ],
)
def test_malformed_cron_expressions_are_refused_saying_why(expr: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_cron(expr)


def test_schedule_options_combine_only_one_way() -> None:
    assert parse_schedule(None, None, None) is None
    assert parse_schedule("0 8 * * *", None, "Europe/Berlin") == Schedule(
        cron="0 8 * * *", tz="Europe/Berlin"
    )
    assert parse_schedule(None, "15s", None) == Schedule(every_s=15)
    with pytest.raises(ValueError, match="not both"):
        parse_schedule("0 8 * * *", "15s", None)
    with pytest.raises(ValueError, match="cron_tz= applies to cron= only"):
        parse_schedule(None, "15s", "UTC")
    for zone in ("Mars/Olympus", "Europe", "../etc/passwd", ""):
        with pytest.raises(ValueError, match="cron_tz="):
            parse_schedule("0 8 * * *", None, zone)


def test_descriptions_say_what_status_shows() -> None:
    assert Schedule(cron="0 8 * * *", tz="Europe/Berlin").description == (
        "cron 0 8 * * * (Europe/Berlin)"
    )
    assert Schedule(every_s=900).description == "every 15m"
    assert Schedule(every_s=90).description == "every 90s"
    assert Schedule(every_s=7200).description == "every 2h"
