"""Scoped API keys (create, list, rotate, revoke; API and CLI), account user administration,
and the audit log of administrative actions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from security_helpers import App, Browser, inproc_fixture  # noqa: F401 - the inproc fixture

from nudge.store.control import api_keys
from nudge.tenancy import audit


def _owner(inproc: App) -> Browser:
    inproc.user("owner@example.com", "owner")
    return Browser(inproc.client, inproc.a.account.id).sign_in("owner@example.com")


def test_key_scopes_and_lifecycle(inproc: App) -> None:
    h = inproc.key_headers()
    r = inproc.client.post("/1/keys", headers=h, json={"kind": "read"})
    assert r.status_code == 201, r.text
    read = r.json()["key"]
    assert read["secret"].startswith("nr_") and read["prefix"] == read["secret"][:8]
    rh = inproc.key_headers(key=read["secret"])
    # read key: reads, never writes
    assert inproc.client.get("/1/segments", headers=rh).status_code == 200
    assert inproc.client.post("/1/analytics/trends", headers=rh, json={}).status_code in (400, 422)
    assert inproc.client.post("/1/segments", headers=rh, json={}).status_code == 403
    assert inproc.client.post("/1/upload", headers=rh, json={"d": []}).status_code == 403
    assert inproc.client.get("/1/keys", headers=rh).status_code == 403
    # write key: ingest only
    wh = inproc.key_headers(key=inproc.a.write_key)
    assert inproc.client.get("/1/segments", headers=wh).status_code == 401
    assert inproc.client.post("/1/upload", headers=wh, json={"d": []}).status_code == 401
    assert inproc.client.post("/v1/track", auth=(inproc.a.write_key, ""),
                              json={"userId": "u1", "event": "Viewed"}).status_code == 200
    # listing shows prefixes, never secrets or hashes
    listed = inproc.client.get("/1/keys", headers=h).json()["keys"]
    assert {k["kind"] for k in listed} == {"passcode", "write", "read"}
    text = json.dumps(listed)
    assert read["secret"] not in text and inproc.a.passcode not in text
    with inproc.auth.users.engine.connect() as conn:
        stored = [r.key_hash for r in conn.execute(sa.select(api_keys.c.key_hash)).all()]
    assert read["secret"] not in stored and all(len(k) == 64 for k in stored)
    # rotate: the old key stops at once, the new one works
    r = inproc.client.post(f"/1/keys/{read['id']}/rotate", headers=h)
    new = r.json()["key"]
    assert new["kind"] == "read" and new["id"] != read["id"]
    assert inproc.client.get("/1/segments", headers=rh).status_code == 401
    assert inproc.client.get("/1/segments",
                             headers=inproc.key_headers(key=new["secret"])).status_code == 200
    # revoke the write key: Segment-spec ingest with it stops at once too
    write_id = next(k["id"] for k in listed if k["kind"] == "write")
    assert inproc.client.delete(f"/1/keys/{write_id}", headers=h).status_code == 200
    assert inproc.client.post("/v1/track", auth=(inproc.a.write_key, ""),
                              json={"userId": "u1", "event": "Viewed"}).status_code == 401
    assert inproc.client.delete(f"/1/keys/{write_id}", headers=h).status_code == 404
    # another account's key id is "no such key", exactly like a made-up id
    b_key = inproc.auth.keys.list(inproc.b.account.id)[0].id
    theirs = inproc.client.delete(f"/1/keys/{b_key}", headers=h)
    made_up = inproc.client.delete("/1/keys/99999", headers=h)
    assert theirs.status_code == made_up.status_code == 404
    assert theirs.json() == made_up.json()
    assert inproc.auth.keys.get(inproc.b.account.id, b_key).revoked_at is None
    r = inproc.client.post("/1/keys", headers=h, json={"kind": "root"})
    assert r.status_code == 400 and r.json()["field"] == "kind"


def test_user_administration_rules(inproc: App) -> None:
    owner = _owner(inproc)
    r = owner.post("/1/users", {"email": "Admin@Example.com", "role": "admin"})
    assert r.status_code == 201, r.text
    admin_id, token = r.json()["user"]["id"], r.json()["reset_token"]
    assert r.json()["user"]["email"] == "admin@example.com"
    # the new admin chooses a password with the token, then must enroll MFA
    assert Browser(inproc.new_client()).post("/auth/password-reset", {
        "token": token, "new_password": "the new one chooses this 1"}).status_code == 200
    admin = Browser(inproc.new_client(), inproc.a.account.id)
    admin.sign_in("admin@example.com", "the new one chooses this 1")
    # admins manage non-owners but cannot create, change or remove owners
    assert admin.post("/1/users", {"email": "o2@example.com", "role": "owner"}
                      ).status_code == 403
    r = admin.post("/1/users", {"email": "mk@example.com", "role": "marketer",
                                "password": "marketer pass phrase 3"})
    mk_id = r.json()["user"]["id"]
    owner_id = inproc.auth.users.by_email("owner@example.com").id
    assert admin.request("PATCH", f"/1/users/{owner_id}", json={"role": "viewer"}
                         ).status_code == 403
    assert admin.request("PATCH", f"/1/users/{mk_id}", json={"role": "superuser"}
                         ).json()["field"] == "role"
    assert admin.request("PATCH", f"/1/users/{mk_id}", json={"role": "analyst"}
                         ).status_code == 200
    # the last owner can be neither demoted nor removed
    r = owner.request("PATCH", f"/1/users/{owner_id}", json={"role": "admin"})
    assert r.status_code == 400 and "last owner" in r.json()["message"]
    assert owner.request("DELETE", f"/1/users/{owner_id}").status_code == 400
    # a user of another account is "no such user"
    b_user = inproc.user("b@example.com", "viewer", inproc.b)
    assert admin.request("DELETE", f"/1/users/{b_user}").status_code == 404
    assert admin.request("DELETE", f"/1/users/{mk_id}").status_code == 200
    listed = owner.get("/1/users").json()["users"]
    assert {(u["email"], u["role"]) for u in listed} == {
        ("owner@example.com", "owner"), ("admin@example.com", "admin")}
    assert admin_id in {u["id"] for u in listed}


def test_audit_log_records_who_what_when_where(inproc: App) -> None:
    owner = _owner(inproc)
    owner.post("/1/users", {"email": "mk@example.com", "role": "marketer",
                            "password": "marketer pass phrase 3"})
    inproc.client.post("/1/keys", headers={**inproc.key_headers(), "User-Agent": "ci-bot/1"},
                       json={"kind": "read"})
    # another area records through the same function
    audit.record(inproc.auth.users.engine, account_id=inproc.a.account.id,
                 actor="user:owner@example.com", action="campaign.sent",
                 target="campaign:7", detail={"audience": 12})
    audit.record(inproc.auth.users.engine, account_id=inproc.b.account.id, actor="cli",
                 action="key.created", target="key:1")
    entries = owner.get("/1/audit").json()["entries"]
    actions = [e["action"] for e in entries]
    assert actions[:3] == ["campaign.sent", "key.created", "user.added"]  # newest first
    key_entry = entries[1]
    assert key_entry["actor"].startswith("key:np_") and key_entry["user_agent"] == "ci-bot/1"
    assert key_entry["source_ip"] and key_entry["at"] > 0
    assert key_entry["detail"]["kind"] == "read" and "secret" not in json.dumps(entries)
    user_entry = entries[2]
    assert user_entry["actor"] == "user:owner@example.com"
    assert user_entry["detail"] == {"email": "mk@example.com", "role": "marketer"}
    # only this account's entries; filters work
    assert all(e["account_id"] == inproc.a.account.id for e in entries)
    only = owner.get("/1/audit", params={"action": "user.added"}).json()["entries"]
    assert [e["action"] for e in only] == ["user.added"]
    assert owner.get("/1/audit", params={"limit": 0}).json()["field"] == "limit"


def _cli(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "nudge", *args, "--data-dir", str(data_dir)],
                         input=stdin, text=True, capture_output=True,
                         env={**os.environ, "NUDGE_LOG_LEVEL": "warning"})
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_cli_users_and_api_keys(tmp_path: Path) -> None:
    acct = json.loads(_cli(tmp_path, "accounts", "create", "cli", "--json"))
    out = json.loads(_cli(tmp_path, "users", "create", "ann@example.com", "--account",
                          acct["id"], "--role", "owner", "--json"))
    assert out["role"] == "owner" and out["reset_token"]
    legacy = "pbkdf2_sha1$20000$salt1234$" + "A" * 27 + "="
    _cli(tmp_path, "users", "create", "old@example.com", "--account", acct["id"], "--role",
         "viewer", "--password-hash", legacy)
    bad = subprocess.run([sys.executable, "-m", "nudge", "users", "create", "weak@example.com",
                          "--account", acct["id"], "--role", "viewer", "--password-stdin",
                          "--data-dir", str(tmp_path)], input="password123456\n", text=True,
                         capture_output=True)
    assert bad.returncode == 1 and "too common" in bad.stderr
    users = json.loads(_cli(tmp_path, "users", "list", "--json"))
    assert {u["email"]: u["accounts"] for u in users} == {
        "ann@example.com": {acct["id"]: "owner"}, "old@example.com": {acct["id"]: "viewer"}}
    assert "MFA reset" in _cli(tmp_path, "users", "reset-mfa", "ann@example.com")
    assert len(_cli(tmp_path, "users", "reset-password", "ann@example.com").strip()) > 30

    key = json.loads(_cli(tmp_path, "api-keys", "create", acct["id"], "--kind", "read",
                          "--json"))
    assert key["secret"].startswith("nr_")
    listed = json.loads(_cli(tmp_path, "api-keys", "list", acct["id"], "--json"))
    assert {k["kind"] for k in listed} == {"passcode", "write", "read"}
    assert key["secret"] not in json.dumps(listed)
    rotated = json.loads(_cli(tmp_path, "api-keys", "rotate", acct["id"], str(key["id"]),
                              "--json"))
    assert rotated["kind"] == "read" and rotated["secret"] != key["secret"]
    _cli(tmp_path, "api-keys", "revoke", acct["id"], str(rotated["id"]))
    live = json.loads(_cli(tmp_path, "api-keys", "list", acct["id"], "--json"))
    assert {k["kind"] for k in live} == {"passcode", "write"}
    # every CLI change is in the audit log, as actor "cli"
    from nudge.store import control

    engine = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    actions = [e.action for e in audit.entries(engine, acct["id"])]
    assert actions == ["key.revoked", "key.rotated", "key.created",
                       "user.password_reset_issued", "user.mfa_reset", "user.added",
                       "user.added"]
    assert {e.actor for e in audit.entries(engine, acct["id"])} == {"cli"}
