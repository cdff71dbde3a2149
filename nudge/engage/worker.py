"""Delivery workers: claim due outbox messages, send them, record the outcome.

A worker claims up to ``NUDGE_ENGAGE_CLAIM_BATCH`` messages (one UPDATE ... RETURNING),
sends them concurrently with a timeout each, and commits every outcome of the batch in one
transaction. Outcomes (channels/base.py):

- ``sent``: recorded with the provider id; a "not opened within N" fallback is queued,
  held until then (skipped if the message was opened or clicked meanwhile);
- ``retry`` / timeout / channel error: back to pending after ``backoff`` (doubling from
  ``NUDGE_ENGAGE_BACKOFF_MS``, jittered, never sooner than the provider's Retry-After),
  dead-lettered after ``NUDGE_ENGAGE_MAX_ATTEMPTS`` attempts;
- ``rejected`` / ``unreachable``: final; the next fallback channel is tried at once, and an
  unreachable push/web push token is removed from the profile.

Before sending, held checks run: an inaction trigger's "unless" event (skip when the user
did it), a fallback's parent engagement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from nudge.clock import clock
from nudge.store import control

from . import outbox, tracking
from .channels.base import Message, SendResult
from .compose import address, context, load_recipients, render
from .directory import CampaignDirectory, spec_of
from .policy import suppressed_users
from .service import Engage
from .templates import TemplateError

log = logging.getLogger("nudge.engage")
OB = control.outbox
MAX_BACKOFF_S = 3600.0


@dataclass
class Outcome:
    row: Any
    result: SendResult | None  # None: skipped before sending
    reason: str | None = None


class DeliveryWorker:
    def __init__(self, engage: Engage, index: int) -> None:
        self.engage = engage
        self.index = index
        s = engage.settings
        self.batch = s.engage_claim_batch
        self.timeout = s.engage_send_timeout_ms / 1000
        self.backoff = s.engage_backoff_ms / 1000
        self.max_attempts = s.engage_max_attempts
        self.poll = s.engage_poll_ms / 1000

    async def run(self) -> None:
        e = self.engage
        while not e.stopping:
            try:
                n = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery worker %d failed a step", self.index)
                n = 0
            if n == 0 and e.wake is not None:
                e.wake.clear()
                try:
                    await asyncio.wait_for(e.wake.wait(), self.poll)
                except TimeoutError:
                    pass

    async def step(self) -> int:
        e = self.engage
        now = clock.now()
        rows = await asyncio.to_thread(outbox.claim, e.engine, self.batch, now,
                                       e.settings.engage_lease_s, e.inactive_campaigns(),
                                       e.keyring)
        if not rows:
            return 0
        held = await asyncio.to_thread(self._held_checks, rows)
        outcomes = await asyncio.gather(*(self._send(r, held.get(r.id)) for r in rows))
        await asyncio.to_thread(self._finish, list(outcomes))
        return len(rows)

    # -- before sending ----------------------------------------------------------------------
    def _held_checks(self, rows: list[Any]) -> dict[int, str]:
        """Reasons to skip held messages instead of sending them."""
        out: dict[int, str] = {}
        parents = {}
        metas = {r.id: json.loads(r.meta) if r.meta else {} for r in rows}
        hold = [m["hold_parent"] for m in metas.values() if "hold_parent" in m]
        if hold:
            with self.engage.engine.connect() as conn:
                parents = {p.id: p for p in conn.execute(
                    sa.select(OB.c.id, OB.c.opened_at, OB.c.clicked_at).where(OB.c.id.in_(hold)))}
        by_account: dict[str, list[int]] = {}
        for r in rows:
            by_account.setdefault(r.account_id, []).append(r.user_id)
        suppressed = {(a, u) for a, uids in by_account.items()
                      for u in suppressed_users(a, uids)}
        for r in rows:
            # Event webhooks (no campaign) report events; they do not contact the person.
            if (r.account_id, r.user_id) in suppressed and r.campaign_id is not None:
                out[r.id] = "suppressed"  # suppressed after the message was queued
                continue
            m = metas[r.id]
            p = parents.get(m.get("hold_parent"))
            if p is not None and (p.opened_at or p.clicked_at):
                out[r.id] = "engaged with the previous message"
            unless = m.get("unless")
            if unless and r.id not in out:
                store = self.engage.stores.get(r.account_id)
                with store.cursor() as cur:
                    did = cur.execute(
                        "SELECT 1 FROM events WHERE user_id = ? AND event = ? AND "
                        "ts >= to_timestamp(?)::TIMESTAMP LIMIT 1",
                        [r.user_id, unless["event"], unless["since"]]).fetchone()
                if did:
                    out[r.id] = f"did {unless['event']}"
        return out

    async def _send(self, r: Any, skip: str | None) -> Outcome:
        if skip:
            return Outcome(r, None, skip)
        e = self.engage
        try:
            channel = e.channel(r.account_id, r.channel)
        except Exception as exc:  # noqa: BLE001 - not configured: retried, then dead-lettered
            return Outcome(r, SendResult("retry", error=f"channel not available: {exc}"[:200]))
        content = json.loads(r.content) if r.content else {}
        meta = json.loads(r.meta) if r.meta else {}
        content = e.signer.finalize(r.account_id, r.id, r.user_id, r.channel, r.category,
                                    content)
        msg = Message(id=str(r.id), idempotency_key=r.idem_key, account_id=r.account_id,
                      user_id=r.user_id, channel=r.channel, to=r.to_addr or "",
                      content=content,
                      meta={"campaign_id": r.campaign_id, "variant": r.variant,
                            "message_id": r.id, **{k: v for k, v in meta.items()
                                                   if k == "token_kind"}})
        async with e.slots(r.account_id, r.channel):
            await e.limiter.acquire((r.account_id, r.channel))
            try:
                result = await asyncio.wait_for(channel.send(msg), self.timeout)
            except TimeoutError:
                result = SendResult("retry",
                                    error=f"provider did not answer in {self.timeout:g} s")
            except Exception as exc:  # noqa: BLE001 - a channel bug must not lose the message
                log.warning("channel %s raised for message %s", r.channel, r.id,
                            exc_info=True)
                result = SendResult("retry", error=f"channel error: {type(exc).__name__}")
        return Outcome(r, result)

    # -- after sending -----------------------------------------------------------------------
    def delay(self, attempts: int, retry_after: float | None) -> float:
        d = min(MAX_BACKOFF_S, self.backoff * 2 ** max(0, attempts - 1))
        d *= random.uniform(0.8, 1.2)
        return max(d, retry_after or 0.0)

    def _finish(self, outcomes: list[Outcome]) -> None:
        now = clock.now()
        events: dict[str, list[tuple[int, str, int, dict[str, Any]]]] = {}
        follow: list[tuple[Any, str]] = []  # (row, why) needing a fallback message
        removed: list[tuple[str, int, str, str]] = []
        sent: list[dict[str, Any]] = []
        with self.engage.engine.begin() as conn:
            for oc in outcomes:
                r, res = oc.row, oc.result
                props = {"campaign_id": r.campaign_id, "variant": r.variant,
                         "channel": r.channel, "message_id": r.id}
                upd: dict[str, Any]
                if res is None:
                    upd = {"status": "skipped", "reason": oc.reason}
                elif res.outcome == "sent":
                    upd = {"status": "sent", "sent_at": now, "provider_id": res.provider_id,
                           "reason": None}
                    events.setdefault(r.account_id, []).append((r.user_id, "sent", r.id, props))
                    follow.append((r, "not engaged"))
                elif res.outcome == "retry":
                    if r.attempts >= self.max_attempts:
                        upd = {"status": "dead", "reason": (res.error or "retries exhausted")[:200]}
                        events.setdefault(r.account_id, []).append(
                            (r.user_id, "failed", r.id, {**props, "reason": "dead letter"}))
                    else:
                        upd = {"status": "pending", "reason": (res.error or "retry")[:200],
                               "next_attempt_at": now + self.delay(r.attempts, res.retry_after)}
                else:  # rejected / unreachable
                    upd = {"status": res.outcome, "reason": (res.error or res.outcome)[:200]}
                    events.setdefault(r.account_id, []).append(
                        (r.user_id, "failed", r.id, {**props, "reason": res.outcome}))
                    follow.append((r, res.outcome))
                    if res.outcome == "unreachable" and r.channel in ("push", "webpush"):
                        meta = json.loads(r.meta) if r.meta else {}
                        kind = meta.get("token_kind", "webpush")
                        removed.append((r.account_id, r.user_id, kind, r.to_addr or ""))
                upd["lease_until"] = None
                if upd["status"] == "sent":
                    sent.append({"b_id": r.id, "b_pid": res.provider_id if res else None})
                else:
                    conn.execute(OB.update().where(OB.c.id == r.id, OB.c.status == "sending")
                                 .values(**upd))
            if sent:  # the common case, as one executemany
                conn.execute(OB.update().where(OB.c.id == sa.bindparam("b_id"),
                                               OB.c.status == "sending")
                             .values(status="sent", sent_at=now, reason=None, lease_until=None,
                                     provider_id=sa.bindparam("b_pid")), sent)
            fallbacks = self._fallbacks(follow, now)
            if fallbacks:
                outbox.insert(conn, fallbacks)
        if fallbacks:
            self.engage.notify()
        for account_id, items in events.items():
            tracking.write_events(self.engage.stores.get(account_id), items)
        for account_id, _uid, kind, token in removed:
            self._remove_token(account_id, kind, token)

    def _fallbacks(self, follow: list[tuple[Any, str]], now: float) -> list[dict[str, Any]]:
        """Next-channel messages: at once after rejected/unreachable; held until
        ``fallback_after`` for sent ones (skipped if engaged by then)."""
        rows: list[dict[str, Any]] = []
        for r, why in follow:
            meta = json.loads(r.meta) if r.meta else {}
            rest = meta.get("fallback") or []
            if not rest or r.campaign_id is None:
                continue
            c = CampaignDirectory(self.engage.engine, r.account_id).get(r.campaign_id)
            spec = spec_of(c)
            if why == "not engaged" and spec.fallback_after is None:
                continue
            variant = next((v for v in spec.variants if v.name == r.variant), None)
            if variant is None:
                continue
            rec = load_recipients(self.engage.stores.get(r.account_id), [r.user_id]).get(
                r.user_id)
            if rec is None:
                continue
            step = meta.get("step", 0) + 1
            key = outbox.idem_key(r.campaign_id, r.occurrence, r.user_id, r.variant, step)
            for i, ch in enumerate(rest):
                to, ch_meta = address(spec, ch, rec)
                if to is None:
                    continue
                ctx = meta.get("ctx") or {}
                try:
                    content = render(variant, ch, context(r.campaign_id, spec, variant, rec,
                                                          ctx.get("event"), ctx.get("data")))
                except TemplateError:
                    continue
                m = {**{k: v for k, v in meta.items() if k in ("ctx",)}, **ch_meta,
                     "step": step, "fallback": rest[i + 1:], "fallback_reason": why}
                at = now
                if why == "not engaged":
                    m["hold_parent"] = r.id
                    at = now + (spec.fallback_after or 0)
                rows.append(outbox.row(
                    account_id=r.account_id, key=key, campaign_id=r.campaign_id,
                    occurrence=r.occurrence, user_id=r.user_id, variant=r.variant, channel=ch,
                    category=r.category, transactional=r.transactional, to=to,
                    content=content, meta=m, status="pending", reason=None, at=at, now=now,
                    parent_id=r.id))
                break
        return rows

    def _remove_token(self, account_id: str, kind: str, token: str) -> None:
        """The provider said this token is gone: drop it from the identity map."""
        store = self.engage.stores.get(account_id)

        def drop() -> None:
            store.writer_cursor.execute("DELETE FROM identities WHERE kind = ? AND value = ?",
                                        [kind, token])
            store.identity.ids.pop((kind, token), None)

        store.run_on_writer(drop)
