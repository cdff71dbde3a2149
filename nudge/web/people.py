"""People: search by any identifier, the 360 profile, and GDPR actions on one person."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.errors import NotFound, ValidationError
from nudge.ingest.upload import normalize_identifier
from nudge.privacy.gdpr import GdprRequests, Subject
from nudge.query.profiles import LOOKUP_KEYS, profile_view, timeline

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)


def find_people(ctx: PageContext, q: str) -> list[dict[str, Any]]:
    """Everyone whose identity, email, phone or object id is ``q`` (or whose internal id it
    is), each with the kind that matched."""
    q = q.strip()
    found: dict[int, list[str]] = {}
    for wire, kind in LOOKUP_KEYS.items():
        try:
            value = normalize_identifier(kind, q)
        except Exception:  # noqa: BLE001, S112 - not a valid value of this kind: no match
            continue
        uid = ctx.store.user_for(kind, value)
        if uid is not None:
            found.setdefault(uid, []).append(wire)
    if q.isdigit():
        try:
            profile_view(ctx.store, int(q))
            found.setdefault(int(q), []).append("user id")
        except NotFound:
            pass
    out = []
    for uid, kinds in found.items():
        p = profile_view(ctx.store, uid)
        out.append({"id": uid, "identity": p["identity"], "email": p["email"],
                    "phone": p["phone"], "last_seen": p["last_seen"], "matched": kinds})
    return out


@router.get("/ui/{account_id}/people")
@page
async def people(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    q = request.query_params.get("q", "")
    if len(q) > 1024:
        raise ValidationError("q must be at most 1024 characters", field="q")
    results = await run_in_threadpool(find_people, ctx, q) if q.strip() else None
    template = "people_results.html" if request.headers.get("hx-request") else "people.html"
    return render(request, template, ctx, q=q, results=results)


def _user_id(raw: str) -> int:
    if not raw.isdigit():
        raise NotFound("no such profile")
    return int(raw)


def _messages(ctx: PageContext, uid: int) -> list[dict[str, Any]]:
    """The messages sent to this person and their outcome (the outbox the API reads)."""
    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None:
        return []
    import sqlalchemy as sa

    from nudge.store.control import outbox as OB  # noqa: N812

    q = (sa.select(OB.c.id, OB.c.campaign_id, OB.c.channel, OB.c.status, OB.c.reason,
                   OB.c.created_at, OB.c.opened_at, OB.c.clicked_at, OB.c.converted_at)
         .where(OB.c.account_id == ctx.account_id, OB.c.user_id == uid)
         .order_by(OB.c.id.desc()).limit(50))
    with engage.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _journeys(ctx: PageContext, uid: int) -> list[dict[str, Any]]:
    """The person's journey entries, newest first, with the journey's name: where they are
    now (node and state) or why they left, and when they converted. The same rows as
    ``GET /1/journeys/{id}/users`` (``journey_entries``), for every journey of the account."""
    state = getattr(ctx.request.app.state, "journeys", None)
    if state is None or not ctx.can("journeys:read"):
        return []
    import sqlalchemy as sa

    from nudge.store.control import journey_entries as E  # noqa: N812
    from nudge.store.control import journeys as J  # noqa: N812

    q = (sa.select(E.c.journey_id, J.c.name, E.c.version, E.c.status, E.c.node, E.c.state,
                   E.c.entered_at, E.c.exited_at, E.c.exit_reason, E.c.converted_at)
         .join(J, J.c.id == E.c.journey_id)
         .where(E.c.account_id == ctx.account_id, J.c.account_id == ctx.account_id,
                E.c.user_id == uid)
         .order_by(E.c.id.desc()).limit(50))
    with state.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _profile(ctx: PageContext, uid: int) -> dict[str, Any]:
    profile = profile_view(ctx.store, uid)
    events = timeline(ctx.store, uid, since=None, until=None, limit=100, cursor=None)
    try:
        messages = _messages(ctx, uid)
    except Exception:  # noqa: BLE001 - engage tables absent: the profile still shows
        messages = []
    return {"profile": profile, "events": events, "messages": messages,
            "segments": _gdpr(ctx)._segments(uid),  # what the GDPR export lists
            "rfm": _rfm(ctx, uid), "subscriptions": _subscriptions(ctx, uid),
            "journeys": _journeys(ctx, uid)}


def _subscriptions(ctx: PageContext, uid: int) -> list[dict[str, Any]]:
    """The person's recorded subscription choices (GET /1/subscriptions) with the category's
    name; no row means subscribed."""
    from nudge.api.routes.campaigns import subscriptions_of
    from nudge.engage.categories import CategoryDirectory

    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None:
        return []
    names = {c.key: c.name for c in CategoryDirectory(engage.engine, ctx.account_id).list(
        archived=True)}
    names["*"] = "all messages"
    return [{**r, "name": names.get(r["category"], r["category"]),
             "channel": "every channel" if r["channel"] == "*" else r["channel"]}
            for r in sorted(subscriptions_of(engage, ctx.account_id, uid),
                            key=lambda r: (r["channel"], r["category"]))]


def _rfm(ctx: PageContext, uid: int) -> dict[str, Any] | None:
    """The person's RFM scores and segment (GET /1/predict/rfm/user); None without events."""
    from nudge.clock import clock
    from nudge.predict import rfm

    try:
        out: dict[str, Any] = rfm.for_user(ctx.store, rfm.load_settings(ctx.store),
                                           clock.now(), uid)
        return out
    except NotFound:
        return None


@router.get("/ui/{account_id}/people/{user_id}")
@page
async def person(request: Request, account_id: str, user_id: str) -> Response:
    ctx = context(request, account_id)
    data = await run_in_threadpool(_profile, ctx, _user_id(user_id))
    return render(request, "person.html", ctx, **data)


@router.get("/ui/{account_id}/people/{user_id}/timeline")
@page
async def person_timeline(request: Request, account_id: str, user_id: str) -> Response:
    """The next page of the timeline (htmx: appended as the user scrolls)."""
    ctx = context(request, account_id)
    events = await run_in_threadpool(
        lambda: timeline(ctx.store, _user_id(user_id), since=None, until=None, limit=100,
                         cursor=request.query_params.get("cursor")))
    return render(request, "person_timeline.html", ctx, events=events,
                  profile={"id": _user_id(user_id)})


def _gdpr(ctx: PageContext) -> GdprRequests:
    return GdprRequests(ctx.nudge.accounts.engine, ctx.nudge.keyring, ctx.store, ctx.timezone)


async def _act(request: Request, account_id: str, user_id: str, action: str,
               done: str) -> Response:
    """Run one GDPR action on one person through nudge/privacy/gdpr.py, as the API does."""
    ctx = context(request, account_id)
    subject = Subject("user_id", str(_user_id(user_id)), 0)
    receipt = await run_in_threadpool(getattr(_gdpr(ctx), action), [subject],
                                      ctx.caller.principal)
    return render(request, "gdpr_done.html", ctx, action=done, receipt=receipt)


@router.post("/ui/{account_id}/people/{user_id}/erase")
@page
async def erase(request: Request, account_id: str, user_id: str) -> Response:
    """Erase the person everywhere (nudge/privacy/gdpr.py), as POST /1/gdpr/erase does."""
    return await _act(request, account_id, user_id, "erase", "erased")


@router.post("/ui/{account_id}/people/{user_id}/suppress")
@page
async def suppress(request: Request, account_id: str, user_id: str) -> Response:
    return await _act(request, account_id, user_id, "suppress", "suppressed")


@router.get("/ui/{account_id}/people/{user_id}/export")
@page
async def export(request: Request, account_id: str, user_id: str) -> Response:
    """A download of everything held about the person (as POST /1/gdpr/access). A GET so a
    plain link downloads it; the SameSite=Lax cookie keeps other sites from reading it."""
    ctx = context(request, account_id)
    uid = _user_id(user_id)
    out = await run_in_threadpool(_gdpr(ctx).access, [Subject("user_id", str(uid), 0)],
                                  ctx.caller.principal)
    return Response(json.dumps(out, default=str, indent=2), media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="person-{uid}.json"',
                             "cache-control": "no-store"})
