"""Send-rate limits hold across server processes (nudge/engage/ratelimit.py): two OS
processes sending on the same (account, channel) through the shared control store, on
SQLite and on PostgreSQL, never get the same or too-close slots, and never send early."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from nudge.engage.ratelimit import BURST_S, reserve
from nudge.store import control
from tests.test_control_store import pg_url  # noqa: F401 - a real PostgreSQL server

ROOT = Path(__file__).resolve().parents[2]
RATE, PER_PROCESS = 80.0, 40


def two_processes(url: str, tmp: Path) -> list[dict]:  # type: ignore[type-arg]
    control.connect(url).dispose()  # tables exist before the processes race
    start_at = time.time() + 6  # imports on a loaded machine take a few seconds
    outs = [tmp / f"p{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.engage.rate_proc", url, str(RATE),
                               str(PER_PROCESS), str(out), str(start_at)], cwd=ROOT)
             for out in outs]
    for p in procs:
        assert p.wait(120) == 0
    return [json.loads(o.read_text()) for o in outs]


def check(results: list[dict]) -> None:  # type: ignore[type-arg]
    slots = sorted(s for r in results for s, _ in r["sends"])
    assert len(slots) == 2 * PER_PROCESS
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    # Every send of both processes has its own slot, 1/rate apart: the limit is global.
    assert min(gaps) >= 1 / RATE - 1e-6, min(gaps)
    # Both processes took part (their slots interleave), and each sent no earlier than its
    # slot (a few ms of event-loop timer granularity allowed).
    owners = [i for i, r in enumerate(results) for _ in r["sends"]]
    assert set(owners) == {0, 1}
    for r in results:
        assert all(at >= slot - 0.005 for slot, at in r["sends"])
        # Reserved in blocks: far fewer control-store statements than sends.
        assert r["reservations"] < PER_PROCESS / 2
    # Over the whole run no more than rate x time + the burst were sent.
    span = slots[-1] - slots[0]
    assert len(slots) <= RATE * (span + BURST_S) + 1


def test_two_processes_share_one_rate_on_sqlite(tmp_path: Path) -> None:
    check(two_processes(f"sqlite:///{tmp_path / 'control.db'}", tmp_path))


def test_two_processes_share_one_rate_on_postgres(pg_url: str, tmp_path: Path) -> None:  # noqa: F811
    check(two_processes(pg_url, tmp_path))


def test_reserve_is_exact_arithmetic(tmp_path: Path) -> None:
    """GCRA without a process: a fresh key may burst one second's worth, then slots follow
    on at 1/rate; a stored time far ahead (a clock jump) starts again from now."""
    engine = control.connect(f"sqlite:///{tmp_path / 'control.db'}")
    key = ("a", "email")
    first = reserve(engine, key, 4.0, 3, now=1000.0)
    assert first == [999.0, 999.25, 999.5]  # within the burst: sendable at once
    assert reserve(engine, key, 4.0, 2, now=1000.0) == [999.75, 1000.0]
    assert reserve(engine, key, 4.0, 1, now=1000.0) == [1000.25]  # the bucket is empty
    assert reserve(engine, key, 4.0, 1, now=2000.0) == [1999.0]  # idle: the burst refills
    assert reserve(engine, ("a", "sms"), 4.0, 1, now=2000.0) == [1999.0]  # keys independent
    with engine.begin() as conn:
        conn.execute(control.send_rates.update().values(tat=10 ** 9))
    assert reserve(engine, key, 4.0, 1, now=3000.0) == [2999.0]
    engine.dispose()
