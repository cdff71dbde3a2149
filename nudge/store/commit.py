"""One group commit: many requests' records written to an account store in one transaction.

Everything a commit decides (dedup, identities, merges, profile rows, new columns) is built
in memory first and written with a handful of bulk statements; in-memory state is updated
only after DuckDB has durably committed, so a failed commit changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import pyarrow as pa

from nudge.clock import clock
from nudge.ingest.identity import Key, Resolver
from nudge.ingest.profiles import ProfileRow
from nudge.ingest.records import Date, Record, RecordError, RecordInvalid
from nudge.store.catalog import (
    SQL_TYPES,
    column_array,
    to_column_value,
    value_type,
)

if TYPE_CHECKING:
    from nudge.store.account import AccountStore


def _wire(v: Any) -> Any:
    # Dates are stored as on the wire ("$D_<epoch>"). This must happen before encoding:
    # Date is a dataclass, which msgspec encodes natively ({"epoch": ...}) without ever
    # calling an enc_hook.
    if isinstance(v, Date):
        return f"$D_{int(v.epoch)}"
    if isinstance(v, dict):
        return {k: _wire(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_wire(x) for x in v]
    return v


_JSON = msgspec.json.Encoder()
_AS_IS = frozenset(("number", "string", "boolean"))
US = 1_000_000


def to_json(props: dict[str, Any]) -> str | None:
    return _JSON.encode(_wire(props)).decode() if props else None


@dataclass
class EventStats:
    count: int = 0
    first: float = float("inf")
    last: float = float("-inf")
    first_seq: int = 0

    def add(self, ts: float, seq: int) -> None:
        if not self.count:
            self.first_seq = seq
        self.count += 1
        self.first = min(self.first, ts)
        self.last = max(self.last, ts)


@dataclass
class CommitResult:
    """Per-record outcome, in the order records were given (None = stored or duplicate)."""

    errors: list[RecordError | None]
    stored_events: int = 0
    duplicates: int = 0
    first_seq: int = 0
    last_seq: int = 0


@dataclass
class _Plan:
    events: list[tuple[Record, int]] = field(default_factory=list)
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)
    new_ids: list[str] = field(default_factory=list)
    new_ids_set: set[str] = field(default_factory=set)
    other_ids: list[str] = field(default_factory=list)  # new ids of non-event records
    loser_first_seq: dict[int, int | None] = field(default_factory=dict)


class Commit:
    def __init__(self, store: AccountStore, records: list[Record]) -> None:
        self.store = store
        self.records = records
        self.now = clock.now()
        self.resolver = Resolver(store.identity, store.lookup_identities)
        self.plan = _Plan()

    # -- planning (pure, in memory) -----------------------------------------------------
    def plan_records(self) -> list[RecordError | None]:
        errors: list[RecordError | None] = []
        seen = self.store.dedup
        self.resolver.prefetch(self.records)
        resolve = self.resolver.resolve
        res = self.resolver.res
        plan = self.plan
        new_ids, new_ids_set, events = plan.new_ids, plan.new_ids_set, plan.events
        assigned, created, merges = res.assigned, res.created, res.merges
        for rec in self.records:
            mid = rec.message_id
            if mid in seen or mid in new_ids_set:
                errors.append(None)
                self.duplicates += 1
                continue
            merges_before = len(merges)
            try:
                uid = resolve(rec)
            except RecordInvalid as e:
                errors.append(RecordError(rec.index, e.code, e.error))
                continue
            errors.append(None)
            new_ids.append(mid)
            new_ids_set.add(mid)
            if len(merges) > merges_before:
                for loser, winner in merges[merges_before:]:
                    plan.actions.append(("merge", loser, winner))
                    plan.touched.update((loser, winner))
            # Only identifiers attached in this commit change the profile row; an event from a
            # known user must not cost a profile rewrite.
            if assigned or uid in created:
                fields = {k: v for k, v in rec.ids.items()
                          if k in ("identity", "email", "phone") and (k, v) in assigned}
                if fields or uid in created:
                    plan.actions.append(("ids", uid, fields))
                    plan.touched.add(uid)
            if rec.kind == "event":
                events.append((rec, uid))
                continue
            plan.other_ids.append(mid)
            if rec.kind == "profile" and rec.ops:
                plan.actions.append(("ops", uid, rec.ops))
                plan.touched.add(uid)
        return errors

    def run(self) -> CommitResult:
        self.duplicates = 0
        self._pending_event_props: set[tuple[str, str, str]] = set()
        errors = self.plan_records()
        store, final = self.store, self.resolver.final
        seq0 = store.next_seq
        seq = seq0
        stats: dict[int, EventStats] = {}
        event_rows = []
        suppressed = store.suppressed  # nudge/privacy/suppression.py: their events are dropped
        for rec, uid in self.plan.events:
            if suppressed and (uid in suppressed or final(uid) in suppressed):
                continue
            uid = final(uid)
            st = stats.get(uid)
            if st is None:
                st = stats[uid] = EventStats()
            st.add(rec.ts, seq)
            event_rows.append((seq, rec, uid))
            seq += 1
        rows = self._profile_rows(stats)
        cur = store.writer_cursor
        cur.execute("BEGIN TRANSACTION")
        try:
            events_table = self._events_table(event_rows)
            profiles_table = self._profiles_table(rows)
            self._write_columns(cur)
            if events_table is not None:
                cur.register("_new_events", events_table)
                cur.execute("INSERT INTO events_recent BY NAME SELECT * FROM _new_events")
                cur.unregister("_new_events")
            self._write_merges(cur)
            self._write_identities(cur)
            self._write_profiles(cur, rows, profiles_table, stats)
            self._write_event_catalog(cur, event_rows)
            self._write_record_ids(cur)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            store.catalog.rollback()
            raise
        # Durable: fold the commit into memory.
        self.resolver.apply()
        store.next_seq = seq
        store.remember_ids(self.plan.new_ids, self.now)
        store.catalog.confirm()
        store.event_props.update(self._pending_event_props)
        return CommitResult(errors, len(event_rows), self.duplicates, seq0, seq - 1)

    # -- profiles ------------------------------------------------------------------------
    def _profile_rows(self, stats: dict[int, EventStats]) -> dict[int, ProfileRow]:
        """Full rows for profiles whose properties or identifiers change in this commit."""
        res = self.resolver.res
        touched = self.plan.touched
        rows = self.store.load_profiles([u for u in touched if u not in res.created])
        for uid in touched:
            if uid not in rows:
                rows[uid] = ProfileRow(uid, created_at=self.now)
        for action in self.plan.actions:
            kind = action[0]
            if kind == "merge":
                _, loser, winner = action
                lost = rows.pop(loser)
                self.plan.loser_first_seq[loser] = lost.first_event_seq
                rows[winner].absorb(lost)
            elif kind == "ids":
                row = rows[action[1]]
                for k, v in action[2].items():
                    if k == "identity" and row.identity is None:
                        row.identity = v
                    elif k in ("email", "phone"):
                        setattr(row, k, v)
            else:
                row = rows[action[1]]
                for op in action[2]:
                    row.apply(op)
        self.merged_away = {loser for loser, _ in res.merges}
        for uid, row in rows.items():
            row.updated_at = self.now
            s = stats.get(uid)
            if s:
                row.saw_events(s.count, s.first, s.last, s.first_seq)
        return rows

    def _profiles_table(self, rows: dict[int, ProfileRow]) -> pa.Table | None:
        if not rows:
            return None
        catalog = self.store.catalog
        cols: dict[str, list[Any]] = {k: [] for k in (
            "user_id", "identity", "email", "phone", "first_seen", "last_seen", "event_count",
            "first_event_seq", "created_at", "updated_at", "props")}
        typed: dict[str, list[Any]] = {}
        types: dict[str, str] = {}
        n = 0
        for row in rows.values():
            overflow = {}
            for name, value in row.props.items():
                col = catalog.place("profile", name, value)
                if col is None:
                    overflow[name] = value
                    continue
                if col.column not in typed:
                    typed[col.column] = [None] * n
                    types[col.column] = col.type
                typed[col.column].append(to_column_value(value, col.type))
            n += 1
            for v in typed.values():
                if len(v) < n:
                    v.append(None)
            cols["user_id"].append(row.user_id)
            cols["identity"].append(row.identity)
            cols["email"].append(row.email)
            cols["phone"].append(row.phone)
            cols["first_seen"].append(_us(row.first_seen))
            cols["last_seen"].append(_us(row.last_seen))
            cols["event_count"].append(row.event_count)
            cols["first_event_seq"].append(row.first_event_seq)
            cols["created_at"].append(_us(row.created_at))
            cols["updated_at"].append(_us(row.updated_at))
            cols["props"].append(to_json(overflow))
        ts = pa.timestamp("us")
        schema = [("user_id", pa.int64()), ("identity", pa.string()), ("email", pa.string()),
                  ("phone", pa.string()), ("first_seen", ts), ("last_seen", ts),
                  ("event_count", pa.int64()), ("first_event_seq", pa.int64()),
                  ("created_at", ts), ("updated_at", ts), ("props", pa.string())]
        arrays = [pa.array(cols[name], type=t) for name, t in schema]
        names = [name for name, _ in schema]
        for column, values in typed.items():
            arrays.append(column_array(values, types[column]))
            names.append(column)
        return pa.Table.from_arrays(arrays, names=names)

    def _write_profiles(self, cur: Any, rows: dict[int, ProfileRow], table: pa.Table | None,
                        stats: dict[int, EventStats]) -> None:
        gone = list(rows) + [u for u in self.merged_away if u not in rows]
        if gone:
            cur.execute("DELETE FROM profiles WHERE user_id IN (SELECT unnest(?::BIGINT[]))",
                        [gone])
        if table is not None:
            cur.register("_new_profiles", table)
            cur.execute("INSERT INTO profiles BY NAME SELECT * FROM _new_profiles")
            cur.unregister("_new_profiles")
        rest = [(u, s) for u, s in stats.items() if u not in rows]
        if rest:
            agg = pa.table({
                "user_id": pa.array([u for u, _ in rest], pa.int64()),
                "n": pa.array([s.count for _, s in rest], pa.int64()),
                "first": pa.array([_us(s.first) for _, s in rest], pa.timestamp("us")),
                "last": pa.array([_us(s.last) for _, s in rest], pa.timestamp("us")),
                "first_seq": pa.array([s.first_seq for _, s in rest], pa.int64()),
            })
            cur.register("_agg", agg)
            cur.execute("""
                UPDATE profiles SET event_count = profiles.event_count + a.n,
                    first_seen = least(coalesce(profiles.first_seen, a.first), a.first),
                    last_seen = greatest(coalesce(profiles.last_seen, a.last), a.last),
                    first_event_seq = coalesce(profiles.first_event_seq, a.first_seq)
                FROM _agg a WHERE profiles.user_id = a.user_id""")
            cur.unregister("_agg")

    # -- events --------------------------------------------------------------------------
    def _events_table(self, event_rows: list[tuple[int, Record, int]]) -> pa.Table | None:
        if not event_rows:
            return None
        catalog = self.store.catalog
        n = len(event_rows)
        typed: dict[str, list[Any]] = {}
        types: dict[str, str] = {}
        overflow: list[str | None] = [None] * n
        pending_props: set[tuple[str, str, str]] = set()
        known = self.store.event_props
        place = catalog.place
        # Per (event, property, Python type): the column's value list, whether the value goes
        # in as is, and the catalog key — so each property costs a few dict lookups.
        slots: dict[tuple[str, str, type], tuple[list[Any] | None, bool, str]] = {}
        for i, (_, rec, _) in enumerate(event_rows):
            extra = None
            event = rec.event or ""
            for name, value in rec.props.items():
                t = type(value)
                slot = slots.get((event, name, t))
                if slot is None or t is list:  # lists may hold mixed items: place each
                    col = place("event", name, value)
                    if col is None:
                        slot = (None, False, value_type(value) or "object")
                    else:
                        values = typed.get(col.column)
                        if values is None:
                            values = typed[col.column] = [None] * n
                            types[col.column] = col.type
                        slot = (values, col.type in _AS_IS, col.type)
                    slots[(event, name, t)] = slot
                    key = (event, name, slot[2])
                    if key not in known:
                        pending_props.add(key)
                values, as_is, typ = slot
                if values is None:
                    if extra is None:
                        extra = {}
                    extra[name] = value
                else:
                    values[i] = value if as_is else to_column_value(value, typ)
            if extra:
                overflow[i] = to_json(extra)
        self._pending_event_props = pending_props
        ingested = _us(self.now)
        arrays = [
            pa.array([r[0] for r in event_rows], pa.int64()),
            pa.array([r[1].message_id for r in event_rows], pa.string()),
            pa.array([r[2] for r in event_rows], pa.int64()),
            pa.array([r[1].event for r in event_rows], pa.string()),
            pa.array([int(r[1].ts * US) for r in event_rows], pa.timestamp("us")),
            pa.array([ingested] * n, pa.timestamp("us")),
            pa.array(overflow, pa.string()),
        ]
        names = ["seq", "message_id", "user_id", "event", "ts", "ingested_at", "props"]
        for column, values in typed.items():
            arrays.append(column_array(values, types[column]))
            names.append(column)
        return pa.Table.from_arrays(arrays, names=names)

    def _write_event_catalog(self, cur: Any, event_rows: list[tuple[int, Record, int]]) -> None:
        if not event_rows:
            return
        counts = Counter(r[1].event for r in event_rows)
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for _, rec, _ in event_rows:
            e = rec.event or ""
            first[e] = min(first.get(e, rec.ts), rec.ts)
            last[e] = max(last.get(e, rec.ts), rec.ts)
        cat = pa.table({
            "event": list(counts), "n": [counts[e] for e in counts],
            "first": pa.array([_us(first[e]) for e in counts], pa.timestamp("us")),
            "last": pa.array([_us(last[e]) for e in counts], pa.timestamp("us"))})
        cur.register("_cat", cat)
        cur.execute("""
            INSERT INTO event_catalog SELECT event, n, first, last FROM _cat
            ON CONFLICT (event) DO UPDATE SET count = event_catalog.count + excluded.count,
                first_seen = least(event_catalog.first_seen, excluded.first_seen),
                last_seen = greatest(event_catalog.last_seen, excluded.last_seen)""")
        cur.unregister("_cat")
        if self._pending_event_props:
            cur.executemany("INSERT INTO event_properties VALUES (?, ?, ?)",
                            sorted(self._pending_event_props))

    def _write_record_ids(self, cur: Any) -> None:
        """Persist profile/token message ids: a retry after a restart must not re-apply them."""
        ids = self.plan.other_ids
        if not ids:
            return
        t = pa.table({"message_id": pa.array(ids, pa.string()),
                      "ingested_at": pa.array([_us(self.now)] * len(ids), pa.timestamp("us"))})
        cur.register("_record_ids", t)
        cur.execute("INSERT INTO record_ids SELECT * FROM _record_ids")
        cur.unregister("_record_ids")

    # -- catalog, identities, merges --------------------------------------------------------
    def _write_columns(self, cur: Any) -> None:
        for col in self.store.catalog.staged:
            tables = ("events_recent", "events_sorted") if col.scope == "event" else ("profiles",)
            for table in tables:
                # Identifiers come from the catalog (ep_<n>/pp_<n>), never from input.
                cur.execute(f"ALTER TABLE {table} ADD COLUMN {col.column} {SQL_TYPES[col.type]}")
            cur.execute("INSERT INTO property_catalog VALUES (?, ?, ?, ?, now())",
                        [col.scope, col.name, col.column, col.type])

    def _write_merges(self, cur: Any) -> None:
        merges = [(loser, self.resolver.final(loser)) for loser, _ in self.resolver.res.merges]
        if not merges:
            return
        m = pa.table({"from_id": [a for a, _ in merges], "to_id": [b for _, b in merges]})
        cur.register("_merges", m)
        cur.execute("INSERT INTO profile_merges SELECT from_id, to_id, now() FROM _merges")
        cur.execute("UPDATE identities SET user_id = m.to_id FROM _merges m "
                    "WHERE identities.user_id = m.from_id")
        cur.execute("UPDATE events_recent SET user_id = m.to_id FROM _merges m "
                    "WHERE events_recent.user_id = m.from_id")
        # Only profiles whose first events were already compacted have rows in the big
        # sorted table; skip the full scan of it otherwise (the common login case).
        watermark = self.store.compacted_through
        if any(self._first_seq(a) is not None and self._first_seq(a) <= watermark
               for a, _ in merges):
            cur.execute("UPDATE events_sorted SET user_id = m.to_id FROM _merges m "
                        "WHERE events_sorted.user_id = m.from_id")
        cur.unregister("_merges")

    def _first_seq(self, uid: int) -> int | None:
        return self.plan.loser_first_seq.get(uid)

    def _write_identities(self, cur: Any) -> None:
        assigned = self.resolver.res.assigned
        if not assigned:
            return
        final = self.resolver.final
        t = pa.table({"kind": [k for k, _ in assigned], "value": [v for _, v in assigned],
                      "user_id": pa.array([final(u) for u in assigned.values()], pa.int64())})
        cur.register("_ids", t)
        cur.execute("DELETE FROM identities USING _ids "
                    "WHERE identities.kind = _ids.kind AND identities.value = _ids.value")
        cur.execute("INSERT INTO identities SELECT kind, value, user_id, now() FROM _ids")
        cur.unregister("_ids")


def _us(ts: float | None) -> int | None:
    return None if ts is None else int(ts * US)


__all__ = ["Commit", "CommitResult", "Key"]
