"""Path analytics: ``/1/analytics/funnels``, ``/retention``, ``/flows`` (request and response
shapes: docs/analytics.md). Computed from live data on every call, in the thread pool."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.query.analytics.flows import flows
from nudge.query.analytics.funnels import funnel_users, funnels
from nudge.query.analytics.retention import retention

from .analytics import report_for, run_report
from .ingest import read_body

router = APIRouter(prefix="/1/analytics", tags=["analytics"])


@router.post("/funnels")
async def funnels_report(request: Request) -> Response:
    return await run_report(request, funnels)


@router.post("/funnels/users")
async def funnels_users(request: Request) -> Response:
    """Who converted at (or dropped before) a step: pages of profiles, or all as CSV."""
    report = report_for(request)
    body = await read_body(request)
    kind, content = await run_in_threadpool(funnel_users, report, body)
    if kind == "csv":
        return Response(content, media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="funnel-users.csv"'})
    return JSONResponse(content)


@router.post("/retention")
async def retention_report(request: Request) -> Response:
    return await run_report(request, retention)


@router.post("/flows")
async def flows_report(request: Request) -> Response:
    return await run_report(request, flows)
