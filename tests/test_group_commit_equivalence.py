"""A group commit stores exactly what committing the same records one at a time stores.

The commit plans a whole batch at once (fast paths for known users, events built column by
column per event name, stats and catalog aggregated by DuckDB), so these tests write random
mixes of events, profile updates, tokens, logins (merges), conflicts and duplicates twice on
real stores: once as one group, once record by record. Events, profiles, identities and the
event catalog must be the same, property by property.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.store.account import AccountStore
from nudge.store.catalog import from_column_value

LIMITS = Limits()
T0 = 1_700_000_000


def random_items(rng: random.Random, n: int) -> list[dict[str, Any]]:
    users = [f"u{i}" for i in range(12)]
    devices = [f"dev-{i}" for i in range(10)]
    events = {"Viewed": {"price": "n", "sku": "s"}, "Bought": {"amount": "n", "ok": "b"},
              "Searched": {"q": "s", "hits": "n", "tags": "l"}}
    items: list[dict[str, Any]] = []
    for i in range(n):
        r = rng.random()
        ts = T0 + rng.randrange(0, 10_000)
        if r < 0.08 and items:
            items.append(copy.deepcopy(rng.choice(items)))  # a retry: same content, msgId
            continue
        who: dict[str, Any]
        if r < 0.55:
            who = {"identity": rng.choice(users)}
        elif r < 0.75:
            who = {"objectId": rng.choice(devices)}
        elif r < 0.85:  # a login: device + user in one record (merge, move or conflict)
            who = {"identity": rng.choice(users), "objectId": rng.choice(devices)}
        else:
            who = {"identity": rng.choice(users)}
            if r < 0.92:
                items.append({"type": "profile", **who, "ts": ts, "profileData": {
                    "City": rng.choice(["A", "B"]), "Score": {"$incr": rng.randrange(5)},
                    "Email": f"{who['identity']}@x.org" if rng.random() < 0.5 else
                    f"{rng.choice(users)}@x.org"}})
            else:
                items.append({"type": "token", **who, "ts": ts,
                              "tokenData": {"type": "fcm", "id": f"tok-{rng.randrange(6)}"}})
            continue
        name = rng.choice(list(events))
        data: dict[str, Any] = {}
        for prop, kind in events[name].items():
            if rng.random() < 0.3:
                continue  # absent
            if kind == "n":
                data[prop] = rng.choice([rng.randrange(100), rng.random() * 100])
            elif kind == "s":
                data[prop] = rng.choice(["a", "b", "c"])
            elif kind == "b":
                data[prop] = rng.random() < 0.5
            else:
                data[prop] = rng.sample(["x", "y", "z"], rng.randrange(1, 3))
        extra = rng.random()
        if extra < 0.05:
            data["mixed"] = rng.choice([1, "one", True])  # one name, several types
        elif extra < 0.08:
            data["nested"] = {"k": rng.randrange(3)}
        elif extra < 0.10:
            data["nothing"] = None
        elif extra < 0.13:
            data["when"] = f"$D_{T0 + rng.randrange(1000)}"
        item = {"type": "event", **who, "ts": ts, "evtName": name, "evtData": data}
        if rng.random() < 0.5:
            item["msgId"] = f"m-{i}"
        items.append(item)
    return items


def snapshot(store: AccountStore) -> dict[str, Any]:
    """The store's content by property name (column numbering may differ between stores)."""
    def props(scope: str, row: dict[str, Any]) -> dict[str, Any]:
        out = msgspec.json.decode(row["props"]) if row["props"] else {}
        for col in store.catalog.by_scope(scope):
            v = row.get(col.column)
            if v is not None:
                out[col.name] = repr(from_column_value(v, col.type))
        return out

    def rows(sql: str) -> list[dict[str, Any]]:
        with store.cursor() as cur:
            res = cur.execute(sql)
            names = [d[0] for d in res.description]
            return [dict(zip(names, r, strict=True)) for r in res.fetchall()]

    events = [(r["seq"], r["message_id"], r["user_id"], r["event"], r["ts"],
               props("event", r)) for r in rows("SELECT * FROM events ORDER BY seq")]
    profiles = [(r["user_id"], r["identity"], r["email"], r["phone"], r["first_seen"],
                 r["last_seen"], r["event_count"], r["first_event_seq"], props("profile", r))
                for r in rows("SELECT * FROM profiles ORDER BY user_id")]
    ids = [tuple(r.values()) for r in rows(
        "SELECT kind, value, user_id FROM identities ORDER BY kind, value")]
    catalog = [tuple(r.values()) for r in rows(
        "SELECT event, count, first_seen, last_seen FROM event_catalog ORDER BY event")]
    merges = [tuple(r.values()) for r in rows(
        "SELECT from_id, to_id FROM profile_merges ORDER BY from_id")]
    return {"events": events, "profiles": profiles, "identities": ids, "catalog": catalog,
            "merges": merges}


def write(path: Path, items: list[dict[str, Any]], group: bool) -> tuple[list[Any], Any]:
    store = AccountStore("eq", path / "events.duckdb", Settings(data_dir=path))
    try:
        records, errors = parse_upload({"d": copy.deepcopy(items)}, LIMITS)
        assert not errors
        if group:
            outcome = store.write(records).errors
        else:
            outcome = [store.write([r]).errors[0] for r in records]
        return [(e.index, e.code) if e else None for e in outcome], snapshot(store)
    finally:
        store.close()


@pytest.mark.parametrize("seed", range(6))
def test_one_group_equals_one_record_at_a_time(tmp_path: Path, seed: int) -> None:
    items = random_items(random.Random(seed), 300)
    (tmp_path / "group").mkdir()
    (tmp_path / "single").mkdir()
    group = write(tmp_path / "group", items, group=True)
    single = write(tmp_path / "single", items, group=False)
    assert group[0] == single[0]  # per-record outcomes (520 conflicts included)
    for part in ("events", "profiles", "identities", "catalog", "merges"):
        assert group[1][part] == single[1][part], part
    assert any(group[1]["merges"]) or seed, "the mix exercises merges"


def test_known_users_in_a_second_group(tmp_path: Path) -> None:
    """The fast path (users known from an earlier commit) against the resolver."""
    rng = random.Random(99)
    first, second = random_items(rng, 200), random_items(rng, 300)
    out = []
    for label, group in (("group", True), ("single", False)):
        d = tmp_path / label
        d.mkdir()
        store = AccountStore("eq", d / "events.duckdb", Settings(data_dir=d))
        try:
            recs, _ = parse_upload({"d": copy.deepcopy(first)}, LIMITS)
            store.write(recs)
            recs, _ = parse_upload({"d": copy.deepcopy(second)}, LIMITS)
            if group:
                store.write(recs)
            else:
                for r in recs:
                    store.write([r])
            out.append(snapshot(store))
        finally:
            store.close()
    assert out[0] == out[1]
