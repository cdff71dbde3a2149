"""Encryption at rest (issue 6, item 4): no plaintext on disk, wrong keys fail, master key
rotation re-wraps without rewriting data, old unencrypted files are migrated."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest

from conftest import NudgeServer, make_server, nudge_cli
from nudge.config import Settings
from nudge.errors import ConfigError
from nudge.ingest.records import Record
from nudge.privacy import storage
from nudge.store.account import AccountStore

NOW = int(time.time())
# Distinctive PII, long enough that a chance match in ciphertext is impossible.
PEOPLE = [
    {"identity": f"customer-{i:04d}-zq", "email": f"firstname{i:04d}.lastname@pii-example.org",
     "phone": f"+4915123{i:05d}", "name": f"Wilhelmina Quarterfield {i:04d}",
     "street": f"{i} Rue des Plaintext-Canaries"}
    for i in range(200)
]


def needles() -> list[bytes]:
    out = []
    for p in PEOPLE[:50]:
        out += [p["identity"], p["email"], p["phone"], p["name"], p["street"]]
    return [s.encode() for s in out] + [b"Plaintext-Canaries", b"pii-example.org",
                                        b"Wilhelmina", b"secret-coupon-XYZZY"]


def scan(root: Path, patterns: list[bytes]) -> dict[str, list[bytes]]:
    """Every regular file under root: which of the patterns it holds in plaintext (also as
    UTF-16, as some tools write it)."""
    found: dict[str, list[bytes]] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        hits = [p for p in patterns if p in data or p.decode().encode("utf-16-le") in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def upload_people(srv: NudgeServer) -> None:
    records = []
    for i, p in enumerate(PEOPLE):
        records.append({"type": "profile", "identity": p["identity"], "profileData": {
            "Email": p["email"], "Phone": p["phone"], "Name": p["name"],
            "Address": p["street"]}})
        for k in range(20):
            records.append({"type": "event", "identity": p["identity"], "evtName": "Charged",
                            "ts": NOW - 1000 + k, "evtData": {
                                "coupon": "secret-coupon-XYZZY", "ship_to": p["street"],
                                "note": f"call {p['phone']} ask for {p['name']}",
                                "Amount": i + k}})
    for i in range(0, len(records), 1000):
        r = srv.upload(records[i:i + 1000], timeout=60)
        assert r.status_code == 200 and r.json()["unprocessed"] == [], r.text


def test_no_pii_in_plaintext_anywhere_in_the_data_directory(tmp_path: Path) -> None:
    # Compact often, so that both event tables, checkpoints and WALs hold data.
    srv = make_server(tmp_path, {"NUDGE_COMPACT_THRESHOLD_ROWS": "1500",
                                 "NUDGE_ERASURE_REWRITE_DELAY_S": "0"})
    try:
        upload_people(srv)
        r = httpx.get(srv.url + "/1/profile", params={"email": PEOPLE[3]["email"]},
                      headers=srv.headers)
        assert r.json()["profile"]["properties"]["Name"] == PEOPLE[3]["name"]
        assert r.json()["profile"]["total_events"] == 20
        # GDPR requests leave a trail in the control store: it must not name anyone.
        r = httpx.post(srv.url + "/1/gdpr/access", headers=srv.headers,
                       json={"subjects": [{"email": PEOPLE[0]["email"]}]})
        assert r.status_code == 200 and PEOPLE[0]["name"] in r.text
        r = httpx.post(srv.url + "/1/gdpr/suppress", headers=srv.headers,
                       json={"subjects": [{"phone": PEOPLE[1]["phone"]}]})
        assert r.status_code == 200
        # While running: WALs of DuckDB and SQLite are there too.
        files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
        assert "events.duckdb" in files and "control.db" in files
        assert scan(tmp_path, needles()) == {}
        # An erasure and the rewrite under a new key that follows it (delay 0) leave no
        # plaintext either: not the copy being built, not the ingest log it carried along.
        r = httpx.post(srv.url + "/1/gdpr/erase", headers=srv.headers,
                       json={"subjects": [{"email": PEOPLE[4]["email"]}]})
        assert r.status_code == 200 and r.json()["found"] == 1, r.text
        rid = r.json()["request_id"]
        deadline = time.monotonic() + 120
        while httpx.get(f"{srv.url}/1/gdpr/requests/{rid}", headers=srv.headers
                        ).json()["receipt"]["file_rewritten_at"] is None:
            assert scan(tmp_path, needles()) == {}
            assert time.monotonic() < deadline
            time.sleep(0.2)
        upload_people(srv)  # after the swap: new log frames, new file key
        assert scan(tmp_path, needles()) == {}
    finally:
        srv.stop()
    assert scan(tmp_path, needles()) == {}


def test_the_scan_finds_plaintext_when_a_file_is_not_encrypted(tmp_path: Path) -> None:
    """The scanner itself works: the same data in an unencrypted store is found."""
    store = AccountStore("plain", tmp_path / "events.duckdb", Settings(data_dir=tmp_path))
    p = PEOPLE[0]
    store.write([Record(kind="profile", index=0, message_id="m0", ts=NOW,
                        ids={"identity": p["identity"], "email": p["email"]})])
    store.close()
    assert scan(tmp_path, [p["email"].encode()]) != {}


def test_wrong_master_key_fails_loudly(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    try:
        assert srv.upload([{"type": "event", "identity": "u", "evtName": "E",
                            "ts": NOW}]).status_code == 200
    finally:
        srv.stop()
    wrong = base64.b64encode(os.urandom(32)).decode()
    proc = subprocess.run(
        [sys.executable, "-m", "nudge", "serve", "--data-dir", str(tmp_path), "--port", "1"],
        env={**os.environ, "NUDGE_MASTER_KEY": wrong}, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode != 0
    assert "another master key" in proc.stdout + proc.stderr
    # The account file itself refuses a wrong DuckDB key.
    con = duckdb.connect()
    try:
        with pytest.raises(ConfigError, match="wrong encryption key"):
            storage.attach(con, tmp_path / "accounts" / srv.account_id / "events.duckdb",
                           "ab" * 32, "acct")
    finally:
        con.close()
    # And cannot be opened without one at all.
    with pytest.raises(duckdb.Error, match="encrypted"):
        duckdb.connect(str(tmp_path / "accounts" / srv.account_id / "events.duckdb"),
                       read_only=True)


def test_rotate_master_rewraps_keys_and_data_stays_readable(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    try:
        assert srv.upload([{"type": "event", "identity": "u", "evtName": "E",
                            "ts": NOW}]).status_code == 200
    finally:
        srv.stop()
    key_file = tmp_path.parent / f"{tmp_path.name}.master-key"
    old_key = key_file.read_text()
    db = tmp_path / "accounts" / srv.account_id / "events.duckdb"
    before = db.read_bytes()
    out = nudge_cli(tmp_path, "keys", "rotate-master")
    assert "re-wrapped 1 data keys" in out
    assert key_file.read_text() != old_key and (key_file.stat().st_mode & 0o777) == 0o600
    assert db.read_bytes() == before  # no data rewritten
    srv.start()
    try:
        r = httpx.get(srv.url + "/1/profile", params={"identity": "u"}, headers=srv.headers)
        assert r.status_code == 200 and r.json()["profile"]["total_events"] == 1
    finally:
        srv.stop()
    # The old master key no longer opens anything.
    proc = subprocess.run(
        [sys.executable, "-m", "nudge", "serve", "--data-dir", str(tmp_path), "--port", "1"],
        env={**os.environ, "NUDGE_MASTER_KEY": old_key.strip()}, capture_output=True,
        text=True, timeout=60)
    assert proc.returncode != 0 and "another master key" in proc.stdout + proc.stderr


def test_rotate_master_to_a_given_key_file(tmp_path: Path) -> None:
    srv = make_server(tmp_path)
    srv.stop()
    new = tmp_path.parent / "new.key"
    new.write_text(base64.b64encode(os.urandom(32)).decode())
    nudge_cli(tmp_path, "keys", "rotate-master", "--new-key-file", str(new))
    srv.extra_env = {"NUDGE_MASTER_KEY_FILE": str(new)}
    srv.start()
    try:
        assert srv.upload([{"type": "event", "identity": "u", "evtName": "E",
                            "ts": NOW}]).status_code == 200
    finally:
        srv.stop()


def test_an_unencrypted_account_file_is_encrypted_on_first_open(tmp_path: Path) -> None:
    """Data directories from before encryption at rest are migrated, not refused."""
    acct = json.loads(nudge_cli(tmp_path, "accounts", "create", "old", "--json"))
    path = tmp_path / "accounts" / acct["id"] / "events.duckdb"
    old = AccountStore(acct["id"], path, Settings(data_dir=tmp_path))  # the pre-encryption way
    old.write([Record(kind="event", index=i, message_id=f"m{i}", ts=NOW, event="E",
                      ids={"identity": "legacy-person@example.com"}) for i in range(3)])
    old.close()
    assert not storage.is_encrypted(path)
    assert scan(path.parent, [b"legacy-person@example.com"]) != {}
    srv = NudgeServer(tmp_path, __import__("conftest").free_port(), acct["id"],
                      acct["passcode"], acct["write_key"])
    srv.start()
    try:
        r = httpx.get(srv.url + "/1/profile", params={"identity": "legacy-person@example.com"},
                      headers=srv.headers)
        assert r.status_code == 200 and r.json()["profile"]["total_events"] == 3
    finally:
        srv.stop()
    assert storage.is_encrypted(path)
    assert scan(path.parent, [b"legacy-person@example.com"]) == {}
    assert not list(path.parent.glob("*.encrypting*"))
