"""Cross-tenant sweep: every route of the OpenAPI spec, called with account A's credentials on
account B's objects, is refused or answers only about A — and the answer for B's real id is
the same as for an id that does not exist, so nothing reveals that B's object exists.

Runs against a real ``nudge serve`` over HTTP.
"""

from __future__ import annotations

import json
import re
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
        b_session, _ = _owner_session(srv, B_OWNER, b["id"])
        users = b_session.get("/1/users").json()["users"]
        ids["user_id"] = str(users[0]["id"])
        r = httpx.post(srv.url + "/1/campaigns", headers=bh, json={
            "name": "B campaign", "channels": ["email"],
            "audience": {"segment_id": int(ids["segment_id"])},
            "content": {"email": {"subject": "hi", "text": "hello"}}})
        assert r.status_code == 201, r.text
        body = r.json()
        ids["campaign_id"] = str(body.get("campaign", body).get("id"))
        a_session, a_csrf = _owner_session(srv, "owner@a-example.com", srv.account_id)
        yield World(srv, b["id"], b["passcode"], ids, a_session, a_csrf, b_key_prefix)
    finally:
        srv.stop()


def _operations(srv: NudgeServer) -> list[tuple[str, str, list[str]]]:
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
            ops.append((m, path, params))
    return ops


def _fill(path: str, params: list[str], ids: dict[str, str], real: bool) -> str:
    for name in params:
        value = ids.get(name, "1") if real else NONE_ID
        if name == "channel":
            value = "email"
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
    for method, path, params in ops:
        # B's real object vs an object that does not exist, with A's credentials.
        real = _call(world, who, method, _fill(path, params, world.b_ids, True), B_IDENTITY,
                     _body(B_IDENTITY, world.b_ids, True) if method != "GET" else None)
        fake = _call(world, who, method, _fill(path, params, world.b_ids, False),
                     NONE_IDENTITY,
                     _body(NONE_IDENTITY, world.b_ids, False) if method != "GET" else None)
        if real.status_code >= 500:
            problems.append(f"{method} {path}: {real.status_code} {real.text[:120]}")
        if real.status_code != fake.status_code or (
                _normalize(real.text) != _normalize(fake.text)):
            problems.append(f"{method} {path}: B's id -> {real.status_code} {real.text[:150]!r}"
                            f" but unknown id -> {fake.status_code} {fake.text[:150]!r}")
        leaked = [m for m in (B_EMAIL, B_SEGMENT, B_OWNER, world.b_key_prefix, "B Person")
                  if m in real.text]
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
