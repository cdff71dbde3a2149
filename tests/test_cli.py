"""The CLI: accounts, import (JSONL/CSV/Parquet), export, compact — real processes, real files."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import NudgeServer, free_port, nudge_cli


def test_accounts_create_list_and_rotate(tmp_path: Path) -> None:
    a = json.loads(nudge_cli(tmp_path, "accounts", "create", "Shop", "--json",
                             "--timezone", "Europe/Berlin"))
    assert set(a) >= {"id", "passcode", "write_key"} and a["passcode"] != a["write_key"]
    listed = json.loads(nudge_cli(tmp_path, "accounts", "list", "--json"))
    assert listed == [{"id": a["id"], "name": "Shop", "timezone": "Europe/Berlin"}]

    srv = NudgeServer(tmp_path, free_port(), a["id"], a["passcode"], a["write_key"])
    srv.start()
    try:
        ev = [{"type": "event", "identity": "u1", "evtName": "E"}]
        assert srv.upload(ev).status_code == 200
        rotated = json.loads(nudge_cli(tmp_path, "accounts", "rotate-key", a["id"], "--json"))
        assert rotated["passcode"] != a["passcode"]
        # The server re-reads keys within its 5 s cache window; the old key must stop working.
        deadline = time.monotonic() + 15
        while srv.upload(ev).status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert srv.upload(ev).status_code == 401
        srv.passcode = rotated["passcode"]
        assert srv.upload(ev).status_code == 200
    finally:
        srv.stop()


def test_bad_timezone_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "nudge", "accounts", "create", "X",
                          "--timezone", "Mars/Base", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "timezone" in out.stderr


def _profile(srv: NudgeServer, **q: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(srv.url + "/1/profile", params=q, headers=srv.headers)
    assert r.status_code == 200, r.text
    return r.json()["profile"]  # type: ignore[no-any-return]


def test_import_jsonl_csv_parquet_then_export(tmp_path: Path) -> None:
    a = json.loads(nudge_cli(tmp_path, "accounts", "create", "Shop", "--json"))
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [
        {"type": "profile", "identity": "j1", "profileData": {"City": "Oslo"}},
        {"type": "event", "identity": "j1", "ts": 1700000000, "evtName": "Charged",
         "evtData": {"Amount": 10.5}},
        {"type": "event", "identity": "j1", "ts": 1700000000, "evtName": "x" * 200},
    ]) + "\n")
    with (tmp_path / "events.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["identity", "ts", "evtName", "Amount", "Category"])
        w.writerow(["c1", 1700000100, "Charged", "99.5", "Books"])
        w.writerow(["c1", 1700000200, "Charged", "1", "Toys"])
    pq.write_table(pa.table({"identity": ["p1", "p2"], "City": ["Lima", "Pune"],
                             "Age": [31, 42]}), tmp_path / "profiles.parquet")

    out = nudge_cli(tmp_path, "import", str(jsonl))
    assert "imported 2 records, rejected 1" in out and "row 3" in out
    assert "imported 2 records" in nudge_cli(tmp_path, "import", str(tmp_path / "events.csv"))
    assert "imported 2 records" in nudge_cli(tmp_path, "import",
                                             str(tmp_path / "profiles.parquet"))
    assert "compacted" in nudge_cli(tmp_path, "compact")

    srv = NudgeServer(tmp_path, free_port(), a["id"], a["passcode"], a["write_key"])
    srv.start()
    try:
        assert _profile(srv, identity="j1")["properties"] == {"City": "Oslo"}
        assert _profile(srv, identity="c1")["event_counts"] == {"Charged": 2}
        assert _profile(srv, identity="p2")["properties"] == {"Age": 42, "City": "Pune"}
    finally:
        srv.stop()

    nudge_cli(tmp_path, "export", str(tmp_path / "ev.parquet"), "--what", "events")
    nudge_cli(tmp_path, "export", str(tmp_path / "pr.parquet"), "--what", "profiles")
    ev = pq.read_table(tmp_path / "ev.parquet").to_pylist()
    assert sorted((e["identity"], e["event"], e["Amount"]) for e in ev) == [
        ("c1", "Charged", 1.0), ("c1", "Charged", 99.5), ("j1", "Charged", 10.5)]
    assert {e["Category"] for e in ev if e["identity"] == "c1"} == {"Books", "Toys"}
    pr = {p["identity"]: p for p in pq.read_table(tmp_path / "pr.parquet").to_pylist()}
    assert pr["p1"]["City"] == "Lima" and pr["p1"]["Age"] == 31


def test_demo_prints_credentials_that_work_for_the_api_and_the_dashboard(tmp_path: Path) -> None:
    out = nudge_cli(tmp_path, "demo", "--users", "100", "--events", "1500")
    creds = json.loads((tmp_path / "demo-account.json").read_text())
    assert creds["passcode"] in out and creds["dashboard_password"] in out
    srv = NudgeServer(tmp_path, free_port(), creds["id"], creds["passcode"], creds["write_key"])
    srv.start()
    try:
        catalog = httpx.get(srv.url + "/1/events/catalog", headers=srv.headers, timeout=30)
        assert catalog.status_code == 200 and catalog.json()["events"]
        login = httpx.post(srv.url + "/auth/login", timeout=30, json={
            "email": creds["dashboard_user"], "password": creds["dashboard_password"]})
        # An owner without MFA yet is signed in to the enrollment step, not further.
        assert login.status_code == 200 and login.json()["stage"] == "enroll", login.text
        wrong = httpx.post(srv.url + "/auth/login", timeout=30, json={
            "email": creds["dashboard_user"], "password": "not-the-password-at-all"})
        assert wrong.status_code == 401
    finally:
        srv.stop()
