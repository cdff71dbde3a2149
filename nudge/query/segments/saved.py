"""Saved segments in the control store: per account, versioned on every update."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound, ValidationError
from nudge.store.control import segment_versions, segments

from .model import DefinitionError, Node, parse, segment_refs


@dataclass(frozen=True)
class SavedSegment:
    id: int
    account_id: str
    name: str
    definition: Any
    version: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "definition": self.definition,
                "version": self.version, "created_at": self.created_at,
                "updated_at": self.updated_at}


class SegmentDirectory:
    """CRUD of one account's saved segments. Other accounts' segments are invisible."""

    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    def _row(self, r: Any) -> SavedSegment:
        return SavedSegment(r.id, r.account_id, r.name, json.loads(r.definition), r.version,
                            r.created_at, r.updated_at)

    def get(self, segment_id: int) -> SavedSegment:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(segments).where(
                segments.c.id == segment_id, segments.c.account_id == self.account_id,
                segments.c.deleted_at.is_(None))).first()
        if r is None:
            raise NotFound("no such segment")
        return self._row(r)

    def node(self, segment_id: int) -> Node:
        """The parsed definition of a saved segment (for references from other segments)."""
        try:
            seg = self.get(segment_id)
        except NotFound:
            raise DefinitionError("$", f"segment {segment_id} does not exist") from None
        return parse(seg.definition, clock.now())

    def list(self) -> list[SavedSegment]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(segments).where(
                segments.c.account_id == self.account_id, segments.c.deleted_at.is_(None))
                .order_by(segments.c.id)).all()
        return [self._row(r) for r in rows]

    def versions(self, segment_id: int) -> list[dict[str, Any]]:
        self.get(segment_id)
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(segment_versions).where(
                segment_versions.c.segment_id == segment_id)
                .order_by(segment_versions.c.version)).all()
        return [{"version": r.version, "name": r.name, "definition": json.loads(r.definition),
                 "created_at": r.created_at} for r in rows]

    def _check(self, name: Any, definition: Any, segment_id: int | None) -> Node:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise ValidationError("name must be 1-200 characters", field="name")
        node = parse(definition, clock.now())
        self._check_cycles(node, segment_id)
        return node

    def _check_cycles(self, node: Node, segment_id: int | None) -> None:
        """Refuse references to unknown segments and cycles (A → B → A)."""
        seen: set[int] = set()
        todo = [(ref, [ref]) for ref in segment_refs(node)]
        while todo:
            ref, chain = todo.pop()
            if segment_id is not None and ref == segment_id:
                raise DefinitionError("$", "segments refer to each other in a cycle: "
                                           + " → ".join(map(str, [segment_id, *chain])))
            if ref in seen:
                continue
            seen.add(ref)
            todo += [(r, [*chain, r]) for r in segment_refs(self.node(ref))]

    def create(self, name: Any, definition: Any) -> SavedSegment:
        self._check(name, definition, None)
        now = clock.now()
        text = json.dumps(definition)
        with self.engine.begin() as conn:
            seg_id = conn.execute(segments.insert().values(
                account_id=self.account_id, name=name.strip(), definition=text, version=1,
                created_at=now, updated_at=now)).inserted_primary_key[0]
            conn.execute(segment_versions.insert().values(
                segment_id=seg_id, version=1, name=name.strip(), definition=text,
                created_at=now))
        return self.get(int(seg_id))

    def update(self, segment_id: int, name: Any, definition: Any) -> SavedSegment:
        current = self.get(segment_id)
        self._check(name, definition, segment_id)
        now = clock.now()
        text = json.dumps(definition)
        version = current.version + 1
        with self.engine.begin() as conn:
            conn.execute(segments.update().where(segments.c.id == segment_id).values(
                name=name.strip(), definition=text, version=version, updated_at=now))
            conn.execute(segment_versions.insert().values(
                segment_id=segment_id, version=version, name=name.strip(), definition=text,
                created_at=now))
        return self.get(segment_id)

    def delete(self, segment_id: int) -> None:
        self.get(segment_id)
        users = [s.id for s in self.list()
                 if segment_id in segment_refs(parse(s.definition, clock.now()))]
        if users:
            raise Conflict(f"segment is used by segment(s) {users}")
        with self.engine.begin() as conn:
            conn.execute(segments.update().where(segments.c.id == segment_id)
                         .values(deleted_at=clock.now()))
