"""Golden tests: definition → SQL snapshots (tests/golden/segments/<case>.sql), one or more per
node type and filter operator.

Each snapshot holds the definition, its explanation, the bound parameters and the SQL. The
test compiles the definition and compares with the snapshot, then runs the snapshot's own SQL
and parameters on a real account store holding a small fixed dataset and checks that it
returns exactly the members the plain-Python reference evaluator computes. Rewrite the
snapshots after an intended compiler change with ``NUDGE_UPDATE_GOLDEN=1`` (and review the
diff).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.explain import explain
from nudge.query.segments.model import _KINDS, FILTER_OPS, parse
from nudge.store.account import AccountStore
from segments_reference import Event, Person, Reference

GOLDEN = Path(__file__).parent / "golden" / "segments"
UPDATE = os.environ.get("NUDGE_UPDATE_GOLDEN") == "1"
NOW = 1_700_000_000  # 2023-11-14 22:13:20 UTC; snapshots hold times relative to it
H, DAY = 3600, 86400
EVIL = "x'); DROP TABLE events; --"
# A birthday in three days' time (day and month), 40 years ago.
_SOON = dt.datetime.fromtimestamp(NOW + 3 * DAY, dt.UTC)
BIRTHDAY = int(_SOON.replace(year=_SOON.year - 40).timestamp())

# -- the fixed dataset: (identity, profile, email, phone, token kinds, events) ----------------
PEOPLE: list[tuple[str, dict[str, Any], str | None, str | None, list[str],
                   list[tuple[str, float, dict[str, Any]]]]] = [
    ("ann", {"City": "Paris", "Age": 34, "VIP": True, "Tags": ["gold", "5"],
             "Birthday": f"$D_{BIRTHDAY}", "MSG-email": True,
             "Plan": "pro"}, "ann@example.com", "+15550001", ["fcm"],
     [("Charged", NOW - 2 * DAY, {"Amount": 600, "Currency": "EUR", "Items": ["a", "b"]}),
      ("Charged", NOW - 3 * DAY, {"Amount": 700, "Currency": "EUR"}),
      ("Charged", NOW - 4 * DAY, {"Amount": 800, "Currency": "USD"}),
      ("Added To Cart", NOW - 5 * H, {"Amount": 20}),
      ("App Launched", NOW - 60 * DAY, {"Platform": "ios", "Paid": True})]),
    ("bob", {"City": "Berlin", "Age": 19, "VIP": False, "MSG-email": False,
             "Signed Up": f"$D_{NOW - 45 * DAY}"}, "bob@example.com", None, ["webpush"],
     [("Charged", NOW - 20 * DAY, {"Amount": 100, "Currency": "EUR"}),
      ("Added To Cart", NOW - 10 * H, {"Amount": 5}),
      ("Charged", NOW - 9 * H, {"Amount": 50, "Currency": "EUR"}),
      ("App Uninstalled", NOW - 2 * H, {}),
      ("App Launched", NOW - 50 * DAY, {"Platform": "android", "Paid": False})]),
    ("cyd", {"City": "Paris", "Age": 52, "Tags": ["silver"], "Plan": "free",
             "Signed Up": f"$D_{NOW - 5 * DAY}", "Renewal": f"$D_{NOW + 2 * DAY}"}, None, "+15550003", ["apns"],
     [("Added To Cart", NOW - 30 * H, {"Amount": 70}),
      ("App Launched", NOW - 2 * DAY, {"Platform": "ios"})]),
    ("dan", {"City": "it's \"quoted\"", "Plan": EVIL}, None, None, [],
     [(EVIL, NOW - DAY, {EVIL: EVIL, "Amount": 1}),
      ("Charged", NOW - 100 * DAY, {"Amount": 5000, "Currency": "EUR"})]),
    ("eve", {"Age": 34.5, "Tags": []}, "eve@example.com", None, [], []),
    ("fay", {}, None, None, [],
     [("Charged", NOW - DAY, {"Amount": 6000, "Currency": "GBP"}),
      ("Charged", NOW - DAY, {"Amount": 10, "Currency": "GBP"})]),
]

# -- the cases: at least one per node kind and per filter operator ----------------------------
W30 = {"last": {"days": 30}}
CASES: dict[str, Any] = {
    # did
    "did_default": {"did": {"event": "Charged"}},
    "did_at_least_where_window": {"did": {
        "event": "Charged", "count": {"op": ">=", "value": 3}, "window": W30,
        "where": [{"property": "Amount", "op": "gt", "value": 500}]}},
    "did_more_than": {"did": {"event": "Charged", "count": {"op": ">", "value": 1}}},
    "did_exactly": {"did": {"event": "Charged", "count": {"op": "=", "value": 2}}},
    "did_exactly_zero": {"did": {"event": "Charged", "count": {"op": "=", "value": 0},
                                 "window": W30}},
    "did_at_most": {"did": {"event": "Charged", "count": {"op": "<=", "value": 1},
                            "window": W30}},
    "did_fewer_than": {"did": {"event": "Charged", "count": {"op": "<", "value": 3}}},
    "did_fewer_than_zero": {"did": {"event": "Charged", "count": {"op": "<", "value": 0}}},
    "did_not_exactly": {"did": {"event": "Charged", "count": {"op": "!=", "value": 1}}},
    "did_at_least_zero": {"did": {"event": "Charged", "count": {"op": ">=", "value": 0}}},
    "did_between": {"did": {"event": "Charged", "window": {"between": [
        "2023-11-01T00:00:00Z", NOW - 2 * DAY]}}},
    "did_first_days": {"did": {"event": "Charged",
                               "window": {"first_days_after_first_seen": 3}}},
    "did_unknown_event": {"did": {"event": "Never Happened"}},
    # did_not
    "did_not_window": {"did_not": {"event": "Charged", "window": {"last": {"hours": 12}}}},
    # aggregate
    "aggregate_sum": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "sum",
                                    "op": ">=", "value": 5000, "window": {"last": {"days": 90}}}},
    "aggregate_sum_at_most": {"aggregate": {"event": "Charged", "property": "Amount",
                                            "fn": "sum", "op": "<=", "value": 100}},
    "aggregate_avg": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "avg",
                                    "op": ">", "value": 600}},
    "aggregate_min": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "min",
                                    "op": "<", "value": 100}},
    "aggregate_max": {"aggregate": {"event": "Charged", "property": "Amount", "fn": "max",
                                    "op": "=", "value": 800,
                                    "where": [{"property": "Currency", "op": "eq",
                                               "value": "USD"}]}},
    "aggregate_count_distinct": {"aggregate": {"event": "Charged", "property": "Currency",
                                               "fn": "count_distinct", "op": "!=",
                                               "value": 1}},
    "aggregate_unknown_property": {"aggregate": {"event": "Charged", "property": "Nope",
                                                 "fn": "sum", "op": "<", "value": 1}},
    # first_time
    "first_time_last": {"first_time": {"event": "Charged", "window": {"last": {"days": 7}}}},
    "first_time_between": {"first_time": {"event": "App Launched", "window": {
        "between": [NOW - 55 * DAY, NOW - 40 * DAY]}}},
    "first_time_first_days": {"first_time": {
        "event": "Added To Cart", "window": {"first_days_after_first_seen": 1}}},
    # last_did
    "last_did_less_than": {"last_did": {"event": "Added To Cart", "less_than": {"hours": 8}}},
    "last_did_more_than": {"last_did": {"event": "Added To Cart", "more_than": {"hours": 8}}},
    # sequence
    "sequence_then_within": {"sequence": {"first": {"event": "Added To Cart"},
                                          "then": {"event": "Charged"},
                                          "within": {"hours": 2}}},
    "sequence_within_boundary": {"sequence": {"first": {"event": "Added To Cart"},
                                              "then": {"event": "Charged"},
                                              "within": {"hours": 1},
                                              "window": {"last": {"days": 2}}}},
    "sequence_abandoned": {"sequence": {
        "first": {"event": "Added To Cart"}, "then": {"event": "Charged"},
        "window": {"last": {"hours": 24}}, "then_happened": False}},
    "sequence_where_any_time": {"sequence": {
        "first": {"event": "App Launched", "where": [{"property": "Platform", "op": "eq",
                                                      "value": "ios"}]},
        "then": {"event": "Charged", "where": [{"property": "Currency", "op": "in",
                                                "value": ["EUR", "USD"]}]}}},
    # profile: one per operator and type
    "profile_string_eq": {"profile": {"property": "City", "op": "eq", "value": "Paris"}},
    "profile_string_neq": {"profile": {"property": "City", "op": "neq", "value": "Paris"}},
    "profile_string_in": {"profile": {"property": "City", "op": "in",
                                      "value": ["Paris", "Berlin"]}},
    "profile_string_not_in": {"profile": {"property": "City", "op": "not_in",
                                          "value": ["Paris"]}},
    "profile_string_contains": {"profile": {"property": "City", "op": "contains",
                                            "value": "ar"}},
    "profile_string_not_contains": {"profile": {"property": "City", "op": "not_contains",
                                                "value": "ar"}},
    "profile_string_starts_with": {"profile": {"property": "City", "op": "starts_with",
                                               "value": "Be"}},
    "profile_exists": {"profile": {"property": "City", "op": "exists"}},
    "profile_not_exists": {"profile": {"property": "City", "op": "not_exists"}},
    "profile_number_gt": {"profile": {"property": "Age", "op": "gt", "value": 30}},
    "profile_number_gte": {"profile": {"property": "Age", "op": "gte", "value": 34}},
    "profile_number_lt": {"profile": {"property": "Age", "op": "lt", "value": 34.5}},
    "profile_number_lte": {"profile": {"property": "Age", "op": "lte", "value": 34.5}},
    "profile_number_between": {"profile": {"property": "Age", "op": "between",
                                           "value": [19, 34]}},
    "profile_number_in": {"profile": {"property": "Age", "op": "in", "value": [19, 52]}},
    "profile_boolean_eq": {"profile": {"property": "VIP", "op": "eq", "value": True}},
    "profile_boolean_neq": {"profile": {"property": "VIP", "op": "neq", "value": True}},
    "profile_date_gt_iso": {"profile": {"property": "Signed Up", "op": "gt",
                                        "value": "2023-10-01T00:00:00Z"}},
    "profile_date_between": {"profile": {"property": "Signed Up", "op": "between",
                                         "value": [NOW - 50 * DAY, NOW - 40 * DAY]}},
    "profile_date_before_days_ago": {"profile": {"property": "Signed Up",
                                                 "op": "before_days_ago", "value": 30}},
    "profile_date_after_days_ago": {"profile": {"property": "Signed Up",
                                                "op": "after_days_ago", "value": 30}},
    "profile_date_within_next_days": {"profile": {"property": "Renewal",
                                                  "op": "within_next_days", "value": 7}},
    "profile_date_anniversary": {"profile": {"property": "Birthday",
                                             "op": "anniversary_within_days", "value": 7}},
    "profile_list_contains": {"profile": {"property": "Tags", "op": "contains",
                                          "value": "gold"}},
    "profile_list_eq_number": {"profile": {"property": "Tags", "op": "eq", "value": 5}},
    "profile_list_not_in": {"profile": {"property": "Tags", "op": "not_in",
                                        "value": ["gold", "silver"]}},
    "profile_list_eq_float": {"profile": {"property": "Tags", "op": "eq", "value": 5.0}},
    "profile_list_in": {"profile": {"property": "Tags", "op": "in", "value": ["silver", 5.0]}},
    "profile_list_not_contains": {"profile": {"property": "Tags", "op": "not_contains",
                                              "value": "gold"}},
    "profile_list_neq": {"profile": {"property": "Tags", "op": "neq", "value": "gold"}},
    "profile_system_email": {"profile": {"property": "$email", "op": "exists"}},
    "profile_system_total_events": {"profile": {"property": "$total_events", "op": "gte",
                                                "value": 5}},
    "profile_system_last_seen": {"profile": {"property": "$last_seen", "op": "lt",
                                             "value": NOW - 20 * H}},
    "profile_unknown_positive": {"profile": {"property": "Nope", "op": "eq", "value": 1}},
    "profile_unknown_negative": {"profile": {"property": "Nope", "op": "neq", "value": 1}},
    "event_boolean_and_platform": {"did": {"event": "App Launched", "where": [
        {"property": "Paid", "op": "neq", "value": True},
        {"property": "Platform", "op": "starts_with", "value": "and"}]}},
    "event_list_property": {"did": {"event": "Charged", "where": [
        {"property": "Items", "op": "contains", "value": "b"}]}},
    # reachability
    "reachable_email": {"reachable": {"channel": "email"}},
    "reachable_sms": {"reachable": {"channel": "sms"}},
    "reachable_whatsapp": {"reachable": {"channel": "whatsapp"}},
    "reachable_push": {"reachable": {"channel": "push"}},
    "reachable_webpush": {"reachable": {"channel": "webpush"}},
    # saved segment references
    "segment_member": {"segment": {"id": 1}},
    "segment_not_member": {"segment": {"id": 1, "member": False}},
    "segment_twice": {"or": [{"segment": {"id": 1}}, {"and": [{"segment": {"id": 2}},
                                                              {"segment": {"id": 1}}]}]},
    # boolean structure
    "and": {"and": [{"did": {"event": "Charged"}},
                    {"profile": {"property": "City", "op": "eq", "value": "Paris"}}]},
    "and_with_negated": {"and": [{"did": {"event": "Charged"}},
                                 {"did_not": {"event": "App Uninstalled"}}]},
    "and_only_negated": {"and": [{"not": {"did": {"event": "Charged"}}},
                                 {"did_not": {"event": "App Launched"}}]},
    "or": {"or": [{"did": {"event": "App Uninstalled"}},
                  {"profile": {"property": "Age", "op": "gt", "value": 50}}]},
    "or_with_negated": {"or": [{"profile": {"property": "City", "op": "eq", "value": "Paris"}},
                               {"not": {"reachable": {"channel": "email"}}}]},
    "not": {"not": {"did": {"event": "Charged", "window": W30}}},
    "canonical_a": {"and": [
        {"did": {"event": "Charged", "count": {"op": ">=", "value": 3}, "window": W30,
                 "where": [{"property": "Amount", "op": "gt", "value": 500}]}},
        {"profile": {"property": "City", "op": "eq", "value": "Paris"}},
        {"did_not": {"event": "App Uninstalled"}}]},
    "nested_three_levels": {"or": [
        {"and": [{"did": {"event": "Added To Cart", "window": {"last": {"hours": 24}}}},
                 {"not": {"or": [{"did": {"event": "Charged", "window": {"last": {"hours": 24}}}},
                                 {"profile": {"property": "VIP", "op": "eq", "value": True}}]}}]},
        {"first_time": {"event": "Charged", "window": {"last": {"days": 7}}}}]},
    # injection attempts: bound parameters, never SQL text
    "injection_event_name": {"did": {"event": EVIL, "where": [
        {"property": EVIL, "op": "eq", "value": EVIL}]}},
    "injection_unknown_names": {"did": {"event": "'; DROP TABLE events; --", "where": [
        {"property": "\" OR 1=1 --", "op": "neq", "value": "' OR '1'='1"}]}},
    "injection_profile_value": {"profile": {"property": "Plan", "op": "in",
                                            "value": [EVIL, "') OR true --"]}},
}
SAVED = {1: {"did": {"event": "Charged", "window": W30}},
         2: {"profile": {"property": "City", "op": "eq", "value": "Paris"}}}


def _records() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for key, props, email, phone, tokens, events in PEOPLE:
        data = dict(props)
        if email:
            data["Email"] = email
        if phone:
            data["Phone"] = phone
        items.append({"type": "profile", "identity": key, "profileData": data,
                      "msgId": f"{key}-p"})
        items += [{"type": "token", "identity": key, "tokenData": {"type": k, "id": f"{key}-{k}"},
                   "msgId": f"{key}-{k}"} for k in tokens]
        items += [{"type": "event", "identity": key, "evtName": name, "evtData": data, "ts": ts,
                   "msgId": f"{key}-e{i}"} for i, (name, ts, data) in enumerate(events)]
    return items


def _reference() -> Reference:
    people = [Person(k, p, e, ph, frozenset(t)) for k, p, e, ph, t, _ in PEOPLE]
    flat = [(k, name, ts, data) for k, *_, evs in PEOPLE for name, ts, data in evs]
    events = [Event(k, name, ts, seq, data) for seq, (k, name, ts, data) in enumerate(flat)]
    return Reference(people, events, NOW, saved=SAVED)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccountStore]:
    tmp = tmp_path_factory.mktemp("golden")
    s = AccountStore("golden", tmp / "events.duckdb", Settings(data_dir=tmp, duckdb_threads=1))
    recs, errors = parse_upload({"d": copy.deepcopy(_records())}, Limits())
    assert not errors, errors
    assert s.write(recs).errors == [None] * len(recs)
    try:
        yield s
    finally:
        s.close()


# -- snapshot files ------------------------------------------------------------------------
def _param_out(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return {"timestamp": v.isoformat()}
    return v


def _param_in(v: Any) -> Any:
    if isinstance(v, dict):
        return dt.datetime.fromisoformat(v["timestamp"])
    return v


def render(definition: Any, explanation: str, sql: str, params: list[Any]) -> str:
    return (f"-- definition: {json.dumps(definition, ensure_ascii=False)}\n"
            f"-- explanation: {explanation}\n"
            f"-- params: {json.dumps([_param_out(p) for p in params], ensure_ascii=False)}\n"
            f"{sql}\n")


def load(path: Path) -> tuple[str, list[Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    params = next(ln for ln in lines if ln.startswith("-- params: "))[len("-- params: "):]
    sql = "\n".join(ln for ln in lines if not ln.startswith("-- "))
    return sql, [_param_in(p) for p in json.loads(params)]


def _run(store: AccountStore, sql: str, params: list[Any]) -> set[str]:
    """Run a members query (with the referenced saved segments as tables) → identities."""
    engine = SegmentEngine(store)
    with store.cursor() as cur:
        for seg_id, d in SAVED.items():
            ref = engine.compiler(NOW).members(parse(d, NOW))
            cur.register(f"_segment_{seg_id}",
                         cur.execute(ref.text, ref.params).arrow().read_all())
        rows = cur.execute(f"SELECT p.identity FROM ({sql}) m JOIN profiles p USING (user_id)",
                           params).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sql_snapshot(case: str, store: AccountStore) -> None:
    definition = CASES[case]
    node = parse(definition, NOW)
    sql = SegmentEngine(store).sql(node, now=NOW)
    text = render(definition, explain(node), sql.text, sql.params)
    path = GOLDEN / f"{case}.sql"
    if UPDATE:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot {path.name}; run with NUDGE_UPDATE_GOLDEN=1"
    assert path.read_text(encoding="utf-8") == text
    # The snapshot's own SQL runs and returns exactly the documented members.
    snap_sql, snap_params = load(path)
    assert _run(store, snap_sql, snap_params) == _reference().members(definition)


def test_cases_cover_every_node_kind_and_operator() -> None:
    kinds: set[str] = set()
    ops: set[str] = set()

    def walk(d: Any) -> None:
        if isinstance(d, dict):
            kinds.update(k for k in d if k in _KINDS)
            if "op" in d and "property" in d:
                ops.add(d["op"])
            for v in d.values():
                walk(v)
        elif isinstance(d, list):
            for v in d:
                walk(v)

    walk(list(CASES.values()))
    assert kinds == set(_KINDS)
    assert ops >= set(FILTER_OPS)


def test_no_stale_snapshots() -> None:
    assert {p.stem for p in GOLDEN.glob("*.sql")} == set(CASES)


def test_injection_text_never_reaches_sql(store: AccountStore) -> None:
    """User text is bound, and property names become catalog column names (or constants)."""
    for case in ("injection_event_name", "injection_unknown_names", "injection_profile_value"):
        sql = SegmentEngine(store).sql(parse(CASES[case], NOW), now=NOW)
        for text in ("DROP", "OR 1=1", "'1'='1", "OR true"):
            assert text not in sql.text, (case, sql.text)
