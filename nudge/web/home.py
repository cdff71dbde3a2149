"""Home: live counters, top events, recent campaign results, ingestion health.

The first response carries the real numbers a marketer opens Home for (the live counters,
today vs yesterday, the per-minute chart, top events, ingestion health); they are a few
indexed queries, run concurrently. Recent campaign results read the outbox (one count per
message state per campaign), whose cost grows with the campaigns' audiences, so that panel
is loaded right after the first paint (``hx-trigger="load"``) and shows that it is loading.
The counters refresh every 10 s through their own fragment, not the whole page.
"""

from __future__ import annotations

import asyncio
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.clock import clock
from nudge.query.analytics import live

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)
RECENT_CAMPAIGNS = 5


def _counters(ctx: PageContext) -> dict[str, Any]:
    """The live summary the API's GET /1/analytics/live returns, plus today vs yesterday."""
    tz = ZoneInfo(ctx.timezone)
    now = clock.now()
    summary = live.live_summary(ctx.store, tz, now)
    last = summary["minutes"][-2] if len(summary["minutes"]) > 1 else {"events": 0, "users": 0}
    return {"summary": summary, "per_minute": last["events"],
            "today": live.today_and_yesterday(ctx.store, tz, now)}


def _campaigns(ctx: PageContext) -> list[dict[str, Any]]:
    """The newest campaigns with their totals at each stage (the results page's report)."""
    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None:
        return []
    from nudge.engage.directory import CampaignDirectory
    from nudge.engage.report import campaign_report

    out = []
    newest = CampaignDirectory(engage.engine, ctx.account_id).list(None)[-RECENT_CAMPAIGNS:]
    for c in reversed(newest):
        row = c.to_dict()
        cells = campaign_report(engage.engine, ctx.account_id, c.id)["by_variant_channel"]
        row["totals"] = {k: sum(int(cell.get(k) or 0) for cell in cells)
                         for k in ("sent", "delivered", "opened", "clicked", "converted")}
        out.append(row)
    return out


def _rejects(ctx: PageContext) -> list[dict[str, Any]]:
    """This account's rejected records by reason code, kept across restarts
    (nudge/ingest/reject_counts.py; /metrics has the per-process totals)."""
    from nudge.ingest import reject_counts

    return reject_counts.for_url(ctx.nudge.settings.control_database_url).by_reason(
        ctx.account_id)


@router.get("/ui/{account_id}")
@page
async def home(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    counters, rejects = await asyncio.gather(run_in_threadpool(_counters, ctx),
                                             run_in_threadpool(_rejects, ctx))
    return render(request, "home.html", ctx, rejects=rejects, **counters)


@router.get("/ui/{account_id}/home/counters")
@page
async def home_counters(request: Request, account_id: str) -> Response:
    """The counters alone, for their 10 s refresh."""
    ctx = context(request, account_id)
    return render(request, "home_counters.html", ctx,
                  **await run_in_threadpool(_counters, ctx))


@router.get("/ui/{account_id}/home/campaigns")
@page
async def home_campaigns(request: Request, account_id: str) -> Response:
    """The recent campaigns panel, loaded after Home's first paint."""
    ctx = context(request, account_id)  # campaigns:read, declared for the route
    return render(request, "home_campaigns.html", ctx,
                  campaigns=await run_in_threadpool(_campaigns, ctx))
