"""Stored campaigns of one account and their lifecycle.

::

    draft ──send──► scheduled ──due──► running ──expanded, all delivered──► completed
      │               │  ▲               │  ▲
      │               ▼  │               ▼  │
      │             paused ◄─────────── paused (send resumes)
      └──────────────────────────────► stopped (from any state but completed)

``api`` and ``trigger`` campaigns go straight to running on send. Stopping skips every
message still pending (reason ``campaign stopped``); pausing holds them in the outbox.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.errors import Conflict, NotFound
from nudge.store import control

from .campaigns import CampaignSpec, dumps, next_cron, parse_campaign
from .categories import CategoryDirectory

C = control.campaigns
EDITABLE = ("draft", "scheduled", "paused")
# Wall-clock schedules "in each user's timezone" start this long before the UTC time
# (the earliest zone is UTC+14), each message waiting for its own local moment.
EARLIEST_ZONE_S = 14 * 3600


@dataclass
class Campaign:
    id: int
    account_id: str
    name: str
    kind: str
    status: str
    definition: dict[str, Any]
    next_run_at: float | None
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "status": self.status,
                "definition": self.definition, "next_run_at": self.next_run_at,
                "created_at": self.created_at, "updated_at": self.updated_at}


_SPECS: dict[tuple[int, float], CampaignSpec] = {}


def spec_of(c: Campaign) -> CampaignSpec:
    """The parsed spec, cached per (campaign, version) so templates compile once."""
    key = (c.id, c.updated_at)
    s = _SPECS.get(key)
    if s is None:
        if len(_SPECS) > 2000:
            _SPECS.clear()
        s = _SPECS[key] = parse_campaign(c.definition)
    return s


def _campaign(r: Any) -> Campaign:
    return Campaign(r.id, r.account_id, r.name, r.kind, r.status, json.loads(r.definition),
                    r.next_run_at, r.created_at, r.updated_at)


class CampaignDirectory:
    def __init__(self, engine: Engine, account_id: str) -> None:
        self.engine = engine
        self.account_id = account_id

    def get(self, campaign_id: int) -> Campaign:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(C).where(C.c.id == campaign_id,
                                                C.c.account_id == self.account_id,
                                                C.c.deleted_at.is_(None))).first()
        if r is None:
            raise NotFound(f"no campaign {campaign_id}")
        return _campaign(r)

    def list(self, status: str | None = None) -> list[Campaign]:
        q = sa.select(C).where(C.c.account_id == self.account_id, C.c.deleted_at.is_(None))
        if status:
            q = q.where(C.c.status == status)
        with self.engine.connect() as conn:
            return [_campaign(r) for r in conn.execute(q.order_by(C.c.id))]

    def create(self, body: Any) -> Campaign:
        spec = parse_campaign(body)
        CategoryDirectory(self.engine, self.account_id).require(spec.category)
        now = clock.now()
        with self.engine.begin() as conn:
            cid = conn.execute(C.insert().values(
                account_id=self.account_id, name=spec.name, kind=spec.kind, status="draft",
                definition=dumps(body), created_at=now, updated_at=now)).inserted_primary_key[0]
        return self.get(int(cid))

    def update(self, campaign_id: int, body: Any) -> Campaign:
        c = self.get(campaign_id)
        if c.status not in EDITABLE:
            raise Conflict(f"a {c.status} campaign cannot be edited (pause it first)")
        spec = parse_campaign(body)
        if spec.kind != c.kind:
            raise Conflict("a campaign's kind cannot change")
        CategoryDirectory(self.engine, self.account_id).require(
            spec.category, unchanged_ok=spec_of(c).category)
        self._set(campaign_id, name=spec.name, definition=dumps(body))
        return self.get(campaign_id)

    def delete(self, campaign_id: int) -> None:
        c = self.get(campaign_id)
        if c.status in ("running", "scheduled"):
            raise Conflict(f"a {c.status} campaign cannot be deleted (stop it first)")
        self._set(campaign_id, deleted_at=clock.now())

    def _set(self, campaign_id: int, **values: Any) -> None:
        values.setdefault("updated_at", clock.now())
        with self.engine.begin() as conn:
            conn.execute(C.update().where(C.c.id == campaign_id,
                                          C.c.account_id == self.account_id).values(**values))

    # -- lifecycle ---------------------------------------------------------------------------
    def send(self, campaign_id: int) -> Campaign:
        """Start (draft), or resume (paused)."""
        c = self.get(campaign_id)
        if c.status not in ("draft", "paused"):
            raise Conflict(f"a {c.status} campaign cannot be sent")
        spec = spec_of(c)
        now = clock.now()
        if c.status == "paused":
            status = "running"
            if c.next_run_at is not None and c.next_run_at > now:
                status = "scheduled"
            self._set(campaign_id, status=status, updated_at=c.updated_at)
            return self.get(campaign_id)
        nxt: float | None = None
        status = "running"
        if c.kind == "one_time":
            at = spec.schedule.get("at", now)
            if spec.schedule.get("user_timezone"):
                at -= EARLIEST_ZONE_S
            nxt = at
            status = "scheduled" if at > now else "running"
        elif c.kind == "recurring":
            nxt = next_cron(spec.schedule, now)
            status = "scheduled"
        self._set(campaign_id, status=status, next_run_at=nxt, updated_at=c.updated_at)
        return self.get(campaign_id)

    def pause(self, campaign_id: int) -> Campaign:
        c = self.get(campaign_id)
        if c.status not in ("running", "scheduled"):
            raise Conflict(f"a {c.status} campaign cannot be paused")
        self._set(campaign_id, status="paused", updated_at=c.updated_at)
        return self.get(campaign_id)

    def stop(self, campaign_id: int) -> Campaign:
        c = self.get(campaign_id)
        if c.status in ("stopped", "completed"):
            raise Conflict(f"the campaign is already {c.status}")
        o = control.outbox
        with self.engine.begin() as conn:
            conn.execute(C.update().where(C.c.id == campaign_id).values(
                status="stopped", next_run_at=None))
            conn.execute(o.update().where(o.c.campaign_id == campaign_id,
                                          o.c.status == "pending")
                         .values(status="skipped", reason="campaign stopped"))
        return self.get(campaign_id)
