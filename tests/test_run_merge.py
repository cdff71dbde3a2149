"""Merging of sorted runs (nudge/store/runs.py) on a real DuckDB file.

Each compaction appends a sorted run to ``events_sorted``; the writer merges runs of one
size tier in bounded steps. These tests check that a merge changes no event (every column
of every row, before and after), that it leaves one run in (event, ts) order, that it
resumes after a restart, runs by itself when the writer is idle, interleaves with ingest
and compaction, and survives SIGKILL at any point without losing or duplicating a row.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from nudge.config import Limits, Settings
from nudge.ingest.upload import parse_upload
from nudge.store.account import AccountStore
from nudge.store.runs import MergePlan, SortedRuns, piece_filter, plan_bounds, tier

NOW = int(time.time())
NAMES = ["Charged", "App Launched", "Added To Cart", "Searched", "Rated"]


def batch(start: int, n: int, seed: int) -> list[Any]:
    """n events of a few people, names and times shuffled (arrival order is not (event, ts))."""
    rng = random.Random(seed)
    items = [{"type": "event", "identity": f"u{rng.randrange(7)}",
              "evtName": rng.choice(NAMES), "msgId": f"m{start + i}",
              "ts": NOW - rng.randrange(90 * 86400),
              "evtData": {"Amount": rng.randrange(1000), "City": rng.choice("ABC")}}
             for i in range(n)]
    recs, errors = parse_upload({"d": items}, Limits())
    assert not errors
    return recs


def open_store(path: Path, **settings: Any) -> AccountStore:
    return AccountStore("acct", path, Settings(data_dir=path.parent, **settings))


def with_runs(path: Path, runs: int, rows: int) -> None:
    """A closed store whose events_sorted holds ``runs`` unmerged runs of ``rows`` events."""
    store = open_store(path, merge_fanout=0, compact_threshold_rows=10**9)
    try:
        for r in range(runs):
            store.write(batch(r * rows, rows, seed=r))
            assert store.compact_now() == rows
    finally:
        store.close()


def all_rows(con: Any) -> list[tuple[Any, ...]]:
    return con.execute("SELECT * FROM events ORDER BY seq").fetchall()


def layout(con: Any) -> list[tuple[int, int, int]]:
    return con.execute("SELECT seq_lo, seq_hi, rows FROM event_runs ORDER BY seq_lo").fetchall()


def sorted_within_runs(con: Any) -> bool:
    """Every recorded run's rows lie in (event, ts) order in the table's physical order."""
    for lo, hi, _ in layout(con):
        keys = con.execute("SELECT event, ts FROM events_sorted WHERE seq BETWEEN ? AND ? "
                           "ORDER BY rowid", [lo, hi]).fetchall()
        if keys != sorted(keys):
            return False
    return True


def plain(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    return con


def test_tiers_and_piece_bounds() -> None:
    assert [tier(n, 10, 4) for n in (1, 39, 40, 159, 160, 640)] == [0, 0, 1, 1, 2, 3]
    # Pieces cover each event; heavy events are split into time slices of ~step rows.
    bounds = plan_bounds({"B": [1000, 0, 999], "A": [10, 5, 50]}, 300)
    assert bounds == [("A", None), ("B", None), ("B", 249), ("B", 499), ("B", 749)]


def test_pieces_partition_the_runs_exactly() -> None:
    """Every row of the merging runs is in exactly one piece, whatever its (event, ts) —
    rows on a bound, before the first, after the last — and no row outside the runs' seq
    range is in any piece. (The filters repeat their bounds as plain comparisons so that
    DuckDB can skip row groups; those must never exclude a row the exact condition takes.)"""
    con = duckdb.connect()
    # Every (event, ts) for ts in 0..1000 µs, so every bound is hit exactly; seq shuffled.
    con.execute("SELECT setseed(0.5)")
    con.execute("CREATE TABLE events_sorted AS SELECT row_number() OVER (ORDER BY random()) "
                "AS seq, e AS event, make_timestamp(t) AS ts FROM "
                "unnest(['A', 'B', 'C', 'Ca']) AS x(e), range(0, 1001) AS y(t)")
    lo, hi = 101, 3900
    # Statistics of the merging runs leave out "Ca" and the extremes of "B", as statistics
    # recorded before a later change would.
    stats = {"A": [300, 0, 1000], "B": [900, 100, 999], "C": [300, 0, 1000]}
    for step in (50, 200, 5000):
        plan = MergePlan(lo, hi, hi - lo + 1, stats, plan_bounds(stats, step))
        seen: list[int] = []
        for i in range(len(plan.bounds)):
            where, params = piece_filter(plan, i)
            seen += [r[0] for r in con.execute(
                f"SELECT seq FROM events_sorted WHERE {where}", params).fetchall()]
        assert sorted(seen) == list(range(lo, hi + 1)), step


def test_merge_keeps_every_row_and_leaves_one_sorted_run(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with_runs(path, runs=4, rows=60)
    con = plain(path)
    before = all_rows(con)
    assert layout(con) == [(1, 60, 60), (61, 120, 60), (121, 180, 60), (181, 240, 60)]
    assert not sorted_within_runs_whole(con)  # four runs: not one sorted sequence
    con.close()

    store = open_store(path, merge_fanout=2, merge_step_rows=25, compact_threshold_rows=30)
    store.merge_runs_now()
    with store.cursor() as cur:
        assert layout(cur) == [(1, 240, 240)]
        assert all_rows(cur) == before
        assert sorted_within_runs(cur) and sorted_within_runs_whole(cur)
        assert cur.execute("SELECT count(*) FROM meta WHERE key = 'run_merge'").fetchone() == (0,)
    store.close()


def sorted_within_runs_whole(con: Any) -> bool:
    keys = con.execute("SELECT event, ts FROM events_sorted ORDER BY rowid").fetchall()
    return keys == sorted(keys)


def test_an_idle_writer_merges_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with_runs(path, runs=3, rows=50)
    store = open_store(path, merge_fanout=3, merge_step_rows=20, compact_threshold_rows=40)
    try:
        deadline = time.monotonic() + 30
        while store.run_on_writer(lambda: len(store.sorted_runs.runs)).result() > 1:
            assert time.monotonic() < deadline, "the idle writer did not merge"
            time.sleep(0.05)
        with store.cursor() as cur:
            assert layout(cur) == [(1, 150, 150)]
            assert sorted_within_runs_whole(cur)
    finally:
        store.close()


def test_merge_resumes_after_restart_and_interleaves_with_ingest(tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with_runs(path, runs=4, rows=40)
    settings = Settings(data_dir=tmp_path, merge_fanout=4, merge_step_rows=15,
                        compact_threshold_rows=40)
    # Take a few steps of the merge with the real code on the file, then stop (as a
    # shutdown or crash between steps would).
    con = plain(path)
    before = all_rows(con)
    runs = SortedRuns.load(con, settings, compacted_through=160)
    assert runs.step(con)  # the plan
    assert runs.step(con) and runs.step(con)  # two pieces moved
    plan = MergePlan.from_json(con.execute(
        "SELECT value FROM meta WHERE key = 'run_merge'").fetchone()[0])
    assert (plan.seq_lo, plan.seq_hi, plan.next) == (1, 160, 2) and len(plan.bounds) > 4
    assert all_rows(con) == before
    con.close()

    con = plain(path)
    plan = SortedRuns.load(con, settings, compacted_through=160).plan
    assert plan is not None and plan.next == 2  # a reopened store continues at piece 2
    con.close()
    store = AccountStore("acct", path, settings)
    try:
        # New events and a new run arrive while the merge goes on.
        store.write(batch(1000, 40, seed=99))
        store.compact_now()
        store.merge_runs_now()
        with store.cursor() as cur:
            after = all_rows(cur)
            assert layout(cur) == [(1, 160, 160), (161, 200, 40)]
            assert sorted_within_runs(cur)
        assert after[:160] == before and len(after) == 200
        assert sorted(r[1] for r in after) == sorted(
            [f"m{i}" for i in range(160)] + [f"m{1000 + i}" for i in range(40)])
    finally:
        store.close()


def test_a_store_compacted_before_runs_were_recorded_takes_its_table_as_one_run(
        tmp_path: Path) -> None:
    path = tmp_path / "a.duckdb"
    with_runs(path, runs=2, rows=30)
    con = plain(path)
    con.execute("DELETE FROM event_runs")  # as written by a version without event_runs
    con.close()
    store = open_store(path, merge_fanout=2, compact_threshold_rows=100)
    try:
        store.write(batch(500, 30, seed=5))
        store.compact_now()
        store.merge_runs_now()  # the old table (unknown order) is merged with the new run
        with store.cursor() as cur:
            assert layout(cur) == [(1, 90, 90)]
            assert sorted_within_runs_whole(cur)
            assert cur.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone() \
                == (90, 90)
    finally:
        store.close()


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from nudge.config import Settings
    from nudge.store.account import AccountStore
    path = Path(sys.argv[1])
    store = AccountStore("acct", path, Settings(
        data_dir=path.parent, merge_fanout=2, merge_step_rows=int(sys.argv[2]),
        compact_threshold_rows=100))
    print("open", flush=True)  # the idle writer is merging from here on
    time.sleep(60)
""")


@pytest.mark.parametrize("step_rows", [37, 400])
def test_sigkill_during_merges_loses_and_duplicates_nothing(tmp_path: Path,
                                                             step_rows: int) -> None:
    path = tmp_path / "a.duckdb"
    with_runs(path, runs=8, rows=500)
    con = plain(path)
    expected = all_rows(con)
    con.close()
    rng = random.Random(step_rows)
    mid_merge = 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for _ in range(6):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(step_rows)],
                                 stdout=subprocess.PIPE, env=env, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "open"
        time.sleep(rng.uniform(0.0, 0.6))
        child.send_signal(signal.SIGKILL)
        child.wait()
        con = plain(path)
        try:
            assert all_rows(con) == expected  # every column of every row, once
            runs = layout(con)
            assert runs[0][0] == 1 and runs[-1][1] == 4000
            assert all(a[1] + 1 == b[0] for a, b in zip(runs, runs[1:], strict=False))
            plan = con.execute("SELECT value FROM meta WHERE key = 'run_merge'").fetchone()
            mid_merge += plan is not None and json.loads(plan[0])["next"] > 0
        finally:
            con.close()
    assert mid_merge, "no kill landed inside a merge; the test proved nothing"
    store = open_store(path, merge_fanout=2, merge_step_rows=step_rows,
                       compact_threshold_rows=100)
    try:
        store.merge_runs_now()
        with store.cursor() as cur:
            assert all_rows(cur) == expected
            assert layout(cur) == [(1, 4000, 4000)]
            assert sorted_within_runs_whole(cur)
    finally:
        store.close()
