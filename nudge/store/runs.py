"""The sorted runs of ``events_sorted`` and their merging (size-tiered, as in an LSM tree).

Each compaction appends one *run* to ``events_sorted``: the events it moved (a contiguous
range of ``seq``), ordered by (event, ts). Zone maps prune every run by event and time, but
a query for one event reads one stretch per run, and each stretch shares row groups with
its neighbours: at 100M events, 100 runs of 1M took segment (a) from 75 to 146 ms of CPU
(docs/benchmarks.md). So runs are merged in the background:

* **Policy**: a run's tier is ``floor(log_fanout(rows / compact_threshold_rows))``; when
  ``merge_fanout`` consecutive runs share a tier they are merged into one (of a higher tier).
  The run count stays logarithmic in the data (at most ``fanout - 1`` runs per tier) and each
  event is rewritten about ``log_fanout(total / threshold)`` times.
* **Bounded steps**: DuckDB allows one writer per file, so merging runs on the account's
  writer thread, between group commits. A merge is planned as key pieces — ranges of
  (event, ts) of about ``merge_step_rows`` rows each, from per-run statistics recorded at
  compaction — and one step moves one piece: it copies the piece's rows of the merging runs,
  sorted, to the end of the table and deletes the originals. Appended pieces follow each
  other in key order, so once the last piece is moved the runs are one sorted run.
* **Crash safety**: a step is one transaction (copy, delete, progress in ``meta``), and it
  checks that it deleted exactly the rows it copied, or rolls back. A kill at any point
  leaves each step done or not done: nothing lost, nothing twice. On restart the merge
  resumes at the recorded piece (tests/test_run_merge.py kills merges with SIGKILL).

Originals are told apart from their copies by ``rowid``: rows appended in a transaction get
row ids above every committed row's, so ``rowid <= max(rowid of the piece before the copy)``
selects exactly the originals.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from nudge.config import Settings

log = logging.getLogger("nudge.store")

# event name -> [rows, min ts, max ts] (epoch microseconds) of one run
RunStats = dict[str, list[int]]

STATS_SQL = ("SELECT event, count(*), epoch_us(min(ts)), epoch_us(max(ts)) FROM {table} "
             "{where} GROUP BY event")


@dataclass
class Run:
    """Events with ``seq_lo <= seq <= seq_hi``, stored in (event, ts) order."""

    seq_lo: int
    seq_hi: int
    rows: int
    stats: RunStats | None = None  # None for runs recorded before statistics existed


@dataclass
class MergePlan:
    """Runs ``seq_lo..seq_hi`` being merged; piece ``i`` is the rows whose (event, ts) lies
    in ``[bounds[i], bounds[i + 1])``, with no lower limit for the first piece and no upper
    limit for the last. A bound's ts of ``None`` means the event's first row."""

    seq_lo: int
    seq_hi: int
    rows: int
    stats: RunStats
    bounds: list[tuple[str, int | None]]
    next: int = 0

    def to_json(self) -> str:
        return json.dumps({"seq_lo": self.seq_lo, "seq_hi": self.seq_hi, "rows": self.rows,
                           "stats": self.stats, "bounds": self.bounds, "next": self.next})

    @classmethod
    def from_json(cls, text: str) -> MergePlan:
        d = json.loads(text)
        return cls(d["seq_lo"], d["seq_hi"], d["rows"], d["stats"],
                   [(e, t) for e, t in d["bounds"]], d["next"])


def run_stats(cur: Any, table: str, where: str = "", params: list[Any] | None = None) -> RunStats:
    """Per-event row counts and time range of ``table`` (both names are ours)."""
    rows = cur.execute(STATS_SQL.format(table=table, where=where), params or []).fetchall()
    return {e: [int(n), int(lo), int(hi)] for e, n, lo, hi in rows}


def merged_stats(parts: list[RunStats]) -> RunStats:
    out: RunStats = {}
    for stats in parts:
        for event, (n, lo, hi) in stats.items():
            if event in out:
                m = out[event]
                out[event] = [m[0] + n, min(m[1], lo), max(m[2], hi)]
            else:
                out[event] = [n, lo, hi]
    return out


def plan_bounds(stats: RunStats, step_rows: int) -> list[tuple[str, int | None]]:
    """Lower bounds of pieces of about ``step_rows`` rows: each event is split into equal
    time slices (events arrive spread over time, so slices hold similar row counts).

    >>> plan_bounds({"b": [10, 0, 100], "a": [3, 5, 9]}, 5)
    [('a', None), ('b', None), ('b', 50)]
    """
    bounds: list[tuple[str, int | None]] = []
    for event in sorted(stats):
        n, lo, hi = stats[event]
        k = max(1, min(-(-n // max(step_rows, 1)), hi - lo + 1))
        bounds.append((event, None))
        bounds.extend((event, lo + (hi - lo) * i // k) for i in range(1, k))
    return bounds


def tier(rows: int, base: int, fanout: int) -> int:
    """0 below ``base * fanout`` rows, then one more per factor of ``fanout``."""
    t, size = 0, max(base, 1) * fanout
    while rows >= size:
        t, size = t + 1, size * fanout
    return t


@dataclass
class SortedRuns:
    """The runs of one account's ``events_sorted`` and the merge in progress, if any.

    Only the writer thread calls these methods; each writes through the writer cursor."""

    settings: Settings
    runs: list[Run] = field(default_factory=list)
    plan: MergePlan | None = None
    not_before: float = 0.0  # monotonic time before which a busy writer does not merge
    failed_until: float = 0.0  # after a failed step, merging pauses until then

    @classmethod
    def load(cls, cur: Any, settings: Settings, compacted_through: int) -> SortedRuns:
        runs = [Run(lo, hi, n, json.loads(s) if s else None) for lo, hi, n, s in cur.execute(
            "SELECT seq_lo, seq_hi, rows, stats FROM event_runs ORDER BY seq_lo").fetchall()]
        covered = runs[-1].seq_hi if runs else 0
        if compacted_through > covered:
            # Compacted before runs were recorded: take what is there as one run (unknown
            # order inside; a later merge that includes it sorts it).
            n = int(cur.execute("SELECT count(*) FROM events_sorted WHERE seq > ?",
                                [covered]).fetchone()[0])
            run = Run(covered + 1, compacted_through, n)
            insert_run(cur, run)
            runs.append(run)
        row = cur.execute("SELECT value FROM meta WHERE key = 'run_merge'").fetchone()
        return cls(settings, runs, MergePlan.from_json(row[0]) if row else None)

    # -- policy -------------------------------------------------------------------------
    def candidate(self) -> list[Run] | None:
        """The oldest ``merge_fanout`` consecutive runs of one tier, if any."""
        fanout = self.settings.merge_fanout
        if fanout < 2 or len(self.runs) < fanout:
            return None
        base = self.settings.compact_threshold_rows
        tiers = [tier(r.rows, base, fanout) for r in self.runs]
        for i in range(len(self.runs) - fanout + 1):
            if len(set(tiers[i:i + fanout])) == 1:
                return self.runs[i:i + fanout]
        return None

    def pending(self) -> bool:
        """Is there merge work (and merging not paused after a failure)?"""
        if time.monotonic() < self.failed_until or self.settings.merge_fanout < 2:
            return False
        return self.plan is not None or self.candidate() is not None

    def due(self) -> bool:
        """Pending, and a busy writer has spent enough time on commits since the last step."""
        return time.monotonic() >= self.not_before and self.pending()

    # -- steps ----------------------------------------------------------------------------
    def step(self, cur: Any) -> bool:
        """One bounded step: plan a merge, or move one piece. Returns False if there was
        nothing to do. On failure nothing changed and merging pauses for a minute."""
        started = time.monotonic()
        try:
            if self.plan is None:
                group = self.candidate()
                if group is None:
                    return False
                self._start(cur, group)
            else:
                self._move_piece(cur)
        except Exception:
            log.exception("merging sorted runs failed; retrying in 60 s")
            self.failed_until = time.monotonic() + 60
            return False
        took = time.monotonic() - started
        # Under load, merging takes at most 1 / (1 + ratio) of the writer's time.
        self.not_before = time.monotonic() + took * self.settings.merge_busy_ratio
        return True

    def _start(self, cur: Any, group: list[Run]) -> None:
        lo, hi = group[0].seq_lo, group[-1].seq_hi
        parts = [r.stats for r in group]
        if any(s is None for s in parts):
            stats = run_stats(cur, "events_sorted", "WHERE seq BETWEEN ? AND ?", [lo, hi])
        else:
            stats = merged_stats(parts)  # type: ignore[arg-type]
        plan = MergePlan(lo, hi, sum(r.rows for r in group), stats,
                         plan_bounds(stats, self.settings.merge_step_rows))
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('run_merge', ?)", [plan.to_json()])
        self.plan = plan
        log.info("merging %d sorted runs (seq %d..%d, %d events) in %d steps",
                 len(group), lo, hi, plan.rows, len(plan.bounds))

    def _move_piece(self, cur: Any) -> None:
        plan = self.plan
        assert plan is not None
        where, params = piece_filter(plan, plan.next)
        last = plan.next + 1 == len(plan.bounds)
        cur.execute("BEGIN TRANSACTION")
        try:
            top = cur.execute(f"SELECT max(rowid) FROM events_sorted WHERE {where}",
                              params).fetchone()[0]
            if top is not None:
                copied = cur.execute("INSERT INTO events_sorted SELECT * FROM events_sorted "
                                     f"WHERE {where} ORDER BY event, ts", params).fetchone()[0]
                deleted = cur.execute(f"DELETE FROM events_sorted WHERE {where} AND rowid <= ?",
                                      [*params, top]).fetchone()[0]
                if copied != deleted:
                    raise RuntimeError(f"run merge copied {copied} rows but deleted {deleted}")
            if last:
                cur.execute("DELETE FROM event_runs WHERE seq_lo BETWEEN ? AND ?",
                            [plan.seq_lo, plan.seq_hi])
                insert_run(cur, Run(plan.seq_lo, plan.seq_hi, plan.rows, plan.stats))
                cur.execute("DELETE FROM meta WHERE key = 'run_merge'")
            else:
                done = MergePlan(plan.seq_lo, plan.seq_hi, plan.rows, plan.stats, plan.bounds,
                                 plan.next + 1)
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('run_merge', ?)",
                            [done.to_json()])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if last:
            self.runs = [r for r in self.runs if not plan.seq_lo <= r.seq_lo <= plan.seq_hi]
            self.runs.append(Run(plan.seq_lo, plan.seq_hi, plan.rows, plan.stats))
            self.runs.sort(key=lambda r: r.seq_lo)
            self.plan = None
            log.info("merged sorted runs seq %d..%d", plan.seq_lo, plan.seq_hi)
        else:
            plan.next += 1

    def appended(self, run: Run) -> None:
        """A compaction committed ``run`` (already in ``event_runs``)."""
        self.runs.append(run)


def insert_run(cur: Any, run: Run) -> None:
    cur.execute("INSERT INTO event_runs VALUES (?, ?, ?, ?)",
                [run.seq_lo, run.seq_hi, run.rows,
                 None if run.stats is None else json.dumps(run.stats)])


def piece_filter(plan: MergePlan, i: int) -> tuple[str, list[Any]]:
    """SQL condition (all values bound) for piece ``i`` of the plan's runs.

    The exact condition on (event, ts) is an OR, which DuckDB cannot use to skip row
    groups; so the condition also states the bounds it implies as plain comparisons on
    ``event`` (and on ``ts`` when the piece lies within one event), which DuckDB checks
    against each row group's min/max. A step then reads the few row groups of each run
    that hold its piece, instead of every row of the merging runs (which made a merge of
    N events cost O(N² / step) and the 100M merge hours)."""
    where = ["seq BETWEEN ? AND ?"]
    params: list[Any] = [plan.seq_lo, plan.seq_hi]
    lower = plan.bounds[i] if i > 0 else None
    upper = plan.bounds[i + 1] if i + 1 < len(plan.bounds) else None
    if lower is not None:
        event, ts = lower
        where.append("event >= ?")
        params.append(event)
        if ts is not None:
            if upper is not None and upper[0] == event:
                where.append("ts >= make_timestamp(?::BIGINT)")
                params.append(ts)
            where.append("(event > ? OR (event = ? AND ts >= make_timestamp(?::BIGINT)))")
            params += [event, event, ts]
    if upper is not None:
        event, ts = upper
        if ts is None:
            where.append("event < ?")
            params.append(event)
        else:
            where.append("event <= ?")
            params.append(event)
            if lower is not None and lower[0] == event:
                where.append("ts < make_timestamp(?::BIGINT)")
                params.append(ts)
            where.append("(event < ? OR (event = ? AND ts < make_timestamp(?::BIGINT)))")
            params += [event, event, ts]
    return " AND ".join(where), params
