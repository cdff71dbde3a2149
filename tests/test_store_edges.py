"""Store edge cases found while benchmarking the ingest hot path.

Each of these once failed a whole group commit or silently split a profile, so they run
against a real AccountStore on a DuckDB file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.store import account
from nudge.store.account import AccountStore

LIMITS = Limits()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AccountStore]:
    s = AccountStore("edges", tmp_path / "events.duckdb", Settings(data_dir=tmp_path))
    try:
        yield s
    finally:
        s.close()


def write(store: AccountStore, items: list[dict[str, Any]]) -> list[Any]:
    recs, errors = parse_upload({"d": items}, LIMITS)
    assert not errors, errors
    return store.write(recs).errors


def ev(who: str, name: str, **data: Any) -> dict[str, Any]:
    return {"type": "event", "identity": who, "evtName": name, "evtData": data}


@pytest.mark.parametrize("big", [2**53 + 1, 1234567890123456789, -(2**63), 2**64 + 7, 10**300],
                         ids=["2^53+1", "19-digit", "-2^63", "2^64+7", "1e300"])
def test_integer_beyond_double_precision_is_stored_as_nearest_double(
        store: AccountStore, big: int) -> None:
    # Arrow refuses to put such ints into a float64 column; that used to fail the commit of
    # every request in the group.
    assert write(store, [ev("a", "Ordered", n=1), ev("b", "Ordered", n=big)]) == [None, None]
    with store.cursor() as cur:
        col = store.catalog.get("event", "n")
        assert col is not None
        values = sorted(v for (v,) in cur.execute(f"SELECT {col.column} FROM events").fetchall())
    assert values == sorted([1.0, float(big)])


@pytest.mark.parametrize("where", ["event", "nested", "profile"])
def test_integer_beyond_double_range_is_rejected_per_record(where: str) -> None:
    huge = 10**400
    item = {"event": ev("a", "E", n=huge), "nested": ev("a", "E", o={"n": huge}),
            "profile": {"type": "profile", "identity": "a", "profileData": {"n": huge}}}[where]
    recs, errors = parse_upload({"d": [ev("a", "E", n=1), item]}, LIMITS)
    assert len(recs) == 1
    assert [(e.index, e.code) for e in errors] == [(1, 512)]


def test_emptying_a_full_identity_cache_keeps_known_users(
        store: AccountStore, monkeypatch: pytest.MonkeyPatch) -> None:
    write(store, [ev("alice", "A"), ev("bob", "A")])
    monkeypatch.setattr(account, "IDENTITY_CACHE_MAX", 1)  # the cache (2 ids) is now full
    store.identity.complete = False  # as for an identity map too big to be cached whole
    # One commit: alice is cached; the new device is not, so its lookup empties the cache.
    write(store, [ev("alice", "B"), {"type": "event", "objectId": "new-device", "evtName": "B",
                                     "evtData": {}}])
    with store.cursor() as cur:
        profiles = cur.execute("SELECT identity, event_count FROM profiles "
                               "ORDER BY user_id").fetchall()
        alice = cur.execute("SELECT user_id FROM identities WHERE value = 'alice'").fetchall()
    assert profiles == [("alice", 2), ("bob", 1), (None, 1)]
    assert alice == [(1,)]


def test_a_complete_identity_cache_needs_no_lookups_and_survives_a_restart(
        tmp_path: Path) -> None:
    """A store small enough caches its whole identity map at start: keys it lacks are new,
    so no lookup runs; a reopened store rebuilds it from the table (merges included)."""
    def open_store() -> AccountStore:
        return AccountStore("edges", tmp_path / "events.duckdb", Settings(data_dir=tmp_path))

    store = open_store()
    write(store, [ev("alice", "A"), {"type": "event", "objectId": "dev-1", "evtName": "A",
                                     "evtData": {}}])
    # the device logs in as alice: merged
    write(store, [{"type": "event", "identity": "alice", "objectId": "dev-1", "evtName": "L",
                   "evtData": {}}])
    assert store.identity.complete
    store.close()
    store = open_store()
    assert store.identity.complete
    looked_up: list[Any] = []
    store.lookup_identities = looked_up.append  # type: ignore[method-assign]
    write(store, [ev("alice", "B"), {"type": "event", "objectId": "dev-1", "evtName": "B",
                                     "evtData": {}}, ev("carol", "B")])
    assert looked_up == []
    with store.cursor() as cur:
        rows = cur.execute("SELECT identity, event_count FROM profiles ORDER BY user_id"
                           ).fetchall()
    store.close()
    assert rows == [("alice", 5), ("carol", 1)]
