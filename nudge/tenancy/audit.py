"""The audit log of administrative actions: who, what, when, from where.

Anyone's code records an action with :func:`record` (or :func:`record_request` inside a
route, which fills in the source address and user agent); owners read it with
``GET /1/audit``. Details must never hold secrets (keys, passwords, codes): give ids and
prefixes.

    from nudge.tenancy import audit
    audit.record(engine, account_id="acct1", actor="user:ann@example.com",
                 action="campaign.send", target="campaign:42", detail={"audience": 1200})
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from nudge.clock import clock
from nudge.store.control import audit_log


@dataclass(frozen=True)
class Entry:
    id: int
    account_id: str | None
    at: float
    actor: str
    action: str
    target: str
    detail: dict[str, Any]
    source_ip: str | None
    user_agent: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def record(engine: Engine, *, account_id: str | None, actor: str, action: str,
           target: str = "", detail: dict[str, Any] | None = None,
           source_ip: str | None = None, user_agent: str | None = None) -> None:
    """Append one entry (its own transaction)."""
    with engine.begin() as conn:
        conn.execute(audit_log.insert().values(
            account_id=account_id, at=clock.now(), actor=actor[:200], action=action[:80],
            target=target[:300], detail=json.dumps(detail or {}, default=str),
            source_ip=(source_ip or None) and source_ip[:64],
            user_agent=(user_agent or None) and user_agent[:300]))


def record_request(request: Any, *, account_id: str | None, actor: str, action: str,
                   target: str = "", detail: dict[str, Any] | None = None) -> None:
    """:func:`record` with the source address and user agent of a Starlette request."""
    engine = request.app.state.nudge.accounts.engine
    client = request.client.host if request.client else None
    record(engine, account_id=account_id, actor=actor, action=action, target=target,
           detail=detail, source_ip=client, user_agent=request.headers.get("user-agent"))


def entries(engine: Engine, account_id: str, *, since: float | None = None,
            action: str | None = None, limit: int = 100, before_id: int | None = None,
            ) -> list[Entry]:
    """Newest first, for one account."""
    q = sa.select(audit_log).where(audit_log.c.account_id == account_id)
    if since is not None:
        q = q.where(audit_log.c.at >= since)
    if action:
        q = q.where(audit_log.c.action == action)
    if before_id is not None:
        q = q.where(audit_log.c.id < before_id)
    with engine.connect() as conn:
        rows = conn.execute(q.order_by(audit_log.c.id.desc()).limit(limit)).all()
    return [Entry(r.id, r.account_id, r.at, r.actor, r.action, r.target, json.loads(r.detail),
                  r.source_ip, r.user_agent) for r in rows]
