"""Saved segments and live evaluation: ``/1/segments``.

Counts and members are computed from live data on every call (no pre-computed tables).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse, JSONResponse, Response

from nudge.clock import clock
from nudge.errors import ValidationError
from nudge.query.profiles import find_user
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.explain import explain
from nudge.query.segments.model import parse
from nudge.query.segments.saved import SegmentDirectory
from nudge.query.segments.schema import SEGMENT_SCHEMA

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/segments", tags=["segments"])


class _Ctx:
    def __init__(self, request: Request) -> None:
        nudge, account_id, store = passcode_account(request)
        self.saved = SegmentDirectory(nudge.accounts.engine, account_id)
        self.engine = SegmentEngine(store, nudge.accounts.get(account_id).timezone,
                                    self.saved.node)

    def name_of(self, segment_id: int) -> str:
        try:
            return repr(self.saved.get(segment_id).name)
        except Exception:  # noqa: BLE001 - explanation only
            return f"#{segment_id}"


async def _body(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    return body


def _check_compiles(ctx: _Ctx, definition: Any, strict: bool) -> None:
    """Refuse (422, with the JSON path) a definition that does not compile for this account:
    a type mismatch, or in strict mode a property not in the catalog. Checked before saving,
    so a refused definition is never stored."""
    ctx.engine.sql(parse(definition, clock.now()), strict=strict)


def _own_node(ctx: _Ctx, segment_id: int) -> Any:
    """The parsed definition of one of the account's segments, addressed in the URL: 404 when
    there is no such segment (``saved.node`` is for references inside definitions, 422)."""
    return parse(ctx.saved.get(segment_id).definition, clock.now())


def _strict(body: dict[str, Any]) -> bool:
    strict = body.get("strict", False)
    if not isinstance(strict, bool):
        raise ValidationError("strict must be true or false", field="strict")
    return strict


@router.get("/schema")
async def schema() -> Response:
    """The JSON Schema of segment definitions."""
    return JSONResponse(SEGMENT_SCHEMA)


@router.post("/evaluate")
async def evaluate(request: Request) -> Response:
    """Live reach of an unsaved definition: ``{"definition": ..., "strict"?: bool}``."""
    ctx = _Ctx(request)
    body = await _body(request)
    node = parse(body.get("definition"), clock.now())
    strict = _strict(body)
    count = await run_in_threadpool(lambda: ctx.engine.count(node, strict=strict))
    return JSONResponse({"count": count, "explanation": explain(node, ctx.name_of)})


@router.post("", status_code=201)
async def create(request: Request) -> Response:
    ctx = _Ctx(request)
    body = await _body(request)
    await run_in_threadpool(_check_compiles, ctx, body.get("definition"), _strict(body))
    seg = await run_in_threadpool(ctx.saved.create, body.get("name"), body.get("definition"))
    return JSONResponse(seg.to_dict(), status_code=201)


@router.get("")
async def list_segments(request: Request) -> Response:
    ctx = _Ctx(request)
    segs = await run_in_threadpool(ctx.saved.list)
    return JSONResponse({"segments": [s.to_dict() for s in segs]})


@router.get("/{segment_id}")
async def get(segment_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    seg = await run_in_threadpool(ctx.saved.get, segment_id)
    out = seg.to_dict()
    out["versions"] = await run_in_threadpool(ctx.saved.versions, segment_id)
    return JSONResponse(out)


@router.put("/{segment_id}")
async def update(segment_id: int, request: Request) -> Response:
    """Replace name and definition; the previous version is kept."""
    ctx = _Ctx(request)
    body = await _body(request)
    await run_in_threadpool(ctx.saved.get, segment_id)  # 404 first for ids not ours
    await run_in_threadpool(_check_compiles, ctx, body.get("definition"), _strict(body))
    seg = await run_in_threadpool(ctx.saved.update, segment_id, body.get("name"),
                                  body.get("definition"))
    return JSONResponse(seg.to_dict())


@router.delete("/{segment_id}")
async def delete(segment_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.saved.delete, segment_id)
    return JSONResponse({"deleted": segment_id})


@router.get("/{segment_id}/count")
async def count(segment_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    node = await run_in_threadpool(_own_node, ctx, segment_id)
    return JSONResponse({"id": segment_id,
                         "count": await run_in_threadpool(ctx.engine.count, node)})


@router.get("/{segment_id}/explain")
async def explain_segment(segment_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    node = await run_in_threadpool(_own_node, ctx, segment_id)
    sql = ctx.engine.sql(node)
    return JSONResponse({"id": segment_id, "explanation": explain(node, ctx.name_of),
                         "sql": sql.text})


@router.get("/{segment_id}/members")
async def members(segment_id: int, request: Request) -> Response:
    """Members by internal id: ``limit`` (≤1000) and ``cursor`` (the last id of a page)."""
    ctx = _Ctx(request)
    try:
        limit = int(request.query_params.get("limit", "100"))
        after = int(request.query_params.get("cursor", "0"))
    except ValueError:
        raise ValidationError("limit and cursor must be integers", field="limit") from None
    if not 1 <= limit <= 1000:
        raise ValidationError("limit must be 1-1000", field="limit")
    node = await run_in_threadpool(_own_node, ctx, segment_id)
    rows = await run_in_threadpool(lambda: ctx.engine.members(node, after=after, limit=limit))
    nxt = str(rows[-1]["id"]) if len(rows) == limit else None
    return JSONResponse({"members": rows, "next_cursor": nxt})


@router.get("/{segment_id}/contains")
async def contains(segment_id: int, request: Request) -> Response:
    """Is one person (``identity``/``email``/``phone``/``objectId``) a member right now?"""
    ctx = _Ctx(request)
    node = await run_in_threadpool(_own_node, ctx, segment_id)

    def check() -> bool:
        uid = find_user(ctx.engine.store, dict(request.query_params))
        return ctx.engine.contains(node, uid)

    return JSONResponse({"id": segment_id, "member": await run_in_threadpool(check)})


@router.get("/{segment_id}/export")
async def export(segment_id: int, request: Request) -> Response:
    """All members as ``format=csv`` (default) or ``format=parquet``."""
    ctx = _Ctx(request)
    fmt = request.query_params.get("format", "csv")
    if fmt not in ("csv", "parquet"):
        raise ValidationError("format must be csv or parquet", field="format")
    node = await run_in_threadpool(_own_node, ctx, segment_id)
    fd, name = tempfile.mkstemp(suffix=f".{fmt}")
    import os

    os.close(fd)
    path = Path(name)
    await run_in_threadpool(ctx.engine.export, node, path, fmt)
    media = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
    return FileResponse(path, media_type=media, filename=f"segment-{segment_id}.{fmt}",
                        background=BackgroundTask(path.unlink))
