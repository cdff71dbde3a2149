"""Entry on a date property ("3 days before renewal_date, 09:00 in the person's timezone")
on an in-process server whose clock the test moves: the occurrence moment in each person's
zone across the US spring-forward change, a date that changes before its occurrence,
idempotence when a scan repeats (a crash between entering and recording the watermark), and
catch-up of occurrences that fell while the server was down."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from nudge.journeys.date_entry import occurrence
from nudge.journeys.model import JourneyBuilder
from nudge.store import control
from tests.engage import engage_helpers as h
from tests.journeys.journey_helpers import LocalServer, set_clock

ENV = {"NUDGE_JOURNEY_POLL_MS": "50", "NUDGE_JOURNEY_DATE_POLL_S": "1"}
NY = ZoneInfo("America/New_York")
UTC = dt.UTC


def utc(y: int, mo: int, d: int, hh: int, mm: int = 0, ss: int = 0) -> float:
    return dt.datetime(y, mo, d, hh, mm, ss, tzinfo=UTC).timestamp()


def date_value(y: int, mo: int, d: int) -> str:
    return f"$D_{int(utc(y, mo, d, 0))}"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LocalServer]:
    set_clock(utc(2027, 3, 1, 12))
    s = LocalServer(tmp_path, ENV)
    try:
        yield s
    finally:
        s.stop()


def renewal_journey() -> dict[str, Any]:
    return (JourneyBuilder("Renewal reminder")
            .on_date("renewal_date", {"days": 3, "before": True}, at="09:00")
            .start("wait").delay("wait", "x", duration={"days": 30}).exit("x")
            .reentry("after_exit").to_json())


def publish(srv: LocalServer, body: dict[str, Any]) -> int:
    jid = int(h.api(srv, "POST", "/1/journeys", body, ok=201).json()["id"])
    h.api(srv, "POST", f"/1/journeys/{jid}/publish", ok=200)
    return jid


def entered(srv: LocalServer, jid: int, identity: str) -> list[str | None]:
    """The occurrences (shifted dates) this person entered on."""
    entries = h.api(srv, "GET", f"/1/journeys/{jid}/users", params={"identity": identity},
                    ok=200).json()["entries"]
    return [e["occurrence"] for e in entries]


def scan_at(srv: LocalServer, at: float) -> int:
    """Put the clock at ``at`` and run a scan (the server's own 1 s loop scans too; the
    entry keys make the two agree)."""
    set_clock(at)
    return int(srv.journeys.scan_dates())


def test_occurrence_is_the_shifted_date_at_local_time_across_dst() -> None:
    # 2027-03-14 is the US spring-forward day: 09:00 is EDT (UTC-4) that day, EST before.
    assert occurrence(date_value(2027, 3, 17), -3, 540, "America/New_York") == (
        utc(2027, 3, 14, 13), "2027-03-14")
    assert occurrence(date_value(2027, 3, 16), -3, 540, "America/New_York") == (
        utc(2027, 3, 13, 14), "2027-03-13")
    assert occurrence("2027-03-17", 2, 0, "UTC") == (utc(2027, 3, 19, 0), "2027-03-19")
    assert occurrence(None, -3, 540, "UTC") is None
    # A wall time inside the DST gap (02:30 on the 14th) resolves to the end of the gap.
    assert occurrence(date_value(2027, 3, 14), 0, 150, "America/New_York")[0] == utc(
        2027, 3, 14, 7)


def test_date_entry_in_each_timezone_across_dst_and_a_changed_date(srv: LocalServer) -> None:
    h.profiles(srv, [
        {"identity": "edt", "timezone": "America/New_York",
         "renewal_date": date_value(2027, 3, 17)},  # due 2027-03-14 09:00 EDT = 13:00 UTC
        {"identity": "est", "timezone": "America/New_York",
         "renewal_date": date_value(2027, 3, 16)},  # due 2027-03-13 09:00 EST = 14:00 UTC
        {"identity": "utc", "renewal_date": date_value(2027, 3, 17)},  # account zone: UTC
        {"identity": "moved", "timezone": "America/New_York",
         "renewal_date": date_value(2027, 3, 17)},
        {"identity": "none", "timezone": "America/New_York"},
    ])
    jid = publish(srv, renewal_journey())
    assert scan_at(srv, utc(2027, 3, 2, 12)) == 0
    # "moved" renews later before the first reminder would have gone out.
    h.profiles(srv, [{"identity": "moved", "renewal_date": date_value(2027, 3, 24)}])

    scan_at(srv, utc(2027, 3, 13, 13, 59, 30))
    assert entered(srv, jid, "est") == []
    scan_at(srv, utc(2027, 3, 13, 14, 0, 30))
    assert entered(srv, jid, "est") == ["2027-03-13"]
    scan_at(srv, utc(2027, 3, 14, 8, 59, 30))
    assert entered(srv, jid, "utc") == []
    scan_at(srv, utc(2027, 3, 14, 9, 0, 30))
    assert entered(srv, jid, "utc") == ["2027-03-14"]
    # After the change to daylight time 09:00 in New York is an hour earlier in UTC.
    scan_at(srv, utc(2027, 3, 14, 12, 59, 30))
    assert entered(srv, jid, "edt") == []
    scan_at(srv, utc(2027, 3, 14, 13, 0, 30))
    assert entered(srv, jid, "edt") == ["2027-03-14"]
    assert entered(srv, jid, "moved") == []  # its old date's occurrence passed: not entered
    scan_at(srv, utc(2027, 3, 21, 13, 0, 30))
    assert entered(srv, jid, "moved") == ["2027-03-21"]
    assert entered(srv, jid, "none") == []
    report = h.api(srv, "GET", f"/1/journeys/{jid}/report", ok=200).json()
    assert report["entered"] == 4 and report["active"] == 4


def test_a_repeated_scan_enters_nobody_twice_and_downtime_is_caught_up(
        tmp_path: Path) -> None:
    set_clock(utc(2027, 3, 1, 12))
    srv = LocalServer(tmp_path, ENV)
    try:
        ids = [f"r{i}" for i in range(40)]
        # One renewal a day from 2027-03-10 on: occurrences 03-07 ... 03-16 at 09:00 UTC.
        h.profiles(srv, [{"identity": p, "renewal_date": date_value(2027, 3, 10 + i % 10)}
                         for i, p in enumerate(ids)])
        jid = publish(srv, renewal_journey())
        scan_at(srv, utc(2027, 3, 9, 12))  # 03-07 .. 03-09: 12 people
        first = {p: entered(srv, jid, p) for p in ids}
        assert sum(len(v) for v in first.values()) == 12
        # A crash after the entries committed but before the watermark moved: the next scan
        # covers the same window again and must enter nobody twice.
        with srv.journeys.engine.begin() as conn:
            conn.execute(sa.update(control.journey_date_scans).where(
                control.journey_date_scans.c.journey_id == jid).values(
                scanned_to=utc(2027, 3, 1, 12)))
        assert scan_at(srv, utc(2027, 3, 9, 12, 0, 5)) == 0
        assert {p: entered(srv, jid, p) for p in ids} == first
        account = (srv.account_id, srv.passcode)
    finally:
        srv.stop(keep_clock=True)
    # Down from 03-09 to 03-12 12:00: the start-up scan enters the 03-10 .. 03-12
    # occurrences (12 more people), once each.
    set_clock(utc(2027, 3, 12, 12))
    srv = LocalServer(tmp_path, ENV, account=account)
    try:
        h.wait_for(lambda: sum(len(entered(srv, jid, p)) for p in ids) == 24, timeout=60,
                   what="occurrences during downtime entered after the restart")
        got = {p: entered(srv, jid, p) for p in ids}
        for i, p in enumerate(ids):
            day = dt.date(2027, 3, 7 + i % 10)
            assert got[p] == ([day.isoformat()] if day <= dt.date(2027, 3, 12) else []), p
    finally:
        srv.stop()


def test_bad_date_entries_are_rejected_with_the_field(srv: LocalServer) -> None:
    base = renewal_journey()
    for entry, field in [
        ({"date_property": ""}, "entry.date_property"),
        ({"date_property": "d", "offset": {"days": -1}}, "entry.offset.days"),
        ({"date_property": "d", "offset": {"hours": 3}}, "entry.offset.hours"),
        ({"date_property": "d", "at": "25:00"}, "entry.at"),
        ({"event": "E", "at": "09:00"}, "entry.at"),
    ]:
        r = h.api(srv, "POST", "/1/journeys/validate", {**base, "entry": entry})
        assert r.status_code == 400, (entry, r.text)
        assert r.json()["field"] == field, (entry, r.json())
