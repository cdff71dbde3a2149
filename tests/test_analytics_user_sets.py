"""The hourly user sets (nudge/store/user_sets.py) and the trend cells read from them
(nudge/query/analytics/hourly.py), on a real account store.

The sets must equal a direct count of ``events_sorted`` after ingest and compaction, merging
runs, an identity merge and an erasure; trend cells from them must equal the cells
aggregated from the rows (``rollup.aggregate``, itself checked against pure-Python references
over HTTP in test_analytics_trends.py), with uncompacted events and ranges that start and
end inside an hour, across both DST changes; and a store whose sets are not current must
not use them.
"""

from __future__ import annotations

import random
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pyroaring import BitMap

from nudge.config import Settings
from nudge.ingest.records import Record
from nudge.privacy.gdpr import Subject, erase_on_writer
from nudge.query.analytics import hourly
from nudge.query.analytics.buckets import Buckets
from nudge.query.analytics.common import Report
from nudge.query.analytics.dayparting import dayparting
from nudge.query.analytics.rollup import Dim, EventFilter, aggregate, event_rows, user_range
from nudge.query.analytics.trends import trends
from nudge.store import user_sets
from nudge.store.account import AccountStore

TZ = ZoneInfo("America/New_York")
MARCH_7 = 1772859600  # 2026-03-07 00:00 local (EST); DST starts on the 8th
OCT_30 = 1761796800  # 2025-10-30 00:00 local (EDT); DST ends on 2025-11-02
DAY = 86_400


def _events(rng: random.Random, n: int, tag: str, users: int = 30) -> list[Record]:
    out = []
    for i in range(n):
        start = rng.choice((MARCH_7, OCT_30))
        ts = start + rng.choice([rng.randrange(6 * DAY), 2 * DAY + rng.randrange(-7200, 7200)])
        out.append(Record(kind="event", ids={"identity": f"u{rng.randrange(users)}"},
                          ts=float(ts), message_id=f"{tag}-{i}", event=rng.choice("AB")))
    return out


def _store(path: Path) -> AccountStore:
    return AccountStore("acct", path, Settings(data_dir=path.parent,
                                               compact_threshold_rows=10**9, merge_fanout=2))


@pytest.fixture
def store(tmp_path: Path) -> AccountStore:
    st = _store(tmp_path / "a.duckdb")
    rng = random.Random(5)
    for k in range(3):  # three compactions: three runs, sets patched each time
        st.write(_events(rng, 700, f"r{k}"))
        st.compact_now()
    st.write(_events(rng, 300, "tail"))  # left in events_recent
    yield st
    st.close()


def _sets(store: AccountStore) -> dict[tuple[str, int], tuple[int, set[int]]]:
    with store.cursor() as cur:
        rows = cur.execute("SELECT event, hour, n, users FROM event_hour_users").fetchall()
    return {(e, h): (n, set(BitMap.deserialize(u))) for e, h, n, u in rows}


def _direct(store: AccountStore) -> dict[tuple[str, int], tuple[int, set[int]]]:
    with store.cursor() as cur:
        rows = cur.execute(
            "SELECT event, epoch_us(ts) // 3600000000, count(*), list(DISTINCT user_id) "
            "FROM events_sorted GROUP BY ALL").fetchall()
    return {(e, h): (n, set(u)) for e, h, n, u in rows}


def _current(store: AccountStore) -> bool:
    with store.cursor() as cur:
        return user_sets.current(cur)


def test_sets_equal_a_direct_count_after_compactions_and_run_merges(
        store: AccountStore) -> None:
    assert _current(store)
    direct = _direct(store)
    assert len(direct) > 100 and _sets(store) == direct
    store.merge_runs_now()  # (the writer also merges while idle)
    with store.cursor() as cur:  # three runs became one: rows moved, the sets stay right
        assert cur.execute("SELECT count(*) FROM event_runs").fetchone()[0] == 1
    assert _sets(store) == _direct(store) == direct
    store.compact_now()  # the tail joins
    assert _current(store) and _sets(store) == _direct(store) != direct


def test_identity_merge_moves_the_losers_hours(store: AccountStore) -> None:
    store.write([Record(kind="event", ids={"objectId": "device-9"}, ts=float(OCT_30 + 3600 * h),
                        message_id=f"anon-{h}", event="A") for h in range(0, 48, 5)])
    store.compact_now()
    anon = store.user_for("objectId", "device-9")
    assert anon is not None and any(anon in u for _, u in _sets(store).values())
    # A login: the anonymous device's profile merges into u3's, after its events were compacted.
    store.write([Record(kind="event", ids={"identity": "u3", "objectId": "device-9"},
                        ts=float(OCT_30 + 100), message_id="login", event="B")])
    winner = store.user_for("identity", "u3")
    assert winner != anon and store.user_for("objectId", "device-9") == winner
    sets = _sets(store)
    assert sets == _direct(store)
    assert not any(anon in u for _, u in sets.values())
    assert _current(store)


def test_erasure_takes_the_person_out(store: AccountStore) -> None:
    store.compact_now()
    gone = store.user_for("identity", "u7")
    assert gone is not None and any(gone in u for _, u in _sets(store).values())
    store.run_on_writer(lambda: erase_on_writer(store, [Subject("identity", "u7", 0)])).result()
    sets = _sets(store)
    assert sets == _direct(store)
    assert not any(gone in u for _, u in sets.values())


@pytest.mark.parametrize("interval, lo, hi", [
    ("day", MARCH_7 - 3 * 3600 + 1234, MARCH_7 + 5 * DAY + 99),  # spring forward, unaligned
    ("day", OCT_30 + 1234.5, OCT_30 + 6 * DAY),  # fall back
    ("hour", OCT_30 + 2 * DAY - 1800, OCT_30 + 3 * DAY),  # the repeated hour
    ("week", MARCH_7 - 9 * DAY, MARCH_7 + 20 * DAY),
    ("month", OCT_30 - 40 * DAY, OCT_30 + 40 * DAY),
    ("day", OCT_30 + 600, OCT_30 + 3000),  # inside one hour: no whole hour, rows only
])
def test_trend_cells_from_sets_equal_cells_from_rows(store: AccountStore, interval: str,
                                                     lo: float, hi: float) -> None:
    b = Buckets(interval, TZ, lo, hi)
    key_sql, key_params = b.key_sql("e.ts")
    with store.cursor() as cur:
        cur.execute("BEGIN TRANSACTION")
        users = user_range(cur)
        for event in ("A", "B", "never seen"):
            for stats in ({"count"}, {"count", "users"}):
                rows = aggregate(cur, event_rows(event, lo, hi, EventFilter()),
                                 [Dim(key_sql, key_params, len(b))], stats, None, users)
                sets = hourly.cube(cur, event, b.slices(), stats, users)
                if hi - lo < 3600:
                    assert sets is None
                    continue
                assert sets is not None
                # Cells from rows carry users only when asked; from sets always.
                if stats == {"count"}:
                    sets = {k: type(c)(c.count, rows.get(k, c).users) for k, c in sets.items()}
                assert sets == rows or (event == "never seen" and not rows
                                        and sets == {(None,): sets[(None,)]}
                                        and sets[(None,)].count == 0), (event, stats)
        cur.execute("ROLLBACK")


def test_trends_report_uses_sets_and_matches_filtered_rows(
        store: AccountStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The report: unique users per day without a filter (sets) equal the same series with a
    filter that keeps every row (which cannot use the sets)."""
    report = Report.for_store(store, "America/New_York", now=float(OCT_30 + 10 * DAY))
    body = {"interval": "day", "from": OCT_30 - 3600 + 17, "to": OCT_30 + 7 * DAY - 5,
            "series": [{"event": "A", "measure": "unique_users"},
                       {"event": "A", "measure": "unique_users",
                        "where": [{"property": "missing", "op": "not_exists"}]},
                       {"event": "B", "measure": "per_user_avg"},
                       {"event": "B", "measure": "per_user_avg",
                        "where": [{"property": "missing", "op": "not_exists"}]}],
            "compare": True}
    calls: list[bool] = []
    real = hourly.cube

    def spy(*args: object) -> object:  # records which series the sets answered
        got = real(*args)  # type: ignore[arg-type]
        calls.append(got is not None)
        return got

    monkeypatch.setattr(hourly, "cube", spy)
    out = trends(report, body)
    a, a_rows, b, b_rows = out["series"]
    assert calls and all(calls)  # A and B, current and previous period, from the sets
    assert sum(a["values"]) > 50
    for x, y in ((a, a_rows), (b, b_rows)):
        assert (x["values"], x["total"]) == (y["values"], y["total"])
        assert x["previous"] == y["previous"]


def test_sets_not_current_are_not_used_until_rebuilt(tmp_path: Path) -> None:
    st = _store(tmp_path / "b.duckdb")
    try:
        st.write(_events(random.Random(8), 500, "x"))
        st.compact_now()
        # Written behind the sets' back (as bench/datasets.py writes a store): not current.
        with st.cursor() as cur:
            cur.execute("DELETE FROM meta WHERE key = ?", [user_sets.META_KEY])
            cur.execute("DELETE FROM event_hour_users")
        b = Buckets("day", TZ, OCT_30, OCT_30 + 5 * DAY)
        with st.cursor() as cur:
            assert hourly.cube(cur, "A", b.slices(), {"count", "users"},
                               user_range(cur)) is None
        st.write(_events(random.Random(9), 50, "y"))
        st.compact_now()  # compaction does not touch sets that are not current
        with st.cursor() as cur:
            assert not user_sets.current(cur)
            assert user_sets.rebuild(cur) > 0
        assert _current(st) and _sets(st) == _direct(st)
    finally:
        st.close()


def test_zones_with_half_hour_offsets_read_rows(store: AccountStore) -> None:
    b = Buckets("day", ZoneInfo("Asia/Kolkata"), OCT_30, OCT_30 + 5 * DAY)
    with store.cursor() as cur:
        assert hourly.cube(cur, "A", b.slices(), {"count", "users"}, user_range(cur)) is None
        assert hourly.cube(cur, "A", Buckets("minute", TZ, OCT_30, OCT_30 + 7200).slices(),
                           {"count", "users"}, user_range(cur)) is None


@pytest.mark.parametrize("lo, hi", [
    (OCT_30 - 20 * DAY + 77, OCT_30 + 8 * DAY - 5),  # the fall-back change, unaligned ends
    (MARCH_7 - 2 * DAY, MARCH_7 + 6 * DAY + 1800),  # spring forward
])
@pytest.mark.parametrize("measure", ["total", "unique_users"])
def test_dayparting_from_sets_equals_dayparting_from_rows(
        store: AccountStore, monkeypatch: pytest.MonkeyPatch, lo: float, hi: float,
        measure: str) -> None:
    report = Report.for_store(store, "America/New_York", now=float(MARCH_7 + 30 * DAY))
    body = {"event": "A", "measure": measure, "from": lo, "to": hi}
    with store.cursor() as cur:
        cur.execute("BEGIN TRANSACTION")
        assert hourly.grid(cur, "A", lo, hi, TZ, user_range(cur)) is not None
        cur.execute("ROLLBACK")
    from_sets = dayparting(report, body)
    monkeypatch.setattr(hourly, "grid", lambda *args: None)  # the row path
    from_rows = dayparting(report, body)
    assert from_sets == from_rows
    assert from_sets["total"] > 20
    assert sum(map(sum, from_sets["values"])) >= from_sets["total"]


def test_dayparting_in_a_half_hour_zone_reads_rows(store: AccountStore) -> None:
    with store.cursor() as cur:
        assert hourly.grid(cur, "A", OCT_30, OCT_30 + 5 * DAY, ZoneInfo("Asia/Kolkata"),
                           user_range(cur)) is None


def test_a_user_id_beyond_32_bits_stops_the_sets_not_compaction(store: AccountStore) -> None:
    with store.cursor() as cur:  # (ids are allocated from 1; this one is written directly)
        cur.execute("INSERT INTO events_recent BY NAME SELECT 10**9 AS seq, 'big' AS message_id, "
                    "2::BIGINT ** 33 AS user_id, 'A' AS event, to_timestamp(?)::TIMESTAMP AS ts, "
                    "now()::TIMESTAMP AS ingested_at", [OCT_30 + 5000])
    assert store.compact_now() > 0
    assert not _current(store)
    b = Buckets("day", TZ, OCT_30, OCT_30 + 2 * DAY)
    with store.cursor() as cur:
        assert hourly.cube(cur, "A", b.slices(), {"count", "users"}, user_range(cur)) is None
