"""``/1/subscription-categories``: the account's subscription categories (list, create,
rename / describe / archive). Reads need ``campaigns:read``, changes ``campaigns:write`` —
the permissions of ``/1/engage/policy``, the other account-wide messaging setting — and
every change is audited (the dashboard's Settings page calls the same functions). Shapes:
docs/api.md; model: nudge/engage/categories.py."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.engage.categories import CategoryDirectory, create_audited, update_audited

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/subscription-categories", tags=["campaigns"])


def _directory(request: Request) -> tuple[CategoryDirectory, str]:
    nudge, account_id, _ = passcode_account(request)
    return CategoryDirectory(nudge.accounts.engine, account_id), request.state.caller.principal


@router.get("")
async def list_categories(request: Request) -> Response:
    """Active categories; ``?archived=true`` includes archived ones."""
    d, _ = _directory(request)
    archived = request.query_params.get("archived", "false").lower() in ("1", "true", "yes")
    rows = await run_in_threadpool(d.list, archived)
    return JSONResponse({"categories": [c.to_dict() for c in rows]})


@router.post("", status_code=201)
async def create_category(request: Request) -> Response:
    """``{"name", "key"?, "description"?}`` → 201 with the category."""
    d, actor = _directory(request)
    body = await read_body(request)
    c = await run_in_threadpool(create_audited, request, d, actor, body)
    return JSONResponse(c.to_dict(), status_code=201)


@router.get("/{key}")
async def get_category(request: Request, key: str) -> Response:
    d, _ = _directory(request)
    return JSONResponse((await run_in_threadpool(d.get, key)).to_dict())


@router.put("/{key}")
async def update_category(request: Request, key: str) -> Response:
    """``{"name"?, "description"?, "archived"?}``: rename, describe, archive or restore."""
    d, actor = _directory(request)
    body = await read_body(request)
    c = await run_in_threadpool(update_audited, request, d, actor, key, body)
    return JSONResponse(c.to_dict())


@router.delete("/{key}")
async def archive_category(request: Request, key: str) -> Response:
    """Archive (categories are never deleted: old campaigns and subscriptions name them)."""
    d, actor = _directory(request)
    c = await run_in_threadpool(update_audited, request, d, actor, key, {"archived": True})
    return JSONResponse(c.to_dict())
