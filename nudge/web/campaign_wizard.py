"""Campaign creation wizard: one form (audience segment with live reach, channels in fallback
order, Liquid content per channel, schedule, caps and quiet hours, an A/B variant and a
control group) → a draft campaign → a review page (exact reach per channel, a live preview
rendered for a chosen person, the definition) → send.

Every step calls what the API calls: ``CampaignDirectory.create/send`` (``POST
/1/campaigns``, ``/send``), and the estimate and preview functions of
``nudge/engage/reach.py`` (``estimate``, ``preview``), the functions the API routes call."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.engage import reach
from nudge.engage.directory import CampaignDirectory
from nudge.errors import NudgeError, ValidationError
from nudge.query.segments.saved import SegmentDirectory

from .charts import form_of
from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)

CHANNELS = ("email", "sms", "push", "webpush", "whatsapp", "webhook")


def _engage(ctx: PageContext) -> Any:
    return ctx.request.app.state.engage


def _api_ctx(ctx: PageContext) -> Any:
    """The context object the API's campaign functions take (``_Ctx``'s attributes)."""
    engage = ctx.request.app.state.engage
    return SimpleNamespace(nudge=ctx.nudge, account_id=ctx.account_id, store=ctx.store,
                           engage=engage, campaigns=CampaignDirectory(engage.engine,
                                                                      ctx.account_id))


def _num(form: dict[str, str], name: str) -> float | None:
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        n = float(raw)
    except ValueError:
        raise ValidationError(f"{name}: must be a number, got {raw!r}", field=name) from None
    return int(n) if n.is_integer() else n


def definition_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The ``POST /1/campaigns`` body of the wizard's form (checked by ``parse_campaign``)."""
    channels = [c for c in (form.get(f"channel_{i}", "") for i in range(3)) if c]
    channels = list(dict.fromkeys(channels))
    content: dict[str, Any] = {}
    if "email" in channels:
        content["email"] = {"subject": form.get("email_subject", ""),
                            "html": form.get("email_html", "")}
        if form.get("email_text"):
            content["email"]["text"] = form["email_text"]
    if "sms" in channels or "whatsapp" in channels:
        for ch in ("sms", "whatsapp"):
            if ch in channels:
                content[ch] = {"body": form.get("sms_body", "")}
    for ch in ("push", "webpush"):
        if ch in channels:
            content[ch] = {"title": form.get("push_title", ""), "body": form.get("push_body", "")}
    if "webhook" in channels:
        content["webhook"] = {"body": form.get("webhook_body", "")}
    body: dict[str, Any] = {"name": form.get("name", "").strip(), "kind": "one_time",
                            "channels": channels, "content": content}
    seg = form.get("segment_id", "").strip()
    body["audience"] = {"segment_id": int(seg)} if seg.isdigit() else None
    if body["audience"] is None:
        del body["audience"]
    if form.get("webhook_url"):
        body["webhook_url"] = form["webhook_url"]
    hours = _num(form, "fallback_hours")
    if hours is not None and len(channels) > 1:
        body["fallback_after"] = {"hours": hours}
    if form.get("when") == "at" and form.get("at"):
        body["schedule"] = {"at": form["at"], "user_timezone": form.get("user_timezone") == "on"}
    cap_max, cap_days = _num(form, "cap_max"), _num(form, "cap_days")
    if cap_max is not None and cap_days is not None:
        body["caps"] = [{"max": cap_max, "per": {"days": cap_days}}]
    if form.get("quiet_start") and form.get("quiet_end"):
        body["quiet_hours"] = {"start": form["quiet_start"], "end": form["quiet_end"],
                               "action": form.get("quiet_action") or "delay"}
    control = _num(form, "control_percent") or 0
    b_percent = _num(form, "b_percent")
    if b_percent:
        a_percent = 100 - control - b_percent
        variants: list[dict[str, Any]] = [{"name": "A", "percent": a_percent},
                                          {"name": "B", "percent": b_percent}]
        if form.get("b_subject") and "email" in channels:
            variants[1]["content"] = {"email": {**content["email"],
                                                "subject": form["b_subject"]}}
        body["variants"] = variants
    if control:
        body["control_percent"] = control
    if form.get("conversion_event"):
        body["conversion"] = {"event": form["conversion_event"],
                              "within": {"hours": _num(form, "conversion_hours") or 24}}
    return body


def _segments(ctx: PageContext) -> list[Any]:
    return SegmentDirectory(ctx.nudge.accounts.engine, ctx.account_id).list()


@router.get("/ui/{account_id}/campaigns/new")
@page
async def wizard(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    segments = await run_in_threadpool(_segments, ctx)
    return render(request, "campaign_wizard.html", ctx, segments=segments, channels=CHANNELS)


@router.post("/ui/{account_id}/campaigns/estimate")
@page
async def wizard_reach(request: Request, account_id: str) -> Response:
    """Exact reach of the form's audience and channels (htmx, debounced)."""
    ctx = context(request, account_id)
    form = await form_of(request)
    try:
        body = definition_from_form(form)
        est = await run_in_threadpool(reach.estimate, _engage(ctx), ctx.account_id, body)
    except NudgeError as exc:
        if exc.status >= 500:
            raise
        return render(request, "campaign_reach.html", ctx, error=str(exc), est=None)
    return render(request, "campaign_reach.html", ctx, error=None, est=est)


@router.post("/ui/{account_id}/campaigns")
@page
async def wizard_create(request: Request, account_id: str) -> Response:
    """Create the draft (``POST /1/campaigns``) and go to its review page."""
    ctx = context(request, account_id)
    body = definition_from_form(await form_of(request))
    c = await run_in_threadpool(_api_ctx(ctx).campaigns.create, body)
    return Response(status_code=204,
                    headers={"HX-Redirect": f"{ctx.base}/campaigns/{c.id}/review"})


@router.get("/ui/{account_id}/campaigns/{campaign_id}/review")
@page
async def review(request: Request, account_id: str, campaign_id: int) -> Response:
    ctx = context(request, account_id)
    actx = _api_ctx(ctx)
    c = await run_in_threadpool(actx.campaigns.get, campaign_id)
    try:
        est = await run_in_threadpool(reach.estimate, actx.engage, ctx.account_id, None,
                                      campaign_id)
    except NudgeError as exc:  # e.g. an api campaign: no audience
        est = {"error": str(exc)}
    return render(request, "campaign_review.html", ctx, campaign=c.to_dict(), est=est,
                  definition=json.dumps(c.definition, indent=2, default=str))


@router.post("/ui/{account_id}/campaigns/{campaign_id}/preview")
@page
async def preview(request: Request, account_id: str, campaign_id: int) -> Response:
    """The campaign's messages rendered for one person (``POST /1/campaigns/{id}/preview``)."""
    ctx = context(request, account_id)
    form = await form_of(request)
    who = {form.get("lookup") or "identity": form.get("who", "").strip()}
    out = await run_in_threadpool(reach.preview, _engage(ctx), ctx.account_id, campaign_id,
                                  {"user": who})
    return render(request, "campaign_preview.html", ctx, out=out)


@router.post("/ui/{account_id}/campaigns/{campaign_id}/send")
@page
async def send(request: Request, account_id: str, campaign_id: int) -> Response:
    """Start the draft (``POST /1/campaigns/{id}/send``) and go to its results."""
    ctx = context(request, account_id)
    actx = _api_ctx(ctx)
    await run_in_threadpool(actx.campaigns.send, campaign_id)
    engage = actx.engage
    if getattr(engage, "bus", None) is not None:
        engage.bus.invalidate(ctx.account_id)
    if getattr(engage, "scheduler", None) is not None:
        engage.scheduler.kick.set()
    return Response(status_code=204,
                    headers={"HX-Redirect": f"{ctx.base}/campaigns/{campaign_id}"})
