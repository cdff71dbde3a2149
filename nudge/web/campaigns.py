"""Campaigns pages: the list with status and delivery totals, and a campaign's results —
sent → delivered → opened → clicked → converted per variant, conversion with its 95%
interval and lift against the control group — read from ``campaign_report``, the function
``GET /1/campaigns/{id}/report`` answers with."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.engage.directory import CampaignDirectory
from nudge.engage.report import campaign_report

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)

STAGES = ("sent", "delivered", "opened", "clicked", "converted")


def _directory(ctx: PageContext) -> CampaignDirectory:
    return CampaignDirectory(ctx.request.app.state.engage.engine, ctx.account_id)


def _totals(report: dict[str, Any]) -> dict[str, int]:
    cells = report["by_variant_channel"]
    return {k: sum(int(c[k]) for c in cells) for k in (*STAGES, "failed", "pending")}


def _list(ctx: PageContext) -> list[dict[str, Any]]:
    engine = ctx.request.app.state.engage.engine
    out = []
    for c in _directory(ctx).list(None):
        row = c.to_dict()
        row["totals"] = _totals(campaign_report(engine, ctx.account_id, c.id))
        out.append(row)
    return out


def results_view(report: dict[str, Any]) -> dict[str, Any]:
    """Per variant: the funnel counts summed over channels, and the ECharts option of
    grouped bars (one group per stage, one bar per variant)."""
    by_variant: dict[str, dict[str, int]] = {}
    for c in report["by_variant_channel"]:
        v = by_variant.setdefault(c["variant"], dict.fromkeys(STAGES, 0))
        for k in STAGES:
            v[k] += int(c[k])
    option = {"aria": {"enabled": True}, "animation": False, "tooltip": {"trigger": "axis"},
              "legend": {"bottom": 0}, "grid": {"left": 56, "right": 16, "top": 16, "bottom": 48},
              "xAxis": {"type": "category", "data": list(STAGES)}, "yAxis": {"type": "value"},
              "series": [{"name": name, "type": "bar", "data": [v[k] for k in STAGES],
                          "label": {"show": True, "position": "top"}}
                         for name, v in sorted(by_variant.items())]}
    return {"funnel": by_variant, "option": option}


def _results(ctx: PageContext, campaign_id: int) -> dict[str, Any]:
    campaign = _directory(ctx).get(campaign_id)  # 404 for another account's or no campaign
    report = campaign_report(ctx.request.app.state.engage.engine, ctx.account_id, campaign_id)
    return {"campaign": campaign.to_dict(), "report": report, **results_view(report)}


@router.get("/ui/{account_id}/campaigns")
@page
async def campaigns_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = await run_in_threadpool(_list, ctx)
    return render(request, "campaigns.html", ctx, campaigns=rows, stages=STAGES)


@router.get("/ui/{account_id}/campaigns/{campaign_id}")
@page
async def campaign_results(request: Request, account_id: str, campaign_id: int) -> Response:
    ctx = context(request, account_id)
    view = await run_in_threadpool(_results, ctx, campaign_id)
    return render(request, "campaign_results.html", ctx, stages=STAGES, **view)
