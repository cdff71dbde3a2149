"""``nudge demo``'s bulk load stores what the record path stores for the same demo run.

The demo loads its profiles through the ingest path and its events as Arrow columns
(nudge/demo_columns.py, nudge/store/bulk_events.py). Two real stores get the same run:
one through ``ingest_chunks`` on ``demo.generate``'s upload records (every record through
validation, identity resolution and the group commit, as uploads are), one through
``demo_load.load_parts``. After compaction both must hold the same events (seq, message id,
user, name, time, every property), profiles (identifiers, properties, event counts, first
and last seen), identities, merges, catalogs and hourly user sets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from nudge import demo
from nudge.bulk import ingest_chunks
from nudge.config import Limits, Settings
from nudge.demo_load import generated_here, load_parts
from nudge.ingest.upload import parse_records
from nudge.store.account import AccountStore
from nudge.store.bulk_events import ColumnarCommit

LIMITS = Limits()
NOW = 1_750_000_000
USERS, EVENTS = 400, 12_000


def _rows(store: AccountStore, sql: str, scope: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``sql`` with the catalog's typed columns named by their properties."""
    names = {c.column: c.name for c in store.catalog.by_scope(scope)} if scope else {}
    with store.cursor() as cur:
        res = cur.execute(sql)
        cols = [names.get(d[0], d[0]) for d in res.description]
        return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def _snapshot(store: AccountStore) -> dict[str, Any]:
    return {
        "events": _rows(store, "SELECT * EXCLUDE (ingested_at) FROM events ORDER BY seq",
                        "event"),
        "profiles": _rows(store, "SELECT * EXCLUDE (created_at, updated_at) FROM profiles "
                                 "ORDER BY user_id", "profile"),
        "identities": _rows(store, "SELECT kind, value, user_id FROM identities "
                                   "ORDER BY kind, value"),
        "merges": _rows(store, "SELECT from_id, to_id FROM profile_merges ORDER BY from_id"),
        "event_catalog": _rows(store, "SELECT * FROM event_catalog ORDER BY event"),
        "event_properties": _rows(store, "SELECT DISTINCT * FROM event_properties "
                                         "ORDER BY ALL"),
        "property_catalog": _rows(store, "SELECT scope, name, type FROM property_catalog "
                                         "ORDER BY ALL"),
        "hour_sets": _rows(store, "SELECT * FROM event_hour_users ORDER BY event, hour"),
        "runs": _rows(store, "SELECT seq_lo, seq_hi FROM event_runs ORDER BY seq_lo"),
    }


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("demo_load")
    out = []
    for name in ("records", "columns"):
        store = AccountStore(name, tmp / f"{name}.duckdb", Settings(data_dir=tmp / name))
        try:
            if name == "records":
                chunks = demo.generate(USERS, EVENTS, seed=11, now=NOW)
                stored, errors = ingest_chunks(store, chunks, LIMITS, total=1, quiet=True,
                                               bulk=True)
            else:
                # several column commits, each written as a sorted run of ~5,000 events
                store.compact_rows = 5_000
                parts = generated_here(USERS, EVENTS, 11, NOW, LIMITS, batch_events=2_500)
                stored, errors = load_parts(store, parts, total=1, label="", quiet=True)
            assert errors == []
            store.compact_now()
            out.append({"stored": stored, **_snapshot(store)})
        finally:
            store.close()
    return out[0], out[1]


@pytest.mark.parametrize("part", ["stored", "events", "profiles", "identities", "merges",
                                  "event_catalog", "event_properties", "property_catalog",
                                  "hour_sets"])
def test_bulk_demo_load_matches_the_record_path(both: tuple[dict, dict], part: str) -> None:
    records, columns = both
    assert columns[part] == records[part]


def test_the_demo_run_has_what_the_comparison_needs(both: tuple[dict, dict]) -> None:
    """The comparison covers anonymous devices that logged in, every event name, absent
    properties."""
    records, _ = both
    devices = {r["user_id"] for r in records["identities"] if r["kind"] == "object_id"}
    identified = {r["user_id"] for r in records["identities"] if r["kind"] == "identity"}
    assert len(devices) > 10 and devices <= identified
    assert {r["event"] for r in records["event_catalog"]} == set(demo.EVENT_NAMES)
    charged = [e for e in records["events"] if e["event"] == "Charged"]
    assert any(e["Coupon"] is None for e in charged) and any(e["Coupon"] for e in charged)
    assert all(e["props"] is None for e in records["events"])  # every property typed


def test_runs_are_written_and_properties_past_the_column_budget_overflow(
        both: tuple[dict, dict]) -> None:
    assert len(both[1]["runs"]) >= 2 and len(both[0]["runs"]) == 1
    assert [r["seq_lo"] for r in both[1]["runs"]][1] == both[1]["runs"][0]["seq_hi"] + 1


def test_behind_recent_events_and_past_the_column_budget(tmp_path: Path) -> None:
    """Events waiting in events_recent: the columns go there too (not as a run, which would
    put seqs above the compaction watermark); a property without a column overflows."""
    store = AccountStore("a", tmp_path / "a.duckdb",
                         Settings(data_dir=tmp_path, max_typed_columns=1))
    try:
        records, _ = parse_records([{"type": "event", "identity": "x", "ts": NOW - 5,
                                     "evtName": "Opened", "evtData": {}}], 0, NOW, LIMITS)
        store.write(records)
        table = pa.table({"message_id": ["m1", "m2"], "event": ["Bought", "Viewed"],
                          "ts": [NOW, NOW + 5], "sku": ["A-1", None], "price": [None, 9.5]})
        assert store.run_on_writer(
            lambda: ColumnarCommit(store, table, [7, 7]).append()).result() == 2
        rows = _rows(store, "SELECT * FROM events_recent ORDER BY seq", "event")
        assert [(r["seq"], r["event"], r["sku"], r["props"]) for r in rows] == [
            (1, "Opened", None, None), (2, "Bought", "A-1", None),
            (3, "Viewed", None, '{"price":9.5}')]
        assert _rows(store, "SELECT * FROM event_properties ORDER BY ALL") == [
            {"event": "Bought", "name": "sku", "type": "string"},
            {"event": "Viewed", "name": "price", "type": "number"}]
        assert store.compacted_through == 0 and store.next_seq == 4
    finally:
        store.close()
