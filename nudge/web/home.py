"""Home: live counters, top events, recent campaign results, ingestion health."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.clock import clock
from nudge.query.analytics import live

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)


def _counters(ctx: PageContext) -> dict[str, Any]:
    """The live summary the API's GET /1/analytics/live returns, plus today vs yesterday."""
    tz = ZoneInfo(ctx.timezone)
    now = clock.now()
    summary = live.live_summary(ctx.store, tz, now)
    last = summary["minutes"][-2] if len(summary["minutes"]) > 1 else {"events": 0, "users": 0}
    return {"summary": summary, "per_minute": last["events"], "today": _days(ctx, tz, now)}


def _days(ctx: PageContext, tz: ZoneInfo, now: float) -> dict[str, int]:
    """Events today so far and yesterday up to the same time of day, in the account's zone."""
    from datetime import datetime, timedelta

    local = datetime.fromtimestamp(now, tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    y_mid, y_now = midnight - timedelta(days=1), local - timedelta(days=1)
    with ctx.store.cursor() as cur:
        row = cur.execute(
            "SELECT count(*) FILTER (WHERE ts >= ? AND ts <= ?), "
            "count(*) FILTER (WHERE ts >= ? AND ts <= ?) FROM events WHERE ts >= ?",
            [midnight, local, y_mid, y_now, y_mid]).fetchall()[0]
    return {"today": int(row[0]), "yesterday": int(row[1])}


def _campaigns(ctx: PageContext) -> list[dict[str, Any]]:
    engage = getattr(ctx.request.app.state, "engage", None)
    if engage is None or not ctx.can("campaigns:read"):
        return []
    from nudge.engage.directory import CampaignDirectory
    from nudge.engage.report import campaign_report

    out = []
    for c in CampaignDirectory(engage.engine, ctx.account_id).list(None)[:5]:
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
    counters = await run_in_threadpool(_counters, ctx)
    campaigns = await run_in_threadpool(_campaigns, ctx)
    rejects = await run_in_threadpool(_rejects, ctx)
    return render(request, "home.html", ctx, campaigns=campaigns, rejects=rejects,
                  **counters)
