"""Campaign creation wizard for every kind — one-time (now or at a time), recurring (cron),
live trigger (an event with property filters, optionally "and did not do X within T") and
API-triggered — in one form: audience segment with live reach, channels in fallback order,
Liquid content per channel, schedule or trigger, caps and quiet hours, A/B variants with
their split and a control group, conversion goal → a draft campaign → a review page (exact
reach per channel, a live preview rendered for a chosen person, the definition) → start.

Every step calls what the API calls: ``CampaignDirectory.create/send`` (``POST
/1/campaigns``, ``/send``), and the estimate and preview functions of
``nudge/engage/reach.py`` (``estimate``, ``preview``), the functions the API routes call.
The form becomes the very ``POST /1/campaigns`` body (:func:`definition_from_form`), so
``parse_campaign`` checks it and its errors name the definition's field."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.engage import reach
from nudge.engage.categories import DEFAULT, CategoryDirectory
from nudge.engage.directory import CampaignDirectory
from nudge.errors import NudgeError, ValidationError
from nudge.query.segments.saved import SegmentDirectory

from .charts import form_of
from .pages import PageContext, context, page, render
from .segments import filter_from_form

router = APIRouter(include_in_schema=False)

CHANNELS = ("email", "sms", "push", "webpush", "inapp", "whatsapp", "webhook")


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


KINDS = ("one_time", "recurring", "trigger", "api")
FILTER_ROWS = 3
UNITS = ("minutes", "hours", "days")
# Segment filter operators offered for trigger filters (relative dates are refused there).
TRIGGER_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "contains", "starts_with", "in",
               "not_in", "exists", "not_exists")


def _trigger(form: dict[str, str]) -> dict[str, Any]:
    where = [f for i in range(FILTER_ROWS) for f in filter_from_form(form, i, "tf_")]
    out: dict[str, Any] = {"event": form.get("trigger_event", "").strip()}
    if where:
        out["where"] = where
    if form.get("unless_event", "").strip():
        unit = form.get("unless_unit") if form.get("unless_unit") in UNITS else "hours"
        out["unless"] = {"event": form["unless_event"].strip(),
                         "within": {unit: _num(form, "unless_within") or 1}}
    return out


def _content(form: dict[str, str], channels: list[str], prefix: str = "") -> dict[str, Any]:
    """Content per channel from the form's fields (``b_``-prefixed for variant B, where an
    empty field means "same as A")."""
    f = {k[len(prefix):]: v for k, v in form.items() if k.startswith(prefix) and v}
    content: dict[str, Any] = {}
    if "email" in channels and ({"email_subject", "email_html", "email_text"} & set(f)
                                or not prefix):
        content["email"] = {k: f[f"email_{k}"] for k in ("subject", "html", "text")
                            if f"email_{k}" in f}  # parse_campaign names what is missing
    for ch in ("sms", "whatsapp"):
        if ch in channels and ("sms_body" in f or not prefix):
            content[ch] = ({"body": f.get("sms_body", "")} if ch == "sms"
                           else {"template": f.get("sms_body", "")})
    for ch in ("push", "webpush", "inapp"):
        if ch in channels and ({"push_title", "push_body"} & set(f) or not prefix):
            content[ch] = {k: f[f"push_{k}"] for k in ("title", "body") if f"push_{k}" in f}
            if not prefix:
                content[ch] = {"title": f.get("push_title", ""), "body": f.get("push_body", "")}
    if "webhook" in channels and ("webhook_body" in f or not prefix):
        content["webhook"] = {"body": f.get("webhook_body", "")}
    return content


def definition_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The ``POST /1/campaigns`` body of the wizard's form (checked by ``parse_campaign``)."""
    kind = form.get("kind") if form.get("kind") in KINDS else "one_time"
    channels = [c for c in (form.get(f"channel_{i}", "") for i in range(3)) if c]
    channels = list(dict.fromkeys(channels))
    content = _content(form, channels)
    body: dict[str, Any] = {"name": form.get("name", "").strip(), "kind": kind,
                            "channels": channels, "content": content}
    category = form.get("category", "").strip()
    if category and category != DEFAULT:  # the default is what a definition without one has
        body["category"] = category
    seg = form.get("segment_id", "").strip()
    if seg.isdigit():
        body["audience"] = {"segment_id": int(seg)}
    if form.get("webhook_url"):
        body["webhook_url"] = form["webhook_url"]
    hours = _num(form, "fallback_hours")
    if hours is not None and len(channels) > 1:
        body["fallback_after"] = {"hours": hours}
    if kind == "one_time" and form.get("when") == "at" and form.get("at"):
        body["schedule"] = {"at": form["at"], "user_timezone": form.get("user_timezone") == "on"}
    elif kind == "recurring":
        body["schedule"] = {"cron": form.get("cron", "").strip(),
                            "timezone": form.get("cron_timezone", "").strip() or "UTC"}
        if form.get("until"):
            body["schedule"]["until"] = form["until"]
    elif kind == "trigger":
        body["trigger"] = _trigger(form)
    cap_max, cap_days = _num(form, "cap_max"), _num(form, "cap_days")
    if cap_max is not None and cap_days is not None:
        body["caps"] = [{"max": cap_max, "per": {"days": cap_days}}]
    if form.get("quiet_start") and form.get("quiet_end"):
        body["quiet_hours"] = {"start": form["quiet_start"], "end": form["quiet_end"],
                               "action": form.get("quiet_action") or "delay"}
    control = _num(form, "control_percent") or 0
    b_percent = _num(form, "b_percent")
    if b_percent:
        variants: list[dict[str, Any]] = [{"name": "A", "percent": 100 - control - b_percent},
                                          {"name": "B", "percent": b_percent}]
        b_content = _content(form, channels, "b_")
        if b_content:  # a variant's channel content replaces A's whole: start from A's
            variants[1]["content"] = {ch: {**content.get(ch, {}), **c}
                                      for ch, c in b_content.items()}
        body["variants"] = variants
    if control:
        body["control_percent"] = control
    if form.get("conversion_event"):
        body["conversion"] = {"event": form["conversion_event"],
                              "within": {"hours": _num(form, "conversion_hours") or 24}}
    return body


def _who(body: dict[str, Any]) -> str:
    """Who a campaign without an audience segment reaches, in words."""
    if body["kind"] == "api":
        return "No audience segment: the people each POST /1/send call names."
    t = body.get("trigger") or {}
    return (f"No audience segment: everyone who does {t.get('event') or '(an event)'}"
            + (f" and not {t['unless']['event']} within the time" if t.get("unless") else "")
            + ".")


def describe(d: dict[str, Any]) -> dict[str, Any]:
    """The review page's plain-language summary of a definition: what starts it, the split,
    the policy, and the label of the button that starts it."""
    kind, sched = d.get("kind", "one_time"), d.get("schedule") or {}
    if kind == "recurring":
        starts = f"On the cron schedule {sched.get('cron')} in {sched.get('timezone', 'UTC')}"
        button = "Start the schedule"
    elif kind == "trigger":
        t = d.get("trigger") or {}
        where = " and ".join(f"{w['property']} {w['op']} {w.get('value', '')}".strip()
                             for w in t.get("where") or [])
        starts = f"When someone does {t.get('event')}" + (f" with {where}" if where else "")
        if t.get("unless"):
            (unit, n), = t["unless"]["within"].items()
            starts += f", unless they do {t['unless']['event']} within {n:g} {unit}"
        button = "Start listening"
    elif kind == "api":
        starts = "Each POST /1/send call (or a journey's send node) that names this campaign"
        button = "Activate"
    else:
        starts = (f"Once, at {sched['at']}" + (" in each person's timezone"
                                               if sched.get("user_timezone") else " UTC")
                  if sched.get("at") else "Once, when started")
        button = "Schedule" if sched.get("at") else "Send"
    control = d.get("control_percent", 0)
    variants = d.get("variants") or [{"name": "A", "percent": 100 - control}]
    split = ", ".join(f"{v['name']} {v['percent']:g}%" for v in variants)
    if control:
        split += f", control group {control:g}%"
    policy = []
    for c in d.get("caps") or []:
        (unit, n), = c["per"].items()
        policy.append(f"at most {c['max']} per {n:g} {unit}")
    if d.get("quiet_hours"):
        q = d["quiet_hours"]
        policy.append(f"quiet {q['start']}-{q['end']} ({q.get('action', 'delay')})")
    return {"starts": starts, "button": button, "split": split,
            "category": d.get("category", DEFAULT),
            "channels": " → ".join(d.get("channels", [])),
            "policy": "; ".join(policy) or "the account's defaults"}


def _segments(ctx: PageContext) -> list[Any]:
    return SegmentDirectory(ctx.nudge.accounts.engine, ctx.account_id).list()


def _categories(ctx: PageContext) -> list[dict[str, Any]]:
    """The account's active subscription categories (the default first)."""
    return [c.to_dict() for c in CategoryDirectory(ctx.nudge.accounts.engine,
                                                   ctx.account_id).list()]


@router.get("/ui/{account_id}/campaigns/new")
@page
async def wizard(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    segments = await run_in_threadpool(_segments, ctx)
    categories = await run_in_threadpool(_categories, ctx)
    kind = request.query_params.get("kind")
    return render(request, "campaign_wizard.html", ctx, segments=segments, channels=CHANNELS,
                  kind=kind if kind in KINDS else "one_time", ops=TRIGGER_OPS, units=UNITS,
                  filter_rows=FILTER_ROWS, categories=categories)


@router.post("/ui/{account_id}/campaigns/estimate")
@page
async def wizard_reach(request: Request, account_id: str) -> Response:
    """Exact reach of the form's audience and channels (htmx, debounced)."""
    ctx = context(request, account_id)
    form = await form_of(request)
    try:
        body = definition_from_form(form)
        if "audience" not in body and body["kind"] in ("trigger", "api"):
            return render(request, "campaign_reach.html", ctx, error=None, est=None,
                          note=_who(body))
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
    est: dict[str, Any]
    if "audience" not in c.definition and c.kind in ("trigger", "api"):
        est = {"note": _who(c.definition)}
    else:
        try:
            est = await run_in_threadpool(reach.estimate, actx.engage, ctx.account_id, None,
                                          campaign_id)
        except NudgeError as exc:
            if exc.status >= 500:
                raise
            est = {"error": str(exc)}
    return render(request, "campaign_review.html", ctx, campaign=c.to_dict(), est=est,
                  summary=describe(c.definition),
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


async def _transition(request: Request, account_id: str, campaign_id: int,
                      name: str) -> Response:
    """``CampaignDirectory.send|pause|stop`` as ``POST /1/campaigns/{id}/<name>`` does (the
    live bus and the scheduler are told), then back to the campaign's results."""
    ctx = context(request, account_id)
    actx = _api_ctx(ctx)
    await run_in_threadpool(getattr(actx.campaigns, name), campaign_id)
    engage = actx.engage
    if getattr(engage, "bus", None) is not None:
        engage.bus.invalidate(ctx.account_id)
    if getattr(engage, "scheduler", None) is not None:
        engage.scheduler.kick.set()
    return Response(status_code=204,
                    headers={"HX-Redirect": f"{ctx.base}/campaigns/{campaign_id}"})


@router.post("/ui/{account_id}/campaigns/{campaign_id}/send")
@page
async def send(request: Request, account_id: str, campaign_id: int) -> Response:
    """Start a draft, or resume a paused campaign."""
    return await _transition(request, account_id, campaign_id, "send")


@router.post("/ui/{account_id}/campaigns/{campaign_id}/pause")
@page
async def pause(request: Request, account_id: str, campaign_id: int) -> Response:
    return await _transition(request, account_id, campaign_id, "pause")


@router.post("/ui/{account_id}/campaigns/{campaign_id}/stop")
@page
async def stop(request: Request, account_id: str, campaign_id: int) -> Response:
    return await _transition(request, account_id, campaign_id, "stop")
