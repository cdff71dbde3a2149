"""Row-level claims on journey entries, so that several server processes can share one
control store without two of them running the same user's step.

A tick first *claims* the due entries it is about to run: one upsert into
``journey_leases`` that takes an entry only when nobody holds it or the holder's lease has
lapsed (``expires_at``), then reads back the entries this engine now holds. The claim is a
single statement, so two engines racing for the same rows get disjoint sets on SQLite
(the statement takes the database's write lock) and on PostgreSQL (row locks of the
conflicting keys). The batch's commit releases the claims in the same transaction as its
state changes. A crashed engine's claims lapse after ``NUDGE_JOURNEY_LEASE_S`` and another
engine (or the restarted one) takes the entries over; since the commit also re-checks each
entry's step counter, a lapsed claim can delay a step but never run it twice.

Event advances (a waiting user's event, goal, exit criteria) do not claim: they change an
entry with the same compare-and-set on its step counter inside one write transaction, so
whichever of a tick and an event commits first wins and the other's change is dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from nudge.store import control

E, L = control.journey_entries, control.journey_leases


def new_owner() -> str:
    """A claim owner id, unique per engine instance (a restarted process is a new owner)."""
    return uuid.uuid4().hex


def begin_write(conn: Connection) -> None:
    """Take SQLite's write lock at the start of a transaction that reads before it writes.

    SQLite's default (deferred) transaction reads a snapshot and fails at once with
    "database is locked" when it later writes after another connection has committed;
    ``BEGIN IMMEDIATE`` waits for the lock (busy_timeout) instead. PostgreSQL needs nothing
    here: the reads that decide a write use ``FOR UPDATE``.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def claim(engine: Engine, owner: str, live: set[int], now: float, limit: int,
          lease_s: float) -> list[Any]:
    """Claim up to ``limit`` due active entries of the ``live`` journeys; their rows."""
    free = sa.or_(L.c.entry_id.is_(None), L.c.expires_at < now, L.c.owner == owner)
    with engine.connect() as conn:
        ids = list(conn.execute(
            sa.select(E.c.id).select_from(E.outerjoin(L, L.c.entry_id == E.c.id))
            .where(E.c.status == "active", E.c.due_at <= now, E.c.journey_id.in_(live), free)
            .order_by(E.c.due_at).limit(limit)).scalars())
    if not ids:
        return []
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":  # the same statement through the DB-API (cheaper)
            conn.connection.driver_connection.executemany(  # type: ignore[union-attr]
                "INSERT INTO journey_leases (entry_id, owner, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (entry_id) DO UPDATE SET owner = excluded.owner, "
                "expires_at = excluded.expires_at WHERE journey_leases.expires_at < ? "
                "OR journey_leases.owner = excluded.owner",
                [(i, owner, now + lease_s, now) for i in ids])
        else:
            ins = control.dialect_insert(conn, L)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[L.c.entry_id],
                set_={"owner": ins.excluded.owner, "expires_at": ins.excluded.expires_at},
                where=sa.or_(L.c.expires_at < now, L.c.owner == owner)),
                [{"entry_id": i, "owner": owner, "expires_at": now + lease_s} for i in ids])
        rows = list(conn.execute(
            sa.select(E).join(L, L.c.entry_id == E.c.id)
            .where(L.c.owner == owner, E.c.id.in_(ids), E.c.status == "active",
                   E.c.due_at <= now).order_by(E.c.due_at)))
        # Entries another engine advanced between the candidate read and the upsert are
        # not ours to run: drop those claims now rather than leave them to lapse.
        stale = sorted(set(ids) - {r.id for r in rows})
        if stale:
            release(conn, owner, stale)
        return rows


def release(conn: Connection, owner: str, entry_ids: list[int]) -> None:
    """Drop this engine's claims on ``entry_ids`` (inside the batch's commit)."""
    for i in range(0, len(entry_ids), 900):
        conn.execute(L.delete().where(L.c.owner == owner,
                                      L.c.entry_id.in_(entry_ids[i:i + 900])))


def current_seq(conn: Connection, entry_ids: list[int]) -> dict[int, int]:
    """Step counters of the still-active entries, locked for this transaction."""
    out: dict[int, int] = {}
    for i in range(0, len(entry_ids), 900):
        q = sa.select(E.c.id, E.c.seq).where(E.c.id.in_(entry_ids[i:i + 900]),
                                             E.c.status == "active")
        if conn.dialect.name == "postgresql":
            q = q.with_for_update()
        out.update({r.id: r.seq for r in conn.execute(q)})
    return out
