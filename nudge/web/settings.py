"""Settings: account, API keys (create, revoke), users and roles, audit log, and the
engagement settings (channel providers, caps, quiet hours, webhooks) read-only for now.

Key actions call the same ``auth.keys`` functions as /1/keys and write the same audit
entries; each route is declared with the API's permission in ROUTE_PERMISSIONS.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.api.authz import auth_of
from nudge.errors import NotFound, ValidationError
from nudge.tenancy import audit
from nudge.tenancy.roles import KEY_KINDS

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)


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
    channels = await run_in_threadpool(_channels, ctx)
    return render(request, "settings.html", ctx, channels=channels)


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
                  members=[{**u.public(), "role": role} for u, role in rows])


@router.get("/ui/{account_id}/settings/audit")
@page
async def audit_log(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = audit.entries(auth_of(request).users.engine, ctx.account_id, limit=200)
    return render(request, "settings_audit.html", ctx, entries=[e.to_dict() for e in rows])
