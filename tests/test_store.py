"""Direct tests of the account store (nudge.store.account.AccountStore) on a real DuckDB file.

No server: records are parsed with the real upload parser and written with the store's
blocking ``write``; the file is then read back with SQL, through the store's own readers,
and after closing and reopening it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from nudge.config import Limits, Settings
from nudge.ingest.records import Record
from nudge.ingest.upload import parse_upload
from nudge.query.profiles import timeline, wire_value
from nudge.store.account import AccountStore

NOW = int(time.time())
LIMITS = Limits()


def records(items: list[dict[str, Any]]) -> list[Record]:
    recs, errors = parse_upload({"d": items}, LIMITS)
    assert not errors, errors
    return recs


def ev(ids: dict[str, Any], name: str, msg_id: str, ts: int | None = None,
       **data: Any) -> dict[str, Any]:
    return {"type": "event", **ids, "evtName": name, "evtData": data, "msgId": msg_id,
            "ts": NOW - 1000 if ts is None else ts}


def prof(ids: dict[str, Any], msg_id: str, **data: Any) -> dict[str, Any]:
    return {"type": "profile", **ids, "profileData": data, "msgId": msg_id}


class Stores:
    """Opens AccountStores on one file (one at a time) and closes whatever is left open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.open_stores: list[AccountStore] = []

    def open(self, **settings: Any) -> AccountStore:
        s = Settings(data_dir=self.path.parent, **settings)
        store = AccountStore("acct", self.path, s)
        self.open_stores.append(store)
        return store

    def close_all(self) -> None:
        for s in self.open_stores:
            s.close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    st = Stores(tmp_path / "acct" / "events.duckdb")
    try:
        yield st
    finally:
        st.close_all()


def q(store: AccountStore, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.cursor() as cur:
        return cur.execute(sql, params or []).fetchall()


def write_ok(store: AccountStore, items: list[dict[str, Any]]):  # type: ignore[no-untyped-def]
    result = store.write(records(items))
    assert result.errors == [None] * len(items), result.errors
    return result


def uid(store: AccountStore, kind: str, value: str) -> int:
    u = store.user_for(kind, value)
    assert u is not None, (kind, value)
    return u


# -- writes, dedup, reopen ----------------------------------------------------------------

def test_write_assigns_sequence_and_deduplicates(stores: Stores) -> None:
    store = stores.open()
    r = write_ok(store, [ev({"identity": "u1"}, "A", "m1"), ev({"identity": "u1"}, "A", "m2"),
                         ev({"identity": "u1"}, "A", "m1")])  # same msgId in one commit
    assert (r.stored_events, r.duplicates, r.first_seq, r.last_seq) == (2, 1, 1, 2)
    r = write_ok(store, [ev({"identity": "u1"}, "A", "m2"), ev({"identity": "u2"}, "B", "m3")])
    assert (r.stored_events, r.duplicates, r.first_seq, r.last_seq) == (1, 1, 3, 3)
    assert q(store, "SELECT seq, message_id FROM events ORDER BY seq") == [
        (1, "m1"), (2, "m2"), (3, "m3")]
    # Message ids without msgId are derived from the content: an identical resend dedups.
    plain = {"type": "event", "identity": "u3", "evtName": "C", "evtData": {"x": 1},
             "ts": NOW - 5}
    assert store.write(records([plain])).stored_events == 1
    assert store.write(records([plain])).duplicates == 1
    assert q(store, "SELECT count(*) FROM events")[0][0] == 4


def test_reopen_restores_sequence_dedup_identities_and_profiles(stores: Stores) -> None:
    store = stores.open()
    write_ok(store, [prof({"identity": "u1", "email": "U1@Example.com"}, "p1", Name="One",
                          Score=3),
                     ev({"identity": "u1"}, "A", "m1", ts=NOW - 50),
                     ev({"objectId": "d1"}, "A", "m2", ts=NOW - 40)])
    u1, d1 = uid(store, "identity", "u1"), uid(store, "object_id", "d1")
    store.close()

    store = stores.open()
    assert store.next_seq == 3
    assert store.identity.next_uid == max(u1, d1) + 1
    # Resending after the reopen is deduplicated (the window is reloaded from the file).
    r = store.write(records([ev({"identity": "u1"}, "A", "m1", ts=NOW - 50),
                             ev({"identity": "u1"}, "A", "m3")]))
    assert (r.stored_events, r.duplicates, r.first_seq) == (1, 1, 3)
    # Identities resolve to the same profiles; a new identifier gets a fresh id.
    write_ok(store, [ev({"email": "u1@EXAMPLE.COM"}, "B", "m4"), ev({"objectId": "d2"}, "B",
                                                                     "m5")])
    assert uid(store, "email", "u1@example.com") == u1
    assert uid(store, "object_id", "d2") > max(u1, d1)
    row = store.load_profiles([u1])[u1]
    assert (row.identity, row.email, row.props) == ("u1", "u1@example.com",
                                                    {"Name": "One", "Score": 3})
    assert row.event_count == 3 and row.first_event_seq == 1
    assert q(store, "SELECT user_id, count(*) FROM events GROUP BY 1 ORDER BY 1") == sorted(
        [(u1, 3), (d1, 1), (uid(store, "object_id", "d2"), 1)])


# -- compaction -----------------------------------------------------------------------------

def test_compaction_moves_recent_events_sorted_and_survives_reopen(stores: Stores) -> None:
    store = stores.open()
    items = [ev({"identity": f"u{i % 3}"}, ["Zed", "Alpha", "Mid"][i % 3], f"m{i}",
                ts=NOW - 100 * ((i * 7) % 11), i=i) for i in range(30)]
    write_ok(store, items)
    before = q(store, "SELECT * FROM events ORDER BY seq")
    assert store.recent_rows() == 30

    assert store.compact_now() == 30
    assert store.recent_rows() == 0
    assert store.compacted_through == 30
    sorted_rows = q(store, "SELECT event, ts, seq FROM events_sorted")
    assert len(sorted_rows) == 30
    assert [r[:2] for r in sorted_rows] == sorted(r[:2] for r in sorted_rows)
    # The events view is unchanged by compaction.
    assert q(store, "SELECT * FROM events ORDER BY seq") == before
    assert store.compact_now() == 0  # nothing new: nothing moves

    write_ok(store, [ev({"identity": "u0"}, "Alpha", "m30", i=30)])
    assert store.recent_rows() == 1
    store.close()

    store = stores.open()
    assert store.compacted_through == 30
    assert store.next_seq == 32
    assert q(store, "SELECT value FROM meta WHERE key = 'compacted_through'") == [("30",)]
    assert store.recent_rows() == 1
    assert store.compact_now() == 1
    assert store.compacted_through == 31
    assert q(store, "SELECT count(*), count(DISTINCT message_id) FROM events") == [(31, 31)]
    # Timelines read both tables, newest first, without gaps or repeats.
    u0 = uid(store, "identity", "u0")
    got = timeline(store, u0, since=None, until=None, limit=1000, cursor=None)["events"]
    assert sorted(e["msgId"] for e in got) == sorted(
        [f"m{i}" for i in range(30) if i % 3 == 0] + ["m30"])
    assert [e["ts"] for e in got] == sorted((e["ts"] for e in got), reverse=True)
    paged, cursor = [], None  # pages of 2 merge the two tables' newest rows the same way
    while True:
        page = timeline(store, u0, since=None, until=None, limit=2, cursor=cursor)
        paged += page["events"]
        if not (cursor := page["next_cursor"]):
            break
    assert [e["msgId"] for e in paged] == [e["msgId"] for e in got]


def test_compaction_runs_automatically_at_the_threshold(stores: Stores) -> None:
    store = stores.open(compact_threshold_rows=10)
    write_ok(store, [ev({"identity": "u"}, "A", f"a{i}") for i in range(9)])
    assert store.run_on_writer(store.recent_rows).result() == 9
    assert store.compacted_through == 0
    write_ok(store, [ev({"identity": "u"}, "A", "a9")])
    # The writer compacts right after the commit that crossed the threshold; a job queued
    # behind that commit sees the result.
    assert store.run_on_writer(store.recent_rows).result() == 0
    assert store.compacted_through == 10
    assert q(store, "SELECT count(*) FROM events_sorted") == [(10,)]


# -- the property catalog --------------------------------------------------------------------

def test_catalog_types_columns_at_first_sight_and_overflows_the_rest(stores: Stores) -> None:
    store = stores.open(max_typed_columns=5)
    write_ok(store, [
        ev({"identity": "u"}, "A", "m1", n=1.5, s="x", b=True, d="$D_1700000000",
           tags=["a", 2]),
        ev({"identity": "u"}, "A", "m2", n="not a number", s="y", nested={"k": 1},
           extra=7),
        ev({"identity": "u"}, "A", "m3", n=3, b=False, s="$D_1600000000"),
    ])
    cols = {(name, typ): column for scope, name, column, typ in q(
        store, "SELECT scope, name, column_name, type FROM property_catalog") if scope == "event"}
    assert set(cols) == {("n", "number"), ("s", "string"), ("b", "boolean"), ("d", "date"),
                         ("tags", "list")}
    assert sorted(cols.values()) == [f"ep_{i}" for i in range(1, 6)]
    # Typed columns exist in both event tables with the catalog's SQL types.
    for table in ("events_recent", "events_sorted"):
        types = dict(q(store, "SELECT column_name, data_type FROM information_schema.columns "
                              "WHERE table_name = ?", [table]))
        assert types[cols[("n", "number")]] == "DOUBLE"
        assert types[cols[("d", "date")]] == "TIMESTAMP"
        assert types[cols[("tags", "list")]] == "VARCHAR[]"
    n_col = cols[("n", "number")]
    rows = {r[0]: r[1:] for r in q(store, f"SELECT message_id, {n_col}, props FROM events")}
    assert rows["m1"] == (1.5, None)
    # A value of another type than the column's, an object, and a property past the column
    # budget go to the JSON overflow.
    assert rows["m2"][0] is None
    assert rows["m2"][1] is not None and '"n":"not a number"' in rows["m2"][1]
    assert '"nested":{"k":1}' in rows["m2"][1] and '"extra":7' in rows["m2"][1]
    assert rows["m3"] == (3.0, '{"s":"$D_1600000000"}')

    # Reads give back exactly what was sent, typed columns and overflow alike.
    u = uid(store, "identity", "u")
    got = {e["msgId"]: e["evtData"] for e in
           timeline(store, u, since=None, until=None, limit=10, cursor=None)["events"]}
    assert got["m1"] == {"n": 1.5, "s": "x", "b": True, "d": "$D_1700000000",
                         "tags": ["a", "2"]}
    assert got["m2"] == {"n": "not a number", "s": "y", "nested": {"k": 1}, "extra": 7}
    assert got["m3"] == {"n": 3, "b": False, "s": "$D_1600000000"}  # a date: overflow
    # The discovered schema records every (event, name, type) seen.
    assert set(q(store, "SELECT event, name, type FROM event_properties")) >= {
        ("A", "n", "number"), ("A", "n", "string"), ("A", "nested", "object"),
        ("A", "extra", "number")}
    store.close()

    # After a reopen the catalog is the same: no new columns for known properties, and
    # the budget stays spent.
    store = stores.open(max_typed_columns=5)
    write_ok(store, [ev({"identity": "u"}, "A", "m4", n=4, s="z", more="overflow")])
    assert len(q(store, "SELECT * FROM property_catalog WHERE scope = 'event'")) == 5
    row = q(store, f"SELECT {n_col}, props FROM events WHERE message_id = 'm4'")[0]
    assert row == (4.0, '{"more":"overflow"}')


def test_profile_properties_typed_and_overflow_round_trip(stores: Stores) -> None:
    store = stores.open(max_typed_columns=2)
    write_ok(store, [prof({"identity": "u"}, "p1", Age=30, Name="Ann", City="Oslo",
                          Seen="$D_1700000000", Meta={"a": [1, 2], "when": "$D_1600000000"}),
                     prof({"identity": "v"}, "p2", Age="thirty")])
    cols = q(store, "SELECT name, column_name, type FROM property_catalog "
                    "WHERE scope = 'profile' ORDER BY column_name")
    assert cols == [("Age", "pp_1", "number"), ("Name", "pp_2", "string")]
    u, v = uid(store, "identity", "u"), uid(store, "identity", "v")
    raw = dict((r[0], r[1:]) for r in q(store, "SELECT user_id, pp_1, pp_2, props FROM profiles"))
    assert raw[u][:2] == (30.0, "Ann")
    assert raw[v][:2] == (None, None) and raw[v][2] == '{"Age":"thirty"}'
    store.close()
    store = stores.open(max_typed_columns=2)
    rows = store.load_profiles([u, v])
    # Dates in the overflow are stored as on the wire, never as an object.
    assert '"Seen":"$D_1700000000"' in raw[u][2]
    assert '"when":"$D_1600000000"' in raw[u][2]
    assert wire_value(rows[u].props) == {
        "Age": 30, "Name": "Ann", "City": "Oslo", "Seen": "$D_1700000000",
        "Meta": {"a": [1, 2], "when": "$D_1600000000"}}
    assert rows[v].props == {"Age": "thirty"}
    # Profile operations apply on top of the stored values.
    write_ok(store, [prof({"identity": "u"}, "p3", Age={"$incr": 2}, City={"$unset": 1},
                          Tags={"$add": ["x", "y"]})])
    assert wire_value(store.load_profiles([u])[u].props) == {
        "Age": 32, "Name": "Ann", "Seen": "$D_1700000000",
        "Meta": {"a": [1, 2], "when": "$D_1600000000"}, "Tags": ["x", "y"]}


# -- merges ---------------------------------------------------------------------------------

def test_merge_repoints_events_in_recent_and_sorted_tables(stores: Stores) -> None:
    store = stores.open()
    write_ok(store, [prof({"identity": "u"}, "p1", Name="U"),
                     ev({"identity": "u"}, "A", "u1", ts=NOW - 500),
                     prof({"objectId": "d"}, "p2", Name="Anon", Color="red"),
                     ev({"objectId": "d"}, "A", "d1", ts=NOW - 900),
                     ev({"objectId": "d"}, "B", "d2", ts=NOW - 800)])
    u, d = uid(store, "identity", "u"), uid(store, "object_id", "d")
    store.compact_now()  # d's first events are in events_sorted now
    write_ok(store, [ev({"objectId": "d"}, "C", "d3", ts=NOW - 100)])  # and one is recent
    assert q(store, "SELECT user_id, count(*) FROM events_sorted WHERE user_id = ? "
                    "GROUP BY 1", [d]) == [(d, 2)]
    assert q(store, "SELECT count(*) FROM events_recent WHERE user_id = ?", [d]) == [(1,)]

    # Login: the anonymous device merges into the identified user.
    r = write_ok(store, [ev({"identity": "u", "objectId": "d"}, "Login", "l1", ts=NOW - 50)])
    assert r.stored_events == 1
    for table in ("events_recent", "events_sorted"):
        assert q(store, f"SELECT count(*) FROM {table} WHERE user_id = ?", [d]) == [(0,)], table
    assert q(store, "SELECT message_id FROM events WHERE user_id = ? ORDER BY seq", [u]) == [
        ("u1",), ("d1",), ("d2",), ("d3",), ("l1",)]
    assert q(store, "SELECT from_id, to_id FROM profile_merges") == [(d, u)]
    assert q(store, "SELECT count(*) FROM profiles WHERE user_id = ?", [d]) == [(0,)]
    assert q(store, "SELECT kind, value, user_id FROM identities ORDER BY kind") == [
        ("identity", "u", u), ("object_id", "d", u)]
    row = store.load_profiles([u])[u]
    assert row.props == {"Name": "U", "Color": "red"}  # identified wins
    assert row.event_count == 5
    assert row.first_seen == NOW - 900 and row.last_seen == NOW - 50
    assert row.first_event_seq == 1  # u1, the earliest stored event of either
    store.close()

    # Reopened: the merge redirects the old internal id, and the id is never reused.
    store = stores.open()
    assert store.identity.final(d) == u
    assert store.identity.next_uid > max(u, d)
    write_ok(store, [ev({"objectId": "d"}, "D", "d4")])
    assert q(store, "SELECT user_id FROM events WHERE message_id = 'd4'") == [(u,)]


def test_explicit_merge_of_identified_profiles_repoints_compacted_events(
        stores: Stores) -> None:
    store = stores.open()
    write_ok(store, [prof({"identity": "a", "email": "a@x.io"}, "p1", Name="A", OnlyA=1),
                     prof({"identity": "b"}, "p2", Name="B"),
                     *[ev({"identity": "a"}, "A", f"a{i}") for i in range(5)],
                     ev({"identity": "b"}, "B", "b0")])
    a, b = uid(store, "identity", "a"), uid(store, "identity", "b")
    store.compact_now()
    write_ok(store, [ev({"identity": "a"}, "A", "a5")])
    # What POST /1/profiles/merge submits: a record for `into` naming `from` in merge_from.
    rec = Record(kind="profile", ids={"identity": "b"}, ts=NOW, message_id="merge:1",
                 merge_from=[("identity", "a")])
    assert store.write([rec]).errors == [None]
    assert q(store, "SELECT user_id, count(*) FROM events GROUP BY 1") == [(b, 7)]
    assert q(store, "SELECT count(*) FROM events_sorted WHERE user_id = ?", [a]) == [(0,)]
    assert uid(store, "identity", "a") == b and uid(store, "email", "a@x.io") == b
    row = store.load_profiles([b])[b]
    assert (row.identity, row.email, row.event_count) == ("b", "a@x.io", 7)
    assert row.props == {"Name": "B", "OnlyA": 1}
    # Implicit merging of the two (now one) identities is no longer a conflict.
    write_ok(store, [prof({"identity": "a", "email": "a@x.io"}, "p3", Name="again")])
    assert store.load_profiles([b])[b].props["Name"] == "again"


def test_identified_conflict_changes_nothing(stores: Stores) -> None:
    store = stores.open()
    write_ok(store, [prof({"identity": "u1", "email": "e1@x.io"}, "p1", Name="One")])
    before = {t: q(store, f"SELECT * FROM {t} ORDER BY ALL")
              for t in ("identities", "profile_merges", "property_catalog")}
    before_profiles = q(store, "SELECT user_id, identity, email, props, pp_1 FROM profiles")
    r = store.write(records([prof({"identity": "u2", "email": "e1@x.io"}, "p2", Name="Two"),
                             ev({"identity": "u2", "email": "e1@x.io"}, "A", "m1")]))
    assert [e.code if e else None for e in r.errors] == [520, 520]
    assert r.stored_events == 0
    assert store.user_for("identity", "u2") is None
    for t, rows in before.items():
        assert q(store, f"SELECT * FROM {t} ORDER BY ALL") == rows
    assert q(store, "SELECT user_id, identity, email, props, pp_1 FROM profiles") == \
        before_profiles
    assert q(store, "SELECT count(*) FROM events") == [(0,)]


def test_merged_away_profile_created_in_same_commit_keeps_its_id_reserved(
        stores: Stores) -> None:
    store = stores.open()
    write_ok(store, [prof({"identity": "u"}, "p1", Name="U")])
    u = uid(store, "identity", "u")
    # One commit: a new device profile is created, then a login merges it into u.
    write_ok(store, [ev({"objectId": "d"}, "A", "m1"),
                     ev({"identity": "u", "objectId": "d"}, "Login", "m2")])
    (gone,) = q(store, "SELECT from_id FROM profile_merges")[0]
    assert gone != u
    assert q(store, "SELECT count(*) FROM profiles WHERE user_id = ?", [gone]) == [(0,)]
    assert q(store, "SELECT DISTINCT user_id FROM events") == [(u,)]
    store.close()
    store = stores.open()
    assert store.identity.next_uid > gone  # the merged-away id is never handed out again
    write_ok(store, [ev({"objectId": "fresh"}, "A", "m3")])
    assert uid(store, "object_id", "fresh") > gone


def test_file_is_a_plain_duckdb_database_after_close(stores: Stores, tmp_path: Path) -> None:
    store = stores.open()
    write_ok(store, [ev({"identity": "u"}, "A", f"m{i}") for i in range(3)])
    store.compact_now()
    write_ok(store, [ev({"identity": "u"}, "A", "m3")])
    store.close()
    assert not Path(str(store.path) + ".wal").exists()  # close checkpoints
    con = duckdb.connect(str(store.path), read_only=True)
    try:
        assert con.execute("SELECT count(*), count(DISTINCT message_id) FROM events")\
            .fetchall() == [(4, 4)]
    finally:
        con.close()
