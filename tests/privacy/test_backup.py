"""Backups (issue 6, item 7): consistent, encrypted, restorable, refused with the wrong key."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from conftest import NudgeServer, make_server, nudge_cli
from nudge.privacy.backup import table_checksums
from nudge.privacy.keys import master_key_id
from nudge.privacy.storage import open_account_file

NOW = int(time.time())


def fingerprint(data_dir: Path, account_id: str) -> dict:  # type: ignore[type-arg]
    con = open_account_file(data_dir, account_id)
    try:
        return table_checksums(con)
    finally:
        con.close()


def wipe(data_dir: Path) -> None:
    shutil.rmtree(data_dir)
    data_dir.mkdir()


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nudge", *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUDGE_LOG_LEVEL": "warning", **(env or {})})


def fill(srv: NudgeServer, users: int = 300, per_user: int = 10) -> None:
    recs = []
    for u in range(users):
        recs.append({"type": "profile", "identity": f"u{u}",
                     "profileData": {"Email": f"u{u}@example.com", "Tier": u % 3}})
        recs += [{"type": "event", "identity": f"u{u}", "evtName": ("A", "B")[k % 2],
                  "ts": NOW - 500 + k, "evtData": {"k": k, "s": f"v{k % 4}"}}
                 for k in range(per_user)]
    for i in range(0, len(recs), 1000):
        r = srv.upload(recs[i:i + 1000], timeout=60)
        assert r.status_code == 200 and r.json()["unprocessed"] == [], r.text


def test_backup_wipe_restore_gives_identical_counts_and_checksums(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = make_server(data, {"NUDGE_COMPACT_THRESHOLD_ROWS": "1000"})
    second = json.loads(nudge_cli(data, "accounts", "create", "second", "--json"))
    try:
        fill(srv)
        r = httpx.post(srv.url + "/1/segments", headers=srv.headers, json={
            "name": "B doers", "definition": {"did": {"event": "B"}}})
        assert r.status_code == 201, r.text
        out = nudge_cli(data, "backup", str(tmp_path / "bk"))  # server running
        assert "backup of 2 accounts" in out
        count = httpx.get(f"{srv.url}/1/segments/{r.json()['id']}/count",
                          headers=srv.headers).json()
    finally:
        srv.stop()
    before = {a: fingerprint(data, a) for a in (srv.account_id, second["id"])}
    assert before[srv.account_id]["events_sorted"]["rows"] > 0
    assert sum(t["rows"] for t in before[srv.account_id].values()) > 3000
    # The backup is encrypted: no identifier in it.
    for path in (tmp_path / "bk").rglob("*"):
        if path.is_file():
            assert b"u17@example.com" not in path.read_bytes(), path
    wipe(data)
    out = nudge_cli(data, "restore", str(tmp_path / "bk"))
    assert "restored 2 accounts" in out and "verified" in out
    assert {a: fingerprint(data, a) for a in before} == before
    srv.start()  # keys, segments and data are back
    try:
        p = httpx.get(srv.url + "/1/profile", params={"identity": "u17"}, headers=srv.headers)
        assert p.status_code == 200 and p.json()["profile"]["total_events"] == 10
        r = httpx.get(srv.url + "/1/segments", headers=srv.headers)
        sid = r.json()["segments"][0]["id"]
        assert httpx.get(f"{srv.url}/1/segments/{sid}/count",
                         headers=srv.headers).json() == count
    finally:
        srv.stop()


def test_backup_taken_during_ingest_is_consistent(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = make_server(data, {"NUDGE_COMPACT_THRESHOLD_ROWS": "3000"})
    acked: list[tuple[float, str]] = []
    stop = threading.Event()
    errors: list[str] = []

    def client(c: int) -> None:
        n = 0
        with httpx.Client(headers=srv.headers, timeout=60) as http:
            while not stop.is_set():
                tag = f"c{c}-b{n}"
                recs = [{"type": "event", "identity": f"c{c}-u{k % 7}", "evtName": "Tick",
                         "ts": NOW, "evtData": {"batch": tag, "k": k}} for k in range(100)]
                r = http.post(srv.url + "/1/upload", json={"d": recs})
                if r.status_code != 200 or r.json()["unprocessed"]:
                    errors.append(r.text)
                    return
                acked.append((time.monotonic(), tag))
                n += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(3)]
    try:
        for t in threads:
            t.start()
        while len(acked) < 30:
            time.sleep(0.05)
        started = time.monotonic()
        nudge_cli(data, "backup", str(tmp_path / "bk"))
        finished = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join()
        srv.stop()
    assert not errors, errors[:2]
    before_backup = {tag for t, tag in acked if t < started}
    after_backup = {tag for t, tag in acked if t > finished}
    assert after_backup, "ingest went on after the backup"
    wipe(data)
    nudge_cli(data, "restore", str(tmp_path / "bk"))
    con = open_account_file(data, srv.account_id)
    try:
        per_batch = dict(con.execute(f"SELECT {batch_expr(con)}, count(*) FROM events "  # noqa: S608
                                     "WHERE event = 'Tick' GROUP BY 1").fetchall())
        dupes = con.execute("SELECT count(*) - count(DISTINCT message_id) FROM events"
                            ).fetchone()[0]
        counted = con.execute("SELECT sum(event_count) FROM profiles").fetchone()[0]
        stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()
    assert set(per_batch.values()) == {100}  # every batch whole or absent
    assert before_backup <= set(per_batch)  # everything acknowledged before is in
    assert not (after_backup & set(per_batch))  # nothing acknowledged after is
    assert dupes == 0 and counted == stored  # profiles agree with events


def batch_expr(con) -> str:  # type: ignore[no-untyped-def]
    """The SQL for the ``batch`` property: its typed column (named by the catalog, never by
    input) or the JSON overflow."""
    row = con.execute("SELECT column_name FROM property_catalog WHERE scope = 'event' "
                      "AND name = 'batch' AND type = 'string'").fetchone()
    return str(row[0]) if row else "json_extract_string(props, '$.batch')"


def test_restore_with_the_wrong_master_key_fails_loudly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = make_server(data)
    try:
        fill(srv, users=5)
        nudge_cli(data, "backup", str(tmp_path / "bk"))
    finally:
        srv.stop()
    target = tmp_path / "elsewhere"
    wrong = base64.b64encode(os.urandom(32)).decode()
    proc = cli(target, "restore", str(tmp_path / "bk"), env={"NUDGE_MASTER_KEY": wrong})
    assert proc.returncode == 1
    assert "needs the master key with id" in proc.stderr
    assert not target.exists() or not any(target.iterdir())  # nothing written
    # Even with the manifest's key id forged, the control store does not decrypt.
    manifest = json.loads((tmp_path / "bk" / "manifest.json").read_text())
    original = manifest["master_key_id"]
    manifest["master_key_id"] = master_key_id(base64.b64decode(wrong))
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    proc = cli(target, "restore", str(tmp_path / "bk"), env={"NUDGE_MASTER_KEY": wrong})
    assert proc.returncode == 1 and "does not decrypt with this master key" in proc.stderr
    # The right key (beside the original data directory) restores elsewhere.
    manifest["master_key_id"] = original
    (tmp_path / "bk" / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(target, ignore_errors=True)
    proc = cli(target, "restore", str(tmp_path / "bk"),
               env={"NUDGE_MASTER_KEY_FILE": str(tmp_path / "data.master-key")})
    assert proc.returncode == 0, proc.stderr


def test_backup_and_restore_refuse_unsafe_targets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = make_server(data)
    try:
        proc = cli(data, "backup", str(data / "inside"))
        assert proc.returncode == 1 and "outside the data directory" in proc.stderr
        nudge_cli(data, "backup", str(tmp_path / "bk"))
        proc = cli(data, "backup", str(tmp_path / "bk"))
        assert proc.returncode == 1 and "not empty" in proc.stderr
    finally:
        srv.stop()
    proc = cli(data, "restore", str(tmp_path / "bk"))
    assert proc.returncode == 1 and "not empty" in proc.stderr
    # A tampered account file is detected at restore.
    (db,) = (tmp_path / "bk" / "accounts").rglob("events.duckdb")
    raw = bytearray(db.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    db.write_bytes(bytes(raw))
    wipe(data)
    proc = cli(data, "restore", str(tmp_path / "bk"))
    assert proc.returncode == 1 and "checksum" in proc.stderr
