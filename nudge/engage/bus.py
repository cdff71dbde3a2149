"""The live bus: committed events → triggers, conversions, outbound event webhooks.

The account store calls ``LiveBus._on_commit`` on its writer thread after each durable
commit; it only hands the batch to the event loop (``call_soon_threadsafe``), so ingest is
not slowed by what engagement does with the events. The bus task then, per batch:

- **triggers**: running ``trigger`` campaigns whose event and property filters match (and
  whose audience, if any, contains the user) get one outbox message per event; the event
  id is the occurrence, so a redelivered event cannot send twice. With an inaction check
  ("unless B within 30 min") the message is due at ts + 30 min and skipped at send time if
  the user did B since the trigger;
- **conversions**: an event named as a campaign's conversion event, within the window after
  a message was sent (or a control-group assignment was made), marks the latest such
  message converted (with revenue) and writes ``Campaign Converted`` to the profile;
- **event webhooks**: matching events become webhook-channel outbox messages (signed,
  retried, dead-lettered like any message).

Events reach the bus through a durable feed (feed.py): the bus's watermark per account is
in the control store and events committed before a crash are replayed from the account
store at start, before live events. Handling is idempotent (outbox keys carry the event's
message id; a conversion recorded at the event's time is not recorded again), so a replayed
event never sends twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from nudge.clock import clock
from nudge.ingest.records import Date
from nudge.query.segments.model import Filter, parse
from nudge.query.segments.saved import SegmentDirectory
from nudge.store import control

from . import outbox, tracking
from .campaigns import _obj, bad
from .directory import Campaign, _campaign, spec_of
from .expand import build_rows, segment_engine
from .feed import EventFeed
from .service import Engage

log = logging.getLogger("nudge.engage")
C, OB = control.campaigns, control.outbox
CACHE_S = 1.0


def matches(filters: Sequence[Filter], props: dict[str, Any]) -> bool:
    return all(_match(f, props) for f in filters)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _match(f: Filter, props: dict[str, Any]) -> bool:
    present = f.property in props and props[f.property] is not None
    v = props.get(f.property)
    op, want = f.op, f.value
    if op == "exists":
        return present
    if op == "not_exists":
        return not present
    if not present:
        return op in ("neq", "not_in", "not_contains")
    if op == "eq":
        return bool(v == want)
    if op == "neq":
        return bool(v != want)
    if op == "in":
        return v in want
    if op == "not_in":
        return v not in want
    if op in ("contains", "not_contains", "starts_with"):
        s = v if isinstance(v, str) else (" ".join(map(str, v)) if isinstance(v, list)
                                          else str(v))
        hit = (want in v) if isinstance(v, list) else (want in s)
        if op == "starts_with":
            return s.startswith(want)
        return hit if op == "contains" else not hit
    x = _num(v)
    if op == "between":
        lo, hi = _num(want[0]), _num(want[1])
        return x is not None and lo is not None and hi is not None and lo <= x <= hi
    w = _num(want)
    if x is None or w is None:
        return False
    return {"gt": x > w, "gte": x >= w, "lt": x < w, "lte": x <= w}.get(op, False)


def _plain(v: Any) -> Any:
    """Property values as JSON values (dates as on the wire, ``$D_<epoch>``)."""
    if isinstance(v, Date):
        return f"$D_{int(v.epoch)}"
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def parse_webhook(body: Any) -> dict[str, Any]:
    """An outbound event webhook: ``{"url", "event", "where"?}``."""
    from urllib.parse import urlsplit

    from nudge.query.segments.model import DefinitionError, _Parser

    o = _obj(body, "", ("url", "event", "where"))
    url = o.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise bad("url", "must be an http(s) URL")
    if not isinstance(o.get("event"), str) or not o["event"]:
        raise bad("event", "must be an event name")
    try:
        _Parser(0).filters(o.get("where"), "where")
    except DefinitionError as e:
        raise bad(e.path, e.message.split(": ", 1)[-1]) from None
    return {"url": url, "event": o["event"], "where": o.get("where") or []}


class LiveBus:
    """Triggers, conversions and event webhooks fed by a durable ``EventFeed``: events
    committed just before a crash are replayed from the account store at the next start."""

    def __init__(self, engage: Engage) -> None:
        self.engage = engage
        self._cache: dict[str, tuple[float, list[Campaign], list[Campaign], list[Any]]] = {}
        self.feed = EventFeed("engage", engage.engine, engage.stores, self.handle,
                              wants=self.wants, on_handled=self._handled)

    def attach(self) -> None:
        self.feed.attach()

    def detach(self) -> None:
        self.feed.detach()

    async def run(self) -> None:
        try:
            await self.feed.run()
        finally:
            await asyncio.to_thread(self.feed.flush)

    def _handled(self, n: int) -> None:
        if n:
            self.engage.notify()

    def wants(self, account_id: str) -> bool:
        """Whether this account's events can matter (running triggers, conversions, hooks)."""
        return any(self._campaigns(account_id))

    # -- per account cache -------------------------------------------------------------------
    def _campaigns(self, account_id: str) -> tuple[list[Campaign], list[Campaign], list[Any]]:
        hit = self._cache.get(account_id)
        if hit and time.monotonic() - hit[0] < CACHE_S:
            return hit[1], hit[2], hit[3]
        w = control.event_webhooks
        with self.engage.engine.connect() as conn:
            cs = [_campaign(r) for r in conn.execute(sa.select(C).where(
                C.c.account_id == account_id, C.c.deleted_at.is_(None),
                C.c.status.not_in(("draft",))))]
            hooks = [(r.id, json.loads(r.definition)) for r in conn.execute(
                sa.select(w).where(w.c.account_id == account_id, w.c.deleted_at.is_(None)))]
        triggers = [c for c in cs if c.kind == "trigger" and c.status == "running"]
        conversions = [c for c in cs if spec_of(c).conversion is not None]
        self._cache[account_id] = (time.monotonic(), triggers, conversions, hooks)
        return triggers, conversions, hooks

    def invalidate(self, account_id: str) -> None:
        self._cache.pop(account_id, None)

    # -- handling ----------------------------------------------------------------------------
    def handle(self, account_id: str, events: list[Any]) -> int:
        triggers, conversions, hooks = self._campaigns(account_id)
        if not (triggers or conversions or hooks):
            return 0
        events = [(u, n, ts, _plain(p), mid) for u, n, ts, p, mid in events]
        n = 0
        if triggers:
            n += self._triggers(account_id, triggers, events)
        if conversions:
            self._conversions(account_id, conversions, events)
        if hooks:
            n += self._webhooks(account_id, hooks, events)
        return n

    def _triggers(self, account_id: str, campaigns: list[Campaign], events: list[Any]) -> int:
        rows: list[dict[str, Any]] = []
        for c in campaigns:
            spec = spec_of(c)
            trig = spec.trigger
            assert trig is not None
            hits = [e for e in events if e[1] == trig.event and matches(trig.where, e[3])]
            if not hits:
                continue
            if spec.audience:
                saved = SegmentDirectory(self.engage.engine, account_id)
                a = spec.audience
                node = (parse(saved.get(int(a["segment_id"])).definition, clock.now())
                        if "segment_id" in a else parse(a["definition"], clock.now()))
                eng = segment_engine(self.engage, account_id, saved)
                hits = [e for e in hits if eng.contains(node, e[0])]
            for uid, name, ts, props, mid in hits:
                event = {**props, "name": name, "ts": ts, "properties": props}
                meta = None
                send_at = None
                if trig.unless_event:
                    send_at = ts + trig.unless_within
                    meta = {"unless": {"event": trig.unless_event, "since": ts}}
                rows += build_rows(self.engage, c, spec, f"e:{mid}", [uid], event=event,
                                   send_at=send_at, meta=meta)
        if rows:
            with self.engage.engine.begin() as conn:
                outbox.insert(conn, rows)
        return len(rows)

    def _conversions(self, account_id: str, campaigns: list[Campaign],
                     events: list[Any]) -> None:
        by_event: dict[str, list[Campaign]] = {}
        for c in campaigns:
            conv = spec_of(c).conversion
            assert conv is not None
            by_event.setdefault(conv.event, []).append(c)
        written: list[tuple[int, str, int, dict[str, Any]]] = []
        with self.engage.engine.begin() as conn:
            for uid, name, ts, props, _mid in events:
                for c in by_event.get(name, ()):
                    conv = spec_of(c).conversion
                    assert conv is not None
                    since = ts - conv.within
                    at = sa.func.coalesce(OB.c.sent_at, OB.c.created_at)
                    if conn.execute(sa.select(OB.c.id).where(
                            OB.c.account_id == account_id, OB.c.campaign_id == c.id,
                            OB.c.user_id == uid, OB.c.converted_at == ts).limit(1)).first():
                        continue  # a replayed event: this conversion is recorded already
                    r = conn.execute(sa.select(OB.c.id, OB.c.variant, OB.c.channel).where(
                        OB.c.account_id == account_id, OB.c.campaign_id == c.id,
                        OB.c.user_id == uid, OB.c.converted_at.is_(None),
                        OB.c.status.in_(("sent", "delivered", "control")),
                        at >= since, at <= ts).order_by(at.desc()).limit(1)).first()
                    if r is None:
                        continue
                    revenue = None
                    if conv.revenue_property:
                        v = props.get(conv.revenue_property)
                        revenue = float(v) if isinstance(v, int | float) and not isinstance(
                            v, bool) else None
                    conn.execute(OB.update().where(OB.c.id == r.id).values(converted_at=ts,
                                                                         revenue=revenue))
                    written.append((uid, "converted", r.id, {
                        "campaign_id": c.id, "variant": r.variant, "channel": r.channel,
                        "message_id": r.id, "revenue": revenue, "conversion_event": name}))
        if written:
            tracking.write_events(self.engage.stores.get(account_id), written)

    def _webhooks(self, account_id: str, hooks: list[Any], events: list[Any]) -> int:
        from nudge.query.segments.model import _Parser

        now = clock.now()
        rows = []
        for hook_id, d in hooks:
            where = _Parser(0).filters(d.get("where"), "where")
            for uid, name, ts, props, mid in events:
                if name != d["event"] or not matches(where, props):
                    continue
                body = {"type": "event", "webhook_id": hook_id, "account_id": account_id,
                        "user_id": uid, "event": name, "ts": ts, "properties": props,
                        "message_id": mid}
                rows.append(outbox.row(
                    account_id=account_id, key=f"wh{hook_id}:{mid}", campaign_id=None,
                    occurrence=f"wh{hook_id}", user_id=uid, variant="-", channel="webhook",
                    category="webhook", transactional=True, to=d["url"],
                    content={"body": body}, meta=None, status="pending", reason=None,
                    at=now, now=now))
        if rows:
            with self.engage.engine.begin() as conn:
                outbox.insert(conn, rows)
        return len(rows)
