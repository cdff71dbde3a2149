"""Analytics pages: trends, funnels, retention, flows and day-parting, each drawn with ECharts
from the answer of the same report function the API calls (``POST /1/analytics/<kind>``),
shown as a table, exportable as CSV (server) and PNG (ECharts ``getDataURL`` in the browser).

The form's simple fields build the report's JSON body (``body_from_form``); the "JSON body"
box takes any body the API takes, so every option of docs/analytics.md is reachable.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.clock import clock
from nudge.errors import NudgeError
from nudge.query.analytics.common import Report
from nudge.query.analytics.dayparting import dayparting
from nudge.query.analytics.flows import flows
from nudge.query.analytics.funnels import funnels
from nudge.query.analytics.retention import retention
from nudge.query.analytics.trends import trends
from nudge.query.profiles import event_catalog
from nudge.query.segments.saved import SegmentDirectory

from .charts import KINDS, form_of, option_for, table_for, to_csv
from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)

REPORTS = {"trends": trends, "funnels": funnels, "retention": retention, "flows": flows,
           "dayparting": dayparting}
TITLES = {"trends": "Trends", "funnels": "Funnels", "retention": "Retention", "flows": "Flows",
          "dayparting": "Day-parting", "rfm": "RFM"}


class FormError(NudgeError):
    status = 422
    code = "invalid_report"


def _events(ctx: PageContext) -> list[str]:
    return [e["name"] for e in event_catalog(ctx.store)["events"]]


def _csv_list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _int(form: dict[str, str], name: str, default: int) -> int:
    raw = form.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise FormError(f"{name}: must be a whole number, got {raw!r}", field=name) from None


def body_from_form(kind: str, form: dict[str, str]) -> dict[str, Any]:
    """The report body for a submitted form: the JSON box verbatim when filled, else the
    simple fields. The report function checks it (422 naming the field)."""
    raw = form.get("json", "").strip()
    if raw:
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise FormError(f"json: not valid JSON ({exc.msg} at {exc.pos})",
                            field="json") from None
        if not isinstance(body, dict):
            raise FormError("json: must be a JSON object", field="json")
        return body
    body: dict[str, Any] = {"from": form.get("from") or None}
    if form.get("to"):
        body["to"] = form["to"]
    if kind == "trends":
        events = _csv_list(form.get("events", ""))
        body["series"] = [{"event": e, "measure": form.get("measure") or "total"} for e in events]
        body["interval"] = form.get("interval") or "day"
        if form.get("breakdown"):
            body["breakdown"] = {"property": form["breakdown"],
                                 "scope": form.get("breakdown_scope") or "event"}
        body["compare"] = form.get("compare") == "on"
    elif kind == "funnels":
        body["steps"] = [{"event": e} for e in _csv_list(form.get("steps", ""))]
        body["order"] = form.get("order") or "ordered"
        body["window"] = {"days": _int(form, "window_days", 30)}
        if form.get("breakdown"):
            body["breakdown"] = {"property": form["breakdown"],
                                 "scope": form.get("breakdown_scope") or "event"}
    elif kind == "retention":
        body["start"] = {"event": form.get("start", "")}
        if form.get("return"):
            body["return"] = {"event": form["return"]}
        body["cohort"] = form.get("cohort") or "first_time"
        body["interval"] = form.get("interval") or "day"
        body["periods"] = _int(form, "periods", 7)
        body["mode"] = form.get("mode") or "bracketed"
    elif kind == "flows":
        body["event"] = form.get("event", "")
        body["direction"] = form.get("direction") or "after"
        body["steps"] = _int(form, "steps", 4)
    elif kind == "rfm":
        return {"since": form.get("since") or None}
    elif kind == "dayparting":
        body["event"] = form.get("event", "")
        body["measure"] = form.get("measure") or "total"
        body["timezone"] = form.get("tz") or "account"
    return body


def run(ctx: PageContext, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run the report exactly as ``POST /1/analytics/<kind>`` does (RFM: as ``GET
    /1/predict/rfm``, with ``since`` from the body)."""
    if kind == "rfm":
        from nudge.predict import rfm

        since = body.get("since")
        if since is not None and not isinstance(since, str | int | float):
            raise FormError("since: must be a date", field="since")
        return rfm.report(ctx.store, rfm.load_settings(ctx.store), clock.now(),
                          _since(since))
    saved = SegmentDirectory(ctx.nudge.accounts.engine, ctx.account_id)
    report = Report.for_store(ctx.store, ctx.timezone, saved.node)
    return REPORTS[kind](report, body)


def _since(value: Any) -> float | None:
    if value in (None, ""):
        return None
    from nudge.predict.goals import _time  # the parsing GET /1/predict/rfm?since= uses

    t = _time(float(value) if str(value).replace(".", "", 1).isdigit() else value, "since")
    if t > clock.now():
        raise FormError("since: must not be in the future", field="since")
    return t


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise FormError(f"kind: must be one of {list(KINDS)}, got {kind!r}", field="kind")
    return kind


def _defaults() -> dict[str, str]:
    today = datetime.fromtimestamp(clock.now(), UTC).date()
    return {"from": (today - timedelta(days=30)).isoformat(),
            "to": (today + timedelta(days=1)).isoformat()}


@router.get("/ui/{account_id}/analytics")
@page
async def analytics_home(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    return Response(status_code=303, headers={"location": f"{ctx.base}/analytics/trends"})


@router.get("/ui/{account_id}/analytics/{kind}")
@page
async def analytics_page(request: Request, account_id: str, kind: str) -> Response:
    ctx = context(request, account_id)
    kind = _kind(kind)
    events = await run_in_threadpool(_events, ctx)
    return render(request, "analytics.html", ctx, kind=kind, kinds=KINDS, titles=TITLES,
                  events=events, defaults=_defaults())


@router.post("/ui/{account_id}/analytics/{kind}")
@page
async def analytics_run(request: Request, account_id: str, kind: str) -> Response:
    """Run the report from the form (htmx) and answer the result fragment: chart, table,
    CSV and PNG export."""
    ctx = context(request, account_id)
    kind = _kind(kind)
    form = await form_of(request)
    body = body_from_form(kind, form)
    result = await run_in_threadpool(run, ctx, kind, body)
    header, rows = table_for(kind, result)
    return render(request, "analytics_result.html", ctx, kind=kind, result=result,
                  option=option_for(kind, result, form.get("chart", "line")),
                  header=header, rows=rows, body=json.dumps(body, separators=(",", ":")),
                  chart=form.get("chart", "line"))


@router.get("/ui/{account_id}/analytics/{kind}/export.csv")
@page
async def analytics_csv(request: Request, account_id: str, kind: str) -> Response:
    """The report's table as CSV: ``?body=<the report's JSON body>``."""
    ctx = context(request, account_id)
    kind = _kind(kind)
    body = body_from_form(kind, {"json": request.query_params.get("body", "")})
    result = await run_in_threadpool(run, ctx, kind, body)
    header, rows = table_for(kind, result)
    return Response(to_csv(header, rows), media_type="text/csv", headers={
        "Content-Disposition": f'attachment; filename="{kind}.csv"', "cache-control": "no-store"})
