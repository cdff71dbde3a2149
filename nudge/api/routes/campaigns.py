"""Campaigns and the delivery service: ``/1/campaigns``, ``/1/send``, ``/1/outbox``,
``/1/engage/policy``, ``/1/subscriptions``, ``/1/webhooks``. Shapes: docs/engagement.md."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.clock import clock
from nudge.engage import outbox, reach
from nudge.engage.bus import parse_webhook
from nudge.engage.campaigns import CHANNELS
from nudge.engage.categories import CategoryDirectory
from nudge.engage.directory import CampaignDirectory, spec_of
from nudge.engage.expand import build_rows
from nudge.engage.report import by_occurrence, campaign_report
from nudge.engage.service import Engage
from nudge.errors import Conflict, NotFound, ValidationError
from nudge.query.profiles import find_user
from nudge.store import control

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(tags=["campaigns"])


class _Ctx:
    def __init__(self, request: Request) -> None:
        self.nudge, self.account_id, self.store = passcode_account(request)
        self.engage: Engage = request.app.state.engage
        self.campaigns = CampaignDirectory(self.engage.engine, self.account_id)

    def changed(self) -> None:
        bus = getattr(self.engage, "bus", None)
        if bus is not None:
            bus.invalidate(self.account_id)
        sched = getattr(self.engage, "scheduler", None)
        if sched is not None:
            sched.kick.set()


async def _body(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    return body


def _user(ctx: _Ctx, who: Any, field: str) -> int:
    return reach.find_recipient(ctx.engage, ctx.account_id, who, field)


# -- CRUD ---------------------------------------------------------------------------------
@router.post("/1/campaigns", status_code=201)
async def create(request: Request) -> Response:
    ctx = _Ctx(request)
    c = await run_in_threadpool(ctx.campaigns.create, await _body(request))
    return JSONResponse(c.to_dict(), status_code=201)


@router.get("/1/campaigns")
async def list_campaigns(request: Request) -> Response:
    ctx = _Ctx(request)
    status = request.query_params.get("status")
    cs = await run_in_threadpool(ctx.campaigns.list, status)
    return JSONResponse({"campaigns": [c.to_dict() for c in cs]})


@router.get("/1/campaigns/{campaign_id}")
async def get(campaign_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse((await run_in_threadpool(ctx.campaigns.get, campaign_id)).to_dict())


@router.put("/1/campaigns/{campaign_id}")
async def update(campaign_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    body = await _body(request)
    c = await run_in_threadpool(ctx.campaigns.update, campaign_id, body)
    ctx.changed()
    return JSONResponse(c.to_dict())


@router.delete("/1/campaigns/{campaign_id}")
async def delete(campaign_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.campaigns.delete, campaign_id)
    ctx.changed()
    return JSONResponse({"deleted": campaign_id})


# -- lifecycle ------------------------------------------------------------------------------
async def _transition(request: Request, campaign_id: int, name: str) -> Response:
    ctx = _Ctx(request)
    c = await run_in_threadpool(getattr(ctx.campaigns, name), campaign_id)
    ctx.changed()
    return JSONResponse(c.to_dict())


@router.post("/1/campaigns/{campaign_id}/send")
async def send(campaign_id: int, request: Request) -> Response:
    """Start a draft (now, at its schedule, or live for triggers) or resume a paused one."""
    return await _transition(request, campaign_id, "send")


@router.post("/1/campaigns/{campaign_id}/pause")
async def pause(campaign_id: int, request: Request) -> Response:
    return await _transition(request, campaign_id, "pause")


@router.post("/1/campaigns/{campaign_id}/stop")
async def stop(campaign_id: int, request: Request) -> Response:
    return await _transition(request, campaign_id, "stop")


# -- reach, preview, report --------------------------------------------------------------------
@router.post("/1/campaigns/estimate")
async def estimate_inline(request: Request) -> Response:
    """Exact reach of an unsaved campaign definition (its audience and channels)."""
    ctx = _Ctx(request)
    body = await _body(request)
    return JSONResponse(await run_in_threadpool(reach.estimate, ctx.engage, ctx.account_id, body))


@router.get("/1/campaigns/{campaign_id}/estimate")
async def estimate(campaign_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse(await run_in_threadpool(reach.estimate, ctx.engage, ctx.account_id,
                                                None, campaign_id))


@router.post("/1/campaigns/{campaign_id}/preview")
async def preview(campaign_id: int, request: Request) -> Response:
    """Render every variant and channel for one user: ``{"user": {"identity": ...},
    "event"?: {...}, "data"?: {...}}``."""
    ctx = _Ctx(request)
    body = await _body(request)
    return JSONResponse(await run_in_threadpool(reach.preview, ctx.engage, ctx.account_id,
                                                campaign_id, body))


@router.get("/1/campaigns/{campaign_id}/report")
async def report(campaign_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    c = await run_in_threadpool(ctx.campaigns.get, campaign_id)
    out = await run_in_threadpool(campaign_report, ctx.engage.engine, ctx.account_id, c.id)
    out["status"] = c.status
    if c.kind == "recurring":
        out["by_occurrence"] = await run_in_threadpool(by_occurrence, ctx.engage.engine,
                                                       ctx.account_id, c.id)
    return JSONResponse(out)


# -- API-triggered sends ------------------------------------------------------------------------
def _api_send(ctx: _Ctx, body: dict[str, Any]) -> dict[str, Any]:
    cid = body.get("campaign_id")
    if not isinstance(cid, int) or isinstance(cid, bool):
        raise ValidationError("campaign_id must be an integer", field="campaign_id")
    c = ctx.campaigns.get(cid)
    if c.kind != "api":
        raise Conflict("only api campaigns are sent with POST /1/send")
    if c.status != "running":
        raise Conflict(f"the campaign is {c.status}; send it (POST /1/campaigns/{cid}/send) "
                       "to accept API sends")
    to = body.get("to")
    if not isinstance(to, list) or not 1 <= len(to) <= 1000:
        raise ValidationError("to must be a list of 1-1000 identities", field="to")
    data = body.get("data", {})
    if not isinstance(data, dict):
        raise ValidationError("data must be an object", field="data")
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id
                                   or len(request_id) > 64):
        raise ValidationError("request_id must be a string of 1-64 characters",
                              field="request_id")
    uids = [_user(ctx, who, f"to[{i}]") for i, who in enumerate(to)]
    occurrence = f"api:{request_id}" if request_id else f"api:{clock.now():.6f}"
    spec = spec_of(c)
    rows = build_rows(ctx.engage, c, spec, occurrence, uids, data=data)
    with ctx.engage.engine.begin() as conn:
        outbox.insert(conn, rows)
        keys = [r["idem_key"] for r in rows]
        o = control.outbox
        got = {r.idem_key: r for r in conn.execute(sa.select(o.c.id, o.c.idem_key, o.c.status,
                                                             o.c.reason, o.c.channel)
                                                   .where(o.c.idem_key.in_(keys)))}
    ctx.engage.notify()
    return {"messages": [{"user_id": r["user_id"], "id": got[r["idem_key"]].id,
                          "status": got[r["idem_key"]].status,
                          "channel": got[r["idem_key"]].channel,
                          "reason": got[r["idem_key"]].reason} for r in rows]}


@router.post("/1/send")
async def api_send(request: Request) -> Response:
    """Transactional send: ``{"campaign_id", "to": [{"identity": ...}], "data"?: {...},
    "request_id"?: "..."}``. The same request_id never sends twice."""
    ctx = _Ctx(request)
    body = await _body(request)
    return JSONResponse(await run_in_threadpool(_api_send, ctx, body), status_code=202)


# -- outbox (dead letters) --------------------------------------------------------------------
@router.get("/1/outbox")
async def list_outbox(request: Request) -> Response:
    """Messages by ``status`` (e.g. ``dead``), ``campaign_id``, ``cursor`` (last id), ``limit``."""
    ctx = _Ctx(request)
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
        after = int(q.get("cursor", "0"))
        cid = int(q["campaign_id"]) if "campaign_id" in q else None
    except ValueError:
        raise ValidationError("limit, cursor and campaign_id must be integers",
                              field="limit") from None
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1-1000", field="limit")
    o = control.outbox
    stmt = sa.select(o).where(o.c.account_id == ctx.account_id, o.c.id > after)
    if q.get("status"):
        stmt = stmt.where(o.c.status == q["status"])
    if cid is not None:
        stmt = stmt.where(o.c.campaign_id == cid)

    def run() -> list[dict[str, Any]]:
        with ctx.engage.engine.connect() as conn:
            return [outbox.to_dict(r) for r in conn.execute(stmt.order_by(o.c.id).limit(limit))]

    rows = await run_in_threadpool(run)
    return JSONResponse({"messages": rows,
                         "next_cursor": str(rows[-1]["id"]) if len(rows) == limit else None})


@router.post("/1/outbox/{message_id}/retry")
async def retry(message_id: int, request: Request) -> Response:
    """Send a dead-lettered message again (same idempotency key)."""
    ctx = _Ctx(request)
    o = control.outbox

    def run() -> dict[str, Any]:
        with ctx.engage.engine.begin() as conn:
            r = outbox.get(conn, ctx.account_id, message_id)
            if r is None:
                raise NotFound(f"no message {message_id}")
            if r.status != "dead":
                raise Conflict(f"only dead messages are retried (this one is {r.status})")
            conn.execute(o.update().where(o.c.id == message_id).values(
                status="pending", attempts=0, next_attempt_at=clock.now()))
            return outbox.to_dict(outbox.get(conn, ctx.account_id, message_id))  # type: ignore[arg-type]

    out = await run_in_threadpool(run)
    ctx.engage.notify()
    return JSONResponse(out)


# -- account policy, subscriptions, event webhooks ----------------------------------------------
@router.get("/1/engage/policy")
async def get_policy(request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse(await run_in_threadpool(ctx.engage.policies.raw, ctx.account_id))


@router.put("/1/engage/policy")
async def put_policy(request: Request) -> Response:
    """Global frequency caps and default quiet hours: ``{"caps": [{"max", "per",
    "channel"?}], "quiet_hours"?: {"start", "end", "action"}}``."""
    ctx = _Ctx(request)
    body = await _body(request)
    await run_in_threadpool(ctx.engage.policies.put, ctx.account_id, body, clock.now())
    return JSONResponse(body)


def set_subscription(engage: Engage, account_id: str, uid: int, channel: str, category: str,
                     subscribed: bool) -> None:
    s = control.subscriptions
    key = {"account_id": account_id, "user_id": uid, "channel": channel, "category": category}
    with engage.engine.begin() as conn:
        conn.execute(s.delete().where(*(s.c[k] == v for k, v in key.items())))
        conn.execute(s.insert().values(**key, subscribed=subscribed, updated_at=clock.now()))


def subscriptions_of(engage: Engage, account_id: str, uid: int) -> list[dict[str, Any]]:
    s = control.subscriptions
    with engage.engine.connect() as conn:
        return [{"channel": r.channel, "category": r.category, "subscribed": r.subscribed}
                for r in conn.execute(sa.select(s).where(s.c.account_id == account_id,
                                                         s.c.user_id == uid))]


@router.get("/1/subscriptions")
async def get_subscriptions(request: Request) -> Response:
    """A user's explicit subscription states (no row: subscribed)."""
    ctx = _Ctx(request)
    uid = await run_in_threadpool(find_user, ctx.store, dict(request.query_params))
    return JSONResponse({"user_id": uid, "subscriptions": await run_in_threadpool(
        subscriptions_of, ctx.engage, ctx.account_id, uid)})


@router.put("/1/subscriptions")
async def put_subscription(request: Request) -> Response:
    """``{"user": {...}, "channel": "email"|"*", "category": "promotions"|"*",
    "subscribed": bool}``."""
    ctx = _Ctx(request)
    body = await _body(request)
    ch, cat, sub = body.get("channel"), body.get("category", "*"), body.get("subscribed")
    if ch != "*" and ch not in CHANNELS:
        raise ValidationError(f"channel must be \"*\" or one of {', '.join(CHANNELS)}",
                              field="channel")
    if not isinstance(cat, str) or not cat or len(cat) > 64:
        raise ValidationError("category must be a name of 1-64 characters", field="category")
    if cat != "*":
        await run_in_threadpool(CategoryDirectory(ctx.engage.engine, ctx.account_id).require,
                                cat, "category", None, True)
    if not isinstance(sub, bool):
        raise ValidationError("subscribed must be true or false", field="subscribed")
    uid = await run_in_threadpool(_user, ctx, body.get("user"), "user")
    await run_in_threadpool(set_subscription, ctx.engage, ctx.account_id, uid, ch, cat, sub)
    return JSONResponse({"user_id": uid, "channel": ch, "category": cat, "subscribed": sub})


@router.post("/1/webhooks", status_code=201)
async def create_webhook(request: Request) -> Response:
    """Outbound event webhook: ``{"url", "event", "where"?: [filters]}``."""
    ctx = _Ctx(request)
    d = parse_webhook(await _body(request))
    w = control.event_webhooks

    def run() -> int:
        with ctx.engage.engine.begin() as conn:
            return int(conn.execute(w.insert().values(
                account_id=ctx.account_id, definition=json.dumps(d),
                created_at=clock.now())).inserted_primary_key[0])

    wid = await run_in_threadpool(run)
    ctx.changed()
    return JSONResponse({"id": wid, **d}, status_code=201)


@router.get("/1/webhooks")
async def list_webhooks(request: Request) -> Response:
    ctx = _Ctx(request)
    w = control.event_webhooks

    def run() -> list[dict[str, Any]]:
        with ctx.engage.engine.connect() as conn:
            return [{"id": r.id, **json.loads(r.definition)} for r in conn.execute(
                sa.select(w).where(w.c.account_id == ctx.account_id,
                                   w.c.deleted_at.is_(None)).order_by(w.c.id))]

    return JSONResponse({"webhooks": await run_in_threadpool(run)})


@router.delete("/1/webhooks/{webhook_id}")
async def delete_webhook(webhook_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    w = control.event_webhooks

    def run() -> None:
        with ctx.engage.engine.begin() as conn:
            n = conn.execute(w.update().where(w.c.id == webhook_id,
                                              w.c.account_id == ctx.account_id,
                                              w.c.deleted_at.is_(None))
                             .values(deleted_at=clock.now())).rowcount
        if not n:
            raise NotFound(f"no webhook {webhook_id}")

    await run_in_threadpool(run)
    ctx.changed()
    return JSONResponse({"deleted": webhook_id})


@router.get("/1/engage/callbacks")
async def callbacks(request: Request) -> Response:
    """The delivery-receipt URLs to configure at each provider (signed per account)."""
    ctx = _Ctx(request)
    s = ctx.engage.signer
    return JSONResponse({p: s.callback_url(ctx.account_id, p)
                         for p in ("twilio", "whatsapp", "generic")})
