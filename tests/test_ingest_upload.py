"""The native upload API ``POST /1/upload``: records land, are readable, and are deduplicated.

Everything goes through HTTP against a real server; reads use GET /1/profile,
GET /1/profile/events and GET /1/events/catalog.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import NudgeServer, make_server

# -- helpers ------------------------------------------------------------------------------


def new_id(prefix: str = "u") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def upload(srv: NudgeServer, records: list[dict[str, Any]]) -> dict[str, Any]:
    r = srv.upload(records)
    assert r.status_code == 200, r.text
    return r.json()


def profile(srv: NudgeServer, **query: str) -> dict[str, Any] | None:
    r = httpx.get(srv.url + "/1/profile", params=query, headers=srv.headers)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()["profile"]


def timeline(srv: NudgeServer, **query: Any) -> dict[str, Any]:
    r = httpx.get(srv.url + "/1/profile/events", params=query, headers=srv.headers)
    assert r.status_code == 200, r.text
    return r.json()


def all_events(srv: NudgeServer, **query: Any) -> list[dict[str, Any]]:
    return timeline(srv, limit=1000, **query)["events"]


def catalog(srv: NudgeServer) -> dict[str, dict[str, Any]]:
    r = httpx.get(srv.url + "/1/events/catalog", headers=srv.headers)
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()["events"]}


# -- events and the response shape ----------------------------------------------------------


def test_event_lands_with_typed_properties(shared_server: NudgeServer) -> None:
    who, name = new_id(), new_id("Purchased")
    props = {"Amount": 10.5, "Qty": 3, "Paid": True, "Currency": "EUR", "Items": ["a", "b"],
             "When": "$D_1700000000", "Meta": {"src": {"x": 1}}}
    out = upload(shared_server, [{"type": "event", "identity": who, "ts": 1_700_000_100,
                                  "evtName": name, "evtData": props}])
    assert out == {"status": "success", "processed": 1, "unprocessed": []}

    [ev] = all_events(shared_server, identity=who)
    assert ev["evtName"] == name
    assert ev["ts"] == 1_700_000_100
    assert ev["evtData"] == props

    entry = catalog(shared_server)[name]
    assert entry["count"] == 1
    types = {p["name"]: p["type"] for p in entry["properties"]}
    assert types == {"Amount": "number", "Qty": "number", "Paid": "boolean",
                     "Currency": "string", "Items": "list", "When": "date", "Meta": "object"}
    p = profile(shared_server, identity=who)
    assert p is not None and p["event_counts"] == {name: 1} and p["total_events"] == 1


@pytest.mark.parametrize(("batch", "status", "processed", "bad"), [
    ([True, True], "success", 2, []),
    ([True, False, True, False], "partial", 2, [1, 3]),
    ([False, False], "fail", 0, [0, 1]),
], ids=["success", "partial", "fail"])
def test_response_shape(shared_server: NudgeServer, batch: list[bool], status: str,
                        processed: int, bad: list[int]) -> None:
    who, name = new_id(), new_id("Shape")
    records = [{"type": "event", "identity": who, "evtName": name, "evtData": {"i": i}}
               if good else {"type": "event", "identity": who, "evtName": "x" * 121}
               for i, good in enumerate(batch)]
    out = upload(shared_server, records)
    assert out["status"] == status
    assert out["processed"] == processed
    assert [e["index"] for e in out["unprocessed"]] == bad
    for e in out["unprocessed"]:
        assert set(e) == {"index", "code", "error"}
        assert e["code"] == 511 and "evtName" in e["error"]
    stored = all_events(shared_server, identity=who) if processed else []
    assert sorted(ev["evtData"]["i"] for ev in stored) == [i for i, g in enumerate(batch) if g]


def test_ts_defaults_to_now(shared_server: NudgeServer) -> None:
    who = new_id()
    before = time.time()
    upload(shared_server, [{"type": "event", "identity": who, "evtName": "NoTs"}])
    after = time.time()
    [ev] = all_events(shared_server, identity=who)
    assert int(before) - 1 <= ev["ts"] <= after + 1


def test_fractional_ts_kept(shared_server: NudgeServer) -> None:
    who = new_id()
    upload(shared_server, [{"type": "event", "identity": who, "evtName": "Frac",
                            "ts": 1_700_000_000.25}])
    [ev] = all_events(shared_server, identity=who)
    assert ev["ts"] == 1_700_000_000
    assert ev["time"] == "2023-11-14T22:13:20.250000Z"


@pytest.mark.parametrize("date", ["$D_1700000000", "$D_0", "$D_-86400", "$D_4102444800"])
def test_dates_round_trip(shared_server: NudgeServer, date: str) -> None:
    who = new_id()
    upload(shared_server, [
        {"type": "event", "identity": who, "evtName": "Dated", "evtData": {"At": date}},
        {"type": "profile", "identity": who, "profileData": {"Birthday": date}},
    ])
    [ev] = all_events(shared_server, identity=who)
    assert ev["evtData"]["At"] == date
    p = profile(shared_server, identity=who)
    assert p is not None and p["properties"]["Birthday"] == date


# -- profiles ----------------------------------------------------------------------------------

MISSING = object()

# (initial value or MISSING, the operation's wire value, expected value or MISSING)
PROFILE_OPS = [
    ("set", "a", "b", "b"),
    ("set-new", MISSING, 7, 7),
    ("set-null-removes", "a", None, MISSING),
    ("$set", "a", {"$set": "b"}, "b"),
    ("$setOnce-keeps", "a", {"$setOnce": "b"}, "a"),
    ("$setOnce-new", MISSING, {"$setOnce": "b"}, "b"),
    ("$set_once-keeps", "a", {"$set_once": "b"}, "a"),
    ("$set_once-new", MISSING, {"$set_once": "b"}, "b"),
    ("$unset", "a", {"$unset": 1}, MISSING),
    ("$delete", "a", {"$delete": 1}, MISSING),
    ("$incr", 10, {"$incr": 5}, 15),
    ("$incr-float", 10, {"$incr": 0.5}, 10.5),
    ("$incr-new", MISSING, {"$incr": 2}, 2),
    ("$decr", 10, {"$decr": 3}, 7),
    ("$add", ["a", "b"], {"$add": ["c"]}, ["a", "b", "c"]),
    ("$add-no-dup", ["a", "b"], {"$add": ["b", "c"]}, ["a", "b", "c"]),
    ("$add-scalar", MISSING, {"$add": "x"}, ["x"]),
    ("$add-number", ["a"], {"$add": [5]}, ["a", "5"]),
    ("$remove", ["a", "b", "c"], {"$remove": ["a", "c"]}, ["b"]),
    ("$remove-all", ["a"], {"$remove": "a"}, MISSING),
    ("$remove-absent", ["a"], {"$remove": ["zz"]}, ["a"]),
]


@pytest.mark.parametrize(("initial", "op", "expected"),
                         [c[1:] for c in PROFILE_OPS], ids=[c[0] for c in PROFILE_OPS])
def test_profile_operations(shared_server: NudgeServer, initial: Any, op: Any,
                            expected: Any) -> None:
    who = new_id()
    base = {"Other": "kept"}
    if initial is not MISSING:
        base["P"] = initial
    upload(shared_server, [{"type": "profile", "identity": who, "profileData": base}])
    out = upload(shared_server, [{"type": "profile", "identity": who,
                                  "profileData": {"P": op}}])
    assert out["status"] == "success", out
    props = profile(shared_server, identity=who)["properties"]  # type: ignore[index]
    assert props["Other"] == "kept"
    if expected is MISSING:
        assert "P" not in props
    else:
        assert props["P"] == expected


def test_profile_ops_apply_in_order_within_one_request(shared_server: NudgeServer) -> None:
    who = new_id()
    upload(shared_server, [
        {"type": "profile", "identity": who, "profileData": {"N": 1, "Tags": {"$add": ["a"]}}},
        {"type": "profile", "identity": who, "profileData": {"N": {"$incr": 1}}},
        {"type": "profile", "identity": who, "profileData": {"N": {"$incr": 1},
                                                             "Tags": {"$add": ["b"]}}},
    ])
    props = profile(shared_server, identity=who)["properties"]  # type: ignore[index]
    assert props["N"] == 3 and props["Tags"] == ["a", "b"]


@pytest.mark.parametrize("op", [{"$incr": "1"}, {"$incr": True}, {"$add": [{"x": 1}]},
                                {"$add": [True]}], ids=str)
def test_bad_profile_operation_is_rejected(shared_server: NudgeServer, op: Any) -> None:
    who = new_id()
    out = upload(shared_server, [{"type": "profile", "identity": who,
                                  "profileData": {"P": op}}])
    assert out["status"] == "fail" and out["unprocessed"][0]["code"] == 512
    assert profile(shared_server, identity=who) is None


def test_profile_identifier_properties_become_identifiers(shared_server: NudgeServer) -> None:
    who = new_id()
    email, phone = f"{who}@Example.COM", "+1 (555) 010-" + str(uuid.uuid4().int % 10_000)
    upload(shared_server, [{"type": "profile", "identity": who,
                            "profileData": {"Email": email, "Phone": phone, "Name": "Ann"}}])
    by_email = profile(shared_server, email=email.lower())
    assert by_email is not None and by_email["identity"] == who
    assert by_email["email"] == email.lower()
    assert by_email["properties"] == {"Name": "Ann"}
    by_phone = profile(shared_server, phone=phone)
    assert by_phone is not None and by_phone["id"] == by_email["id"]
    assert by_email["reachability"]["email"] is True
    assert by_email["reachability"]["sms"] is True


@pytest.mark.parametrize("kind", ["fcm", "apns"])
def test_token_record_makes_push_reachable(shared_server: NudgeServer, kind: str) -> None:
    who, tok = new_id(), new_id("tok")
    upload(shared_server, [{"type": "profile", "identity": who, "profileData": {"Name": "x"}}])
    assert profile(shared_server, identity=who)["reachability"]["push"] is False  # type: ignore[index]
    out = upload(shared_server, [{"type": "token", "identity": who,
                                  "tokenData": {"type": kind, "id": tok}}])
    assert out["status"] == "success"
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["push_tokens"] == [{"type": kind, "id": tok}]
    assert p["reachability"]["push"] is True


def test_token_record_with_unknown_provider_is_rejected(shared_server: NudgeServer) -> None:
    who = new_id()
    out = upload(shared_server, [{"type": "token", "identity": who,
                                  "tokenData": {"type": "carrier-pigeon", "id": "t"}}])
    [err] = out["unprocessed"]
    assert err["code"] == 510 and "tokenData.type" in err["error"]
    assert profile(shared_server, identity=who) is None


@pytest.mark.parametrize(("channel", "prop", "ids"), [
    ("email", "MSG-email", {"Email": "{who}@example.com"}),
    ("sms", "MSG-sms", {"Phone": "+15550100123"}),
    ("push", "MSG-push", {}),
])
def test_msg_opt_out_makes_channel_unreachable(shared_server: NudgeServer, channel: str,
                                               prop: str, ids: dict[str, str]) -> None:
    who = new_id()
    data = {k: v.format(who=who) for k, v in ids.items()}
    records: list[dict[str, Any]] = [{"type": "profile", "identity": who, "profileData": data}]
    if channel == "push":
        records.append({"type": "token", "identity": who,
                        "tokenData": {"type": "fcm", "id": new_id("tok")}})
    upload(shared_server, records)
    assert profile(shared_server, identity=who)["reachability"][channel] is True  # type: ignore[index]
    upload(shared_server, [{"type": "profile", "identity": who, "profileData": {prop: False}}])
    p = profile(shared_server, identity=who)
    assert p is not None and p["reachability"][channel] is False
    upload(shared_server, [{"type": "profile", "identity": who, "profileData": {prop: True}}])
    assert profile(shared_server, identity=who)["reachability"][channel] is True  # type: ignore[index]


def test_anonymous_device_merges_into_identified_profile(shared_server: NudgeServer) -> None:
    device, who = new_id("dev"), new_id()
    upload(shared_server, [{"type": "event", "objectId": device, "evtName": "Opened"},
                           {"type": "profile", "objectId": device,
                            "profileData": {"Theme": "dark"}}])
    upload(shared_server, [{"type": "profile", "identity": who, "objectId": device,
                            "profileData": {"Name": "Ann"}}])
    p = profile(shared_server, identity=who)
    assert p is not None
    assert p["properties"] == {"Theme": "dark", "Name": "Ann"}
    assert p["event_counts"] == {"Opened": 1}
    assert profile(shared_server, objectId=device)["id"] == p["id"]  # type: ignore[index]


def test_record_merging_two_identified_profiles_is_rejected(shared_server: NudgeServer) -> None:
    a, b = new_id(), new_id()
    upload(shared_server, [{"type": "profile", "identity": a, "email": f"{a}@x.io",
                            "profileData": {"N": 1}},
                           {"type": "profile", "identity": b, "profileData": {"N": 2}}])
    name = new_id("Conflict")
    out = upload(shared_server, [{"type": "event", "identity": b, "email": f"{a}@x.io",
                                  "evtName": name},
                                 {"type": "event", "identity": b, "evtName": "Fine"}])
    assert out["status"] == "partial"
    assert out["unprocessed"] == [{"index": 0, "code": 520,
                                   "error": out["unprocessed"][0]["error"]}]
    assert "/1/profiles/merge" in out["unprocessed"][0]["error"]
    assert name not in catalog(shared_server)
    assert profile(shared_server, identity=a)["properties"] == {"N": 1}  # type: ignore[index]
    assert profile(shared_server, email=f"{a}@x.io")["identity"] == a  # type: ignore[index]
    assert [e["evtName"] for e in all_events(shared_server, identity=b)] == ["Fine"]


# -- encodings and headers ----------------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "compress"), [
    ("gzip", gzip.compress),
    ("x-gzip", gzip.compress),
    ("deflate", zlib.compress),
])
def test_compressed_body_accepted(shared_server: NudgeServer, encoding: str, compress: Any) -> None:
    who = new_id()
    body = json.dumps({"d": [{"type": "event", "identity": who, "evtName": "Zipped",
                              "evtData": {"pad": "x" * 400}}] * 1}).encode()
    r = httpx.post(shared_server.url + "/1/upload", content=compress(body),
                   headers={**shared_server.headers, "Content-Encoding": encoding,
                            "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["processed"] == 1
    [ev] = all_events(shared_server, identity=who)
    assert ev["evtData"] == {"pad": "x" * 400}


def test_clevertap_headers_accepted(shared_server: NudgeServer) -> None:
    who = new_id()
    r = httpx.post(shared_server.url + "/1/upload",
                   json={"d": [{"type": "event", "identity": who, "evtName": "CT"}]},
                   headers={"X-CleverTap-Account-Id": shared_server.account_id,
                            "X-CleverTap-Passcode": shared_server.passcode})
    assert r.status_code == 200 and r.json()["processed"] == 1
    r = httpx.get(shared_server.url + "/1/profile", params={"identity": who},
                  headers={"X-CleverTap-Account-Id": shared_server.account_id,
                           "X-CleverTap-Passcode": shared_server.passcode})
    assert r.status_code == 200 and r.json()["profile"]["event_counts"] == {"CT": 1}


# -- deduplication -----------------------------------------------------------------------------


def test_same_msg_id_in_one_request_stored_once(shared_server: NudgeServer) -> None:
    who, name, mid = new_id(), new_id("Dup"), new_id("m")
    out = upload(shared_server, [
        {"type": "event", "identity": who, "evtName": name, "msgId": mid, "evtData": {"v": 1}},
        {"type": "event", "identity": who, "evtName": name, "msgId": mid, "evtData": {"v": 2}},
    ])
    assert out["status"] == "success" and out["processed"] == 2  # duplicates are accepted
    evs = all_events(shared_server, identity=who)
    assert [(e["msgId"], e["evtData"]) for e in evs] == [(mid, {"v": 1})]
    assert catalog(shared_server)[name]["count"] == 1


def test_same_msg_id_in_two_requests_stored_once(shared_server: NudgeServer) -> None:
    who, name, mid = new_id(), new_id("Dup"), new_id("m")
    rec = {"type": "event", "identity": who, "evtName": name, "msgId": mid}
    assert upload(shared_server, [rec])["status"] == "success"
    assert upload(shared_server, [{**rec, "evtData": {"retry": True}}])["status"] == "success"
    evs = all_events(shared_server, identity=who)
    assert len(evs) == 1 and evs[0]["evtData"] == {}
    assert catalog(shared_server)[name]["count"] == 1
    assert profile(shared_server, identity=who)["total_events"] == 1  # type: ignore[index]


def test_profile_record_msg_id_deduplicated(shared_server: NudgeServer) -> None:
    who, mid = new_id(), new_id("m")
    rec = {"type": "profile", "identity": who, "msgId": mid, "profileData": {"N": {"$incr": 1}}}
    upload(shared_server, [rec, rec])
    upload(shared_server, [rec])
    assert profile(shared_server, identity=who)["properties"]["N"] == 1  # type: ignore[index]


def test_record_without_msg_id_sent_twice_stored_once(shared_server: NudgeServer) -> None:
    who, name = new_id(), new_id("Derived")
    rec = {"type": "event", "identity": who, "evtName": name, "ts": 1_700_000_000,
           "evtData": {"a": 1, "b": [1, 2]}}
    upload(shared_server, [rec])
    upload(shared_server, [dict(reversed(list(rec.items())))])  # key order does not matter
    evs = all_events(shared_server, identity=who)
    assert len(evs) == 1
    assert len(evs[0]["msgId"]) == 32  # derived from content
    # A different payload is a different record.
    upload(shared_server, [{**rec, "evtData": {"a": 2, "b": [1, 2]}}])
    upload(shared_server, [{**rec, "ts": 1_700_000_001}])
    assert len(all_events(shared_server, identity=who)) == 3
    assert catalog(shared_server)[name]["count"] == 3


def test_dedup_survives_restart(nudge_server: NudgeServer) -> None:
    who = new_id()
    event = {"type": "event", "identity": who, "evtName": "Once", "msgId": "ev-1"}
    incr = {"type": "profile", "identity": who, "msgId": "pr-1",
            "profileData": {"N": {"$incr": 1}}}
    token = {"type": "token", "identity": who, "msgId": "tk-1",
             "tokenData": {"type": "fcm", "id": "tok-1"}}
    upload(nudge_server, [event, incr, token])
    nudge_server.stop()
    nudge_server.start()
    out = upload(nudge_server, [event, incr, token])
    assert out["status"] == "success"
    p = profile(nudge_server, identity=who)
    assert p is not None
    assert p["properties"]["N"] == 1
    assert p["event_counts"] == {"Once": 1}
    assert len(all_events(nudge_server, identity=who)) == 1


# -- the timeline --------------------------------------------------------------------------------

BASE = 1_700_000_000


def _seed_timeline(srv: NudgeServer, who: str, n: int = 25) -> None:
    records = [{"type": "event", "identity": who, "evtName": "Tick" if i % 2 else "Tock",
                "ts": BASE + i * 60, "evtData": {"i": i}} for i in range(n)]
    assert upload(srv, records)["processed"] == n


def test_timeline_pages_newest_first(shared_server: NudgeServer) -> None:
    who = new_id()
    _seed_timeline(shared_server, who)
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        q: dict[str, Any] = {"identity": who, "limit": 10}
        if cursor:
            q["cursor"] = cursor
        page = timeline(shared_server, **q)
        pages += 1
        assert len(page["events"]) <= 10
        seen += [e["evtData"]["i"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(range(24, -1, -1))


def test_timeline_pages_through_equal_timestamps(shared_server: NudgeServer) -> None:
    who = new_id()
    upload(shared_server, [{"type": "event", "identity": who, "evtName": "Same", "ts": BASE,
                            "evtData": {"i": i}} for i in range(7)])
    seen: list[int] = []
    cursor = None
    for _ in range(10):
        extra = {"cursor": cursor} if cursor else {}
        page = timeline(shared_server, identity=who, limit=3, **extra)
        seen += [e["evtData"]["i"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == list(range(7))


@pytest.mark.parametrize(("query", "expected"), [
    ({"from": BASE + 10 * 60}, list(range(24, 9, -1))),
    ({"to": BASE + 3 * 60}, [2, 1, 0]),  # ``to`` is exclusive
    ({"from": BASE + 5 * 60, "to": BASE + 8 * 60}, [7, 6, 5]),  # ``from`` is inclusive
    ({"from": BASE + 5 * 60 + 1, "to": BASE + 8 * 60}, [7, 6]),
    ({"from": BASE + 100 * 60}, []),
    ({"event": "Tick", "to": BASE + 6 * 60}, [5, 3, 1]),
])
def test_timeline_time_filters(shared_server: NudgeServer, query: dict[str, Any],
                               expected: list[int]) -> None:
    who = new_id()
    _seed_timeline(shared_server, who)
    evs = all_events(shared_server, identity=who, **query)
    assert [e["evtData"]["i"] for e in evs] == expected


def test_timeline_filter_and_paging_combined(shared_server: NudgeServer) -> None:
    who = new_id()
    _seed_timeline(shared_server, who)
    first = timeline(shared_server, identity=who, limit=4, **{"from": BASE + 10 * 60})
    assert [e["evtData"]["i"] for e in first["events"]] == [24, 23, 22, 21]
    second = timeline(shared_server, identity=who, limit=4, cursor=first["next_cursor"],
                      **{"from": BASE + 10 * 60})
    assert [e["evtData"]["i"] for e in second["events"]] == [20, 19, 18, 17]


def test_timeline_time_filter_independent_of_host_timezone(tmp_path: Path) -> None:
    # Timestamps are UTC; a server on a host in another zone must filter the same way.
    srv = make_server(tmp_path, {"TZ": "America/New_York"})
    try:
        who = new_id()
        _seed_timeline(srv, who, 10)
        evs = all_events(srv, identity=who, **{"from": BASE + 3 * 60, "to": BASE + 6 * 60})
        assert [e["evtData"]["i"] for e in evs] == [5, 4, 3]
    finally:
        srv.stop()


@pytest.mark.parametrize(("query", "status"), [
    ({"limit": 0}, 400), ({"limit": 1001}, 400), ({"limit": "x"}, 400),
    ({"from": "yesterday"}, 400), ({"cursor": "garbage"}, 400),
])
def test_timeline_bad_query(shared_server: NudgeServer, query: dict[str, Any],
                            status: int) -> None:
    who = new_id()
    upload(shared_server, [{"type": "event", "identity": who, "evtName": "E"}])
    r = httpx.get(shared_server.url + "/1/profile/events", params={"identity": who, **query},
                  headers=shared_server.headers)
    assert r.status_code == status
    assert r.json()["status"] == "fail"


def test_unknown_profile_is_404(shared_server: NudgeServer) -> None:
    for path in ("/1/profile", "/1/profile/events"):
        r = httpx.get(shared_server.url + path, params={"identity": new_id()},
                      headers=shared_server.headers)
        assert r.status_code == 404 and r.json()["error"] == "not_found"
