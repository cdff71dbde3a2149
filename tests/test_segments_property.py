"""Property-based tests: random definitions over random small datasets, evaluated by the
segment engine and by the plain-Python reference (tests/segments_reference.py), give the same
members.

All examples share one account store (opening a store costs more than a whole example); every
example writes fresh people, and membership depends only on a person's own data (plus the
property catalog and ``now``), so the engine's answer restricted to the example's people must
equal the reference's. A seed person written first gives every generated property its type,
so the catalog is the same for all examples; ``Nope`` is never written (a property nobody
has) and neither is the event ``Never``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segments_reference import Event, Person, Reference, TypeMismatch, catalog_of

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.explain import explain
from nudge.query.segments.model import COUNT_OPS, DefinitionError, parse
from nudge.store.account import AccountStore

H = 3600
DAY = 86400
# An hour boundary in the past: event times and windows on an hour grid hit window edges.
NOW = (int(time.time()) // H - 2) * H
INJECTION = "x\"); DROP TABLE events; --"
EVENTS = ["A", "B", "it's \"C\"; DROP TABLE profiles; --"]
NEVER = "Never"
EVENT_PROPS = {"Amount": "number", "Plan": "string", "Tags": "list", "Flag": "boolean",
               "When": "date", INJECTION: "string"}
PROFILE_PROPS = {"City": "string", "Age": "number", "Tags": "list", "VIP": "boolean",
                 "Birthday": "date", "MSG-email": "boolean", "MSG-push": "boolean",
                 "MSG-sms": "boolean", INJECTION: "string"}
SYSTEM = {"$identity": "string", "$email": "string", "$phone": "string", "$first_seen": "date",
          "$last_seen": "date", "$total_events": "number"}
TYPES = ("number", "string", "list", "boolean", "date")
OPS = {
    "string": ["eq", "neq", "in", "not_in", "contains", "not_contains", "starts_with"],
    "number": ["eq", "neq", "in", "not_in", "gt", "gte", "lt", "lte", "between"],
    "boolean": ["eq", "neq"],
    "date": ["gt", "gte", "lt", "lte", "between", "before_days_ago", "after_days_ago",
             "within_next_days", "anniversary_within_days"],
    "list": ["eq", "neq", "contains", "not_contains", "in", "not_in"],
}
# NUDGE_SEGMENT_EXAMPLES=1000 for a longer hunt; the default keeps the suite quick.
EXAMPLES = int(os.environ.get("NUDGE_SEGMENT_EXAMPLES", "120"))
DEFINITIONS_PER_EXAMPLE = 3

# -- values ----------------------------------------------------------------------------------
NUMBERS = [-2, 0, 1, 2, 2.5, 5, 10, 20]
STRINGS = ["free", "pro", "Pro", "pro plus", "", "it's", "100%", "a_b", "'; DROP TABLE x; --",
           "Ünï ✓"]
FRAGMENTS = ["pro", "P", "'", "%", "_", "Ü", "it", "; DROP"]
ITEMS = ["a", "b", "5", 5, 7, "x y", "it's"]
BOUNDARY_HOURS = [0, 1, 2, 5, 23, 24, 25, 47, 48, 60, 167, 168, 169, 240, 719, 720, 721, 1000]


def _today_plus(days: int, year: int) -> int:
    d = dt.datetime.fromtimestamp(NOW, dt.UTC).date() + dt.timedelta(days=days)
    return int(dt.datetime(year, d.month, min(d.day, 28) if d.month == 2 else d.day,
                           tzinfo=dt.UTC).timestamp())


hours_ago = st.one_of(st.sampled_from(BOUNDARY_HOURS), st.integers(0, 72), st.integers(0, 1100))
date_epochs = st.one_of(
    st.builds(lambda h, back: NOW - h * H if back else NOW + h * H, hours_ago, st.booleans()),
    st.builds(_today_plus, st.integers(-3, 12), st.sampled_from([1985, 1992, 2000])))
stored = {
    "number": st.sampled_from(NUMBERS),
    "string": st.sampled_from(STRINGS),
    "list": st.lists(st.sampled_from(ITEMS), max_size=3),
    "boolean": st.booleans(),
    "date": date_epochs.map(lambda e: f"$D_{e}"),
}


def iso(epoch: int, style: int) -> str | int:
    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return [epoch, t.isoformat().replace("+00:00", "Z"), t.replace(tzinfo=None).isoformat()][style]


@st.composite
def filter_value(draw: st.DrawFn, typ: str, op: str) -> Any:
    if typ == "string":
        if op in ("in", "not_in"):
            return draw(st.lists(st.sampled_from(STRINGS), min_size=1, max_size=3))
        if op in ("contains", "not_contains", "starts_with"):
            return draw(st.sampled_from(FRAGMENTS + [s for s in STRINGS if s]))
        return draw(st.sampled_from(STRINGS))
    if typ == "number":
        if op in ("in", "not_in"):
            return draw(st.lists(st.sampled_from(NUMBERS), min_size=1, max_size=3))
        if op == "between":
            return sorted(draw(st.lists(st.sampled_from(NUMBERS), min_size=2, max_size=2)))
        return draw(st.sampled_from(NUMBERS))
    if typ == "boolean":
        return draw(st.booleans())
    if typ == "list":
        # 5.0 must match the item stored for 5 ("5")
        if op in ("in", "not_in"):
            return draw(st.lists(st.sampled_from([*ITEMS, 5.0, 5.0]), min_size=1, max_size=3))
        if op in ("contains", "not_contains"):
            return draw(st.sampled_from([i for i in ITEMS if isinstance(i, str)]))
        return draw(st.sampled_from([*ITEMS, 5.0, 5.0]))
    # date
    if op == "anniversary_within_days":
        return draw(st.sampled_from([0, 1, 3, 7, 400]))
    if op.endswith("days_ago") or op == "within_next_days":
        return draw(st.sampled_from([0, 1, 1.5, 2, 7, 30, 400]))
    style = draw(st.integers(0, 2))
    if op == "between":
        lo, hi = sorted(draw(st.lists(date_epochs, min_size=2, max_size=2)))
        return [iso(lo, style), iso(hi, style)]
    return iso(draw(date_epochs), style)


@st.composite
def filters(draw: st.DrawFn, scope: str) -> dict[str, Any]:
    props = EVENT_PROPS if scope == "event" else {**PROFILE_PROPS, **SYSTEM}
    name = draw(st.sampled_from([*props, "Nope"]))
    typ = props.get(name)
    # Mostly well-typed; about one in 15 any operator and value (maybe a type mismatch).
    # (A middle value: Hypothesis favours the bounds of integer ranges.)
    if typ is None or draw(st.integers(0, 14)) == 7:
        typ = draw(st.sampled_from(TYPES))
    op = draw(st.sampled_from([*OPS[typ], "exists", "not_exists"]))
    f: dict[str, Any] = {"property": name, "op": op}
    if op not in ("exists", "not_exists"):
        f["value"] = draw(filter_value(typ, op))
    return f


durations = st.sampled_from([{"minutes": 90}, {"hours": 1}, {"hours": 5}, {"hours": 24},
                             {"days": 1}, {"days": 2}, {"days": 2.5}, {"weeks": 1},
                             {"days": 30}])


@st.composite
def windows(draw: st.DrawFn, required: bool = False) -> dict[str, Any] | None:
    kind = draw(st.sampled_from(["last", "last", "between", "first_days"]
                                + ([] if required else ["none"])))
    if kind == "none":
        return None
    if kind == "last":
        return {"last": draw(durations)}
    if kind == "first_days":
        return {"first_days_after_first_seen": draw(st.sampled_from([1, 2, 2.5, 10]))}
    start = NOW - draw(hours_ago) * H
    end = start + draw(st.one_of(st.sampled_from([1, 24, 48, 168]), st.integers(1, 800))) * H
    style = draw(st.integers(0, 2))
    return {"between": [iso(start, style), iso(end, style)]}


@st.composite
def spec(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"event": draw(st.sampled_from([*EVENTS, EVENTS[0], NEVER]))}
    n = draw(st.sampled_from([0, 0, 1, 2]))  # filters make matches rarer: often none
    where = draw(st.lists(filters("event"), min_size=n, max_size=n))
    if where:
        out["where"] = where
    return out


def _with_window(body: dict[str, Any], w: dict[str, Any] | None) -> dict[str, Any]:
    return body if w is None else {**body, "window": w}


LEAF_KINDS = ("did", "did_count", "did_not", "aggregate", "first_time", "last_did", "sequence",
              "profile", "reachable", "segment")


@st.composite
def leaf(draw: st.DrawFn, refs: tuple[int, ...], kind: str | None = None) -> dict[str, Any]:
    if kind is None:
        kinds = ["did", "did_count", "did_not", "aggregate", "first_time", "last_did",
                 "sequence", "profile", "profile", "reachable"] + (["segment"] if refs else [])
        kind = draw(st.sampled_from(kinds))
    if kind in ("did", "did_count"):
        body = draw(spec())
        if kind == "did_count":
            body["count"] = {"op": draw(st.sampled_from(COUNT_OPS)),
                             "value": draw(st.integers(0, 4))}
        return {"did": _with_window(body, draw(windows()))}
    if kind == "did_not":
        return {"did_not": _with_window(draw(spec()), draw(windows()))}
    if kind == "aggregate":
        prop = draw(st.sampled_from(["Amount"] * 12 + ["Plan", "Flag", "When", "Tags", "Nope"]))
        body = {**draw(spec()), "property": prop,
                "fn": draw(st.sampled_from(["sum", "avg", "min", "max", "count_distinct"])),
                "op": draw(st.sampled_from(COUNT_OPS)),
                "value": draw(st.sampled_from([-1, 0, 1, 2, 2.5, 5, 10, 20]))}
        return {"aggregate": _with_window(body, draw(windows()))}
    if kind == "first_time":
        return {"first_time": {**draw(spec()), "window": draw(windows(required=True))}}
    if kind == "last_did":
        which = draw(st.sampled_from(["more_than", "less_than"]))
        return {"last_did": {**draw(spec()), which: draw(durations)}}
    if kind == "sequence":
        # Half of them plain (no filters, no window), so that pairs at exactly ``within``
        # apart and ties in ts are common.
        plain = draw(st.booleans())
        names = st.sampled_from(EVENTS).map(lambda e: {"event": e})
        body = {"first": draw(names if plain else spec()), "then": draw(names if plain else spec())}
        if draw(st.booleans()):
            body["within"] = draw(durations)
        if not draw(st.booleans()):
            body["then_happened"] = False
        return {"sequence": _with_window(body, None if plain else draw(windows()))}
    if kind == "profile":
        return {"profile": draw(filters("profile"))}
    if kind == "reachable":
        return {"reachable": {"channel": draw(st.sampled_from(
            ["email", "sms", "whatsapp", "push", "webpush"]))}}
    body = {"id": draw(st.sampled_from(refs))}
    if draw(st.booleans()):
        body["member"] = draw(st.booleans())
    return {"segment": body}


def definitions(depth: int, refs: tuple[int, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """Random AND/OR/NOT trees of conditions, nested up to ``depth`` levels."""
    if depth == 0:
        return leaf(refs)
    sub = definitions(depth - 1, refs)
    return st.one_of(
        leaf(refs), leaf(refs),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"and": cs}),
        st.lists(sub, min_size=1, max_size=3).map(lambda cs: {"or": cs}),
        sub.map(lambda c: {"not": c}))


# -- datasets --------------------------------------------------------------------------------
@dataclass
class UserData:
    profile: dict[str, Any]
    email: bool
    phone: bool
    tokens: frozenset[str]
    events: list[tuple[str, int, dict[str, Any]]]  # (event, ts, props)


def _props(types: dict[str, str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={k: stored[t] for k, t in types.items()})


event_data = st.tuples(
    st.sampled_from([*EVENTS, EVENTS[0]]),
    st.builds(lambda h, jitter: NOW - h * H - jitter, hours_ago,
              st.sampled_from([0, 0, 0, 0, 1, 1799])),
    st.builds(lambda amount, rest: {**amount, **rest},  # most events have an Amount
              st.sampled_from([{}] + [{"Amount": n} for n in NUMBERS]),
              _props({k: t for k, t in EVENT_PROPS.items() if k != "Amount"})))
users = st.builds(UserData, _props(PROFILE_PROPS), st.booleans(), st.booleans(),
                  st.frozensets(st.sampled_from(["fcm", "apns", "webpush"])),
                  st.lists(event_data, max_size=10))


@dataclass
class World:
    """The shared store, the engine over it, and the catalog every example sees."""

    store: AccountStore = field(repr=False)  # (short failure reports)
    catalog: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    examples: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def write(self, items: list[dict[str, Any]]) -> None:
        # parse_upload normalizes property dicts in place (as its own decoded JSON copy).
        recs, errors = parse_upload({"d": copy.deepcopy(items)}, Limits())
        assert not errors, errors
        result = self.store.write(recs)
        assert result.errors == [None] * len(recs), result.errors

    def uids(self, keys: list[str]) -> dict[int, str]:
        with self.store.cursor() as cur:
            rows = cur.execute("SELECT user_id, value FROM identities WHERE kind = 'identity' "
                               "AND value IN (SELECT unnest(?::VARCHAR[]))", [keys]).fetchall()
        return dict(rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("segprop")
    store = AccountStore("prop", tmp / "events.duckdb", Settings(data_dir=tmp, duckdb_threads=1))
    w = World(store)
    # The seed person gives every property its type, once for all examples.
    seed_event = {"Amount": 1, "Plan": "x", "Tags": ["a"], "Flag": True, "When": f"$D_{NOW}",
                  INJECTION: "x"}
    seed_profile = {"City": "x", "Age": 1, "Tags": ["a"], "VIP": True, "Birthday": f"$D_{NOW}",
                    "MSG-email": True, "MSG-push": True, "MSG-sms": True, INJECTION: "x"}
    w.write([{"type": "profile", "identity": "seed", "profileData": seed_profile,
              "msgId": "seed-p"},
             {"type": "event", "identity": "seed", "evtName": "A", "evtData": seed_event,
              "ts": NOW - 10 * DAY, "msgId": "seed-e"}])
    catalog_of([Person("seed", seed_profile)],
               [Event("seed", "A", NOW - 10 * DAY, 0, seed_event)], into=w.catalog)
    assert w.catalog == {(c.scope, c.name): c.type for c in store.catalog.columns.values()}
    try:
        yield w
    finally:
        store.close()


def materialize(w: World, data: list[UserData]) -> tuple[list[Person], list[Event], list[str]]:
    """Write one example's people through the real upload parser; return them for the
    reference (events in arrival order, which the store's ``seq`` follows)."""
    n = next(w.examples)
    items: list[dict[str, Any]] = []
    people: list[Person] = []
    events: list[Event] = []
    keys = []
    for i, u in enumerate(data):
        key = f"x{n}-u{i}"
        keys.append(key)
        email = f"{key}@example.com" if u.email else None
        phone = f"+1555{n:05d}{i:02d}" if u.phone else None
        profile = dict(u.profile)
        if email:
            profile["Email"] = email
        if phone:
            profile["Phone"] = phone
        if profile or not u.events:
            items.append({"type": "profile", "identity": key, "profileData": profile,
                          "msgId": f"{key}-p"})
        for kind in sorted(u.tokens):
            items.append({"type": "token", "identity": key, "msgId": f"{key}-t-{kind}",
                          "tokenData": {"type": kind, "id": f"tok-{key}-{kind}"}})
        people.append(Person(key, dict(u.profile), email, phone, u.tokens))
    # Interleave people's events so arrival order is not grouped by person.
    pending = [(f"x{n}-u{i}", j, ev) for i, u in enumerate(data) for j, ev in enumerate(u.events)]
    pending.sort(key=lambda p: (p[1], p[0]))
    for key, j, (name, ts, props) in pending:
        events.append(Event(key, name, ts, len(events), props))
        items.append({"type": "event", "identity": key, "evtName": name, "evtData": props,
                      "ts": ts, "msgId": f"{key}-e{j}"})
    w.write(items)
    if n % 10 == 9:
        w.store.compact_now()  # later examples also read the sorted events table
    return people, events, keys


@settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.lists(users, min_size=2, max_size=30),
       saved1=definitions(1, ()), saved2=definitions(1, (1,)),
       defs=st.lists(definitions(3, (1, 2)), min_size=1, max_size=DEFINITIONS_PER_EXAMPLE),
       leaves=st.tuples(*(leaf((1, 2), kind) for kind in LEAF_KINDS)),
       probe=st.integers(0, 29))
def test_engine_matches_reference(world: World, data: list[UserData], saved1: Any, saved2: Any,
                                  defs: list[Any], leaves: tuple[Any, ...], probe: int) -> None:
    """Random AND/OR/NOT trees (members, count and one person's membership), and one
    condition of every kind (members) per example."""
    people, events, keys = materialize(world, data)
    saved = {1: saved1, 2: saved2}
    engine = SegmentEngine(world.store, load_saved=lambda i: parse(saved[i], NOW))
    ref = Reference(people, events, NOW, catalog=world.catalog, saved=saved)
    key_of = world.uids(keys)
    assert len(key_of) == len(keys)
    for i, d in enumerate([*defs, *leaves]):
        full = i < len(defs)  # trees get every check; the per-kind leaves only members
        node = parse(d, NOW)  # the generator only builds valid definitions
        explain(node)
        try:
            expected: set[str] | str = ref.members(d)
        except TypeMismatch:
            expected = "type mismatch"
        try:
            ids = engine.user_ids(node, now=NOW)
        except DefinitionError as e:
            assert expected == "type mismatch", f"engine refused: {e}\n{d}"
            continue
        assert expected != "type mismatch", f"engine accepted a type mismatch:\n{d}"
        got = {key_of[u] for u in ids if u in key_of}
        assert got == expected, (
            f"definition: {d}\nsaved: {saved}\nengine only: {sorted(got - set(expected))}\n"
            f"reference only: {sorted(set(expected) - got)}")
        if not full:
            continue
        assert engine.count(node, now=NOW) == len(ids)
        uid = next(u for u, k in key_of.items() if k == keys[probe % len(keys)])
        assert engine.contains(node, uid, now=NOW) == (keys[probe % len(keys)] in expected), d
