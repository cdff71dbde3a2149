"""Crypto-shredding after erasure (issue 6, item 5; docs/privacy.md, *What erasure leaves on
disk*): the account file is rewritten under a new key and the old key destroyed.

In process on a real account store: an unencrypted store shows what the rewrite does to the
bytes on disk (DuckDB keeps deleted rows in its blocks; the rewritten file does not), and an
encrypted one shows the key handling. Against a real server: batching, the receipt, the old
key gone from the control store, and ingest and reads going on across the swap.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from conftest import NudgeServer, make_server
from nudge.config import Settings, load_settings
from nudge.ingest.records import ProfileOp, Record
from nudge.privacy import gdpr, shred, storage
from nudge.privacy.keys import keyring_for
from nudge.store.account import AccountStore

NOW = time.time()


def person_records(name: str, n: int) -> list[Record]:
    recs = [Record(kind="profile", ids={"identity": name, "email": f"{name}@shred.example"},
                   ts=NOW, message_id=f"{name}-p",
                   ops=[ProfileOp("set", "Name", f"Name {name}")])]
    recs += [Record(kind="event", ids={"identity": name}, ts=NOW - i, message_id=f"{name}-{i}",
                    event="Viewed", props={"note": f"secret-note-of-{name}-{i % 7}"})
             for i in range(n)]
    return recs


def erase(store: AccountStore, identity: str) -> dict[str, int]:
    subjects = gdpr.parse_subjects({"subjects": [{"identity": identity}]})
    _, deleted = store.run_on_writer(lambda: gdpr.erase_on_writer(store, subjects)).result()
    return deleted


def count(store: AccountStore, sql: str) -> int:
    with store.cursor() as cur:
        return int(cur.execute(sql).fetchone()[0])


def test_rewrite_removes_what_duckdb_keeps_of_erased_rows(tmp_path: Path) -> None:
    """Unencrypted, so the bytes can be read: after DELETE + CHECKPOINT the erased person's
    strings are still in the file; after the rewrite they are not, and nothing else changed."""
    path = tmp_path / "events.duckdb"
    store = AccountStore("shred-plain", path, Settings(data_dir=tmp_path))
    try:
        store.write(person_records("ann", 3000) + person_records("bob", 3000))
        store.compact_now()
        deleted = erase(store, "ann")
        assert deleted["events"] == 3000
        assert b"ann@shred.example" in path.read_bytes()  # DuckDB's residue of the rows
        before = {t: count(store, f"SELECT count(*) FROM {t}")  # noqa: S608 - our tables
                  for t in ("events", "profiles", "identities", "event_catalog", "meta")}
        result = store.run_on_writer(lambda: shred.rewrite_on_writer(store, None)).result()
        data = path.read_bytes()
        assert b"ann@shred.example" not in data and b"secret-note-of-ann" not in data
        assert b"bob@shred.example" in data
        assert result["bytes_after"] <= result["bytes_before"]
        after = {t: count(store, f"SELECT count(*) FROM {t}")  # noqa: S608
                 for t in before}
        assert after == before and after["events"] == 3000
        # The store goes on: writes, reads, the events view and primary keys came along.
        store.write(person_records("cat", 10))
        assert count(store, "SELECT count(*) FROM events") == 3010
        with pytest.raises(Exception, match="(?i)constraint|duplicate"):
            store.writer_cursor.execute("INSERT INTO meta VALUES ('compacted_through', 'x')")
        assert not storage.rewrite_path(path).exists()
    finally:
        store.close()
    reopened = AccountStore("shred-plain", path, Settings(data_dir=tmp_path))
    try:
        assert count(reopened, "SELECT count(*) FROM events") == 3010
        assert reopened.user_for("identity", "ann") is None
    finally:
        reopened.close()


def test_encrypted_rewrite_destroys_the_old_key(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    keyring = keyring_for(settings)
    from nudge.tenancy.accounts import AccountDirectory

    account = AccountDirectory(keyring.engine).create("shred").account
    path = settings.accounts_dir / account.id / "events.duckdb"
    key1 = keyring.duckdb_key(account.id, path)
    store = AccountStore(account.id, path, settings, key1)
    try:
        store.write(person_records("ann", 500) + person_records("bob", 500))
        erase(store, "ann")
        result = shred.rewrite(store, keyring, keyring.engine)
        assert result["generation"] == 2
        key2 = keyring.duckdb_key(account.id)
        assert key2 != key1
        store.write(person_records("cat", 5))
        assert count(store, "SELECT count(*) FROM events") == 505
    finally:
        store.close()
    assert storage.key_opens(path, key2) and not storage.key_opens(path, key1)
    rows = sqlite3.connect(settings.data_dir / "control.db").execute(
        "SELECT generation, state FROM account_file_keys WHERE account_id = ?",
        [account.id]).fetchall()
    assert rows == [(2, "active")]
    keyring.engine.dispose()


def test_server_batches_erasures_into_one_rewrite_and_reports_it(tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"NUDGE_ERASURE_REWRITE_DELAY_S": "3"})
    try:
        _server_checks(srv)
    finally:
        srv.stop()


def _upload(srv: NudgeServer, who: str, n: int) -> None:
    recs = [{"type": "profile", "identity": who,
             "profileData": {"Email": f"{who}@shred.example", "Name": f"Name {who}"}}]
    recs += [{"type": "event", "identity": who, "evtName": "Viewed", "ts": int(NOW) - i,
              "evtData": {"note": f"secret-note-of-{who}"}} for i in range(n)]
    for i in range(0, len(recs), 1000):
        r = srv.upload(recs[i:i + 1000], timeout=60)
        assert r.status_code == 200 and r.json()["unprocessed"] == [], r.text


def _control(srv: NudgeServer, sql: str) -> list[tuple]:  # type: ignore[type-arg]
    con = sqlite3.connect(srv.data_dir / "control.db")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _server_checks(srv: NudgeServer) -> None:
    for who in ("ann", "bob", "cat"):
        _upload(srv, who, 300)
    (old_key,) = _control(srv, "SELECT wrapped_key FROM account_file_keys")[0]
    receipts = []
    for who in ("ann", "bob"):
        r = httpx.post(srv.url + "/1/gdpr/erase", headers=srv.headers, timeout=60,
                       json={"subjects": [{"identity": who}]})
        assert r.status_code == 200, r.text
        receipts.append(r.json())
    # Both erasures share one rewrite: the second joins the first's due time.
    assert receipts[0]["file_rewrite_by"] == receipts[1]["file_rewrite_by"]
    assert receipts[0]["deleted"]["events"] == 300
    # Gone from reads at once, before any rewrite.
    r = httpx.get(srv.url + "/1/profile", params={"identity": "ann"}, headers=srv.headers)
    assert r.status_code == 404 or r.json().get("status") != "success", r.text
    deadline = time.monotonic() + 90
    while True:
        got = httpx.get(srv.url + f"/1/gdpr/requests/{receipts[1]['request_id']}",
                        headers=srv.headers).json()
        if got["receipt"]["file_rewritten_at"] is not None:
            break
        assert time.monotonic() < deadline, got
        _upload(srv, "dan", 20)  # ingest goes on while the rewrite is owed and runs
        time.sleep(0.3)
    first = httpx.get(srv.url + f"/1/gdpr/requests/{receipts[0]['request_id']}",
                      headers=srv.headers).json()
    assert first["receipt"]["file_rewritten_at"] is not None
    rows = _control(srv, "SELECT generation, state FROM account_file_keys")
    assert rows == [(2, "active")]
    assert _control(srv, "SELECT count(*) FROM store_rewrites") == [(0,)]
    # The old wrapped key is nowhere in the control store's files (secure delete).
    for name in ("control.db", "control.db-wal"):
        f = srv.data_dir / name
        if f.exists():
            assert bytes(old_key) not in f.read_bytes(), name
    _upload(srv, "eve", 10)
    r = httpx.get(srv.url + "/1/profile", params={"identity": "cat"}, headers=srv.headers)
    assert r.status_code == 200, r.text
    # kill -9 right after acknowledged uploads: the rewritten file opens with the new key,
    # and what the ingest log held (sealed after the swap) is replayed with it.
    _upload(srv, "fay", 50)
    srv.kill()
    srv.start()
    for who, n in (("eve", 10), ("fay", 50), ("cat", 300)):
        r = httpx.get(srv.url + "/1/profile", params={"identity": who}, headers=srv.headers)
        assert r.status_code == 200, r.text
        assert r.json()["profile"]["total_events"] == n, (who, r.text)
    r = httpx.get(srv.url + "/1/profile", params={"identity": "ann"}, headers=srv.headers)
    assert r.status_code == 404 or r.json().get("status") != "success", r.text
