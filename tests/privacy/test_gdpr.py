"""GDPR access, erasure and suppression against a real server (issue 6, item 5)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest

from conftest import NudgeServer, nudge_cli

NOW = int(time.time())
ALICE_EVENTS = 10_000


def post(srv: NudgeServer, path: str, body: object) -> httpx.Response:
    return httpx.post(srv.url + path, json=body, headers=srv.headers, timeout=120)


def ok(resp: httpx.Response) -> dict:  # type: ignore[type-arg]
    assert resp.status_code == 200, resp.text
    return resp.json()  # type: ignore[no-any-return]


def upload_ok(srv: NudgeServer, records: list[dict]) -> None:  # type: ignore[type-arg]
    for i in range(0, len(records), 1000):
        body = ok(srv.upload(records[i:i + 1000], timeout=120))
        assert body["unprocessed"] == [], body


def person(srv: NudgeServer, identity: str, email: str, phone: str, device: str, n: int,
           prefix: str) -> None:
    """A person first seen on a device (anonymous), who then logs in (the anonymous profile
    merges into theirs): n events in all."""
    upload_ok(srv, [{"type": "event", "objectId": device, "evtName": "App Launched",
                     "ts": NOW - 7200}])
    recs: list[dict] = [  # type: ignore[type-arg]
        {"type": "profile", "identity": identity,
         "profileData": {"Email": email, "Phone": phone, "Name": f"Name of {identity}",
                         "City": "Paris"}},
        {"type": "event", "identity": identity, "objectId": device, "evtName": "Login",
         "ts": NOW - 3700}]
    for i in range(n - 2):
        name = ("Product Viewed", "Added To Cart", "Charged")[i % 3]
        recs.append({"type": "event", "identity": identity, "evtName": name,
                     "ts": NOW - 3600 + i % 3000,
                     "evtData": {"item": f"{prefix}-item-{i % 50}", "Amount": i % 700}})
    upload_ok(srv, recs)


def control_rows(srv: NudgeServer, table: str, user_id: int) -> int:
    con = sqlite3.connect(srv.data_dir / "control.db")
    try:
        return int(con.execute(f"SELECT count(*) FROM {table} WHERE account_id = ? "  # noqa: S608
                               "AND user_id = ?", (srv.account_id, user_id)).fetchone()[0])
    finally:
        con.close()


def add_control_rows(srv: NudgeServer, user_id: int, tag: str) -> None:
    """A queued (not yet due) outbox message and an inbox entry for one person, written as
    the delivery service writes them."""
    con = sqlite3.connect(srv.data_dir / "control.db")
    try:
        con.execute(
            "INSERT INTO outbox (account_id, idem_key, occurrence, user_id, variant, channel, "
            "category, transactional, to_addr, content, status, attempts, next_attempt_at, "
            "created_at) VALUES (?, ?, 'o1', ?, 'a', 'email', 'general', 0, ?, '{}', "
            "'pending', 0, ?, ?)",
            (srv.account_id, f"{tag}-{uuid.uuid4().hex}", user_id, f"{tag}@example.com",
             time.time() + 86400, time.time()))
        con.execute(
            "INSERT INTO inbox_messages (account_id, user_id, message_id, meta, content, "
            "created_at) VALUES (?, ?, ?, '{}', ?, ?)",
            (srv.account_id, user_id, uuid.uuid4().hex[:20],
             json.dumps({"title": f"Hello {tag}"}), time.time()))
        # Journey state (an entry and a step taken), as the journey engine writes it.
        cur = con.execute(
            "INSERT INTO journey_entries (account_id, journey_id, version, user_id, entry_key, "
            "status, node, state, entered_at) VALUES (?, 1, 1, ?, ?, 'active', 'wait-1', "
            "'waiting', ?)", (srv.account_id, user_id, f"{tag}-{uuid.uuid4().hex}", time.time()))
        con.execute(
            "INSERT INTO journey_steps (account_id, journey_id, entry_id, user_id, node, "
            "step_key, at) VALUES (?, 1, ?, ?, 'start', ?, ?)",
            (srv.account_id, cur.lastrowid, user_id, uuid.uuid4().hex, time.time()))
        con.commit()
    finally:
        con.close()


@pytest.fixture
def populated(nudge_server: NudgeServer) -> NudgeServer:
    srv = nudge_server
    person(srv, "alice", "alice@example.com", "+33 6 11 22 33 44", "dev-alice", ALICE_EVENTS,
           "alice")
    person(srv, "bob", "bob@example.com", "+33 6 55 66 77 88", "dev-bob", 40, "bob")
    person(srv, "carol", "carol@example.com", "+1 212 555 0100", "dev-carol", 30, "carol")
    return srv


def profile(srv: NudgeServer, **q: str) -> httpx.Response:
    return httpx.get(srv.url + "/1/profile", params=q, headers=srv.headers)


def test_erasure_of_a_person_with_10000_events_leaves_nothing(populated: NudgeServer) -> None:
    srv = populated
    alice = ok(profile(srv, identity="alice"))["profile"]
    bob = ok(profile(srv, identity="bob"))["profile"]
    assert alice["total_events"] == ALICE_EVENTS
    add_control_rows(srv, alice["id"], "alice")
    add_control_rows(srv, bob["id"], "bob")
    seg = post(srv, "/1/segments", {"name": "Parisians who viewed", "definition": {
        "and": [{"did": {"event": "Product Viewed"}},
                {"profile": {"property": "City", "op": "eq", "value": "Paris"}}]}})
    assert seg.status_code == 201, seg.text
    sid = seg.json()["id"]
    funnel = {"steps": [{"event": "Product Viewed"}, {"event": "Charged"}],
              "window": {"days": 1}, "from": NOW - 86400, "to": NOW + 60,
              "step": 1, "status": "converted", "limit": 1000}

    def members() -> set[int]:
        r = httpx.get(f"{srv.url}/1/segments/{sid}/members", params={"limit": 1000},
                      headers=srv.headers)
        return {m["id"] for m in ok(r)["members"]}

    def exported() -> str:
        r = httpx.get(f"{srv.url}/1/segments/{sid}/export", headers=srv.headers)
        assert r.status_code == 200, r.text
        return r.text

    def funnel_users() -> set[int]:
        return {u["id"] for u in ok(post(srv, "/1/analytics/funnels/users", funnel))["users"]}

    assert alice["id"] in members() and alice["id"] in funnel_users()
    assert "alice@example.com" in exported()
    inbox = httpx.get(srv.url + "/1/inbox", params={"identity": "alice"}, headers=srv.headers)
    assert inbox.status_code == 200 and inbox.json()["messages"], inbox.text

    receipt = ok(post(srv, "/1/gdpr/erase", {"subjects": [{"email": "Alice@Example.com"}]}))
    assert receipt["people"] == [{"subject": 0, "found": True,
                                  "user_ids": sorted(receipt["people"][0]["user_ids"])}]
    assert alice["id"] in receipt["people"][0]["user_ids"]
    assert len(receipt["people"][0]["user_ids"]) == 2  # the device's anonymous profile too
    deleted = receipt["deleted"]
    assert deleted["events"] == ALICE_EVENTS
    assert deleted["profiles"] == 1
    assert deleted["identifiers"] == 4  # identity, email, phone, device id
    assert deleted["merges"] == 1 and deleted["outbox"] == 1 and deleted["inbox_messages"] == 1
    assert deleted["journey_entries"] == 1 and deleted["journey_steps"] == 1

    # Nothing about alice is visible any more, anywhere.
    for q in ({"identity": "alice"}, {"email": "alice@example.com"},
              {"phone": "+33 6 11 22 33 44"}, {"objectId": "dev-alice"}):
        assert profile(srv, **q).status_code == 404, q
    assert alice["id"] not in members() and bob["id"] in members()
    assert alice["id"] not in funnel_users() and bob["id"] in funnel_users()
    text = exported()
    assert "alice" not in text and "bob@example.com" in text
    rows = list(csv.reader(io.StringIO(text)))
    assert len(rows) - 1 == len(members())
    events = ok(httpx.get(srv.url + "/1/events/catalog", headers=srv.headers))["events"]
    total = sum(e["count"] for e in events)
    assert total == 40 + 30  # bob's and carol's
    inbox = httpx.get(srv.url + "/1/inbox", params={"identity": "alice"}, headers=srv.headers)
    assert inbox.status_code in (200, 404) and not inbox.json().get("messages"), inbox.text
    assert control_rows(srv, "outbox", alice["id"]) == 0
    assert control_rows(srv, "inbox_messages", alice["id"]) == 0
    assert control_rows(srv, "journey_entries", alice["id"]) == 0
    assert control_rows(srv, "journey_steps", alice["id"]) == 0
    assert control_rows(srv, "journey_entries", bob["id"]) == 1
    assert control_rows(srv, "outbox", bob["id"]) == 1  # others untouched
    access = ok(post(srv, "/1/gdpr/access", {"subjects": [{"identity": "alice"}]}))
    assert access["people"] == [{"subject": 0, "found": False}]

    # A later event from the same device starts a fresh anonymous profile.
    upload_ok(srv, [{"type": "event", "objectId": "dev-alice", "evtName": "App Launched",
                     "ts": NOW}])
    fresh = ok(profile(srv, objectId="dev-alice"))["profile"]
    assert fresh["id"] not in receipt["people"][0]["user_ids"]
    assert fresh["identity"] is None and fresh["email"] is None
    assert fresh["total_events"] == 1 and fresh["properties"] == {}

    # Erasure survives a restart (it was checkpointed, not only in memory).
    srv.stop()
    srv.start()
    assert profile(srv, identity="alice").status_code == 404
    assert ok(profile(srv, objectId="dev-alice"))["profile"]["id"] == fresh["id"]
    assert ok(profile(srv, identity="bob"))["profile"]["total_events"] == 40


def test_erasure_of_many_people_in_one_request(populated: NudgeServer) -> None:
    srv = populated
    ids = {n: ok(profile(srv, identity=n))["profile"]["id"] for n in ("bob", "carol")}
    receipt = ok(post(srv, "/1/gdpr/erase", {"subjects": [
        {"identity": "bob"}, {"phone": "+1 212 555 0100"}, {"email": "nobody@example.com"},
        {"user_id": 999_999}]}))
    assert [p["found"] for p in receipt["people"]] == [True, True, False, False]
    assert receipt["found"] == 2 and receipt["deleted"]["events"] == 70
    for n in ("bob", "carol"):
        assert profile(srv, identity=n).status_code == 404
    assert ok(profile(srv, identity="alice"))["profile"]["total_events"] == ALICE_EVENTS
    got = ok(httpx.get(f"{srv.url}/1/gdpr/requests/{receipt['request_id']}",
                       headers=srv.headers))
    assert got["action"] == "erase" and got["receipt"]["deleted"]["events"] == 70
    # The trail names people only by keyed hashes: no identifier is stored.
    con = sqlite3.connect(srv.data_dir / "control.db")
    try:
        trail = con.execute("SELECT subjects, receipt FROM gdpr_requests").fetchall()
        audit = con.execute("SELECT action, target, detail FROM audit_log "
                            "WHERE action LIKE 'gdpr.%'").fetchall()
    finally:
        con.close()
    assert len(trail) == 1 and "bob" not in str(trail) and "212" not in str(trail)
    assert [a[0] for a in audit] == ["gdpr.erase"]
    assert ids["bob"] in got["receipt"]["people"][0]["user_ids"]
    # Another account cannot read the receipt, nor learn that it exists.
    other = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "other", "--json"))
    r = httpx.get(f"{srv.url}/1/gdpr/requests/{receipt['request_id']}",
                  headers={"X-Nudge-Account-Id": other["id"],
                           "X-Nudge-Passcode": other["passcode"]})
    assert r.status_code == 404
    r = httpx.post(srv.url + "/1/gdpr/access", json={"subjects": [{"identity": "alice"}]},
                   headers={"X-Nudge-Account-Id": other["id"],
                            "X-Nudge-Passcode": other["passcode"]})
    assert r.status_code == 200 and r.json()["people"] == [{"subject": 0, "found": False}]


def test_access_exports_everything_about_one_person(populated: NudgeServer) -> None:
    srv = populated
    bob = ok(profile(srv, identity="bob"))["profile"]
    add_control_rows(srv, bob["id"], "bob")
    r = post(srv, "/1/segments", {"name": "launchers",
                                  "definition": {"did": {"event": "App Launched"}}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    out = ok(post(srv, "/1/gdpr/access", {"subjects": [{"phone": "+33655667788"}]}))
    (p,) = out["people"]
    assert p["found"] and p["user_id"] == bob["id"]
    assert p["profile"]["properties"]["Name"] == "Name of bob"
    assert {(i["kind"], i["value"]) for i in p["identifiers"]} == {
        ("identity", "bob"), ("email", "bob@example.com"), ("phone", "+33655667788"),
        ("object_id", "dev-bob")}
    assert len(p["events"]) == 40
    assert {e["evtData"].get("item") for e in p["events"]} >= {"bob-item-0", "bob-item-1"}
    assert p["segments"] == [{"id": sid, "name": "launchers"}]
    assert p["consent"]["suppressed"] is False
    assert [m["to_addr"] for m in p["outbox"]] == ["bob@example.com"]
    assert len(p["inbox_messages"]) == 1 and len(p["merged_ids"]) == 1
    assert [e["node"] for e in p["journey_entries"]] == ["wait-1"]
    assert len(p["journey_steps"]) == 1
    # The export is not kept; only the receipt.
    got = ok(httpx.get(f"{srv.url}/1/gdpr/requests/{out['request_id']}", headers=srv.headers))
    assert got["receipt"]["people"][0]["events"] == 40
    assert "bob" not in json.dumps(got)


def test_suppression_drops_events_and_can_be_lifted(populated: NudgeServer) -> None:
    srv = populated
    before = ok(profile(srv, identity="carol"))["profile"]["total_events"]
    r = ok(post(srv, "/1/gdpr/suppress", {"subjects": [{"identity": "carol"}]}))
    assert r["changed"] == 1
    assert ok(post(srv, "/1/gdpr/suppress", {"subjects": [{"identity": "carol"}]}))["changed"] == 0
    during = [{"type": "event", "identity": "carol", "evtName": "Charged", "ts": NOW,
               "evtData": {"n": i}} for i in range(5)]
    during.append({"type": "event", "objectId": "dev-carol", "evtName": "App Launched",
                   "ts": NOW})
    upload_ok(srv, during)
    upload_ok(srv, [{"type": "event", "identity": "bob", "evtName": "Charged", "ts": NOW}])
    p = ok(profile(srv, identity="carol"))["profile"]
    assert p["total_events"] == before  # kept, but nothing new processed
    access = ok(post(srv, "/1/gdpr/access", {"subjects": [{"identity": "carol"}]}))
    assert access["people"][0]["consent"]["suppressed"] is True
    assert ok(profile(srv, identity="bob"))["profile"]["total_events"] == 41
    # Survives a restart.
    srv.stop()
    srv.start()
    upload_ok(srv, [{"type": "event", "identity": "carol", "evtName": "Charged", "ts": NOW,
                     "evtData": {"n": 99}}])
    assert ok(profile(srv, identity="carol"))["profile"]["total_events"] == before
    # Lifted: events count again.
    assert ok(post(srv, "/1/gdpr/unsuppress", {"subjects": [{"identity": "carol"}]}))[
        "changed"] == 1
    upload_ok(srv, [{"type": "event", "identity": "carol", "evtName": "Charged", "ts": NOW,
                     "evtData": {"n": 100}}])
    assert ok(profile(srv, identity="carol"))["profile"]["total_events"] == before + 1


@pytest.mark.parametrize("body, field", [
    ({}, "subjects"),
    ({"subjects": []}, "subjects"),
    ({"subjects": "alice"}, "subjects"),
    ({"subjects": [{"name": "alice"}]}, "subjects[0]"),
    ({"subjects": [{"identity": "a", "email": "a@b.c"}]}, "subjects[0]"),
    ({"subjects": [{"identity": "a"}, {"email": "not-an-email"}]}, "subjects[1].email"),
    ({"subjects": [{"user_id": "7"}]}, "subjects[0].user_id"),
    ({"subjects": [{"identity": "a"}], "force": True}, "force"),
    ({"subjects": [{"identity": "x"}] * 1001}, "subjects"),
])
def test_bad_requests_are_refused_and_change_nothing(shared_server: NudgeServer,
                                                     body: dict, field: str) -> None:  # type: ignore[type-arg]
    srv = shared_server
    upload_ok(srv, [{"type": "event", "identity": "a", "evtName": "E", "ts": NOW,
                     "msgId": "bad-request-probe"}])
    r = post(srv, "/1/gdpr/erase", body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field
    assert ok(profile(srv, identity="a"))["profile"]["total_events"] == 1


def test_cli_erases_while_the_server_runs(populated: NudgeServer) -> None:
    srv = populated
    out = json.loads(nudge_cli(srv.data_dir, "gdpr", "erase", "--account", srv.account_id,
                               "--identity", "bob", "--email", "carol@example.com"))
    assert out["found"] == 2 and out["deleted"]["events"] == 70
    assert profile(srv, identity="bob").status_code == 404
    out = json.loads(nudge_cli(srv.data_dir, "gdpr", "access", "--account", srv.account_id,
                               "--identity", "alice"))
    assert out["people"][0]["found"] and len(out["people"][0]["events"]) == ALICE_EVENTS


def test_cli_works_with_the_server_stopped(tmp_path: Path) -> None:
    from conftest import make_server

    srv = make_server(tmp_path)
    try:
        person(srv, "dave", "dave@example.com", "+44 20 7946 0000", "dev-dave", 5, "dave")
    finally:
        srv.stop()
    out = json.loads(nudge_cli(tmp_path, "gdpr", "suppress", "--account", srv.account_id,
                               "--identity", "dave"))
    assert out["changed"] == 1
    srv.start()
    try:
        upload_ok(srv, [{"type": "event", "identity": "dave", "evtName": "E", "ts": NOW}])
        assert ok(profile(srv, identity="dave"))["profile"]["total_events"] == 5
    finally:
        srv.stop()
