"""kill -9 during the rewrite after an erasure (nudge/privacy/shred.py): at every step, and
at a moment chosen by the clock while the copy is being written, the next open finds either
the old file with its key or the new file with its key — nothing acknowledged is lost,
nothing erased comes back, no key or partial copy is left behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import nudge_cli
from nudge.privacy import storage

_SCRIPT = """
import sys, time
from pathlib import Path
from nudge.config import load_settings
from nudge.ingest.records import Record
from nudge.privacy import shred
from nudge.privacy.admin import LocalInstance
from nudge.privacy.gdpr import GdprRequests, parse_subjects

data_dir, account, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
inst = LocalInstance(load_settings(data_dir=data_dir))
store = inst.stores.get(account)
now = time.time()
for who in ("ann", "bob"):
    for lo in range(0, n, 20000):
        store.write([Record(kind="event", ids={"identity": who}, ts=now - i,
                            message_id=f"{who}-{i}", event="Viewed",
                            props={"note": f"note-{who}-{i % 11}"})
                     for i in range(lo, min(n, lo + 20000))])
store.compact_now()
GdprRequests(inst.accounts.engine, inst.keyring, store).erase(
    parse_subjects({"subjects": [{"identity": "ann"}]}), "test")
print("erased", flush=True)
shred.rewrite(store, inst.keyring, inst.keyring.engine)
print("rewritten", flush=True)
"""


def _run(data_dir: Path, account: str, n: int, crash_at: str | None) -> subprocess.Popen[str]:
    env = {**os.environ, "NUDGE_LOG_LEVEL": "warning"}
    if crash_at:
        env["NUDGE_TEST_CRASH_IN_REWRITE"] = crash_at
    return subprocess.Popen([sys.executable, "-c", _SCRIPT, str(data_dir), account, str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _account(data_dir: Path) -> str:
    return str(json.loads(nudge_cli(data_dir, "accounts", "create", "crash", "--json"))["id"])


def _check(data_dir: Path, account: str, n: int) -> int:
    """The store opens, holds bob's n events and none of ann's; one key, no leftovers.
    Returns the file key's generation."""
    con = storage.open_account_file(data_dir, account)
    try:
        rows = dict(con.execute("SELECT p.identity, count(*) FROM events e JOIN profiles p "
                                "USING (user_id) GROUP BY 1").fetchall())
    finally:
        con.close()
    assert rows == {"bob": n}
    keys = sqlite3.connect(data_dir / "control.db").execute(
        "SELECT generation, state FROM account_file_keys WHERE account_id = ?",
        [account]).fetchall()
    assert len(keys) == 1 and keys[0][1] == "active", keys
    path = data_dir / "accounts" / account / "events.duckdb"
    assert not storage.rewrite_path(path).exists()
    return int(keys[0][0])


@pytest.mark.parametrize(("step", "generation"), [
    ("pending", 1),     # new key stored, nothing copied
    ("copied", 1),      # the new file complete beside the old one
    ("swapped", 2),     # the new file in place, its key still pending
    ("committed", 2),   # the new key active, the old one destroyed, not yet reopened
])
def test_kill_at_each_step(tmp_path: Path, step: str, generation: int) -> None:
    account = _account(tmp_path)
    proc = _run(tmp_path, account, 3000, step)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, (out, err)
    assert "erased" in out and "rewritten" not in out
    assert _check(tmp_path, account, 3000) == generation
    # And the account goes on: a rewrite after the recovery works.
    proc = _run(tmp_path, account, 3000, None)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "rewritten" in out, err
    assert _check(tmp_path, account, 3000) == generation + 1


def test_kill_while_the_copy_is_written(tmp_path: Path) -> None:
    """No hook: SIGKILL as soon as the copy file has grown, i.e. in the middle of COPY FROM
    DATABASE (or, on a fast run, just after it)."""
    account = _account(tmp_path)
    n = 100_000
    proc = _run(tmp_path, account, n, None)
    tmp = storage.rewrite_path(tmp_path / "accounts" / account / "events.duckdb")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if tmp.exists() and tmp.stat().st_size > 0:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    assert "erased" in out, "the copy was never seen: the run ended before it"
    generation = _check(tmp_path, account, n)
    assert generation in (1, 2)
