"""Public tracking endpoints (no API key; every link carries an HMAC): clicks, opens,
unsubscribe and preference page, provider delivery callbacks. See nudge/engage/tracking.py."""

from __future__ import annotations

import base64
import html
from typing import Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from nudge.clock import clock
from nudge.engage import tracking
from nudge.engage.categories import CategoryDirectory
from nudge.engage.policy import unsubscribed_from
from nudge.engage.service import Engage
from nudge.errors import AuthError, NotFound, ValidationError
from nudge.store import control

from .campaigns import set_subscription, subscriptions_of

router = APIRouter(prefix="/1/t", tags=["tracking"])
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
O = control.outbox  # noqa: E741


def _engage(request: Request) -> Engage:
    return request.app.state.engage  # type: ignore[no-any-return]


def _account(engage: Engage, account_id: str) -> None:
    try:
        engage.accounts.get(account_id)
    except Exception:  # noqa: BLE001 - do not tell which accounts exist
        raise NotFound("no such link") from None


def _mark(engage: Engage, account_id: str, message_id: int, column: str,
          stage: str, extra: dict[str, Any] | None = None) -> bool:
    """Set ``column`` once and write the stage event; False if no such message."""
    now = clock.now()
    with engage.engine.begin() as conn:
        r = conn.execute(sa.select(O).where(O.c.id == message_id,
                                            O.c.account_id == account_id)).first()
        if r is None:
            return False
        values: dict[str, Any] = {}
        if getattr(r, column) is None:
            values[column] = now
        if column == "clicked_at" and r.opened_at is None:
            values["opened_at"] = now  # a click proves the open
        if values:
            conn.execute(O.update().where(O.c.id == message_id).values(**values))
    tracking.write_events(engage.stores.get(account_id), [(r.user_id, stage, r.id, {
        "campaign_id": r.campaign_id, "variant": r.variant, "channel": r.channel,
        "message_id": r.id, **(extra or {})})])
    return True


@router.get("/c/{account_id}/{message_id}")
async def click(account_id: str, message_id: int, request: Request) -> Response:
    """Record the click and redirect — only to the exact URL the signature covers."""
    e = _engage(request)
    url, sig = request.query_params.get("u", ""), request.query_params.get("s", "")
    _account(e, account_id)
    if not e.signer.check(account_id, sig, "c", message_id, url):
        raise ValidationError("the link is not valid", field="s")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValidationError("the link is not valid", field="u")
    await run_in_threadpool(_mark, e, account_id, message_id, "clicked_at", "clicked",
                            {"url": url})
    return RedirectResponse(url, status_code=302)


@router.get("/o/{account_id}/{message_id}.gif")
async def opened(account_id: str, message_id: int, request: Request) -> Response:
    e = _engage(request)
    _account(e, account_id)
    if not e.signer.check(account_id, request.query_params.get("s", ""), "o", message_id):
        raise ValidationError("the link is not valid", field="s")
    await run_in_threadpool(_mark, e, account_id, message_id, "opened_at", "opened")
    return Response(PIXEL, media_type="image/gif",
                    headers={"Cache-Control": "no-store, max-age=0"})


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}"
                        f"</title><meta name='viewport' content='width=device-width'></head>"
                        f"<body style='font-family:sans-serif;max-width:32em;margin:3em auto'>"
                        f"<h1>{title}</h1>{body}</body></html>")


# The channels a person can set preferences for (the webhook channel reaches systems).
PREFERENCE_CHANNELS = ("email", "sms", "push", "webpush", "whatsapp", "inapp")
# The identifier kinds that give a person an address on a channel (as compose.address reads
# them); the in-app inbox reaches every profile.
ADDRESS_KINDS = {"email": {"email"}, "sms": {"phone"}, "whatsapp": {"phone"},
                 "push": {"fcm", "apns"}, "webpush": {"webpush"}}


def _reachable(engage: Engage, account_id: str, uid: int) -> set[str]:
    kinds = {k for k, _ in engage.stores.get(account_id).identifiers_of(uid)}
    return {c for c in PREFERENCE_CHANNELS if c not in ADDRESS_KINDS or kinds & ADDRESS_KINDS[c]}


def _preferences(engage: Engage, account_id: str, uid: int, channel: str, category: str,
                 ) -> tuple[list[str], list[tuple[str, str]], set[tuple[str, str]]]:
    """(channels, [(category key, name)], the person's (channel, category) rows that are
    off): the link's channel first, "*" (all messages) then the account's active categories,
    plus the link's own category if it is archived or not listed. Channels: the link's,
    then those where the person has an address or a recorded choice (a person without a
    phone number is not asked about SMS)."""
    cats = CategoryDirectory(engage.engine, account_id).list(archived=True)
    shown = [("*", "All messages")] + [(c.key, c.name) for c in cats
                                       if not c.archived or c.key == category]
    if category not in {k for k, _ in shown}:
        shown.append((category, category))
    rows = subscriptions_of(engage, account_id, uid)
    wanted = _reachable(engage, account_id, uid) | {r["channel"] for r in rows}
    channels = [channel] + [c for c in PREFERENCE_CHANNELS if c != channel and c in wanted]
    off = {(r["channel"], r["category"]) for r in rows if not r["subscribed"]}
    return channels, shown, off


def _field(channel: str, key: str) -> str:
    return f"s.{channel}.{key}"


@router.get("/u/{account_id}/{token}")
async def preferences(account_id: str, token: str, request: Request) -> Response:
    """The preference page: every category of the account per channel with its current
    state (a form of checkboxes), and buttons to unsubscribe from this message's category or
    the whole channel, or to subscribe again. (Mail clients use POST for one click; GET
    never changes anything.)"""
    e = _engage(request)
    _account(e, account_id)
    uid, channel, category, _ = e.signer.read_unsubscribe(account_id, token)
    channels, shown, off = await run_in_threadpool(_preferences, e, account_id, uid, channel,
                                                   category)
    names = dict(shown)
    state = "unsubscribed" if unsubscribed_from(off, channel, category) else "subscribed"
    ch, cat = html.escape(channel), html.escape(names.get(category, category))
    head = "".join(f"<th scope='col'>{html.escape(c)}</th>" for c in channels)
    rows = []
    for key, name in shown:
        cells = []
        for c in channels:
            on = (c, key) not in off
            blocked = on and unsubscribed_from(off, c, key)
            label = html.escape(f"{name} by {c}")
            cells.append(f"<td><input type='checkbox' name='{html.escape(_field(c, key))}' "
                         f"aria-label='{label}'{' checked' if on else ''}>"
                         + (" <small>(off by a wider choice)</small>" if blocked else "")
                         + "</td>")
        rows.append(f"<tr data-category='{html.escape(key)}'><th scope='row'>"
                    f"{html.escape(name)}</th>{''.join(cells)}</tr>")
    form = (f"<p>You are <b>{state}</b> to {cat} messages by {ch}.</p>"
            "<form method='post'><button name='scope' value='category'>Unsubscribe from "
            f"{cat} {ch} messages</button></form>"
            "<form method='post'><button name='scope' value='channel'>Unsubscribe from all "
            f"{ch} messages</button></form>"
            "<form method='post'><button name='scope' value='resubscribe'>Subscribe again"
            "</button></form>"
            "<h2>All your preferences</h2><form method='post'>"
            "<input type='hidden' name='scope' value='preferences'>"
            "<table><caption>Checked: you receive these messages</caption>"
            f"<thead><tr><th scope='col'>Messages</th>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            "<p><button type='submit'>Save preferences</button></p></form>")
    return _page("Your message preferences", form)


def _save_preferences(engage: Engage, account_id: str, uid: int, channel: str, category: str,
                      form: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Write the rows whose checkbox differs from the stored state; returns the pairs the
    person turned off. Only the page's own (channel, category) pairs are read."""
    channels, shown, off = _preferences(engage, account_id, uid, channel, category)
    turned_off = []
    for c in channels:
        for key, _ in shown:
            want = _field(c, key) in form
            if want == ((c, key) not in off):
                continue
            set_subscription(engage, account_id, uid, c, key, want)
            if not want:
                turned_off.append((c, key))
    return turned_off


@router.post("/u/{account_id}/{token}")
async def unsubscribe(account_id: str, token: str, request: Request) -> Response:
    """One-click unsubscribe (RFC 8058: body ``List-Unsubscribe=One-Click``) or a
    preference-page form (``scope=category|channel|resubscribe|preferences``)."""
    e = _engage(request)
    _account(e, account_id)
    uid, channel, category, mid = e.signer.read_unsubscribe(account_id, token)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    scope = (form.get("scope") or ["category"])[0]
    if scope not in ("category", "channel", "resubscribe", "preferences"):
        raise ValidationError("scope must be category, channel, resubscribe or preferences",
                              field="scope")
    if scope == "preferences":
        off = await run_in_threadpool(_save_preferences, e, account_id, uid, channel,
                                      category, form)
        if mid:
            for c, key in off:
                await run_in_threadpool(_mark, e, account_id, int(mid), "opened_at",
                                        "unsubscribed", {"category": key, "from_channel": c})
        return _page("Preferences saved", "<p>Your message preferences are saved.</p>")
    if scope == "resubscribe":
        await run_in_threadpool(set_subscription, e, account_id, uid, channel, "*", True)
        await run_in_threadpool(set_subscription, e, account_id, uid, channel, category, True)
        return _page("Subscribed", "<p>You will receive these messages again.</p>")
    cat = category if scope == "category" else "*"
    await run_in_threadpool(set_subscription, e, account_id, uid, channel, cat, False)
    if mid:
        await run_in_threadpool(_mark, e, account_id, int(mid), "opened_at", "unsubscribed",
                                {"category": cat})
    return _page("Unsubscribed", f"<p>You will not receive {html.escape(cat)} messages by "
                                 f"{html.escape(channel)} any more.</p>")


def _statuses(provider: str, body: bytes, content_type: str) -> list[tuple[str, str]]:
    """(provider message id, our stage) pairs from a provider's callback."""
    import json

    out: list[tuple[str, str]] = []
    if provider == "twilio":  # form: MessageSid, MessageStatus
        f = parse_qs(body.decode("utf-8", "replace"))
        sid, st = (f.get("MessageSid") or [""])[0], (f.get("MessageStatus") or [""])[0]
        stage = {"delivered": "delivered", "undelivered": "failed", "failed": "failed",
                 "read": "opened"}.get(st)
        if sid and stage:
            out.append((sid, stage))
        return out
    try:
        d = json.loads(body or b"{}")
    except ValueError:
        raise ValidationError("body must be JSON", field="body") from None
    if provider == "whatsapp":  # Cloud API: entry[].changes[].value.statuses[]
        for entry in d.get("entry", []) if isinstance(d, dict) else []:
            for change in entry.get("changes", []):
                for s in change.get("value", {}).get("statuses", []):
                    stage = {"delivered": "delivered", "read": "opened",
                             "failed": "failed"}.get(s.get("status"))
                    if s.get("id") and stage:
                        out.append((str(s["id"]), stage))
        return out
    items = d if isinstance(d, list) else [d]  # generic: {"provider_id", "status"}
    for it in items:
        if not isinstance(it, dict):
            raise ValidationError("each status must be an object", field="body")
        stage = {"delivered": "delivered", "failed": "failed", "bounced": "failed",
                 "opened": "opened", "clicked": "clicked"}.get(it.get("status"))
        if stage is None or not it.get("provider_id"):
            raise ValidationError("status must be delivered, failed, bounced, opened or "
                                  "clicked, with provider_id", field="status")
        out.append((str(it["provider_id"]), stage))
    return out


def _apply_callbacks(e: Engage, account_id: str, items: list[tuple[str, str]]) -> int:
    now = clock.now()
    events: list[tuple[int, str, int, dict[str, Any]]] = []
    with e.engine.begin() as conn:
        for pid, stage in items:
            r = conn.execute(sa.select(O).where(O.c.provider_id == pid,
                                                O.c.account_id == account_id)).first()
            if r is None:
                continue
            if stage == "delivered":
                values: dict[str, Any] = {"delivered_at": r.delivered_at or now}
                if r.status == "sent":
                    values["status"] = "delivered"
            elif stage == "failed":
                values = {"status": "failed", "reason": "provider reported failure"}
            else:
                values = {f"{stage}_at": getattr(r, f"{stage}_at") or now}
            conn.execute(O.update().where(O.c.id == r.id).values(**values))
            events.append((r.user_id, stage, r.id, {"campaign_id": r.campaign_id,
                                                    "variant": r.variant,
                                                    "channel": r.channel, "message_id": r.id}))
    tracking.write_events(e.stores.get(account_id), events)
    return len(events)


@router.post("/callback/{provider}/{account_id}/{sig}")
async def callback(provider: str, account_id: str, sig: str, request: Request) -> Response:
    """Delivery receipts. Configure the URL ``tracking.Signer.callback_url`` gives (shown
    by ``GET /1/engage/callbacks``) in the provider's console."""
    e = _engage(request)
    _account(e, account_id)
    if provider not in ("twilio", "whatsapp", "generic"):
        raise NotFound("no such provider callback")
    if not e.signer.check(account_id, sig, "cb", provider):
        raise AuthError("the callback URL is not valid")
    items = _statuses(provider, await request.body(), request.headers.get("content-type", ""))
    n = await run_in_threadpool(_apply_callbacks, e, account_id, items)
    return JSONResponse({"applied": n})
