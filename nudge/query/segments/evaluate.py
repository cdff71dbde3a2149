"""Evaluating a segment on an account store: count, members, one user's membership, export.

Saved segments a definition refers to are evaluated first, on the same cursor, into a
registered Arrow table of user ids; the outer query joins that table instead of inlining the
other definition (which would make the outer query slower and the SQL grow with nesting).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from nudge.clock import clock
from nudge.predict.conditions import PredictSource
from nudge.store.account import AccountStore

from . import estimate
from .compiler import Compiler, Sql, profile_only
from .model import And, DefinitionError, LastDid, Node, Not, Or

SavedLoader = Callable[[int], Node]


class SegmentEngine:
    """Runs definitions against one account's store."""

    def __init__(self, store: AccountStore, timezone: str = "UTC",
                 load_saved: SavedLoader | None = None) -> None:
        self.store = store
        self.timezone = timezone
        self.load_saved = load_saved

    def _run(self, node: Node, fn: Callable[[duckdb.DuckDBPyConnection, Compiler], Any], *,
             user_id: int | None = None, strict: bool = False, now: float | None = None) -> Any:
        """Run ``fn(cursor, compiler)``; saved segments referenced while compiling are
        evaluated on the same cursor first."""
        now = clock.now() if now is None else now
        with self.store.cursor() as cur:
            return self._on(cur, node, fn, user_id, strict, now)

    def _events_source(self) -> str:
        """``events_sorted`` when every acknowledged event has been compacted, else the
        ``events`` view. Reads next_seq before compacted_through: both only grow, next_seq
        grows before a commit is acknowledged and compacted_through after a compaction
        committed, so "all compacted" is never concluded while acknowledged events are
        still in events_recent (events not yet acknowledged may be missed, as by any query
        that starts before their acknowledgement)."""
        assigned = self.store.next_seq - 1
        return "events_sorted" if assigned <= self.store.compacted_through else "events"

    def _aggregate_by_id(self, cur: duckdb.DuckDBPyConnection, node: Node, now: float) -> None:
        """Let DuckDB aggregate by person into arrays when that pays (see estimate.py)."""
        if not any(True for _ in estimate.scans(node)):
            return
        stats = estimate.event_stats(self.store, cur)
        bits = estimate.perfect_bits(stats, node, self.store.identity.next_uid - 1, now)
        if bits is not None:
            cur.execute(f"SET perfect_ht_threshold = {int(bits)}")

    def _on(self, cur: duckdb.DuckDBPyConnection, node: Node,
            fn: Callable[[duckdb.DuckDBPyConnection, Compiler], Any],
            user_id: int | None, strict: bool, now: float) -> Any:
        events = self._events_source()
        if user_id is None:
            self._aggregate_by_id(cur, node, now)
        stack: list[int] = []

        def table(segment_id: int) -> str:
            if segment_id in stack:
                raise DefinitionError("$", f"segments refer to each other in a cycle: "
                                           f"{' → '.join(map(str, [*stack, segment_id]))}")
            if self.load_saved is None:
                raise DefinitionError("$", "segment references need saved segments")
            ref = self.load_saved(segment_id)
            stack.append(segment_id)
            try:
                sql = self.compiler(now, user_id, strict, table, events).members(ref)
            finally:
                stack.pop()
            name = f"_segment_{int(segment_id)}"
            # Materialize: .arrow() is a lazy reader on this cursor, which the next
            # execute on the cursor invalidates (the reference then read as empty, or hung).
            ids = cur.execute(sql.text, sql.params).arrow()
            if isinstance(ids, pa.RecordBatchReader):
                ids = ids.read_all()
            cur.register(name, ids)
            return name

        return fn(cur, self.compiler(now, user_id, strict, table, events))

    def compiler(self, now: float, user_id: int | None = None, strict: bool = False,
                 table: Callable[[int], str] | None = None, events: str = "events") -> Compiler:
        return Compiler(self.store.catalog, now, self.timezone, strict=strict,
                        user_id=user_id, segment_table=table, events=events,
                        event_properties=self.store.event_props,
                        predict=PredictSource(self.store))

    def sql(self, node: Node, *, strict: bool = False, now: float | None = None) -> Sql:
        """The members query (referenced segments appear as ``_segment_<id>`` tables)."""
        return self.compiler(clock.now() if now is None else now, None, strict,
                             lambda i: f"_segment_{int(i)}").members(node)

    def count(self, node: Node, *, strict: bool = False, now: float | None = None) -> int:
        def run(cur: duckdb.DuckDBPyConnection, compiler: Compiler) -> int:
            sql = compiler.members(node)
            return int(cur.execute(f"SELECT count(*) FROM ({sql.text})", sql.params).fetchone()[0])
        return self._run(node, run, strict=strict, now=now)  # type: ignore[no-any-return]

    def user_ids(self, node: Node, *, now: float | None = None) -> set[int]:
        def run(cur: duckdb.DuckDBPyConnection, compiler: Compiler) -> set[int]:
            sql = compiler.members(node)
            return {r[0] for r in cur.execute(sql.text, sql.params).fetchall()}
        return self._run(node, run, now=now)  # type: ignore[no-any-return]

    def contains(self, node: Node, user_id: int, *, now: float | None = None) -> bool:
        """Whether one person is a member.

        Every scan is restricted to that person, and the AND / OR tree is evaluated lazily,
        cheapest condition first (profile conditions, then narrow event windows): most
        non-members fail the first check, which reads one profile row. Every condition is
        compiled before anything runs, so invalid definitions fail as they do for counts.
        """
        def run(cur: duckdb.DuckDBPyConnection, compiler: Compiler) -> bool:
            compiler.locate(node)  # compile errors name the node's JSON path
            return _holds(cur, _check_plan(compiler, node))
        return self._run(node, run, user_id=user_id, now=now)  # type: ignore[no-any-return]

    def members(self, node: Node, *, after: int = 0, limit: int = 100,
                now: float | None = None) -> list[dict[str, Any]]:
        """Members ordered by internal id, keyset-paged (``after`` = last id seen)."""
        def run(cur: duckdb.DuckDBPyConnection, compiler: Compiler) -> list[dict[str, Any]]:
            sql = compiler.members(node)
            rows = cur.execute(
                f"SELECT m.user_id, p.identity, p.email, p.phone FROM ({sql.text}) m "
                "JOIN profiles p ON p.user_id = m.user_id WHERE m.user_id > ? "
                "ORDER BY m.user_id LIMIT ?", sql.params + [after, limit]).fetchall()
            return [{"id": r[0], "identity": r[1], "email": r[2], "phone": r[3]} for r in rows]
        return self._run(node, run, now=now)  # type: ignore[no-any-return]

    def export(self, node: Node, out: Path, fmt: str, *, now: float | None = None) -> int:
        def run(cur: duckdb.DuckDBPyConnection, compiler: Compiler) -> int:
            sql = compiler.members(node)
            table = cur.execute(
                f"SELECT m.user_id AS id, p.identity, p.email, p.phone FROM ({sql.text}) m "
                "JOIN profiles p ON p.user_id = m.user_id ORDER BY m.user_id",
                sql.params).arrow()
            if isinstance(table, pa.RecordBatchReader):
                table = table.read_all()
            if fmt == "parquet":
                pq.write_table(table, out)
            else:
                pacsv.write_csv(table, out)
            return int(table.num_rows)
        return self._run(node, run, now=now)  # type: ignore[no-any-return]


# -- single-person checks ---------------------------------------------------------------------
# A check plan: ("and" | "or", [plans]), ("not", plan) or ("sql", Sql), each with a cost.
_Check = tuple[str, Any, float]


def _check_plan(compiler: Compiler, node: Node) -> _Check:
    """Compile every condition of ``node`` for one person, cheapest first within AND / OR."""
    if isinstance(node, And | Or) and not profile_only(node):
        parts = sorted((_check_plan(compiler, c) for c in node.children), key=lambda p: p[2])
        return ("and" if isinstance(node, And) else "or", parts, sum(p[2] for p in parts))
    if isinstance(node, Not) and not profile_only(node):
        inner = _check_plan(compiler, node.child)
        return ("not", inner, inner[2])
    return ("sql", compiler.visit(node), _cost(node))


def _cost(node: Node) -> float:
    """A rough rank of a condition's cost: profile rows, then events by window length."""
    if profile_only(node):
        return 0.0
    window = getattr(node, "window", None)
    if isinstance(node, LastDid) and not node.more_than:
        return 1.0 + node.seconds
    if window is not None and window.kind == "last":
        return 1.0 + window.seconds
    return 1e12


def _holds(cur: duckdb.DuckDBPyConnection, check: _Check) -> bool:
    kind, body, _ = check
    if kind == "and":
        return all(_holds(cur, c) for c in body)
    if kind == "or":
        return any(_holds(cur, c) for c in body)
    if kind == "not":
        return not _holds(cur, body)
    sql: Sql = body
    row = cur.execute(f"SELECT EXISTS ({sql.text})", sql.params).fetchone()
    assert row is not None
    return bool(row[0]) != sql.negated
