"""Settings: account, API keys (create, revoke), users and roles, audit log, and the
engagement settings (channel providers with write-only credentials, frequency caps, quiet
hours, subscription categories, outbound webhooks), each editable in a form.

Key actions call the same ``auth.keys`` functions as /1/keys and write the same audit
entries; each route is declared with the API's permission in ROUTE_PERMISSIONS.
"""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import available_timezones

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.api.authz import auth_of
from nudge.clock import clock
from nudge.engage.categories import CategoryDirectory, create_audited, update_audited
from nudge.errors import NotFound, ValidationError
from nudge.store import control
from nudge.tenancy import audit, members
from nudge.tenancy.roles import KEY_KINDS, ROLES

from .charts import form_of
from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)
_ZONES = sorted(available_timezones())


def _channels(ctx: PageContext) -> list[dict[str, Any]]:
    """Configured channel providers, credentials never shown (what GET /1/channels lists)."""
    if not ctx.can("channels:manage"):
        return []
    from nudge.api.routes.channels import channel_directory

    views: list[dict[str, Any]] = channel_directory(ctx.nudge).views(ctx.account_id)
    return views


@router.get("/ui/{account_id}/settings")
@page
async def settings(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    policy = await run_in_threadpool(_policy, ctx)
    categories = await run_in_threadpool(_categories, ctx)
    return render(request, "settings.html", ctx, policy=policy, zones=_ZONES,
                  categories=categories)


@router.get("/ui/{account_id}/settings/keys")
@page
async def keys(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = auth_of(request).keys.list(ctx.account_id)
    return render(request, "settings_keys.html", ctx, keys=[k.public() for k in rows],
                  kinds=KEY_KINDS)


@router.post("/ui/{account_id}/settings/keys")
@page
async def create_key(request: Request, account_id: str) -> Response:
    """A new key, shown once (``?kind=passcode|write|read``)."""
    ctx = context(request, account_id)
    kind = request.query_params.get("kind", "")
    if kind not in KEY_KINDS:
        raise ValidationError(f"kind must be one of {', '.join(KEY_KINDS)}", field="kind")
    key, secret = auth_of(request).keys.create(ctx.account_id, kind)
    audit.record_request(request, account_id=ctx.account_id, actor=ctx.caller.principal,
                         action="key.created", target=f"key:{key.id}",
                         detail={"kind": key.kind, "prefix": key.prefix})
    return render(request, "settings_key_created.html", ctx, key=key.public(), secret=secret)


@router.post("/ui/{account_id}/settings/keys/{key_id}/revoke")
@page
async def revoke_key(request: Request, account_id: str, key_id: str) -> Response:
    ctx = context(request, account_id)
    if not key_id.isdigit():
        raise NotFound("no such key")
    key = auth_of(request).keys.revoke(ctx.account_id, int(key_id))
    audit.record_request(request, account_id=ctx.account_id, actor=ctx.caller.principal,
                         action="key.revoked", target=f"key:{key.id}",
                         detail={"kind": key.kind, "prefix": key.prefix})
    return render(request, "settings_key_revoked.html", ctx, key=key.public())


@router.get("/ui/{account_id}/settings/users")
@page
async def users(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = auth_of(request).users.list(ctx.account_id)
    return render(request, "settings_users.html", ctx,
                  members=[{**u.public(), "role": role} for u, role in rows], roles=ROLES)


@router.get("/ui/{account_id}/settings/audit")
@page
async def audit_log(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = audit.entries(auth_of(request).users.engine, ctx.account_id, limit=200)
    return render(request, "settings_audit.html", ctx, entries=[e.to_dict() for e in rows])


# -- edit forms ----------------------------------------------------------------------------
# Each action is an htmx form post (urlencoded, parsed by ``form_of``), declared in
# ROUTE_PERMISSIONS with the permission of its API counterpart, validated by the same
# functions the API uses (errors name the field and come back as a 400 fragment swapped
# into the form's result area), and audited.

def _audit(ctx: PageContext, action: str, target: str, detail: dict[str, Any] | None = None,
           ) -> None:
    audit.record_request(ctx.request, account_id=ctx.account_id, actor=ctx.caller.principal,
                         action=action, target=target, detail=detail)


def _saved(request: Request, ctx: PageContext, message: str) -> Response:
    return render(request, "settings_saved.html", ctx, message=message)


@router.post("/ui/{account_id}/settings/account")
@page
async def save_account(request: Request, account_id: str) -> Response:
    """The account's timezone (owners and admins: ``users:manage``)."""
    ctx = context(request, account_id)
    form = await form_of(request)
    old = ctx.timezone
    acct = await run_in_threadpool(ctx.nudge.accounts.set_timezone, ctx.account_id,
                                   form.get("timezone", ""))
    _audit(ctx, "account.timezone_changed", f"account:{ctx.account_id}",
           {"from": old, "to": acct.timezone})
    return _saved(request, ctx, f"Timezone set to {acct.timezone}.")


def _engage(ctx: PageContext) -> Any:
    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None:
        raise NotFound("messaging is not enabled on this server")
    return engage


def _policy(ctx: PageContext) -> dict[str, Any]:
    """The account policy as the form shows it (caps as JSON, quiet hours as fields)."""
    engage = getattr(ctx.request.app.state, "engage", None)
    raw: dict[str, Any] = dict(engage.policies.raw(ctx.account_id)) if engage else {}
    qh = raw.get("quiet_hours") or {}
    return {"caps": json.dumps(raw.get("caps") or []), "quiet_start": qh.get("start", ""),
            "quiet_end": qh.get("end", ""), "quiet_action": qh.get("action", "delay")}


@router.post("/ui/{account_id}/settings/policy")
@page
async def save_policy(request: Request, account_id: str) -> Response:
    """Global frequency caps and quiet hours (``campaigns:write``, as PUT /1/engage/policy)."""
    ctx = context(request, account_id)
    engage = _engage(ctx)
    form = await form_of(request)
    try:
        cap_list = json.loads(form.get("caps", "").strip() or "[]")
    except ValueError:
        raise ValidationError('caps must be a JSON list like [{"max": 3, "per": "1d"}]',
                              field="caps") from None
    body: dict[str, Any] = {"caps": cap_list}
    start, end = form.get("quiet_start", "").strip(), form.get("quiet_end", "").strip()
    if start or end:
        body["quiet_hours"] = {"start": start, "end": end,
                               "action": form.get("quiet_action", "delay")}
    await run_in_threadpool(engage.policies.put, ctx.account_id, body, clock.now())
    _audit(ctx, "engage.policy_changed", f"account:{ctx.account_id}", body)
    return _saved(request, ctx, "Frequency caps and quiet hours saved.")


# users and roles (the checks of /1/users: only owners touch owners, the last owner stays)

def _member_id(user_id: str) -> int:
    if not user_id.isdigit():
        raise NotFound("no such user")
    return int(user_id)


@router.post("/ui/{account_id}/settings/users")
@page
async def add_member(request: Request, account_id: str) -> Response:
    """Invite a user (a one-time password-reset token to hand over) or add an existing one."""
    ctx = context(request, account_id)
    form = await form_of(request)
    user, role, token = await run_in_threadpool(
        members.add, auth_of(request), request, ctx.caller, form.get("email", ""),
        form.get("role", ""))
    resp = render(request, "settings_user_added.html", ctx, email=user.email, role=role,
                  token=token)
    resp.headers["HX-Trigger"] = "members-changed"
    return resp


@router.post("/ui/{account_id}/settings/users/{user_id}/role")
@page
async def change_member_role(request: Request, account_id: str, user_id: str) -> Response:
    ctx = context(request, account_id)
    form = await form_of(request)
    user, role = members.change_role(auth_of(request), request, ctx.caller,
                                     _member_id(user_id), form.get("role", ""))
    return _saved(request, ctx, f"{user.email} is now {role}.")


@router.post("/ui/{account_id}/settings/users/{user_id}/remove")
@page
async def remove_member(request: Request, account_id: str, user_id: str) -> Response:
    ctx = context(request, account_id)
    user = members.remove(auth_of(request), request, ctx.caller, _member_id(user_id))
    return _saved(request, ctx, f"{user.email} removed from the account.")


@router.post("/ui/{account_id}/settings/users/{user_id}/reset-mfa")
@page
async def reset_member_mfa(request: Request, account_id: str, user_id: str) -> Response:
    ctx = context(request, account_id)
    user = members.reset_mfa(auth_of(request), request, ctx.caller, _member_id(user_id))
    return _saved(request, ctx, f"MFA reset for {user.email}; their sessions ended.")


# channel providers (credentials write-only) and outbound event webhooks

def _provider_forms(ctx: PageContext) -> list[dict[str, Any]]:
    """One form per (channel, provider): current non-secret settings and which secrets are
    set. Secret values never leave the server."""
    from nudge.engage.channels.registry import PROVIDERS, channel_class

    current = {(v["channel"], v["provider"]): v for v in _channels(ctx)}
    out = []
    for channel, providers in PROVIDERS.items():
        for provider in providers:
            _, cls = channel_class(channel, provider)
            view = current.get((channel, provider))
            out.append({"channel": channel, "provider": provider,
                        "secrets": list(getattr(cls, "secret_fields", ())),
                        "secrets_set": view["secrets_set"] if view else [],
                        "config": json.dumps(view["config"], indent=1) if view else "{}",
                        "configured": view is not None})
    return out


def _webhooks(ctx: PageContext) -> list[dict[str, Any]]:
    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None:
        return []
    w = control.event_webhooks
    with engage.engine.connect() as conn:
        return [{"id": r.id, **json.loads(r.definition)} for r in conn.execute(
            sa.select(w).where(w.c.account_id == ctx.account_id,
                               w.c.deleted_at.is_(None)).order_by(w.c.id))]


@router.get("/ui/{account_id}/settings/channels")
@page
async def channels_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    forms = await run_in_threadpool(_provider_forms, ctx)
    hooks = await run_in_threadpool(_webhooks, ctx)
    return render(request, "settings_channels.html", ctx, providers=forms, webhooks=hooks)


@router.post("/ui/{account_id}/settings/channels/{channel}")
@page
async def save_channel(request: Request, account_id: str, channel: str) -> Response:
    """Set or replace a provider's settings. A blank secret keeps the stored one; a filled
    one replaces it. The response says which secrets are set, never their values."""
    from nudge.engage.channel_config import channel_directory

    ctx = context(request, account_id)
    form = await form_of(request)
    directory = channel_directory(ctx.nudge)
    provider = form.get("provider", "")
    try:
        config = json.loads(form.get("config", "").strip() or "{}")
    except ValueError:
        raise ValidationError("config must be a JSON object of the provider's settings",
                              field="config") from None
    if not isinstance(config, dict):
        raise ValidationError("config must be a JSON object", field="config")
    from nudge.engage.channels.registry import channel_class

    provider, cls = channel_class(channel, provider or None)
    secret_names = tuple(getattr(cls, "secret_fields", ()))
    stored = await run_in_threadpool(directory.config, ctx.account_id, channel, provider) or {}
    replaced = []
    for name in secret_names:
        config.pop(name, None)  # secrets come from their own write-only inputs only
        value = form.get(f"secret_{name}", "")
        if value:
            config[name] = value
            replaced.append(name)
        elif stored.get(name):
            config[name] = stored[name]
    view = await run_in_threadpool(directory.put, ctx.account_id, channel,
                                   {**config, "provider": provider})
    _audit(ctx, "channel.configured", f"channel:{channel}",
           {"provider": provider, "secrets_replaced": replaced})
    generated = sorted(view.get("generated", {}))
    note = f" Generated: {', '.join(generated)} (fetch with PUT /1/channels)." if generated \
        else ""
    return _saved(request, ctx, f"{channel} ({provider}) saved; secrets set: "
                  f"{', '.join(view['secrets_set']) or 'none'}.{note}")


def _changed(engage: Any, account_id: str) -> None:
    bus = getattr(engage, "bus", None)
    if bus is not None:
        bus.invalidate(account_id)


@router.post("/ui/{account_id}/settings/webhooks")
@page
async def add_webhook(request: Request, account_id: str) -> Response:
    from nudge.engage.bus import parse_webhook

    ctx = context(request, account_id)
    engage = _engage(ctx)
    form = await form_of(request)
    d = parse_webhook({"url": form.get("url", "").strip(), "event": form.get("event", "").strip()})
    w = control.event_webhooks

    def run() -> int:
        with engage.engine.begin() as conn:
            return int(conn.execute(w.insert().values(
                account_id=ctx.account_id, definition=json.dumps(d),
                created_at=clock.now())).inserted_primary_key[0])

    wid = await run_in_threadpool(run)
    _changed(engage, ctx.account_id)
    _audit(ctx, "webhook.created", f"webhook:{wid}", {"event": d["event"]})
    return _saved(request, ctx, f"Webhook {wid} sends {d['event']} events to {d['url']}.")


@router.post("/ui/{account_id}/settings/webhooks/{webhook_id}/delete")
@page
async def delete_webhook(request: Request, account_id: str, webhook_id: str) -> Response:
    ctx = context(request, account_id)
    engage = _engage(ctx)
    if not webhook_id.isdigit():
        raise NotFound("no such webhook")
    w = control.event_webhooks

    def run() -> int:
        with engage.engine.begin() as conn:
            return int(conn.execute(w.update().where(
                w.c.id == int(webhook_id), w.c.account_id == ctx.account_id,
                w.c.deleted_at.is_(None)).values(deleted_at=clock.now())).rowcount)

    if not await run_in_threadpool(run):
        raise NotFound(f"no webhook {webhook_id}")
    _changed(engage, ctx.account_id)
    _audit(ctx, "webhook.deleted", f"webhook:{webhook_id}")
    return _saved(request, ctx, f"Webhook {webhook_id} deleted.")


# subscription categories (the functions /1/subscription-categories calls, audited alike)

def _categories(ctx: PageContext) -> list[dict[str, Any]]:
    if not ctx.can("campaigns:read"):
        return []
    d = CategoryDirectory(ctx.nudge.accounts.engine, ctx.account_id)
    return [c.to_dict() for c in d.list(archived=True)]


def _category_changed(request: Request, ctx: PageContext, message: str) -> Response:
    resp = _saved(request, ctx, message)
    resp.headers["HX-Trigger"] = "categories-changed"  # the list reloads itself
    return resp


@router.get("/ui/{account_id}/settings/categories")
@page
async def categories_list(request: Request, account_id: str) -> Response:
    """The categories table (reloaded after each change)."""
    ctx = context(request, account_id)
    rows = await run_in_threadpool(_categories, ctx)
    return render(request, "settings_categories.html", ctx, categories=rows)


@router.post("/ui/{account_id}/settings/categories")
@page
async def add_category(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)  # campaigns:write, as POST /1/subscription-categories
    form = await form_of(request)
    body = {k: form[k].strip() for k in ("name", "key", "description") if form.get(k, "").strip()}
    d = CategoryDirectory(ctx.nudge.accounts.engine, ctx.account_id)
    c = await run_in_threadpool(create_audited, request, d, ctx.caller.principal, body)
    return _category_changed(request, ctx, f"Category {c.name} ({c.key}) created.")


@router.post("/ui/{account_id}/settings/categories/{key}")
@page
async def edit_category(request: Request, account_id: str, key: str) -> Response:
    """Rename / describe (``name``, ``description``), or ``archived=true|false``."""
    ctx = context(request, account_id)  # campaigns:write, as PUT /1/subscription-categories
    form = await form_of(request)
    body: dict[str, Any] = {k: form[k] for k in ("name", "description") if k in form}
    if "archived" in form:
        body["archived"] = form["archived"] == "true"
    d = CategoryDirectory(ctx.nudge.accounts.engine, ctx.account_id)
    c = await run_in_threadpool(update_audited, request, d, ctx.caller.principal, key, body)
    state = "archived" if c.archived else "active"
    return _category_changed(request, ctx, f"Category {c.name} ({c.key}) saved; {state}.")
