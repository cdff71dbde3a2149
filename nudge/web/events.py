"""Events: the catalog (counts, property schemas) and a live stream for debugging an
integration (Server-Sent Events, the same generator as GET /1/analytics/live/stream)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from nudge.api.routes.analytics import _resume_point, _stream, report_for
from nudge.query.analytics import live
from nudge.query.profiles import event_catalog

from .pages import _with_account, context, page, render

router = APIRouter(include_in_schema=False)


@router.get("/ui/{account_id}/events")
@page
async def events(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    catalog = await run_in_threadpool(event_catalog, ctx.store)
    return render(request, "events.html", ctx, catalog=catalog["events"])


@router.get("/ui/{account_id}/events/stream")
@page
async def stream(request: Request, account_id: str) -> Response:
    """New events from now on, as ``data: {...}`` lines (EventSource cannot send the
    account header, so the account comes from the path like every page's)."""
    report = report_for(_with_account(request, account_id))
    event = request.query_params.get("event") or None
    after = _resume_point(request)  # Last-Event-ID after a reconnect
    if after is None:
        after = await run_in_threadpool(live.latest_seq, report.store)
    return StreamingResponse(_stream(request, report, event, after),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
