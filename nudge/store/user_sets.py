"""Hourly user sets: per (event, UTC hour) of ``events_sorted``, its event count and the exact
set of its users as a roaring bitmap — what daily unique users are made of.

A trend of unique users per day reads every row of the event in the range (14M rows for
Product Viewed over 30 days at 100M events: ~0.6 s of CPU however it is written, see
docs/benchmarks.md). These sets make it O(hours × users per hour): a local day is the union
of its UTC hours (any zone whose offsets are whole hours; others fall back to the rows), and
the rows that are not in a set — the recent tail and the partial hours at the ends of the
range — are added exactly at query time (``nudge/query/analytics/hourly.py``).

They are kept exact by every writer of ``events_sorted``, in the writer's own transaction:

* compaction adds the moved rows (``add_compacted``);
* an identity merge moves a loser's hours to the winner (``merge_users``);
* erasure removes the person and their events from the counts (``erase_users``);
* merging sorted runs moves rows without changing them: nothing to do.

``meta['user_sets_through']`` records the ``compacted_through`` the sets were last made
consistent with. Reports use the sets only when it equals ``compacted_through`` in their
snapshot; so a store written some other way (an old store, a benchmark data set written
directly) is simply read row by row until :func:`rebuild` is run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyroaring import BitMap

HOUR_US = 3_600_000_000
MAX_USER_ID = 2**32 - 1  # roaring bitmaps hold 32-bit ids; above, reports read rows
META_KEY = "user_sets_through"

DDL = """CREATE TABLE IF NOT EXISTS event_hour_users (
    event VARCHAR NOT NULL, hour BIGINT NOT NULL, n BIGINT NOT NULL, users BLOB NOT NULL)"""

Key = tuple[str, int]  # (event, hour since the epoch, UTC)


def ensure(cur: duckdb.DuckDBPyConnection, compacted_through: int) -> None:
    """Create the table; a store with nothing compacted yet starts with consistent sets."""
    cur.execute(DDL)
    if through(cur) is None and cur.execute(
            "SELECT 1 FROM events_sorted LIMIT 1").fetchone() is None:
        _set_through(cur, compacted_through)


def through(cur: duckdb.DuckDBPyConnection) -> int | None:
    row = cur.execute("SELECT value FROM meta WHERE key = ?", [META_KEY]).fetchone()
    return None if row is None else int(row[0])


def current(cur: duckdb.DuckDBPyConnection) -> bool:
    """Whether the sets hold exactly ``events_sorted`` in this cursor's snapshot."""
    row = cur.execute(
        "SELECT (SELECT value FROM meta WHERE key = ?), "
        "coalesce((SELECT value FROM meta WHERE key = 'compacted_through'), '0')",
        [META_KEY]).fetchone()
    return row is not None and row[0] is not None and int(row[0]) == int(row[1])


def _set_through(cur: duckdb.DuckDBPyConnection, value: int) -> None:
    cur.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [META_KEY, str(value)])


# -- reading ---------------------------------------------------------------------------------
def read(cur: duckdb.DuckDBPyConnection, event: str, h0: int, h1: int
         ) -> list[tuple[int, int, BitMap]]:
    """(hour, events, users) of ``event`` for the hours in [h0, h1), in hour order."""
    rows = cur.execute("SELECT hour, n, users FROM event_hour_users "
                       "WHERE event = ? AND hour >= ? AND hour < ? ORDER BY hour",
                       [event, h0, h1]).fetchall()
    return [(int(h), int(n), BitMap.deserialize(u)) for h, n, u in rows]


# -- maintenance (writer thread, inside the writer's transaction) ------------------------------
def add_compacted(cur: duckdb.DuckDBPyConnection, before: int, after: int,
                  source: str = "events_recent") -> None:
    """Add the rows of ``source`` (about to move to ``events_sorted``: ``events_recent``, or
    a bulk load's registered table, nudge/store/bulk_events.py; our own names) and record
    the new ``compacted_through``; nothing when the sets were not current before."""
    if through(cur) != before:
        return
    if _add(cur, source, "", []):
        _set_through(cur, after)
    else:  # a user id beyond 32 bits: the sets stop being current, reports read rows
        cur.execute("DELETE FROM meta WHERE key = ?", [META_KEY])


def rebuild(cur: duckdb.DuckDBPyConnection) -> int:
    """Recompute every set from ``events_sorted`` (one event at a time, so memory stays at
    one event's rows); returns the number of (event, hour) sets."""
    cur.execute(DDL)
    cur.execute("BEGIN TRANSACTION")
    try:
        cur.execute("DELETE FROM event_hour_users")
        names = [r[0] for r in cur.execute(
            "SELECT DISTINCT event FROM events_sorted ORDER BY event").fetchall()]
        for name in names:
            if not _add(cur, "events_sorted", "WHERE event = ?", [name]):
                raise ValueError("user ids beyond 32 bits cannot be kept in hourly user sets")
        row = cur.execute("SELECT value FROM meta WHERE key = 'compacted_through'").fetchone()
        _set_through(cur, int(row[0]) if row else 0)
        count = len(cur.execute("SELECT 1 FROM event_hour_users").fetchall())
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return count


def merge_users(cur: duckdb.DuckDBPyConnection, merges: str) -> None:
    """Before ``events_sorted``'s rows of each ``from_id`` become ``to_id``'s: in every hour
    where a loser has events, the winner replaces it (counts are unchanged). ``merges`` is a
    registered table (from_id, to_id) — our own name, never input."""
    if not _maintained(cur):
        return
    got = cur.execute(
        "SELECT DISTINCT e.event, epoch_us(e.ts) // ? AS hour, e.user_id, m.to_id "
        f"FROM events_sorted e JOIN {merges} m ON e.user_id = m.from_id",
        [HOUR_US]).fetchall()
    _patch(cur, got, lambda bm, n, changes: (n, _moved(bm, changes)))


def erase_users(cur: duckdb.DuckDBPyConnection, erased: str) -> None:
    """Before the erased people's rows leave ``events_sorted``: take them out of every hour
    they appear in, with their events. ``erased`` is a registered table (user_id)."""
    if not _maintained(cur):
        return
    got = cur.execute(
        "SELECT e.event, epoch_us(e.ts) // ? AS hour, e.user_id, count(*) "
        f"FROM events_sorted e WHERE e.user_id IN (SELECT user_id FROM {erased}) "
        "GROUP BY ALL", [HOUR_US]).fetchall()

    def remove(bm: BitMap, n: int, changes: list[tuple[int, int]]) -> tuple[int, BitMap]:
        for user, _ in changes:
            bm.discard(user)
        return n - sum(k for _, k in changes), bm

    _patch(cur, got, remove)


def _maintained(cur: duckdb.DuckDBPyConnection) -> bool:
    cur.execute(DDL)
    return current(cur)


def _moved(bm: BitMap, changes: list[tuple[int, int]]) -> BitMap:
    for loser, _ in changes:
        bm.discard(loser)
    for _, winner in changes:
        bm.add(winner)
    return bm


def _patch(cur: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]], fn: Any) -> None:
    """Apply ``fn(bitmap, n, [(user, x), ...]) -> (n, bitmap)`` to each (event, hour) named
    in ``rows`` (event, hour, user, x); a set left without events is deleted."""
    changes: dict[Key, list[tuple[int, int]]] = {}
    for event, hour, user, x in rows:
        changes.setdefault((event, int(hour)), []).append((int(user), int(x)))
    if not changes:
        return
    old = _load(cur, list(changes))
    out: dict[Key, tuple[int, BitMap]] = {}
    for key, ch in changes.items():
        n, bm = old.get(key, (0, BitMap()))
        out[key] = fn(bm, n, ch)
    _store(cur, out)


def _add(cur: duckdb.DuckDBPyConnection, table: str, where: str, params: list[Any]) -> bool:
    """Merge the rows of ``table`` (our table name) selected by ``where`` into the sets;
    False (nothing changed) when a user id does not fit in 32 bits."""
    got = cur.execute(
        f"SELECT event, epoch_us(ts) // ? AS hour, user_id FROM {table} {where} "
        "ORDER BY event, hour", [HOUR_US, *params]).arrow()
    t = got.read_all() if isinstance(got, pa.RecordBatchReader) else got
    if not t.num_rows:
        return True
    ids = t.column("user_id")
    if pc.min(ids).as_py() < 0 or pc.max(ids).as_py() > MAX_USER_ID:
        return False
    new: dict[Key, tuple[int, BitMap]] = {}
    for event, hour, users in _groups(t):
        new[(event, hour)] = (len(users), BitMap(users.astype(np.uint32).data))
    old = _load(cur, list(new))
    for key, (n, bm) in old.items():
        m, add = new[key]
        add |= bm
        new[key] = (n + m, add)
    _store(cur, new)
    return True


def _groups(t: pa.Table) -> Iterator[tuple[str, int, np.ndarray]]:
    """(event, hour, user ids) of rows sorted by (event, hour)."""
    events = t.column("event").combine_chunks().dictionary_encode()
    code = events.indices.to_numpy()
    names = events.dictionary.to_pylist()
    hour = t.column("hour").to_numpy()
    users = t.column("user_id").to_numpy()
    change = np.flatnonzero((code[1:] != code[:-1]) | (hour[1:] != hour[:-1])) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [len(code)]))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        yield names[code[a]], int(hour[a]), users[a:b]


def _load(cur: duckdb.DuckDBPyConnection, keys: list[Key]) -> dict[Key, tuple[int, BitMap]]:
    cur.register("_uh_keys", pa.table({"event": [k[0] for k in keys],
                                       "hour": pa.array([k[1] for k in keys], pa.int64())}))
    try:
        rows = cur.execute("SELECT u.event, u.hour, u.n, u.users FROM event_hour_users u "
                           "JOIN _uh_keys k ON u.event = k.event AND u.hour = k.hour").fetchall()
    finally:
        cur.unregister("_uh_keys")
    return {(e, int(h)): (int(n), BitMap.deserialize(b)) for e, h, n, b in rows}


def _store(cur: duckdb.DuckDBPyConnection, sets: dict[Key, tuple[int, BitMap]]) -> None:
    """Replace the sets of these keys (deleting those without events)."""
    keys = list(sets)
    blobs = []
    for k in keys:
        bm = sets[k][1]
        bm.run_optimize()
        blobs.append(bm.serialize())
    table = pa.table({"event": [k[0] for k in keys],
                      "hour": pa.array([k[1] for k in keys], pa.int64()),
                      "n": pa.array([sets[k][0] for k in keys], pa.int64()),
                      "users": pa.array(blobs, pa.binary())})
    cur.register("_uh_new", table)
    try:
        cur.execute("DELETE FROM event_hour_users u USING _uh_new k "
                    "WHERE u.event = k.event AND u.hour = k.hour")
        cur.execute("INSERT INTO event_hour_users SELECT event, hour, n, users FROM _uh_new "
                    "WHERE n > 0")
    finally:
        cur.unregister("_uh_new")
