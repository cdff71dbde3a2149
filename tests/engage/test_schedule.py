"""Schedules, timezones and report statistics (pure functions, checked against hand-worked
examples and published reference values)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from nudge.engage.campaigns import QuietHours, next_cron
from nudge.engage.expand import local_wall_time
from nudge.engage.policy import quiet_end
from nudge.engage.report import diff_interval, wilson

PARIS = ZoneInfo("Europe/Paris")


def ts(y: int, mo: int, d: int, h: int, mi: int = 0, tz: ZoneInfo = PARIS) -> float:
    return dt.datetime(y, mo, d, h, mi, tzinfo=tz).timestamp()


def test_cron_runs_at_local_wall_time_across_dst() -> None:
    sched = {"cron": "0 9 * * *", "timezone": "Europe/Paris"}
    # 2026-03-29 is the spring-forward day in Paris: 09:00 local is 07:00 UTC, the day
    # before it was 08:00 UTC.
    first = next_cron(sched, ts(2026, 3, 28, 10))
    assert first == ts(2026, 3, 29, 9)
    assert dt.datetime.fromtimestamp(first, dt.UTC).hour == 7
    before = next_cron(sched, ts(2026, 3, 27, 10))
    assert dt.datetime.fromtimestamp(before, dt.UTC).hour == 8


def test_cron_until_ends_the_schedule() -> None:
    sched = {"cron": "*/15 * * * *", "timezone": "UTC", "until": 1_800_000_900.0}
    assert next_cron(sched, 1_800_000_000.0) == 1_800_000_900.0
    assert next_cron(sched, 1_800_000_900.0) is None


def test_wall_time_in_each_users_zone() -> None:
    at = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC).timestamp()  # "09:00"
    assert local_wall_time(at, "Asia/Tokyo") == dt.datetime(
        2026, 12, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo")).timestamp()
    assert local_wall_time(at, "America/New_York") - at == 5 * 3600
    assert local_wall_time(at, "UTC") == at


@pytest.mark.parametrize(("now", "end"), [
    (ts(2026, 6, 1, 23, 30), ts(2026, 6, 2, 8)),  # inside, before midnight
    (ts(2026, 6, 2, 3, 0), ts(2026, 6, 2, 8)),  # inside, after midnight
    (ts(2026, 3, 29, 1, 0), ts(2026, 3, 29, 8)),  # the DST night: 8:00 is 06:00 UTC
])
def test_quiet_hours_end_in_the_users_zone(now: float, end: float) -> None:
    qh = QuietHours(22 * 60, 8 * 60, "delay")
    assert quiet_end(now, "Europe/Paris", qh) == end


def test_quiet_window_wrapping_midnight() -> None:
    qh = QuietHours(22 * 60, 8 * 60, "drop")
    assert qh.contains(23 * 60) and qh.contains(0) and qh.contains(7 * 60 + 59)
    assert not qh.contains(8 * 60) and not qh.contains(12 * 60)


def test_wilson_interval_matches_published_values() -> None:
    # Wilson score interval, 95 %: 8 of 10 → (0.4902, 0.9433) (Newcombe 1998, table I).
    lo, hi = wilson(8, 10)  # type: ignore[misc]
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)
    lo, hi = wilson(0, 10)  # type: ignore[misc]
    assert lo == 0.0 and round(hi, 4) == 0.2775
    assert wilson(0, 0) is None


def test_difference_interval() -> None:
    d, lo, hi = diff_interval(60, 100, 40, 100)  # type: ignore[misc]
    assert round(d, 3) == 0.2
    # Wald: 0.2 ± 1.96 * sqrt(.6*.4/100 + .4*.6/100) = 0.2 ± 0.1358
    assert (round(lo, 4), round(hi, 4)) == (0.0642, 0.3358)
