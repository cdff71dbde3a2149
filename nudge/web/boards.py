"""Boards: analytics reports saved by name (control-store table ``dashboard_board_items``)
and run live, each with its chart and table, whenever the board is opened. A board item keeps
the report's kind and JSON body only, never figures."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.clock import clock
from nudge.errors import NotFound, NudgeError
from nudge.store.control import dashboard_board_items as ITEMS

from .analytics import FormError, _kind, run
from .charts import form_of, option_for, table_for
from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)


def _text(form: dict[str, str], name: str, limit: int = 200) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise FormError(f"{name}: required", field=name)
    if len(value) > limit:
        raise FormError(f"{name}: at most {limit} characters", field=name)
    return value


def add_item(ctx: PageContext, form: dict[str, str]) -> dict[str, Any]:
    kind = _kind(form.get("kind", ""))
    body = json.loads(form.get("body") or "null")
    if not isinstance(body, dict):
        raise FormError("body: must be a JSON object", field="body")
    run(ctx, kind, body)  # a report that does not run is refused (422 naming the field)
    row = {"account_id": ctx.account_id, "board": _text(form, "board"),
           "title": _text(form, "title"), "kind": kind, "body": json.dumps(body),
           "chart": "bar" if form.get("chart") == "bar" else "line",
           "created_by": ctx.caller.principal, "created_at": clock.now()}
    with ctx.nudge.accounts.engine.begin() as conn:
        row["id"] = conn.execute(ITEMS.insert().values(**row)).inserted_primary_key[0]
    return row


def _boards(ctx: PageContext) -> list[dict[str, Any]]:
    q = sa.select(ITEMS.c.board, sa.func.count()).where(
        ITEMS.c.account_id == ctx.account_id).group_by(ITEMS.c.board).order_by(ITEMS.c.board)
    with ctx.nudge.accounts.engine.connect() as conn:
        return [{"name": b, "items": n} for b, n in conn.execute(q)]


def _board(ctx: PageContext, board: str) -> list[dict[str, Any]]:
    q = sa.select(ITEMS).where(ITEMS.c.account_id == ctx.account_id,
                               ITEMS.c.board == board).order_by(ITEMS.c.id)
    with ctx.nudge.accounts.engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    if not rows:
        raise NotFound(f"no board named {board!r}")
    out = []
    for r in rows:
        item: dict[str, Any] = {"id": r["id"], "title": r["title"], "kind": r["kind"],
                                "body": r["body"]}
        try:
            result = run(ctx, r["kind"], json.loads(r["body"]))
            item["header"], item["rows"] = table_for(r["kind"], result)
            item["option"] = option_for(r["kind"], result, r["chart"])
            item["error"] = None
        except NudgeError as exc:  # e.g. an event renamed since: show why, keep the board
            if exc.status >= 500:
                raise
            item["error"] = str(exc)
        out.append(item)
    return out


@router.post("/ui/{account_id}/boards")
@page
async def save_to_board(request: Request, account_id: str) -> Response:
    """Save the report on screen to a board (htmx): answers a confirmation fragment."""
    ctx = context(request, account_id)
    form = await form_of(request)
    row = await run_in_threadpool(add_item, ctx, form)
    return render(request, "board_saved.html", ctx, item=row)


@router.get("/ui/{account_id}/boards")
@page
async def boards_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    return render(request, "boards.html", ctx, boards=await run_in_threadpool(_boards, ctx))


@router.get("/ui/{account_id}/boards/{board}")
@page
async def board_page(request: Request, account_id: str, board: str) -> Response:
    ctx = context(request, account_id)
    items = await run_in_threadpool(_board, ctx, board)
    return render(request, "board.html", ctx, board=board, items=items)
