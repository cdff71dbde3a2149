"""Identity resolution and merges, end to end over HTTP against a real server.

The rules under test are described in docs/concepts/identity.md (and implemented in
nudge/ingest/identity.py): logins merge anonymous profiles into identified ones, two
identified profiles are never merged implicitly (code 520), shared devices move, and
explicit merges (Segment ``alias``, ``POST /1/profiles/merge``) re-point everything.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import NudgeServer, make_server
from nudge.privacy.storage import open_account_file

NOW = int(time.time())


def uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def event(ids: dict[str, str], name: str = "Viewed", *, ts: int | None = None,
          msg_id: str | None = None, **data: object) -> dict:
    rec: dict = {"type": "event", **ids, "evtName": name, "evtData": data,
                 "ts": NOW - 3600 if ts is None else ts}
    rec["msgId"] = msg_id or uniq("m")
    return rec


def profile(ids: dict[str, str], **data: object) -> dict:
    return {"type": "profile", **ids, "profileData": data, "msgId": uniq("p")}


def upload_ok(srv: NudgeServer, records: list[dict]) -> dict:
    r = srv.upload(records)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    assert body["processed"] == len(records)
    return body


def get_profile(srv: NudgeServer, **lookup: str) -> dict:
    r = httpx.get(srv.url + "/1/profile", params=lookup, headers=srv.headers)
    assert r.status_code == 200, (lookup, r.text)
    return r.json()["profile"]


def profile_status(srv: NudgeServer, **lookup: str) -> int:
    return httpx.get(srv.url + "/1/profile", params=lookup, headers=srv.headers).status_code


def timeline_ids(srv: NudgeServer, **lookup: str) -> Counter[str]:
    """Every msgId on a person's timeline (all pages), counted."""
    out: Counter[str] = Counter()
    cursor = None
    while True:
        params = {**lookup, "limit": "7"}  # small pages: exercise the cursor too
        if cursor:
            params["cursor"] = cursor
        r = httpx.get(srv.url + "/1/profile/events", params=params, headers=srv.headers)
        assert r.status_code == 200, r.text
        body = r.json()
        out.update(e["msgId"] for e in body["events"])
        cursor = body["next_cursor"]
        if not cursor:
            return out


def merge(srv: NudgeServer, src: dict[str, str], dst: dict[str, str]) -> httpx.Response:
    return httpx.post(srv.url + "/1/profiles/merge", json={"from": src, "into": dst},
                      headers=srv.headers)


def segment(srv: NudgeServer, call: str, body: dict) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/{call}", json=body, auth=(srv.write_key, ""))


# -- login: anonymous -> identified ---------------------------------------------------------

def test_login_merges_anonymous_device_into_existing_identity(shared_server: NudgeServer) -> None:
    srv = shared_server
    user, device = uniq("u"), uniq("dev")
    # The identified profile exists first, with properties and one (old) event.
    known = [profile({"identity": user}, Name="Known Name", Plan="gold"),
             event({"identity": user}, "Purchased", ts=NOW - 7200, amount=10)]
    upload_ok(srv, known)
    # An anonymous device browses: events and properties of its own, one conflicting.
    anon = [profile({"objectId": device}, Name="Anon Name", Color="red"),
            event({"objectId": device}, "Viewed", ts=NOW - 9000, page="/a"),
            event({"objectId": device}, "Viewed", ts=NOW - 8000, page="/b")]
    upload_ok(srv, anon)
    anon_id = get_profile(srv, objectId=device)["id"]
    user_id = get_profile(srv, identity=user)["id"]
    assert anon_id != user_id

    login = event({"identity": user, "objectId": device}, "Logged In", ts=NOW - 600)
    upload_ok(srv, [login])

    by_identity = get_profile(srv, identity=user)
    by_device = get_profile(srv, objectId=device)
    assert by_identity == by_device
    p = by_identity
    assert p["id"] == user_id  # the identified profile survives
    assert p["identity"] == user
    assert device in p["identifiers"]["objectId"]
    # Identified profile wins conflicts; the anonymous profile's other properties are kept.
    assert p["properties"]["Name"] == "Known Name"
    assert p["properties"]["Plan"] == "gold"
    assert p["properties"]["Color"] == "red"
    # All events, from both profiles, on the one timeline; counts add up.
    assert p["event_counts"] == {"Viewed": 2, "Purchased": 1, "Logged In": 1}
    assert p["total_events"] == 4
    ids = timeline_ids(srv, identity=user)
    assert ids == Counter(r["msgId"] for r in known + anon + [login] if r["type"] == "event")
    # first_seen is the earliest of both profiles' events.
    assert p["first_seen"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 9000))

    # Later events under either identifier land on the one profile.
    later = [event({"objectId": device}, "Viewed", page="/c"),
             event({"identity": user}, "Purchased", amount=3)]
    upload_ok(srv, later)
    p2 = get_profile(srv, objectId=device)
    assert p2["id"] == user_id
    assert p2["total_events"] == 6
    assert timeline_ids(srv, objectId=device) == ids + Counter(r["msgId"] for r in later)


def test_login_with_new_identity_adopts_anonymous_profile(shared_server: NudgeServer) -> None:
    srv = shared_server
    user, device = uniq("u"), uniq("dev")
    anon = [profile({"objectId": device}, Name="Anon", Color="blue"),
            event({"objectId": device}, "Viewed"), event({"objectId": device}, "Added")]
    upload_ok(srv, anon)
    anon_id = get_profile(srv, objectId=device)["id"]
    assert profile_status(srv, identity=user) == 404

    upload_ok(srv, [profile({"identity": user, "objectId": device}, Plan="trial")])

    p = get_profile(srv, identity=user)
    assert p["id"] == anon_id  # the device's profile became the identified one
    assert p["identity"] == user
    assert p == get_profile(srv, objectId=device)
    assert p["properties"] == {"Name": "Anon", "Color": "blue", "Plan": "trial"}
    assert p["total_events"] == 2
    upload_ok(srv, [event({"identity": user}, "Purchased")])
    assert get_profile(srv, objectId=device)["event_counts"] == {
        "Viewed": 1, "Added": 1, "Purchased": 1}


def test_login_with_new_identity_merges_several_anonymous_profiles(
        shared_server: NudgeServer) -> None:
    srv = shared_server
    user, device, email = uniq("u"), uniq("dev"), f"{uniq('e')}@example.com"
    upload_ok(srv, [event({"objectId": device}, "Viewed")])  # older anonymous profile
    upload_ok(srv, [profile({"email": email}, Newsletter=True)])  # a lead by email
    oldest = get_profile(srv, objectId=device)["id"]
    lead = get_profile(srv, email=email)["id"]
    assert oldest < lead

    upload_ok(srv, [event({"identity": user, "objectId": device, "email": email}, "Signed Up")])
    p = get_profile(srv, identity=user)
    assert p["id"] == oldest  # the oldest anonymous profile adopts the identity
    assert p == get_profile(srv, email=email) == get_profile(srv, objectId=device)
    assert p["email"] == email
    assert p["properties"]["Newsletter"] is True
    assert p["total_events"] == 2


# -- refusals ------------------------------------------------------------------------------

def test_two_identified_profiles_are_never_merged_implicitly(shared_server: NudgeServer) -> None:
    srv = shared_server
    u1, u2, e1 = uniq("u1"), uniq("u2"), f"{uniq('e1')}@example.com"
    upload_ok(srv, [profile({"identity": u1, "email": e1}, Name="One"),
                    event({"identity": u1}, "Viewed")])
    before = get_profile(srv, identity=u1)

    # u2 (new) claims u1's email, in the record and in profileData; a valid record rides along.
    ok = event({"identity": uniq("bystander")}, "Viewed")
    r = srv.upload([
        {"type": "profile", "identity": u2, "email": e1, "profileData": {"Name": "Two"},
         "msgId": uniq("p")},
        ok,
        {"type": "profile", "identity": u2, "profileData": {"Email": e1.upper(), "X": 1},
         "msgId": uniq("p")},
        event({"identity": u2, "email": e1}, "Viewed"),
    ])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "partial"
    assert body["processed"] == 1
    errors = body["unprocessed"]
    assert [e["index"] for e in errors] == [0, 2, 3]
    for e in errors:
        assert e["code"] == 520
        assert "belongs to another identified profile" in e["error"]
        assert "POST /1/profiles/merge" in e["error"]
    # Nothing changed: u2 does not exist, u1 is untouched, e1 still points at u1.
    assert profile_status(srv, identity=u2) == 404
    after = get_profile(srv, identity=u1)
    assert {k: v for k, v in after.items() if k != "updated_at"} == \
        {k: v for k, v in before.items() if k != "updated_at"}
    assert get_profile(srv, email=e1)["id"] == before["id"]

    # The same when u2 already exists as an identified profile.
    upload_ok(srv, [profile({"identity": u2}, Name="Two")])
    r = srv.upload([profile({"identity": u2, "email": e1}, Name="Changed")])
    assert r.json()["unprocessed"][0]["code"] == 520
    assert get_profile(srv, identity=u2)["properties"] == {"Name": "Two"}
    assert get_profile(srv, identity=u2)["email"] is None
    assert get_profile(srv, email=e1)["id"] == before["id"]


def test_anonymous_record_spanning_two_identified_profiles_is_refused(
        shared_server: NudgeServer) -> None:
    srv = shared_server
    u1, u2 = uniq("u1"), uniq("u2")
    e1, phone2 = f"{uniq('e')}@example.com", "+4930" + str(uuid.uuid4().int)[:8]
    upload_ok(srv, [profile({"identity": u1, "email": e1}), profile({"identity": u2,
                                                                     "phone": phone2})])
    device = uniq("dev")
    r = srv.upload([event({"objectId": device, "email": e1, "phone": phone2}, "Viewed")])
    err = r.json()["unprocessed"][0]
    assert err["code"] == 520
    assert "different identified profiles" in err["error"]
    assert profile_status(srv, objectId=device) == 404
    assert get_profile(srv, identity=u1)["id"] != get_profile(srv, identity=u2)["id"]
    assert get_profile(srv, identity=u1)["total_events"] == 0


# -- shared devices ------------------------------------------------------------------------

def test_shared_device_moves_to_the_new_user_without_data(shared_server: NudgeServer) -> None:
    srv = shared_server
    u1, u2, device, token = uniq("u1"), uniq("u2"), uniq("dev"), uniq("fcm")
    u1_events = [event({"identity": u1, "objectId": device}, "Viewed", page=str(i))
                 for i in range(3)]
    upload_ok(srv, [profile({"identity": u1, "objectId": device}, Name="One"), *u1_events,
                    {"type": "token", "identity": u1, "objectId": device,
                     "tokenData": {"type": "fcm", "id": token}, "msgId": uniq("t")}])
    one = get_profile(srv, identity=u1)
    assert one["push_tokens"] == [{"type": "fcm", "id": token}]
    assert one["reachability"]["push"] is True

    # u2 logs in on the same device (and registers the same push token).
    u2_events = [event({"identity": u2, "objectId": device}, "Logged In")]
    upload_ok(srv, [*u2_events,
                    {"type": "token", "identity": u2, "objectId": device,
                     "tokenData": {"type": "fcm", "id": token}, "msgId": uniq("t")}])

    one, two = get_profile(srv, identity=u1), get_profile(srv, identity=u2)
    assert one["id"] != two["id"]
    assert get_profile(srv, objectId=device)["id"] == two["id"]  # the device moved
    assert "objectId" not in one["identifiers"]
    assert two["identifiers"]["objectId"] == [device]
    assert one["push_tokens"] == [] and two["push_tokens"] == [{"type": "fcm", "id": token}]
    # u1's data stays with u1; none of it moved to u2.
    assert one["properties"] == {"Name": "One"}
    assert timeline_ids(srv, identity=u1) == Counter(e["msgId"] for e in u1_events)
    assert two["properties"] == {}
    assert timeline_ids(srv, identity=u2) == Counter(e["msgId"] for e in u2_events)

    # Anonymous activity on the device now belongs to u2.
    upload_ok(srv, [event({"objectId": device}, "Viewed")])
    assert get_profile(srv, identity=u2)["total_events"] == 2
    assert get_profile(srv, identity=u1)["total_events"] == 3


# -- Segment alias -------------------------------------------------------------------------

def test_segment_alias_merges_previous_anonymous_id(shared_server: NudgeServer) -> None:
    srv = shared_server
    anon, user = uniq("anon"), uniq("u")
    for i in range(2):
        r = segment(srv, "track", {"anonymousId": anon, "event": "Viewed",
                                   "properties": {"i": i}, "messageId": uniq("s")})
        assert r.status_code == 200, r.text
    r = segment(srv, "identify", {"anonymousId": anon, "traits": {"Color": "green"},
                                  "messageId": uniq("s")})
    assert r.status_code == 200, r.text
    assert profile_status(srv, identity=user) == 404

    r = segment(srv, "alias", {"previousId": anon, "userId": user, "messageId": uniq("s")})
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}

    p = get_profile(srv, identity=user)
    assert p == get_profile(srv, objectId=anon)
    assert p["identity"] == user
    assert p["event_counts"] == {"Viewed": 2}
    assert p["properties"]["Color"] == "green"
    # Later anonymous traffic from the old id lands on the aliased user too.
    segment(srv, "track", {"anonymousId": anon, "event": "Clicked", "messageId": uniq("s")})
    assert get_profile(srv, identity=user)["event_counts"] == {"Viewed": 2, "Clicked": 1}
    # The anonymous profile is gone as a profile of its own: nothing else resolves to it.
    assert get_profile(srv, objectId=anon)["id"] == p["id"]


def test_segment_alias_merges_two_identified_users(shared_server: NudgeServer) -> None:
    srv = shared_server
    old, new = uniq("old"), uniq("new")
    for uid, traits in ((old, {"Name": "Old", "OnlyOld": 1}), (new, {"Name": "New"})):
        r = segment(srv, "identify", {"userId": uid, "traits": traits, "messageId": uniq("s")})
        assert r.status_code == 200, r.text
        r = segment(srv, "track", {"userId": uid, "event": "Viewed", "messageId": uniq("s")})
        assert r.status_code == 200, r.text
    new_id = get_profile(srv, identity=new)["id"]

    r = segment(srv, "alias", {"previousId": old, "userId": new, "messageId": uniq("s")})
    assert r.status_code == 200, r.text
    p = get_profile(srv, identity=old)
    assert p["id"] == new_id and p["identity"] == new
    assert p["properties"] == {"Name": "New", "OnlyOld": 1}
    assert p["total_events"] == 2


def test_segment_alias_needs_write_key(shared_server: NudgeServer) -> None:
    r = httpx.post(shared_server.url + "/v1/alias", json={"previousId": "a", "userId": "b"})
    assert r.status_code == 401
    r = httpx.post(shared_server.url + "/v1/alias", json={"previousId": "a", "userId": "b"},
                   auth=("not-a-key", ""))
    assert r.status_code == 401


# -- explicit merge ------------------------------------------------------------------------

def _two_identified(srv: NudgeServer) -> tuple[str, str, list[dict], list[dict]]:
    a, b = uniq("a"), uniq("b")
    ea = [event({"identity": a}, "Viewed", ts=NOW - 5000), event({"identity": a}, "Added")]
    eb = [event({"identity": b}, "Viewed", ts=NOW - 4000)]
    upload_ok(srv, [profile({"identity": a, "email": f"{a}@example.com"}, Name="A", OnlyA="x",
                            Score=1),
                    profile({"identity": b}, Name="B", Score=2), *ea, *eb])
    return a, b, ea, eb


def test_explicit_merge_of_identified_profiles(shared_server: NudgeServer) -> None:
    srv = shared_server
    a, b, ea, eb = _two_identified(srv)
    a_id, b_id = get_profile(srv, identity=a)["id"], get_profile(srv, identity=b)["id"]

    r = merge(srv, {"identity": a}, {"identity": b})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "success", "merged": a_id, "into": b_id}

    p = get_profile(srv, identity=a)
    assert p == get_profile(srv, identity=b) == get_profile(srv, email=f"{a}@example.com")
    assert p["id"] == b_id and p["identity"] == b
    assert p["email"] == f"{a}@example.com"  # b had none; a's is kept
    assert p["properties"] == {"Name": "B", "Score": 2, "OnlyA": "x"}  # into wins
    assert p["total_events"] == 3
    assert p["first_seen"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 5000))
    assert timeline_ids(srv, identity=b) == Counter(e["msgId"] for e in ea + eb)

    # Later records naming a now land on b's profile.
    upload_ok(srv, [event({"identity": a}, "Purchased"), profile({"identity": a}, Name="A2")])
    p = get_profile(srv, identity=b)
    assert p["total_events"] == 4
    assert p["properties"]["Name"] == "A2"

    # They are one profile now: merging again is "the same profile".
    r = merge(srv, {"identity": a}, {"identity": b})
    assert r.status_code == 400
    assert "same profile" in r.json()["message"]


def test_explicit_merge_refusals(shared_server: NudgeServer) -> None:
    srv = shared_server
    a, b, _, _ = _two_identified(srv)
    for src, dst in (({"identity": uniq("nobody")}, {"identity": b}),
                     ({"identity": a}, {"identity": uniq("nobody")}),
                     ({"email": "nobody@example.com"}, {"identity": b})):
        r = merge(srv, src, dst)
        assert r.status_code == 404, r.text
    r = merge(srv, {"identity": a}, {"identity": a})
    assert r.status_code == 400
    r = merge(srv, {"email": f"{a.upper()}@EXAMPLE.COM"}, {"identity": a})  # same person
    assert r.status_code == 400
    for bad in ({"from": {"identity": a}}, {"from": {"identity": a, "email": "x@y.z"},
                                              "into": {"identity": b}},
                {"from": {"nickname": a}, "into": {"identity": b}}, []):
        r = httpx.post(srv.url + "/1/profiles/merge", json=bad, headers=srv.headers)
        assert r.status_code == 400, (bad, r.text)
    r = httpx.post(srv.url + "/1/profiles/merge", json={"from": {"identity": a},
                                                        "into": {"identity": b}})
    assert r.status_code == 401
    # Nothing was merged by any of these.
    assert get_profile(srv, identity=a)["id"] != get_profile(srv, identity=b)["id"]


def test_explicit_merge_into_anonymous_profile_makes_it_identified(
        shared_server: NudgeServer) -> None:
    srv = shared_server
    user, device, other = uniq("u"), uniq("dev"), uniq("other")
    upload_ok(srv, [profile({"identity": user}, Name="U"), event({"identity": user}, "Viewed"),
                    event({"objectId": device}, "Viewed")])
    r = merge(srv, {"identity": user}, {"objectId": device})
    assert r.status_code == 200, r.text
    p = get_profile(srv, objectId=device)
    assert p == get_profile(srv, identity=user)
    assert p["identity"] == user and p["total_events"] == 2

    # The merged profile is identified now: another user logging in on that device takes
    # the device only (a shared device), and does not swallow the user's profile.
    upload_ok(srv, [event({"identity": other, "objectId": device}, "Logged In")])
    mine, theirs = get_profile(srv, identity=user), get_profile(srv, identity=other)
    assert mine["id"] != theirs["id"]
    assert mine["total_events"] == 2 and theirs["total_events"] == 1
    assert get_profile(srv, objectId=device)["id"] == theirs["id"]


# -- durability and compaction --------------------------------------------------------------

def _events_by_user(data_dir: Path, account_id: str) -> dict[str, dict[int, int]]:
    """Rows per user_id in each events table, read from the file (server stopped)."""
    path = data_dir / "accounts" / account_id / "events.duckdb"
    con = open_account_file(path.parents[2], path.parent.name)  # encrypted
    try:
        return {t: dict(con.execute(f"SELECT user_id, count(*) FROM {t} GROUP BY 1").fetchall())
                for t in ("events_recent", "events_sorted")}
    finally:
        con.close()


def test_merges_survive_restart_and_kill(nudge_server: NudgeServer) -> None:
    srv = nudge_server
    a, b, ea, eb = _two_identified(srv)
    user, device = uniq("u"), uniq("dev")
    upload_ok(srv, [event({"objectId": device}, "Viewed"), profile({"identity": user}, N=1)])
    upload_ok(srv, [event({"identity": user, "objectId": device}, "Logged In")])
    assert merge(srv, {"identity": a}, {"identity": b}).status_code == 200
    expected = {
        "b": get_profile(srv, identity=b),
        "u": get_profile(srv, identity=user),
    }

    timeline_a = Counter(e["msgId"] for e in ea + eb)
    for restart in ("stop", "kill"):
        getattr(srv, restart)()
        srv.start()
        for key, lookups in (("b", ({"identity": a}, {"identity": b},
                                    {"email": f"{a}@example.com"})),
                             ("u", ({"identity": user}, {"objectId": device}))):
            for lookup in lookups:
                got = get_profile(srv, **lookup)
                assert got["id"] == expected[key]["id"], (restart, lookup)
                assert got["properties"] == expected[key]["properties"]
                assert got["event_counts"] == expected[key]["event_counts"]
        assert timeline_ids(srv, identity=a) == timeline_a
        # New traffic after the restart follows the merges (state reloaded from the file).
        after = event({"identity": a}, "After " + restart)
        upload_ok(srv, [after, event({"objectId": device}, "After " + restart)])
        timeline_a[after["msgId"]] += 1
        expected["b"]["event_counts"]["After " + restart] = 1
        expected["u"]["event_counts"]["After " + restart] = 1
        assert get_profile(srv, identity=b)["event_counts"] == expected["b"]["event_counts"]
        assert get_profile(srv, identity=user)["event_counts"] == expected["u"]["event_counts"]

    # A new profile after restarts never reuses an internal id of a merged-away profile.
    fresh = uniq("fresh")
    upload_ok(srv, [event({"identity": fresh}, "Viewed")])
    fresh_id = get_profile(srv, identity=fresh)["id"]
    assert fresh_id > max(expected["b"]["id"], expected["u"]["id"])
    assert get_profile(srv, identity=fresh)["total_events"] == 1


@pytest.mark.slow
def test_merge_after_compaction_repoints_old_events(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_COMPACT_THRESHOLD_ROWS": "50"})
    try:
        a, b, device = uniq("a"), uniq("b"), uniq("dev")
        old_a = [event({"identity": a}, "Viewed", ts=NOW - 9000 + i, i=i) for i in range(40)]
        old_b = [event({"identity": b}, "Added", ts=NOW - 8000 + i) for i in range(15)]
        old_dev = [event({"objectId": device}, "Viewed", ts=NOW - 8500 + i) for i in range(5)]
        upload_ok(srv, [profile({"identity": a}, Name="A", OnlyA=1), *old_a])
        upload_ok(srv, [profile({"identity": b}, Name="B"), *old_b, *old_dev])
        a_id, b_id = get_profile(srv, identity=a)["id"], get_profile(srv, identity=b)["id"]
        dev_id = get_profile(srv, objectId=device)["id"]
        srv.stop()
        before = _events_by_user(tmp_path, srv.account_id)
        # The old events were compacted into the sorted table.
        assert before["events_sorted"].get(a_id) == 40
        assert before["events_sorted"].get(b_id) == 15
        assert before["events_sorted"].get(dev_id) == 5
        srv.start()

        recent = [event({"identity": a}, "Viewed", i=99)]
        upload_ok(srv, recent)  # one event still in events_recent
        assert merge(srv, {"identity": a}, {"identity": b}).status_code == 200
        # A login of the compacted anonymous device re-points its old events as well.
        upload_ok(srv, [event({"identity": b, "objectId": device}, "Logged In")])

        p = get_profile(srv, identity=a)
        assert p["id"] == b_id
        assert p["event_counts"] == {"Viewed": 46, "Added": 15, "Logged In": 1}
        assert p["properties"] == {"Name": "B", "OnlyA": 1}
        ids = timeline_ids(srv, identity=b)
        # Every old (compacted) and recent event exactly once, plus the login event.
        assert sum(ids.values()) == 62 and max(ids.values()) == 1
        assert set(ids) >= {e["msgId"] for e in old_a + old_b + old_dev + recent}
        srv.stop()
        after = _events_by_user(tmp_path, srv.account_id)
        for table in ("events_recent", "events_sorted"):
            assert a_id not in after[table], table
            assert dev_id not in after[table], table
        assert after["events_sorted"][b_id] + after["events_recent"].get(b_id, 0) == 62
    finally:
        srv.stop()


# -- identifier normalization -------------------------------------------------------------

def test_email_lookup_is_case_insensitive(shared_server: NudgeServer) -> None:
    srv = shared_server
    user, local = uniq("u"), uniq("Mixed.Case")
    upload_ok(srv, [profile({"identity": user, "email": f"  {local}@Example.COM "}, N=1)])
    p = get_profile(srv, identity=user)
    assert p["email"] == f"{local.lower()}@example.com"
    for variant in (f"{local}@Example.COM", f"{local.upper()}@EXAMPLE.COM",
                    f"{local.lower()}@example.com"):
        assert get_profile(srv, email=variant)["id"] == p["id"]
    # A device seen with the email in another case joins the same profile.
    device = uniq("dev")
    upload_ok(srv, [event({"objectId": device, "email": f"{local.upper()}@example.com"},
                          "Viewed")])
    assert get_profile(srv, objectId=device)["id"] == p["id"]
    # A differently-cased email in profileData is the same identifier, not a conflict.
    upload_ok(srv, [profile({"identity": user}, Email=f"{local.upper()}@EXAMPLE.com", N=2)])
    assert get_profile(srv, email=f"{local}@example.com")["properties"] == {"N": 2}
    assert profile_status(srv, email="not-an-email") == 404


def test_phone_numbers_are_normalized(shared_server: NudgeServer) -> None:
    srv = shared_server
    user = uniq("u")
    digits = str(uuid.uuid4().int)[:9]
    upload_ok(srv, [profile({"identity": user, "phone": f"+1 ({digits[:3]}) {digits[3:6]}-"
                                                        f"{digits[6:]}"}, N=1)])
    p = get_profile(srv, identity=user)
    assert p["phone"] == f"+1{digits}"
    for variant in (f"+1{digits}", f"+1-{digits[:3]}-{digits[3:6]}-{digits[6:]}",
                    f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}"):
        assert get_profile(srv, phone=variant)["id"] == p["id"], variant
    # The "+" is significant: a number without it is a different identifier.
    assert profile_status(srv, phone=f"1{digits}") == 404
    # Integer phone numbers in a record are accepted and normalized the same way.
    other = uniq("u")
    upload_ok(srv, [profile({"identity": other, "phone": int("44" + digits)}, N=1)])
    assert get_profile(srv, phone=f"44 {digits}")["identity"] == other
    # Too short to be a phone number: refused per record with code 514.
    r = srv.upload([profile({"identity": uniq("u"), "phone": "12-34"}, N=1)])
    assert r.json()["unprocessed"][0]["code"] == 514
    assert "phone" in r.json()["unprocessed"][0]["error"]
