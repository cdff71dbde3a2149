"""Time buckets aggregated one slice at a time (``rollup._from_slices``) against the grouped
form (``rollup._from_cells``), on a real account store.

Big trends read each bucket's time slice as an ungrouped aggregate (cheaper per row than
grouping by a bucket key, docs/benchmarks.md); small ones never take that path, so the
HTTP trends tests cannot reach it. Here ``aggregate`` runs both forms on the same rows — a
day, hour, week and month grid across both 2026 DST changes in America/New_York, empty
buckets, ranges that start mid-bucket — and every cell and subtotal must be identical.
"""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import pytest

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.query.analytics.buckets import Buckets
from nudge.query.analytics.rollup import (
    SLICE_MIN_ROWS,
    Dim,
    EventFilter,
    aggregate,
    estimated_rows,
    event_rows,
    user_range,
    worth_slicing,
)
from nudge.store.account import AccountStore

TZ = ZoneInfo("America/New_York")
MARCH_7 = 1772859600  # 2026-03-07 00:00 local (EST); DST starts on the 8th
OCT_30 = 1761796800  # 2025-10-30 00:00 local (EDT); DST ends on 2025-11-02
DAY = 86_400


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> AccountStore:
    path = tmp_path_factory.mktemp("slices") / "a.duckdb"
    st = AccountStore("acct", path, Settings(data_dir=path.parent))
    rng = random.Random(3)
    items = []
    for start in (MARCH_7, OCT_30):
        for i in range(1500):
            # Clustered around the DST changes, with gaps (empty hours) and exact edges.
            ts = start + rng.choice([rng.randrange(5 * DAY), 2 * DAY + rng.randrange(-7200, 7200),
                                     DAY * rng.randrange(5)])
            items.append({"type": "event", "identity": f"u{rng.randrange(40)}",
                          "evtName": rng.choice(["A", "B"]), "ts": ts,
                          "msgId": f"{start}-{i}", "evtData": {}})
    for at in range(0, len(items), 1000):
        recs, errors = parse_upload({"d": items[at:at + 1000]}, Limits())
        assert not errors
        st.write(recs)
    st.compact_now()
    yield st
    st.close()


@pytest.mark.parametrize("interval, lo, hi", [
    ("day", MARCH_7 - 3 * 3600, MARCH_7 + 5 * DAY),
    ("hour", MARCH_7 + DAY, MARCH_7 + 2 * DAY + 7200),  # the skipped hour
    ("hour", OCT_30 + 2 * DAY + 3600, OCT_30 + 3 * DAY),  # the repeated hour
    ("day", OCT_30 + 1234, OCT_30 + 6 * DAY),
    ("week", MARCH_7 - 9 * DAY, MARCH_7 + 20 * DAY),
    ("month", OCT_30 - 40 * DAY, OCT_30 + 40 * DAY),
    ("minute", OCT_30 + 2 * DAY + 3000, OCT_30 + 2 * DAY + 9000),
])
def test_slices_give_the_grouped_cells(store: AccountStore, interval: str, lo: float,
                                       hi: float) -> None:
    b = Buckets(interval, TZ, lo, hi)
    slices = b.slices()
    assert slices is not None and len(slices) == len(b)
    assert slices[0][0] == lo and slices[-1][1] == hi
    assert all(x[1] == y[0] for x, y in zip(slices, slices[1:], strict=False))
    key_sql, key_params = b.key_sql("e.ts")
    with store.cursor() as cur:
        users = user_range(cur)
        for event in ("A", "B", "never seen"):
            rows = event_rows(event, lo, hi, EventFilter())
            for stats in ({"count"}, {"count", "users"}):
                grouped = aggregate(cur, rows, [Dim(key_sql, key_params, len(b))], stats,
                                    None, users)
                sliced = aggregate(cur, rows, [Dim(key_sql, key_params, len(b), slices)],
                                   stats, None, users)
                assert sliced == grouped, (event, stats)
        total = aggregate(cur, event_rows("A", lo, hi, EventFilter()),
                          [Dim(key_sql, key_params, len(b), slices)], {"count"}, None, users)
        assert total.get((None,)) is None or total[(None,)].count == cur.execute(
            "SELECT count(*) FROM events WHERE event = 'A' AND ts >= to_timestamp(?)::TIMESTAMP "
            "AND ts < to_timestamp(?)::TIMESTAMP", [lo, hi]).fetchone()[0]


def test_only_big_buckets_are_sliced(store: AccountStore) -> None:
    with store.cursor() as cur:
        n = estimated_rows(cur, "A", OCT_30 - 10 * DAY, MARCH_7 + 10 * DAY)
        assert 1000 < n <= 3000  # all of A's rows (about half of 3000)
        assert estimated_rows(cur, "never seen", 0, 2e9) == 0
        assert not worth_slicing(cur, "A", MARCH_7, MARCH_7 + 5 * DAY, 5)  # a few rows
        assert SLICE_MIN_ROWS >= 10_000
