"""Backups of a server whose control store is a real PostgreSQL (issue 6, item 7): the
control store is copied logically in one snapshot into the encrypted backup, and restores
into SQLite or into an empty PostgreSQL database with identical rows and working ids."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from conftest import NudgeServer, free_port
from nudge.store import control
from nudge.tenancy.accounts import AccountDirectory
from tests.privacy.test_backup import fingerprint, wipe
from tests.test_control_store import pg_url  # noqa: F401 - the real PostgreSQL fixture

NOW = int(time.time())


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "nudge", *args, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "NUDGE_LOG_LEVEL": "warning", **env})
    assert out.returncode == 0, out.stderr
    return out.stdout


def _rows(url: str) -> dict[str, list[tuple]]:  # type: ignore[type-arg]
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr)
                    for t in control.metadata.sorted_tables}
    finally:
        engine.dispose()


def _new_database(url: str, name: str) -> str:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")  # a fixed test name
    finally:
        engine.dispose()
    return url.replace("postgres@/postgres?", f"postgres@/{name}?")


def test_postgres_control_store_backup_restores_to_sqlite_and_postgres(
        pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    source = _new_database(pg_url, "backup_source")
    env = {"NUDGE_CONTROL_URL": source}
    data = tmp_path / "data"
    data.mkdir()
    new = AccountDirectory(control.connect(source)).create("pg-backup")
    srv = NudgeServer(data, free_port(), new.account.id, new.passcode, new.write_key, env)
    srv.start()
    try:
        recs = [{"type": "profile", "identity": f"p{u}",
                 "profileData": {"Email": f"p{u}@pg.example"}} for u in range(50)]
        recs += [{"type": "event", "identity": f"p{u % 50}", "evtName": "Bought",
                  "ts": NOW - u} for u in range(500)]
        assert srv.upload(recs, timeout=60).json()["unprocessed"] == []
        seg = httpx.post(srv.url + "/1/segments", headers=srv.headers, json={
            "name": "buyers", "definition": {"did": {"event": "Bought"}}}).json()
        out = _cli(data, env, "backup", str(tmp_path / "bk"))  # the server runs
        assert "backup of 1 account" in out
    finally:
        srv.stop()
    before_rows = _rows(source)
    before = fingerprint_with(data, new.account.id, env)
    for path in (tmp_path / "bk").rglob("*"):
        if path.is_file():
            assert b"p7@pg.example" not in path.read_bytes(), path

    # Into SQLite: the control store's rows are those PostgreSQL held.
    wipe(data)
    out = _cli(data, {"NUDGE_MASTER_KEY_FILE": str(tmp_path / "data.master-key")},
               "restore", str(tmp_path / "bk"))
    assert "restored 1 accounts" in out and "verified" in out
    assert _rows(f"sqlite:///{data / 'control.db'}") == before_rows

    # Into an empty PostgreSQL database: same rows, and new ids follow the copied ones.
    target = _new_database(pg_url, "backup_target")
    wipe(data)
    env = {"NUDGE_CONTROL_URL": target, "NUDGE_MASTER_KEY_FILE": str(tmp_path / "data.master-key")}
    out = _cli(data, env, "restore", str(tmp_path / "bk"))
    assert "verified" in out
    assert _rows(target) == before_rows
    assert fingerprint_with(data, new.account.id, env) == before
    srv = NudgeServer(data, free_port(), new.account.id, new.passcode, new.write_key, env)
    srv.start()
    try:
        count = httpx.get(f"{srv.url}/1/segments/{seg['id']}/count", headers=srv.headers)
        assert count.json()["count"] == 50
        again = httpx.post(srv.url + "/1/segments", headers=srv.headers, json={
            "name": "buyers 2", "definition": {"did": {"event": "Bought"}}})
        assert again.status_code == 201 and again.json()["id"] > seg["id"], again.text
    finally:
        srv.stop()
    # Restoring over a control store that holds data is refused.
    wipe(data)
    res = subprocess.run([sys.executable, "-m", "nudge", "restore", str(tmp_path / "bk"),
                          "--data-dir", str(data)], capture_output=True, text=True,
                         env={**os.environ, **env})
    assert res.returncode != 0 and "not empty" in (res.stdout + res.stderr)


def fingerprint_with(data: Path, account_id: str, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return fingerprint(data, account_id)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
