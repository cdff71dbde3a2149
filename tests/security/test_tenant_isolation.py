"""Cross-tenant sweep: every route of the OpenAPI spec, called with account A's credentials on
account B's objects, is refused or answers only about A — and the answer for B's real id is
the same as for an id that does not exist, so nothing reveals that B's object exists.

Runs against a real ``nudge serve`` over HTTP.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest

from conftest import NudgeServer, make_server, nudge_cli
from nudge.tenancy.roles import PUBLIC_ROUTES, SESSION_ROUTES

B_IDENTITY = "b-secret-user-7f3a"
B_EMAIL = "b.secret.person@b-example.com"
B_SEGMENT = "B-only-segment-c41d"
B_OWNER = "owner@b-example.com"
NONE_IDENTITY = "no-such-person-0000"
NONE_ID = "987654"
PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test users only
B_BOARD = "B-board-5e1f"
# Strings only B's objects hold: none may appear in any answer to A.
B_MARKERS = {"journey": "B-journey-9d2e", "goal": "B-goal-77ab", "inbox": "B-inbox-title-3c8f",
             "webhook": "hooks.b-secret-4a1b.example", "smtp": "smtp.b-secret-6f0c.example",
             "board item": "B-board-item-0b7d", "category": "B-category-5e1a"}


@dataclass
class World:
    srv: NudgeServer
    b_id: str
    b_passcode: str
    b_ids: dict[str, str]  # path parameter -> one of B's real ids
    a_session: httpx.Client
    a_csrf: str
    b_key_prefix: str


def _owner_session(srv: NudgeServer, email: str, account_id: str) -> tuple[httpx.Client, str]:
    c = httpx.Client(base_url=srv.url, timeout=30)
    r = c.post("/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200 and r.json()["stage"] == "enroll", r.text
    csrf = r.json()["csrf_token"]
    secret = c.post("/auth/mfa/enroll", headers={"X-CSRF-Token": csrf}).json()["secret"]
    r = c.post("/auth/mfa/confirm", json={"code": pyotp.TOTP(secret).now()},
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200, r.text
    c.headers["X-Nudge-Account-Id"] = account_id
    return c, r.json()["csrf_token"]


def _create_user(data_dir: Path, email: str, account_id: str) -> None:
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "nudge", "users", "create", email, "--account",
                    account_id, "--role", "owner", "--password-stdin", "--data-dir",
                    str(data_dir)], input=PASSWORD + "\n", text=True, check=True,
                   capture_output=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    srv = make_server(tmp_path_factory.mktemp("iso"))
    try:
        b = json.loads(nudge_cli(srv.data_dir, "accounts", "create", "B", "--json"))
        bh = {"X-Nudge-Account-Id": b["id"], "X-Nudge-Passcode": b["passcode"]}
        r = httpx.post(srv.url + "/1/upload", headers=bh, json={"d": [
            {"type": "profile", "identity": B_IDENTITY,
             "profileData": {"Email": B_EMAIL, "Name": "B Person"}},
            {"type": "event", "identity": B_IDENTITY, "evtName": "Charged",
             "evtData": {"Amount": 99}}]})
        assert r.status_code == 200 and r.json()["processed"] == 2, r.text
        r = httpx.post(srv.url + "/1/segments", headers=bh, json={
            "name": B_SEGMENT, "definition": {"did": {"event": "Charged"}}})
        assert r.status_code == 201, r.text
        ids = {"segment_id": str(r.json()["segment"]["id"] if "segment" in r.json()
                                 else r.json()["id"])}
        r = httpx.post(srv.url + "/1/keys", headers=bh, json={"kind": "read"})
        # the passcode manages keys; the new key's id is B's
        assert r.status_code == 201, r.text
        ids["key_id"] = str(r.json()["key"]["id"])
        b_key_prefix = r.json()["key"]["prefix"]
        _create_user(srv.data_dir, B_OWNER, b["id"])
        _create_user(srv.data_dir, "owner@a-example.com", srv.account_id)
        b_session, b_csrf = _owner_session(srv, B_OWNER, b["id"])
        users = b_session.get("/1/users").json()["users"]
        ids["user_id"] = str(users[0]["id"])
        r = httpx.post(srv.url + "/1/campaigns", headers=bh, json={
            "name": "B campaign", "channels": ["email"],
            "audience": {"segment_id": int(ids["segment_id"])},
            "content": {"email": {"subject": "hi", "text": "hello"}}})
        assert r.status_code == 201, r.text
        body = r.json()
        ids["campaign_id"] = str(body.get("campaign", body).get("id"))
        ids.update(_more_b_objects(srv, bh, b["id"]))
        r = b_session.post(f"/ui/{b['id']}/boards", headers={"X-CSRF-Token": b_csrf}, data={
            "kind": "funnels", "board": B_BOARD, "title": B_MARKERS["board item"],
            "body": json.dumps({"steps": [{"event": "Charged"}, {"event": "Charged"}],
                                "window": {"days": 3}, "from": "2026-01-01",
                                "to": "2026-02-01"})})
        assert r.status_code == 200 and B_BOARD in r.text, re.findall(r"error[^<]{0,200}",
                                                                      r.text)
        a_session, a_csrf = _owner_session(srv, "owner@a-example.com", srv.account_id)
        yield World(srv, b["id"], b["passcode"], ids, a_session, a_csrf, b_key_prefix)
    finally:
        srv.stop()


def _more_b_objects(srv: NudgeServer, bh: dict[str, str], b_id: str) -> dict[str, str]:
    """One real object of every other kind in B, made through the API as B makes them."""
    def api(method: str, path: str, body: Any = None, ok: int = 200, **kw: Any) -> Any:
        r = httpx.request(method, srv.url + path, headers=bh, json=body, timeout=60, **kw)
        assert r.status_code == ok, (path, r.status_code, r.text)
        return r.json()

    ids = {"account_id": b_id, "version": "1", "board": B_BOARD}
    ids["person_id"] = str(api("GET", "/1/profile", params={"identity": B_IDENTITY})
                           ["profile"]["id"])
    ids["journey_id"] = str(api("POST", "/1/journeys", {
        "name": B_MARKERS["journey"], "entry": {"event": "Charged"}, "start": "done",
        "nodes": [{"id": "done", "type": "exit"}]}, ok=201)["id"])
    ids["goal_id"] = str(api("POST", "/1/predict/goals", {
        "name": B_MARKERS["goal"], "event": "Charged", "horizon_days": 14}, ok=201)["id"])
    ids["key"] = api("POST", "/1/subscription-categories", {
        "name": B_MARKERS["category"], "key": "b-offers-5e1a"}, ok=201)["key"]
    ids["webhook_id"] = str(api("POST", "/1/webhooks", {
        "url": f"https://{B_MARKERS['webhook']}/hook", "event": "Charged"}, ok=201)["id"])
    api("PUT", "/1/channels/email", {"provider": "smtp", "host": B_MARKERS["smtp"],
                                     "port": 25, "security": "none",
                                     "from": "news@b-example.com"})
    inapp = api("POST", "/1/campaigns", {
        "name": "B in-app", "kind": "api", "channels": ["inapp"],
        "content": {"inapp": {"title": B_MARKERS["inbox"], "body": "for B only"}}}, ok=201)
    api("POST", f"/1/campaigns/{inapp['id']}/send")
    api("POST", "/1/send", {"campaign_id": inapp["id"], "to": [{"identity": B_IDENTITY}],
                            "request_id": "b-inbox-1"}, ok=202)
    email = api("POST", "/1/campaigns", {
        "name": "B email", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "hi", "text": "hello"}}}, ok=201)
    api("POST", f"/1/campaigns/{email['id']}/send")
    api("POST", "/1/send", {"campaign_id": email["id"], "to": [{"identity": B_IDENTITY}],
                            "request_id": "b-email-1"}, ok=202)
    deadline = time.monotonic() + 60
    while True:
        inbox = api("GET", "/1/inbox", params={"identity": B_IDENTITY})["messages"]
        outbox = api("GET", "/1/outbox")["messages"]
        if inbox and outbox:
            break
        assert time.monotonic() < deadline, (inbox, outbox)
        time.sleep(0.2)
    ids["inbox_message_id"] = str(inbox[0]["id"])
    ids["outbox_message_id"] = str(outbox[0]["id"])
    ids["request_id"] = api("POST", "/1/gdpr/access",
                            {"subjects": [{"identity": B_IDENTITY}]})["request_id"]
    return ids


def _operations(srv: NudgeServer) -> list[tuple[str, str, list[str], bool]]:
    spec = httpx.get(srv.url + "/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            m = method.upper()
            if (m, path) in PUBLIC_ROUTES or (m, path) in SESSION_ROUTES:
                continue
            if path.endswith("/stream") or m not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                continue  # an event stream of A's own data never ends
            params = [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]
            ops.append((m, path, params, False))
            if "account_id" in params:
                # A's own dashboard with B's object ids in the rest of the path.
                ops.append((m, path, params, True))
    return ops


def _fill(path: str, params: list[str], ids: dict[str, str], real: bool,
          own: str | None = None) -> str:
    """The path with B's real ids (``real``) or ids that exist nowhere. A parameter of a
    kind the world has no real object for fails the test: add one to the fixture."""
    for name in params:
        key = name
        if name == "user_id" and "/people/" in path:
            key = "person_id"  # a profile, not a dashboard user
        elif name == "message_id":
            key = "outbox_message_id" if path.startswith("/1/outbox") else "inbox_message_id"
        if name == "account_id" and own:
            value = own  # A's own account, B's ids in the rest of the path
        elif name == "channel":
            value = "email"  # configured in B; a name, the same in both calls
        elif name == "kind":
            value = "trends"  # a report kind, not an object
        elif real:
            assert key in ids, f"no real B object for {{{name}}} in {path}: add one"
            value = ids[key]
        else:
            value = {"account_id": "nosuchacct00", "request_id": "0" * 32,
                     "board": "no-such-board", "inbox_message_id": "0" * 32}.get(key, NONE_ID)
        path = path.replace("{" + name + "}", value)
    return path


def _body(identity: str, ids: dict[str, str], real: bool) -> dict[str, Any]:
    seg = int(ids["segment_id"]) if real else int(NONE_ID)
    ref = {"identity": identity}
    return {"identity": identity, "from": ref, "into": ref, "user": ref,
            "subjects": [ref], "segment_id": seg, "segment": seg,
            "audience": {"segment_id": seg}, "to": ref}


def _normalize(text: str) -> str:
    """Equal for B's object and a made-up one if nothing about B's object shows: the ids
    themselves (echoed in "no campaign 7") and clock readings are masked."""
    for ident in (B_IDENTITY, NONE_IDENTITY):
        text = text.replace(ident, "<IDENTITY>")
    text = re.sub(r'"[0-9a-f]{16,}"', '"<HEX>"', text)
    return re.sub(r"\d+(\.\d+)?", "#", text)


def _call(world: World, who: str, method: str, url: str, identity: str,
          body: dict[str, Any] | None) -> httpx.Response:
    params = {"identity": identity} if method == "GET" else None
    if who == "session":
        return world.a_session.request(method, url, params=params, json=body,
                                       headers={"X-CSRF-Token": world.a_csrf})
    return httpx.request(method, world.srv.url + url, params=params, json=body,
                         headers={**world.srv.headers, "X-Nudge-Identity": identity},
                         auth=(world.srv.write_key, "") if url.startswith("/v1/") else None,
                         timeout=30)


@pytest.mark.parametrize("who", ["passcode", "session"])
def test_account_a_cannot_reach_account_b_objects(world: World, who: str) -> None:
    problems = []
    ops = _operations(world.srv)
    assert len(ops) > 40  # the sweep covers the whole API, not a sample
    for method, path, params, own in ops:
        a_id = world.srv.account_id if own else None
        # B's real object vs an object that does not exist, with A's credentials.
        real = _call(world, who, method, _fill(path, params, world.b_ids, True, a_id),
                     B_IDENTITY,
                     _body(B_IDENTITY, world.b_ids, True) if method != "GET" else None)
        fake = _call(world, who, method, _fill(path, params, world.b_ids, False, a_id),
                     NONE_IDENTITY,
                     _body(NONE_IDENTITY, world.b_ids, False) if method != "GET" else None)
        if real.status_code >= 500:
            problems.append(f"{method} {path}: {real.status_code} {real.text[:120]}")
        path = path + (" (A's own account)" if own else "")
        if real.status_code != fake.status_code or (
                _normalize(real.text) != _normalize(fake.text)):
            problems.append(f"{method} {path}: B's id -> {real.status_code} {real.text[:150]!r}"
                            f" but unknown id -> {fake.status_code} {fake.text[:150]!r}")
        leaked = [m for m in (B_EMAIL, B_SEGMENT, B_OWNER, world.b_key_prefix, "B Person",
                              *B_MARKERS.values()) if m in real.text]
        if leaked:
            problems.append(f"{method} {path}: response shows B's {leaked}")
    assert not problems, "\n".join(problems)


def test_a_key_presented_for_account_b_is_refused_like_an_unknown_account(world: World) -> None:
    for path in ("/1/segments", "/1/profile?identity=" + B_IDENTITY, "/1/keys", "/1/audit"):
        to_b = httpx.get(world.srv.url + path, headers={
            "X-Nudge-Account-Id": world.b_id, "X-Nudge-Passcode": world.srv.passcode})
        to_nowhere = httpx.get(world.srv.url + path, headers={
            "X-Nudge-Account-Id": "nosuchacct00", "X-Nudge-Passcode": world.srv.passcode})
        assert to_b.status_code == to_nowhere.status_code == 401
        assert to_b.json() == to_nowhere.json()


def test_a_user_naming_account_b_is_refused_like_an_unknown_account(world: World) -> None:
    for path in ("/1/segments", "/1/users", "/1/audit"):
        to_b = world.a_session.get(path, headers={"X-Nudge-Account-Id": world.b_id})
        to_nowhere = world.a_session.get(path, headers={"X-Nudge-Account-Id": "nosuchacct00"})
        assert to_b.status_code == to_nowhere.status_code == 403
        assert to_b.json() == to_nowhere.json()


def test_b_write_key_cannot_be_used_as_a_passcode_for_a(world: World) -> None:
    r = httpx.get(world.srv.url + "/1/segments", headers={
        "X-Nudge-Account-Id": world.srv.account_id, "X-Nudge-Passcode": world.b_passcode})
    assert r.status_code == 401
