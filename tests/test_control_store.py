"""The control store works unchanged on PostgreSQL (a real server, started for the test)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import NudgeServer, free_port
from nudge.errors import AuthError
from nudge.store import control
from nudge.tenancy.accounts import AccountDirectory

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb refuses to run as root; CI runs as root.
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    if not BIN:
        pytest.skip("PostgreSQL server not installed (.ci/run installs it)")
    # Not under pytest's tmp dir: that is private to root and postgres must reach it.
    d = Path(tempfile.mkdtemp(prefix="nudge-pg-"))
    data, port = d / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(d, "postgres")
    subprocess.run(_as_postgres([f"{BIN[-1]}/initdb", "-A", "trust", "-U", "postgres",
                                 "-D", str(data)]), check=True, capture_output=True)
    subprocess.run(_as_postgres([f"{BIN[-1]}/pg_ctl", "-D", str(data), "-w", "-l",
                                 str(d / "log"), "-o", f"-p {port} -k {d} -c listen_addresses=''",
                                 "start"]), check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={d}&port={port}"
    finally:
        subprocess.run(_as_postgres([f"{BIN[-1]}/pg_ctl", "-D", str(data), "-m", "fast",
                                     "stop"]), capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def test_accounts_and_keys_on_postgres(pg_url: str) -> None:
    accounts = AccountDirectory(control.connect(pg_url))
    new = accounts.create("On Postgres", "Asia/Tokyo")
    assert new.account in accounts.list()
    accounts.authenticate(new.account.id, new.passcode, ("passcode",))
    assert accounts.account_for_write_key(new.write_key) == new.account.id
    rotated = accounts.rotate_key(new.account.id)
    with pytest.raises(AuthError):
        accounts.authenticate(new.account.id, new.passcode, ("passcode",))
    accounts.authenticate(new.account.id, rotated, ("passcode",))


def test_server_runs_on_a_postgres_control_store(pg_url: str, tmp_path: Path) -> None:
    import httpx

    new = AccountDirectory(control.connect(pg_url)).create("Served")
    srv = NudgeServer(tmp_path, free_port(), new.account.id, new.passcode, new.write_key,
                      {"NUDGE_CONTROL_URL": pg_url})
    srv.start()
    try:
        r = srv.upload([{"type": "event", "identity": "pg1", "evtName": "Opened"}])
        assert r.json()["status"] == "success"
        p = httpx.get(srv.url + "/1/profile", params={"identity": "pg1"}, headers=srv.headers)
        assert p.json()["profile"]["event_counts"] == {"Opened": 1}
    finally:
        srv.stop()


@pytest.mark.parametrize("where", ["sqlite", "postgres"])
def test_in_ids_selects_exactly_the_given_ids(where: str, pg_url: str, tmp_path: Path) -> None:
    """The policy's per-batch lookups (control.in_ids: one bound value for all the ids)."""
    import sqlalchemy as sa

    engine = control.connect(pg_url if where == "postgres" else
                             f"sqlite:///{tmp_path / 'control.db'}")
    s = control.subscriptions
    acct = f"in-ids-{os.getpid()}"
    with engine.begin() as conn:
        conn.execute(s.delete().where(s.c.account_id == acct))
        conn.execute(s.insert(), [{"account_id": acct, "user_id": u, "channel": "email",
                                   "category": "*", "subscribed": False, "updated_at": 0.0}
                                  for u in (1, 2, 3, 2**40, 7000)])
    with engine.connect() as conn:
        def got(ids: list[int]) -> list[int]:
            return sorted(conn.execute(sa.select(s.c.user_id).where(
                s.c.account_id == acct, control.in_ids(conn, s.c.user_id, ids))).scalars())
        assert got([2, 3, 4, 2**40]) == [2, 3, 2**40]
        assert got(list(range(5000, 10_000))) == [7000]  # more ids than SQLite's bound names
        assert got([]) == []
