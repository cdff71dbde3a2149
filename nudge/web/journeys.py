"""Journeys pages (read-only for now): the list with status, and a journey drawn as an SVG
graph (nodes in layers from the start node, edges labelled with their outcome) with live
counts per node from ``journey_report`` — the function ``GET /1/journeys/{id}/report``
answers with. Editing the graph on a canvas is not built yet (use the API)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.journeys.directory import JourneyDirectory
from nudge.journeys.report import journey_report

from .pages import PageContext, context, page, render

router = APIRouter(include_in_schema=False)

W, H, GAP_X, GAP_Y = 180, 64, 60, 28


def edges_of(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, target) for each way out of a node, per docs/journeys.md."""
    out: list[tuple[str, str]] = []
    for key in ("next", "on_event", "on_timeout", "yes", "no"):
        if isinstance(node.get(key), str):
            out.append(("" if key == "next" else key, node[key]))
    for b in node.get("branches") or []:
        if isinstance(b, dict) and isinstance(b.get("next"), str):
            out.append((f"{b.get('percent')}%", b["next"]))
    return out


def layout(definition: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """Place nodes in columns by distance from ``start`` (breadth first); unreachable nodes
    go in a last column. Each box carries its counts: passed (steps run), waiting (active)."""
    nodes = {n["id"]: n for n in definition.get("nodes", []) if isinstance(n, dict) and "id" in n}
    depth: dict[str, int] = {}
    queue = [definition.get("start")]
    if queue[0] in nodes:
        depth[queue[0]] = 0
    while queue:
        cur = queue.pop(0)
        if cur not in nodes:
            continue
        for _, nxt in edges_of(nodes[cur]):
            if nxt in nodes and nxt not in depth:
                depth[nxt] = depth[cur] + 1
                queue.append(nxt)
    last = max(depth.values(), default=-1) + 1
    columns: dict[int, list[str]] = {}
    for nid in nodes:
        columns.setdefault(depth.get(nid, last), []).append(nid)
    pos: dict[str, tuple[int, int]] = {}
    for col, ids in columns.items():
        for row, nid in enumerate(ids):
            pos[nid] = (20 + col * (W + GAP_X), 20 + row * (H + GAP_Y))
    steps, at_node = report.get("steps", {}), report.get("at_node", {})
    boxes = [{"id": nid, "type": nodes[nid].get("type", "?"), "x": x, "y": y,
              "passed": sum(steps.get(nid, {}).values()), "waiting": at_node.get(nid, 0)}
             for nid, (x, y) in pos.items()]
    lines = []
    for nid, node in nodes.items():
        for label, nxt in edges_of(node):
            if nxt in pos:
                (x1, y1), (x2, y2) = pos[nid], pos[nxt]
                lines.append({"x1": x1 + W, "y1": y1 + H // 2, "x2": x2, "y2": y2 + H // 2,
                              "label": label, "from": nid, "to": nxt})
    width = 40 + (max(columns, default=0) + 1) * (W + GAP_X)
    height = 40 + max((len(c) for c in columns.values()), default=1) * (H + GAP_Y)
    return {"boxes": boxes, "lines": lines, "width": width, "height": height, "w": W, "h": H}


def _directory(ctx: PageContext) -> JourneyDirectory:
    return JourneyDirectory(ctx.request.app.state.journeys.engine, ctx.account_id)


def _detail(ctx: PageContext, journey_id: int) -> dict[str, Any]:
    j = _directory(ctx).get(journey_id)
    report = journey_report(ctx.request.app.state.journeys.engine, journey_id)
    return {"journey": j, "report": report, "graph": layout(j["definition"], report)}


@router.get("/ui/{account_id}/journeys")
@page
async def journeys_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = await run_in_threadpool(_directory(ctx).list, None)
    return render(request, "journeys.html", ctx, journeys=rows)


@router.get("/ui/{account_id}/journeys/{journey_id}")
@page
async def journey_page(request: Request, account_id: str, journey_id: int) -> Response:
    ctx = context(request, account_id)
    view = await run_in_threadpool(_detail, ctx, journey_id)
    return render(request, "journey.html", ctx, **view)
