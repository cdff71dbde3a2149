"""The durable outbox (control store table ``outbox``).

Every message is a row before anything is sent. Its ``idem_key`` — (campaign, occurrence,
user, variant[, fallback step]) — is unique, and rows are inserted with "on conflict do
nothing", so a resumed audience expansion, a retried API call or a second trigger delivery
of the same event never creates a second message.

Lifecycle of a row::

    pending ──claim──► sending ──► sent ──callback──► delivered
       ▲                  │  └──► rejected / unreachable (final; fallback may follow)
       └──── retry ◄──────┘  └──► dead (attempts exhausted)
    skipped (policy said no, with the reason) · control (A/B control group, never sent)

A claim sets ``lease_until``; a row still ``sending`` after its lease (the process died
mid-send) is claimed again. That is the one window where a message can be sent twice: the
provider accepted it but we died before committing ``sent``. It is narrowed by committing
each claimed batch's results as soon as they are known, and closed for providers that
deduplicate on the idempotency key we pass with every attempt (``Message.idempotency_key``:
the webhook channel's ``Idempotency-Key`` header, APNs ``apns-collapse-id``, ...).
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from nudge.privacy.keys import Keyring
from nudge.store import control

from . import sealing

OB = control.outbox
log = logging.getLogger("nudge.engage")
FINAL = ("sent", "delivered", "rejected", "unreachable", "dead", "skipped", "control")


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector paused around batch work that allocates tens of
    thousands of short-lived objects without cycles (message rows, sealed values): the
    collections they trigger find nothing (build_rows CPU -15 % in
    bench/engage_campaign.py; sealing a batch about -40 %)."""
    if not gc.isenabled():  # paused already (by the caller, or another thread)
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def upgrade_indexes(engine: Engine) -> None:
    """Replace an outbox's full ``ix_outbox_provider`` (before it became partial) with the
    partial one: queuing a message then adds no entry to it. Idempotent."""
    ix = next(i for i in OB.indexes if i.name == "ix_outbox_provider")
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'index' "
                                       "AND name = 'ix_outbox_provider'").scalar()
        elif conn.dialect.name == "postgresql":
            ddl = conn.exec_driver_sql("SELECT indexdef FROM pg_indexes "
                                       "WHERE indexname = 'ix_outbox_provider'").scalar()
        else:
            return
        if ddl is not None and "WHERE" in ddl.upper():
            return
        if ddl is not None:
            ix.drop(conn)
        ix.create(conn)
    log.info("outbox: ix_outbox_provider is now a partial index")


def idem_prefix(campaign_id: int | None, occurrence: str) -> str:
    """The part of ``idem_key`` that a campaign occurrence's messages share."""
    return f"c{campaign_id if campaign_id is not None else '-'}:{occurrence}:"


def idem_key(campaign_id: int | None, occurrence: str, user_id: int, variant: str,
             step: int = 0) -> str:
    base = f"{idem_prefix(campaign_id, occurrence)}{user_id}:{variant}"
    return base if step == 0 else f"{base}:fb{step}"


def row(*, account_id: str, key: str, campaign_id: int | None, occurrence: str, user_id: int,
        variant: str, channel: str, category: str, transactional: bool, to: str | None,
        content: dict[str, Any] | str | None, meta: dict[str, Any] | None, status: str,
        reason: str | None, at: float, now: float, parent_id: int | None = None
        ) -> dict[str, Any]:
    return {"account_id": account_id, "idem_key": key, "campaign_id": campaign_id,
            "occurrence": occurrence, "user_id": user_id, "variant": variant,
            "channel": channel, "category": category, "transactional": transactional,
            "to_addr": to,
            "content": content if content is None or isinstance(content, str)
            else json.dumps(content),
            "meta": None if not meta else json.dumps(meta), "status": status,
            "reason": reason, "attempts": 0, "next_attempt_at": at, "created_at": now,
            "parent_id": parent_id}


def insert(conn: Connection, rows: Sequence[dict[str, Any]],
           keyring: Keyring | None = None) -> None:
    """Insert, ignoring rows whose idempotency key exists (exactly one row per key).

    Addresses, contents and meta are sealed on the way in (``sealing.seal_outbox_row``)
    with ``keyring``, else the one registered for this control store; the given dicts are
    not changed."""
    if not rows:
        return
    keyring = keyring or sealing.keyring_of(conn.engine)
    with paused_gc():
        rows = sealing.seal_outbox_rows(keyring, rows)
        control.insert_ignore(conn, OB, rows, ("idem_key",))  # a re-enqueue is a no-op


class Claimed(SimpleNamespace):
    """A claimed outbox row with its address, content and meta opened."""

    id: int
    account_id: str
    idem_key: str
    to_addr: str | None
    content: str | None
    meta: str | None


def opened(keyring: Keyring, r: Row[Any]) -> Claimed:
    """The row's columns as attributes, sealed fields opened."""
    c = Claimed(**r._mapping)
    c.to_addr, c.content, c.meta = sealing.open_outbox(keyring, c.account_id, c.idem_key,
                                                        c.to_addr, c.content, c.meta)
    return c


def claim(engine: Engine, limit: int, now: float, lease_s: float,
          paused: Iterable[int], keyring: Keyring | None = None) -> list[Claimed]:
    """Atomically take up to ``limit`` due messages (and expired leases) for sending."""
    due = sa.or_(sa.and_(OB.c.status == "pending", OB.c.next_attempt_at <= now),
                 sa.and_(OB.c.status == "sending", OB.c.lease_until < now))
    pick = sa.select(OB.c.id).where(due)
    paused = list(paused)
    if paused:
        pick = pick.where(sa.or_(OB.c.campaign_id.is_(None), OB.c.campaign_id.not_in(paused)))
    pick = pick.order_by(OB.c.next_attempt_at).limit(limit)
    if engine.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    stmt = (sa.update(OB).where(OB.c.id.in_(pick.scalar_subquery()), due)
            .values(status="sending", lease_until=now + lease_s, attempts=OB.c.attempts + 1)
            .returning(*OB.c))
    with engine.begin() as conn:
        rows = list(conn.execute(stmt))
    keyring = keyring or sealing.keyring_of(engine)
    return [opened(keyring, r) for r in rows]


def get(conn: Connection, account_id: str, message_id: int) -> Row[Any] | None:
    return conn.execute(sa.select(OB).where(OB.c.id == message_id,
                                           OB.c.account_id == account_id)).first()


def to_dict(r: Row[Any]) -> dict[str, Any]:
    m = r._mapping
    out = {k: m[k] for k in ("id", "campaign_id", "occurrence", "user_id", "variant", "channel",
                             "category", "transactional", "status", "reason", "attempts",
                             "next_attempt_at", "provider_id", "parent_id", "created_at",
                             "sent_at", "delivered_at", "opened_at", "clicked_at",
                             "converted_at", "revenue")}
    out["idempotency_key"] = m["idem_key"]
    return out
