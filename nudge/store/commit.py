"""One group commit: many requests' records written to an account store in one transaction.

Everything a commit decides (dedup, identities, merges, profile rows, new columns) is built
in memory first and written with a handful of bulk statements; in-memory state is updated
only after DuckDB has durably committed, so a failed commit changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nudge.clock import clock
from nudge.ingest.identity import Key, Resolver
from nudge.ingest.profiles import ProfileRow
from nudge.ingest.records import Date, Record, RecordError, RecordInvalid
from nudge.store import user_sets
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
US = 1_000_000
_PROFILE_IDS = ("identity", "email", "phone")  # identifiers that are profile columns too
# Sets of Python types whose values go into a typed column as they are, with no per-value
# decision (see Commit._event_group).
_VECTOR_TYPES = {frozenset({str}): "string", frozenset({bool}): "boolean",
                 frozenset({int}): "number", frozenset({float}): "number",
                 frozenset({int, float}): "number", frozenset({Date}): "date"}


def to_json(props: dict[str, Any]) -> str | None:
    return _JSON.encode(_wire(props)).decode() if props else None


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
        self.log_lsn = 0  # the last ingest log entry in this commit, stored with its rows

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
        known = self.resolver.state.ids
        final = self.resolver.final
        for rec in self.records:
            mid = rec.message_id
            if mid in seen or mid in new_ids_set:
                errors.append(None)
                self.duplicates += 1
                continue
            ids = rec.ids
            if (rec.kind == "event" and len(ids) == 1 and rec.token is None
                    and not rec.merge_from):
                # The common case: an event of a known user, with nothing to attach or merge
                # (its profile is re-pointed through merges in run()).
                (key,) = ids.items()
                uid = assigned.get(key)
                if uid is None:
                    uid = known.get(key)
                    if uid is not None:
                        errors.append(None)
                        new_ids.append(mid)
                        new_ids_set.add(mid)
                        events.append((rec, uid))
                        continue
                else:
                    # A key attached earlier in this commit (a new user's later events):
                    # the same outcome as resolve() and the identifier bookkeeping below.
                    uid = final(uid)
                    errors.append(None)
                    new_ids.append(mid)
                    new_ids_set.add(mid)
                    fields = {key[0]: key[1]} if key[0] in _PROFILE_IDS else {}
                    if fields or uid in created:
                        plan.actions.append(("ids", uid, fields))
                        plan.touched.add(uid)
                    events.append((rec, uid))
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
                          if k in _PROFILE_IDS and (k, v) in assigned}
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
        suppressed = store.suppressed  # nudge/privacy/suppression.py: their events are dropped
        events = self.plan.events
        if suppressed or self.resolver.res.merged_into or store.identity.merged_into:
            kept = [(rec, final(uid)) for rec, uid in events
                    if not suppressed or (uid not in suppressed and final(uid) not in suppressed)]
        else:
            kept = events
        recs = [rec for rec, _ in kept]
        uids = [uid for _, uid in kept]
        seq = seq0 + len(recs)
        rows = self._profile_rows()
        cur = store.writer_cursor
        cur.execute("BEGIN TRANSACTION")
        try:
            events_table = self._events_table(recs, uids, seq0)
            profiles_table = self._profiles_table(rows)
            self._write_columns(cur)
            if events_table is not None:
                cur.register("_new_events", events_table)
                cur.execute("INSERT INTO events_recent BY NAME SELECT * FROM _new_events")
            self._write_merges(cur)
            self._write_identities(cur)
            self._write_profiles(cur, rows, profiles_table)
            if events_table is not None:
                self._write_event_stats(cur)
                self._write_event_catalog(cur)
                cur.unregister("_new_events")
            self._write_record_ids(cur)
            if self.log_lsn:
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('log_applied', ?)",
                            [str(self.log_lsn)])
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            store.catalog.rollback()
            raise
        self.events_table = events_table
        # Durable: fold the commit into memory.
        self.resolver.apply()
        store.next_seq = seq
        store.remember_ids(self.plan.new_ids, self.now)
        store.catalog.confirm()
        store.event_props.update(self._pending_event_props)
        return CommitResult(errors, len(recs), self.duplicates, seq0, seq - 1)

    # -- profiles ------------------------------------------------------------------------
    def _profile_rows(self) -> dict[int, ProfileRow]:
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
        for row in rows.values():
            row.updated_at = self.now
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

    def _write_profiles(self, cur: Any, rows: dict[int, ProfileRow],
                        table: pa.Table | None) -> None:
        created = self.resolver.res.created
        gone = [u for u in rows if u not in created]
        gone += [u for u in self.merged_away if u not in rows and u not in created]
        if gone:
            cur.execute("DELETE FROM profiles WHERE user_id IN (SELECT unnest(?::BIGINT[]))",
                        [gone])
        if table is not None:
            cur.register("_new_profiles", table)
            cur.execute("INSERT INTO profiles BY NAME SELECT * FROM _new_profiles")
            cur.unregister("_new_profiles")

    def _write_event_stats(self, cur: Any) -> None:
        """Event counts and first/last seen of every profile with events in this commit."""
        cur.execute("""
            UPDATE profiles SET event_count = profiles.event_count + a.n,
                first_seen = least(coalesce(profiles.first_seen, a.first), a.first),
                last_seen = greatest(coalesce(profiles.last_seen, a.last), a.last),
                first_event_seq = coalesce(profiles.first_event_seq, a.first_seq)
            FROM (SELECT user_id, count(*) AS n, min(ts) AS first, max(ts) AS last,
                         min(seq) AS first_seq FROM _new_events GROUP BY user_id) a
            WHERE profiles.user_id = a.user_id""")

    # -- events --------------------------------------------------------------------------
    def _events_table(self, recs: list[Record], uids: list[int], seq0: int) -> pa.Table | None:
        """The commit's events as one Arrow table, built column by column.

        Records are grouped by event name (an event's records share their property names and
        types), and each property becomes one Python list comprehension and one Arrow
        conversion per group instead of per-value work; only properties whose values need a
        per-value decision (mixed types, lists, explicit nulls, overflow) take the slow path.
        """
        n = len(recs)
        if not n:
            return None
        groups: dict[str, list[int]] = {}
        for i, rec in enumerate(recs):
            g = groups.get(rec.event)  # type: ignore[arg-type]
            if g is None:
                groups[rec.event] = [i]  # type: ignore[index]
            else:
                g.append(i)
        self._pending_event_props = set()
        self._event_names = len(groups)
        props = {event: [recs[i].props for i in idx] for event, idx in groups.items()}
        self._place_new_properties(groups, props)
        parts = [self._event_group(event or "", idx, props[event])
                 for event, idx in groups.items()]
        if len(parts) == 1:
            typed = parts[0]
        else:
            typed = pa.concat_tables(parts, promote_options="default")
            # Back to arrival order: seq follows the records, and so does the table.
            typed = typed.take(pc.sort_indices(typed["_i"]))
        typed = typed.drop_columns(["_i"])
        ts = np.fromiter((r.ts for r in recs), dtype=np.float64, count=n) * US
        fixed = {
            "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.int64)),
            "message_id": pa.array([r.message_id for r in recs], pa.string()),
            "user_id": pa.array(uids, pa.int64()),
            "event": pa.array([r.event for r in recs], pa.string()),
            "ts": pa.array(ts.astype(np.int64), pa.timestamp("us")),
            "ingested_at": pa.array(np.full(n, _us(self.now), dtype=np.int64),
                                    pa.timestamp("us")),
        }
        return pa.Table.from_arrays([*fixed.values(), *typed.columns],
                                    names=[*fixed, *typed.column_names])

    def _place_new_properties(self, groups: dict[str, list[int]],
                              props: dict[str, list[dict[str, Any]]]) -> None:
        """Allocate columns for new property names in the order the records show them.

        Groups are processed event by event; a new name's type (and, when the column budget
        runs out, whether it gets a column at all) must still follow the first record that
        has a typed value for it, as if the records were written one by one.
        """
        catalog = self.store.catalog
        first: dict[str, tuple[int, int, Any]] = {}
        for event, idx in groups.items():
            rows = props[event]
            for name in dict.fromkeys(chain.from_iterable(rows)):
                if catalog.get("event", name) is not None:
                    continue
                for i, p in zip(idx, rows, strict=True):
                    if name in p and value_type(p[name]) is not None:
                        if name not in first or i < first[name][0]:
                            first[name] = (i, list(p).index(name), p[name])
                        break
        for name, (_, _, value) in sorted(first.items(), key=lambda kv: kv[1][:2]):
            catalog.place("event", name, value)

    def _event_group(self, event: str, idx: list[int], props: list[dict[str, Any]]) -> pa.Table:
        """Typed columns, overflow JSON and row positions (``_i``) of one event's records."""
        m = len(props)
        place = self.store.catalog.place
        known, pending = self.store.event_props, self._pending_event_props
        arrays: dict[str, pa.Array] = {}
        overflow: list[dict[str, Any] | None] = [None] * m
        slow: list[str] = []
        # Names in order of first sight: a new property's column (and type) is allocated
        # when it is first seen, so the column budget goes to the earliest properties.
        for name in dict.fromkeys(chain.from_iterable(props)):
            values = [p.get(name) for p in props]
            types = set(map(type, values))
            absent = type(None) in types
            types.discard(type(None))
            first = next((v for v in values if v is not None), None)
            col = None if first is None else place("event", name, first)
            kind = _VECTOR_TYPES.get(frozenset(types))
            if (kind is None or col is None or col.type != kind
                    # absent is fine; an explicit null goes to the overflow
                    or (absent and any(name in p and p[name] is None for p in props))):
                slow.append(name)
                continue
            if kind == "date":
                values = [None if v is None else int(v.epoch * US) for v in values]
            arrays[col.column] = column_array(values, kind)
            if (event, name, kind) not in known:
                pending.add((event, name, kind))
        if slow:
            self._slow_properties(event, slow, props, arrays, overflow)
        arrays["props"] = pa.array([to_json(o) if o else None for o in overflow], pa.string())
        arrays["_i"] = pa.array(idx, pa.int64())
        return pa.table(arrays)

    def _slow_properties(self, event: str, names: list[str], props: list[dict[str, Any]],
                         arrays: dict[str, pa.Array], overflow: list[dict[str, Any] | None],
                         ) -> None:
        """Per-value placement: each value goes to its typed column or to the overflow."""
        m = len(props)
        place = self.store.catalog.place
        known, pending = self.store.event_props, self._pending_event_props
        columns: dict[str, list[Any]] = {}
        types: dict[str, str] = {}
        for name in names:
            for j, p in enumerate(props):
                if name not in p:
                    continue
                value = p[name]
                col = place("event", name, value)
                typ = (value_type(value) or "object") if col is None else col.type
                if (event, name, typ) not in known:
                    pending.add((event, name, typ))
                if col is None:
                    extra = overflow[j]
                    if extra is None:
                        extra = overflow[j] = {}
                    extra[name] = value
                    continue
                values = columns.get(col.column)
                if values is None:
                    values = columns[col.column] = [None] * m
                    types[col.column] = col.type
                values[j] = to_column_value(value, col.type)
        for column, values in columns.items():
            arrays[column] = column_array(values, types[column])

    def _write_event_catalog(self, cur: Any) -> None:
        # An UPDATE of the known names plus an INSERT only when a name is new: 0.7-0.95x the
        # CPU of one INSERT ... ON CONFLICT DO UPDATE per commit (docs/benchmarks.md).
        updated = cur.execute("""
            UPDATE event_catalog SET count = event_catalog.count + a.n,
                first_seen = least(event_catalog.first_seen, a.first),
                last_seen = greatest(event_catalog.last_seen, a.last)
            FROM (SELECT event, count(*) AS n, min(ts) AS first, max(ts) AS last
                  FROM _new_events GROUP BY event) a
            WHERE event_catalog.event = a.event""").fetchone()[0]
        if updated < self._event_names:
            cur.execute("""
                INSERT INTO event_catalog
                SELECT event, count(*), min(ts), max(ts) FROM _new_events
                WHERE event NOT IN (SELECT event FROM event_catalog) GROUP BY event""")
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
            user_sets.merge_users(cur, "_merges")  # the hourly user sets follow the rows
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
        # After the prefetch the cache holds every stored key of this commit: only keys found
        # there have a row to replace (a moved device id or token); new keys need no DELETE.
        known = self.resolver.state.ids
        if any(key in known for key in assigned):
            cur.execute("DELETE FROM identities USING _ids "
                        "WHERE identities.kind = _ids.kind AND identities.value = _ids.value")
        cur.execute("INSERT INTO identities SELECT kind, value, user_id, now() FROM _ids")
        cur.unregister("_ids")


def _us(ts: float | None) -> int | None:
    return None if ts is None else int(ts * US)


__all__ = ["Commit", "CommitResult", "Key"]
