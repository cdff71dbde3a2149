"""Analytics reports: ``/1/analytics/...`` (request and response shapes: docs/analytics.md).

Every report is computed from live data on each call. Reports run in the thread pool (DuckDB
releases the GIL while it works); bad requests are answered 422 naming the field.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from nudge.clock import clock
from nudge.query.analytics import live
from nudge.query.analytics.common import Report, ReportError
from nudge.query.analytics.dayparting import dayparting
from nudge.query.analytics.pivots import histogram, pivot
from nudge.query.analytics.trends import trends
from nudge.query.segments.saved import SegmentDirectory

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/analytics", tags=["analytics"])
log = logging.getLogger("nudge.api")

STREAM_POLL_S = 0.25
STREAM_HEARTBEAT_S = 15.0
STREAM_BATCH = 500


def report_for(request: Request) -> Report:
    """The report context of the authenticated account (timezone, saved segments)."""
    nudge, account_id, store = passcode_account(request)
    saved = SegmentDirectory(nudge.accounts.engine, account_id)
    return Report.for_store(store, nudge.accounts.get(account_id).timezone, saved.node)


async def run_report(request: Request, fn: Callable[[Report, Any], dict[str, Any]]) -> Response:
    report = report_for(request)
    body = await read_body(request)
    return JSONResponse(await run_in_threadpool(fn, report, body))


@router.post("/trends")
async def trends_report(request: Request) -> Response:
    return await run_report(request, trends)


@router.post("/pivot")
async def pivot_report(request: Request) -> Response:
    return await run_report(request, pivot)


@router.post("/histogram")
async def histogram_report(request: Request) -> Response:
    return await run_report(request, histogram)


@router.post("/dayparting")
async def dayparting_report(request: Request) -> Response:
    return await run_report(request, dayparting)


@router.get("/live")
async def live_view(request: Request) -> Response:
    """Events per minute and active users over the last 30 minutes (``?event=`` to narrow)."""
    report = report_for(request)
    event = request.query_params.get("event") or None
    return JSONResponse(await run_in_threadpool(
        live.live_summary, report.store, report.tz, clock.now(), event))


@router.get("/live/stream")
async def live_stream(request: Request) -> Response:
    """Server-Sent Events of incoming events, from now on (or after ``?since=<seq>`` /
    ``Last-Event-ID``), optionally of one ``?event=``."""
    report = report_for(request)
    event = request.query_params.get("event") or None
    after = _resume_point(request)
    if after is None:
        after = await run_in_threadpool(live.latest_seq, report.store)
    return StreamingResponse(_stream(request, report, event, after),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _resume_point(request: Request) -> int | None:
    given = request.query_params.get("since") or request.headers.get("last-event-id")
    if given is None:
        return None
    try:
        return max(0, int(given))
    except ValueError:
        raise ReportError("since", "must be an event sequence number") from None


async def _stream(request: Request, report: Report, event: str | None,
                  after: int) -> AsyncIterator[bytes]:
    """Poll the store for events after the last one sent, every ``STREAM_POLL_S``; a comment
    line now and then keeps proxies from closing an idle connection. Ends when the client
    goes away (checked every poll; Starlette also cancels the generator on disconnect)."""
    account = report.store.account_id
    log.info("live stream opened", extra={"account": account, "after": after})
    sent, quiet_since = 0, time.monotonic()
    try:
        yield b"retry: 1000\n: connected\n\n"
        while not await request.is_disconnected():
            batch = await run_in_threadpool(live.events_after, report.store, after, event,
                                            STREAM_BATCH)
            for item in batch:
                yield live.sse(item)
            if batch:
                after, sent, quiet_since = batch[-1]["seq"], sent + len(batch), time.monotonic()
                if len(batch) == STREAM_BATCH:
                    continue  # more are waiting: no pause
            elif time.monotonic() - quiet_since > STREAM_HEARTBEAT_S:
                yield b": keep-alive\n\n"
                quiet_since = time.monotonic()
            await asyncio.sleep(STREAM_POLL_S)
    finally:
        log.info("live stream closed", extra={"account": account, "sent": sent})
