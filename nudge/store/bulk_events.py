"""Events given as Arrow columns, appended in one transaction: the bulk path of ``nudge demo``.

A ``Commit`` builds its events table from validated ``Record`` objects, one Python object per
event; a generator that already holds its events as columns (``nudge/demo_columns.py``) can
hand them over as they are. The table has ``message_id``, ``event``, ``ts`` (epoch seconds)
and one column per property named by the property (string, number or boolean; null where an
event lacks it); the caller gives each row's ``user_id``. The rest is the commit's own
bookkeeping, in the same transaction: typed columns from the property catalog (values that
do not fit a column go to the JSON overflow, as in a commit), profile event counts and
first/last seen, the event catalog and the events' property schema. When nothing waits in
``events_recent``, the events go straight into ``events_sorted`` as one sorted run (what
compaction would make of them later).

What this path does not do, and why that is fine for its callers: no validation (the
generator makes valid records by construction; ``tests/test_demo_load.py`` compares the
result with the record path's), no dedup check and no identity resolution (fresh message ids;
users are resolved by the caller), no live-bus notification (no server is running).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nudge.store import user_sets
from nudge.store.commit import US, Commit, to_json
from nudge.store.runs import Run, insert_run, run_stats

if TYPE_CHECKING:
    from nudge.store.account import AccountStore

FIXED = ("message_id", "event", "ts")
_KINDS = {pa.string(): "string", pa.float64(): "number", pa.bool_(): "boolean"}


class ColumnarCommit(Commit):
    """One transaction of events given as columns (see the module docstring). Writer only."""

    def __init__(self, store: AccountStore, table: pa.Table, user_ids: np.ndarray) -> None:
        super().__init__(store, [])
        self.table = table
        self.user_ids = user_ids
        self._pending_event_props: set[tuple[str, str, str]] = set()

    def append(self) -> int:
        """Write the events; returns how many. Changes nothing if the transaction fails."""
        store, table = self.store, self.table
        n = table.num_rows
        if not n:
            return 0
        seq0 = store.next_seq
        events = table["event"]
        self._event_names = len(pc.unique(events))
        cur = store.writer_cursor
        cur.execute("BEGIN TRANSACTION")
        try:
            typed = self._typed_columns(events)
            fixed = {
                "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
                "message_id": table["message_id"],
                "user_id": pa.array(self.user_ids, pa.int64()),
                "event": events,
                "ts": pa.array(table["ts"].to_numpy().astype(np.int64) * US,
                               pa.timestamp("us")),
                "ingested_at": pa.array(np.full(n, int(self.now * US), dtype=np.int64),
                                        pa.timestamp("us")),
            }
            new = pa.table({**fixed, **typed})
            self._write_columns(cur)
            run = self._as_run(cur, new) if store.compacted_through == seq0 - 1 else None
            if run is None:
                cur.register("_new_events", new)
                cur.execute("INSERT INTO events_recent BY NAME SELECT * FROM _new_events")
            self._write_event_stats(cur)
            self._write_event_catalog(cur)
            cur.unregister("_new_events")
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            store.catalog.rollback()
            raise
        store.next_seq = seq0 + n
        if run is not None:
            store.compacted_through = run.seq_hi
            store.sorted_runs.appended(run)
        store.remember_ids(table["message_id"].to_pylist(), self.now)
        store.catalog.confirm()
        store.event_props.update(self._pending_event_props)
        return n

    def _as_run(self, cur: Any, new: pa.Table) -> Run:
        """Write the events straight into ``events_sorted`` as one sorted run, with what
        ``AccountStore.compact`` records for a run (its statistics, the hourly user sets,
        the watermark): appending them to ``events_recent`` and compacting them there
        wrote and sorted every row twice (2.7x the CPU for a default demo,
        docs/benchmarks.md). Only when nothing is waiting in ``events_recent``, so that
        every seq up to the watermark stays in ``events_sorted``."""
        new = new.take(pc.sort_indices(new, sort_keys=[
            ("event", "ascending"), ("ts", "ascending"), ("seq", "ascending")]))
        cur.register("_new_events", new)
        lo = self.store.compacted_through
        hi = lo + new.num_rows
        run = Run(lo + 1, hi, new.num_rows, run_stats(cur, "_new_events"))
        insert_run(cur, run)
        cur.execute("INSERT INTO events_sorted BY NAME SELECT * FROM _new_events")
        user_sets.add_compacted(cur, lo, hi, source="_new_events")
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('compacted_through', ?)", [str(hi)])
        return run

    def _typed_columns(self, events: pa.ChunkedArray) -> dict[str, Any]:
        """Property columns renamed to their catalog columns; the overflow as ``props``."""
        place = self.store.catalog.place
        known, pending = self.store.event_props, self._pending_event_props
        out: dict[str, Any] = {}
        overflow: list[dict[str, Any] | None] | None = None
        for name in self.table.column_names:
            if name in FIXED or name == "user":
                continue
            values = self.table[name]
            kind = _KINDS.get(values.type)
            present = values.drop_null()
            if not len(present) or kind is None:
                raise ValueError(f"column {name!r}: unsupported or empty ({values.type})")
            col = place("event", name, present[0].as_py())
            for event in pc.unique(events.filter(values.is_valid())).to_pylist():
                if (event, name, kind) not in known:
                    pending.add((event, name, kind))
            if col is not None and col.type == kind:
                out[col.column] = values
                continue
            # No column (budget spent) or another type: the JSON overflow, as a commit does.
            if overflow is None:
                overflow = [None] * self.table.num_rows
            for i, v in enumerate(values.to_pylist()):
                if v is not None:
                    extra = overflow[i]
                    if extra is None:
                        extra = overflow[i] = {}
                    extra[name] = v
        if overflow is not None:
            out["props"] = pa.array([to_json(o) if o else None for o in overflow], pa.string())
        return out


def append_events(store: AccountStore, table: pa.Table, user_ids: np.ndarray) -> int:
    """Append ``table``'s events for ``user_ids`` on the writer thread; returns the count."""
    return store.run_on_writer(lambda: ColumnarCommit(store, table, user_ids).append()).result()


__all__ = ["ColumnarCommit", "append_events"]
