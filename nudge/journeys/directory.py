"""Stored journeys of one account and their lifecycle and versions.

::

    draft ──publish──► published ──pause──► paused ──resume──► published
                          │  ▲                 │
                          └──┴── stop ◄────────┘ (stopped: every active user exits)

Publishing freezes the definition as version N (``journey_versions``, never changed).
Editing a published or paused journey edits the draft only; publishing again makes version
N+1. New entries use the newest version; people in flight finish on the version they
entered. A paused journey holds everyone where they are (no entries, no steps, events
ignored); timers that came due meanwhile fire on resume.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound
from nudge.store import control

from .validate import validate

J, V, E = control.journeys, control.journey_versions, control.journey_entries


def _out(r: Any) -> dict[str, Any]:
    return {"id": r.id, "name": r.name, "status": r.status, "version": r.version or None,
            "definition": json.loads(r.definition), "created_at": r.created_at,
            "updated_at": r.updated_at}


class JourneyDirectory:
    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    def _row(self, journey_id: int) -> Any:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(J).where(J.c.id == journey_id,
                                                J.c.account_id == self.account_id,
                                                J.c.deleted_at.is_(None))).first()
        if r is None:
            raise NotFound(f"no journey {journey_id}")
        return r

    def get(self, journey_id: int) -> dict[str, Any]:
        out = _out(self._row(journey_id))
        with self.engine.connect() as conn:
            out["versions"] = [{"version": v.version, "published_at": v.published_at}
                               for v in conn.execute(sa.select(V.c.version, V.c.published_at)
                                                     .where(V.c.journey_id == journey_id)
                                                     .order_by(V.c.version))]
        return out

    def version(self, journey_id: int, version: int) -> dict[str, Any]:
        self._row(journey_id)
        with self.engine.connect() as conn:
            d = conn.execute(sa.select(V.c.definition).where(
                V.c.journey_id == journey_id, V.c.version == version)).scalar()
        if d is None:
            raise NotFound(f"journey {journey_id} has no version {version}")
        return {"journey_id": journey_id, "version": version, "definition": json.loads(d)}

    def list(self, status: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(J).where(J.c.account_id == self.account_id, J.c.deleted_at.is_(None))
        if status:
            q = q.where(J.c.status == status)
        with self.engine.connect() as conn:
            return [_out(r) for r in conn.execute(q.order_by(J.c.id))]

    def create(self, body: Any) -> dict[str, Any]:
        j = validate(body)
        now = clock.now()
        with self.engine.begin() as conn:
            jid = conn.execute(J.insert().values(
                account_id=self.account_id, name=j.name, status="draft",
                definition=json.dumps(body), version=0, created_at=now,
                updated_at=now)).inserted_primary_key[0]  # type: ignore[index]
        return self.get(int(jid))

    def update(self, journey_id: int, body: Any) -> dict[str, Any]:
        r = self._row(journey_id)
        if r.status == "stopped":
            raise Conflict("a stopped journey cannot be edited")
        j = validate(body)
        self._set(journey_id, name=j.name, definition=json.dumps(body))
        return self.get(journey_id)

    def delete(self, journey_id: int) -> None:
        r = self._row(journey_id)
        if r.status in ("published", "paused"):
            raise Conflict(f"a {r.status} journey cannot be deleted (stop it first)")
        self._set(journey_id, deleted_at=clock.now())

    def _set(self, journey_id: int, **values: Any) -> None:
        values.setdefault("updated_at", clock.now())
        with self.engine.begin() as conn:
            conn.execute(J.update().where(J.c.id == journey_id,
                                          J.c.account_id == self.account_id).values(**values))

    def publish(self, journey_id: int) -> dict[str, Any]:
        """Freeze the draft as a new version and make it the one new entries use."""
        r = self._row(journey_id)
        if r.status == "stopped":
            raise Conflict("a stopped journey cannot be published again")
        validate(json.loads(r.definition))
        now = clock.now()
        with self.engine.begin() as conn:
            last = conn.execute(sa.select(sa.func.max(V.c.version)).where(
                V.c.journey_id == journey_id)).scalar() or 0
            conn.execute(V.insert().values(journey_id=journey_id, version=last + 1,
                                           definition=r.definition, published_at=now))
            conn.execute(J.update().where(J.c.id == journey_id).values(
                status="published", version=last + 1, updated_at=now))
        return self.get(journey_id)

    def pause(self, journey_id: int) -> dict[str, Any]:
        r = self._row(journey_id)
        if r.status != "published":
            raise Conflict(f"a {r.status} journey cannot be paused")
        self._set(journey_id, status="paused")
        return self.get(journey_id)

    def resume(self, journey_id: int) -> dict[str, Any]:
        r = self._row(journey_id)
        if r.status != "paused":
            raise Conflict(f"a {r.status} journey cannot be resumed")
        self._set(journey_id, status="published")
        return self.get(journey_id)

    def stop(self, journey_id: int) -> dict[str, Any]:
        """Stop for good: every active user exits with reason ``journey stopped``."""
        r = self._row(journey_id)
        if r.status == "stopped":
            raise Conflict("the journey is already stopped")
        now = clock.now()
        with self.engine.begin() as conn:
            conn.execute(J.update().where(J.c.id == journey_id).values(status="stopped",
                                                                       updated_at=now))
            conn.execute(E.update().where(E.c.journey_id == journey_id,
                                          E.c.status == "active").values(
                status="exited", exit_reason="journey stopped", exited_at=now, due_at=None))
        return self.get(journey_id)
