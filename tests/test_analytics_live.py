"""The live view (``GET /1/analytics/live``) and the live event stream
(``GET /1/analytics/live/stream``, Server-Sent Events), on events uploaded while they run;
Home's today-vs-yesterday count on a store."""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from analytics_reference import TZ, start_server

from conftest import NudgeServer
from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.query.analytics.live import today_and_yesterday
from nudge.store.account import AccountStore


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    server = start_server(tmp_path_factory.mktemp("live"))
    try:
        yield server
    finally:
        server.stop()


def live(srv: NudgeServer, **params: str) -> dict[str, Any]:
    r = httpx.get(srv.url + "/1/analytics/live", params=params, headers=srv.headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def minute_label(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts // 60 * 60, TZ).isoformat()


def test_events_per_minute_and_active_users(srv: NudgeServer) -> None:
    ten, one = (time.time() // 60 - 10) * 60, (time.time() // 60 - 1) * 60  # minute starts
    sent = [("lv-1", "Tap", ten + 1), ("lv-2", "Tap", ten + 59), ("lv-1", "Tap", one),
            ("lv-3", "Open", one + 30), ("lv-1", "Tap", one - 3 * 3600)]  # the last: too old
    r = srv.upload([{"type": "event", "identity": u, "ts": ts, "evtName": n}
                    for u, n, ts in sent])
    assert r.status_code == 200, r.text
    out = live(srv)
    assert len(out["minutes"]) == 30
    by_label = {m["start"]: (m["events"], m["users"]) for m in out["minutes"]}
    assert by_label[minute_label(ten)] == (2, 2)
    assert by_label[minute_label(one)] == (2, 2)
    assert sum(m["events"] for m in out["minutes"]) == 4
    assert (out["events"], out["active_users"]) == (4, 3)
    assert out["top_events"] == [{"event": "Tap", "count": 3}, {"event": "Open", "count": 1}]
    taps = live(srv, event="Open")
    assert (taps["events"], taps["active_users"], taps["event"]) == (1, 1, "Open")


def test_an_acknowledged_event_shows_in_the_live_view(srv: NudgeServer) -> None:
    """The event appears, counted once. How fast is measured by bench/freshness.py (a
    timed assertion here would only measure the machine's load)."""
    before = live(srv, event="Fresh")["events"]
    srv.upload([{"type": "event", "identity": "lv-9", "ts": time.time(), "evtName": "Fresh"}])
    deadline = time.monotonic() + 30
    while live(srv, event="Fresh")["events"] == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live(srv, event="Fresh")["events"] == before + 1


# -- the stream ----------------------------------------------------------------------------------
class Stream:
    """A Server-Sent Events client on a thread: parsed messages arrive on ``messages``."""

    def __init__(self, srv: NudgeServer, headers: dict[str, str] | None = None,
                 **params: str) -> None:
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self.open = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(srv, headers or {}, params),
                                       daemon=True)
        self.thread.start()
        assert self.open.wait(10), "stream did not open"

    def _run(self, srv: NudgeServer, headers: dict[str, str], params: dict[str, str]) -> None:
        with httpx.stream("GET", srv.url + "/1/analytics/live/stream", params=params,
                          headers={**srv.headers, **headers}, timeout=30) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            fields: dict[str, str] = {}
            for line in r.iter_lines():
                if line.startswith(": connected"):
                    self.open.set()
                if line.startswith(("id:", "event:", "data:")):
                    key, _, value = line.partition(": ")
                    fields[key.rstrip(":")] = value
                elif not line and "data" in fields:
                    self.messages.put({"id": int(fields["id"]), **json.loads(fields["data"])})
                    fields = {}
                if self.stop.is_set():
                    return  # leaving the block closes the connection

    def take(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [self.messages.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.stop.set()


def test_stream_sends_new_events_with_identity_and_properties(srv: NudgeServer) -> None:
    stream = Stream(srv)
    try:
        now = time.time()
        srv.upload([{"type": "event", "identity": "st-1", "ts": now, "evtName": "Purchased",
                     "evtData": {"Amount": 12.5, "Items": ["a", "b"], "Coupon": "X1"}},
                    {"type": "event", "identity": "st-2", "ts": now - 86400 * 30,
                     "evtName": "Opened"}])
        first, second = stream.take(2)
        assert (first["event"], first["identity"], first["ts"]) == ("Purchased", "st-1",
                                                                    pytest.approx(now))
        assert first["properties"] == {"Amount": 12.5, "Items": ["a", "b"], "Coupon": "X1"}
        assert second["event"] == "Opened"  # old timestamps too: the stream is by arrival
        assert second["seq"] == first["seq"] + 1 and first["id"] == first["seq"]
    finally:
        stream.close()


def test_stream_filters_by_event_and_resumes(srv: NudgeServer) -> None:
    stream = Stream(srv, event="Wanted")
    try:
        srv.upload([{"type": "event", "identity": "st-3", "ts": time.time(), "evtName": n}
                    for n in ("Other", "Wanted", "Other", "Wanted")])
        got = stream.take(2)
        assert [m["event"] for m in got] == ["Wanted", "Wanted"]
        assert stream.messages.empty()
    finally:
        stream.close()
    # A client reconnecting with Last-Event-ID gets what came after it, and no more.
    again = Stream(srv, headers={"Last-Event-ID": str(got[0]["seq"])}, event="Wanted")
    try:
        assert [m["seq"] for m in again.take(1)] == [got[1]["seq"]]
    finally:
        again.close()


def test_stream_survives_compaction(srv: NudgeServer) -> None:
    """The server compacts every 300 events: events moved meanwhile are still sent once."""
    stream = Stream(srv, event="Bulk")
    try:
        for i in range(0, 700, 350):
            srv.upload([{"type": "event", "identity": f"bk-{j % 7}", "ts": time.time(),
                         "evtName": "Bulk", "evtData": {"n": j}} for j in range(i, i + 350)])
        got = stream.take(700, timeout=10)
        assert sorted(m["properties"]["n"] for m in got) == list(range(700))
        assert [m["seq"] for m in got] == sorted(m["seq"] for m in got)
    finally:
        stream.close()


def test_stream_ends_cleanly_when_the_client_leaves(srv: NudgeServer) -> None:
    log = srv.data_dir / "server.log"
    closed = log.read_text().count('"live stream closed"')
    stream = Stream(srv)
    srv.upload([{"type": "event", "identity": "st-9", "ts": time.time(), "evtName": "Bye"}])
    stream.take(1)
    stream.close()
    srv.upload([{"type": "event", "identity": "st-9", "ts": time.time(), "evtName": "Bye"}])
    deadline = time.monotonic() + 5
    while log.read_text().count('"live stream closed"') == closed:
        assert time.monotonic() < deadline, "the server kept the stream running"
        time.sleep(0.1)
    assert "Traceback" not in log.read_text()


def test_stream_rejects_a_bad_resume_point(srv: NudgeServer) -> None:
    r = httpx.get(srv.url + "/1/analytics/live/stream", params={"since": "x"},
                  headers=srv.headers)
    assert (r.status_code, r.json()["field"]) == (422, "since")


# -- today vs yesterday (Home) -------------------------------------------------------------------
def test_today_and_yesterday_are_wall_clock_days_across_a_dst_change(tmp_path: Path) -> None:
    """New York falls back on 2026-11-01 (a 25-hour day): "yesterday by this time" runs from
    that day's local midnight (EDT) to the same wall time (EST), both 01:30s included; rows
    are counted the same in the recent buffer and once compacted."""
    ny = ZoneInfo("America/New_York")
    now = dt.datetime(2026, 11, 2, 15, 0, tzinfo=dt.UTC).timestamp()  # 10:00 EST
    utc = ["2026-11-01T03:59:30", "2026-11-01T04:00:30", "2026-11-01T05:30:00",
           "2026-11-01T06:30:00", "2026-11-01T14:59:00", "2026-11-01T15:01:00",
           "2026-11-02T05:00:30", "2026-11-02T15:00:00", "2026-11-02T15:00:30"]
    stamps = [dt.datetime.fromisoformat(t).replace(tzinfo=dt.UTC).timestamp() for t in utc]
    recs, errors = parse_upload({"d": [{"type": "event", "identity": f"d{i}", "ts": ts,
                                        "evtName": "Tap"} for i, ts in enumerate(stamps)]},
                                Limits())
    assert not errors
    local_now = dt.datetime.fromtimestamp(now, ny)
    local = [dt.datetime.fromtimestamp(ts, ny) for ts in stamps]
    want = {"today": sum(t.date() == local_now.date() and ts <= now
                         for t, ts in zip(local, stamps, strict=True)),
            "yesterday": sum(t.date() == local_now.date() - dt.timedelta(days=1)
                             and t.time() <= local_now.time() for t in local)}
    assert want == {"today": 2, "yesterday": 4}  # the reference sees the 25-hour day
    store = AccountStore("acct", tmp_path / "acct" / "events.duckdb",
                         Settings(data_dir=tmp_path))
    try:
        store.write(recs)
        assert today_and_yesterday(store, ny, now) == want
        store.compact_now()
        assert today_and_yesterday(store, ny, now) == want
    finally:
        store.close()
