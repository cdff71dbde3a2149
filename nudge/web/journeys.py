"""Journeys pages: the list with status, and the journey canvas (``static/journey_canvas.js``).

The canvas draws the graph (nodes placed by :func:`layout`, in columns by distance from the
start node), lets a writer create a journey, add and connect nodes, edit every node's and
the journey's settings in a side panel (event and profile property filters in the segment
builder's filter rows, ``filter_row.html`` + ``static/filter_rows.js``), validate, save,
publish, pause, resume and stop, and overlays live counts per node. It is a client of the
JSON API — it POSTs the very definition ``POST /1/journeys`` takes (and ``/validate``,
``/publish``, ``GET .../report``) with the session cookie and the CSRF header — so there is
no second journey format and the server refuses a viewer's forged request through the same
authorization as the API. This module only renders the page with what the canvas starts
from: the definition, the node positions, the report (``journey_report``), and the campaigns
and segments a node can use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.engage.directory import CampaignDirectory
from nudge.journeys.directory import JourneyDirectory
from nudge.journeys.model import NODE_TYPES
from nudge.journeys.report import journey_report
from nudge.query.segments.saved import SegmentDirectory

from .pages import PageContext, context, page, render

# The filter rows offer the segment builder's operators; segment definitions its conditions.
from .segments import OPS, builder_choices

router = APIRouter(include_in_schema=False)

W, H, GAP_X, GAP_Y = 180, 64, 36, 56
TOP = 20 + H + GAP_Y  # the entry box sits above the first row
EMPTY = {"name": "", "entry": {"event": ""}, "start": "", "nodes": []}


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


def layout(definition: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Top-left corner of each node, drawn top to bottom: rows by the longest path from
    ``start`` (so every forward edge points down and exits land at the bottom; edges that
    close a loop are left out of the ranking), nodes of a row side by side in definition
    order and centred; unreachable nodes go in a last row."""
    nodes = {n["id"]: n for n in definition.get("nodes", []) if isinstance(n, dict) and "id" in n}
    order: list[str] = []  # reverse post-order of a depth-first walk = a topological order
    state: dict[str, int] = {}  # 1 = on the walk's stack, 2 = done
    back: set[tuple[str, str]] = set()
    start = definition.get("start")
    if isinstance(start, str) and start in nodes:
        stack: list[tuple[str, Any]] = [(start, iter(edges_of(nodes[start])))]
        state[start] = 1
        while stack:
            cur, it = stack[-1]
            nxt = next((t for _, t in it if t in nodes), None)
            if nxt is None:
                state[cur] = 2
                order.append(cur)
                stack.pop()
            elif state.get(nxt) == 1:
                back.add((cur, nxt))
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(edges_of(nodes[nxt]))))
    depth = dict.fromkeys(order, 0)
    for cur in reversed(order):
        for _, nxt in edges_of(nodes[cur]):
            if nxt in depth and (cur, nxt) not in back:
                depth[nxt] = max(depth[nxt], depth[cur] + 1)
    last = max(depth.values(), default=-1) + 1
    rows: dict[int, list[str]] = {}
    for nid in nodes:
        rows.setdefault(depth.get(nid, last), []).append(nid)
    widest = max((len(r) for r in rows.values()), default=0)
    pos: dict[str, dict[str, int]] = {}
    for level, ids in rows.items():
        left = 20 + (widest - len(ids)) * (W + GAP_X) // 2
        for i, nid in enumerate(ids):
            pos[nid] = {"x": left + i * (W + GAP_X), "y": TOP + level * (H + GAP_Y)}
    return pos


def _directory(ctx: PageContext) -> JourneyDirectory:
    return JourneyDirectory(ctx.request.app.state.journeys.engine, ctx.account_id)


def _list(ctx: PageContext) -> list[dict[str, Any]]:
    """Every journey with its entered / active / converted figures (``journey_report``)."""
    engine = ctx.request.app.state.journeys.engine
    return [{**j, "report": journey_report(engine, j["id"])} for j in _directory(ctx).list()]


def _choices(ctx: PageContext) -> dict[str, Any]:
    """What the side panel offers: campaigns a send node can use (their content, channels
    and policy are the message) and saved segments for entries and conditions."""
    campaigns = []
    if ctx.can("campaigns:read"):
        for c in CampaignDirectory(ctx.request.app.state.engage.engine, ctx.account_id).list():
            campaigns.append({"id": c.id, "name": c.name, "kind": c.kind,
                              "channels": c.definition.get("channels", [])})
    segments = []
    if ctx.can("segments:read"):
        segments = [{"id": s.id, "name": s.name}
                    for s in SegmentDirectory(ctx.nudge.accounts.engine, ctx.account_id).list()]
    return {"campaigns": campaigns, "segments": segments}


def canvas_state(ctx: PageContext, journey_id: int | None) -> dict[str, Any]:
    """Everything the canvas starts from (one JSON document in a ``data-`` attribute)."""
    if journey_id is None:
        j: dict[str, Any] = {"id": None, "name": "", "status": "new", "version": None,
                             "definition": EMPTY}
        report: dict[str, Any] = {"entered": 0, "active": 0, "converted": 0, "at_node": {},
                                  "steps": {}}
    else:
        j = _directory(ctx).get(journey_id)
        report = journey_report(ctx.request.app.state.journeys.engine, journey_id)
    return {"journey": {k: j[k] for k in ("id", "name", "status", "version", "definition")},
            "positions": layout(j["definition"]), "report": report,
            "account": ctx.account_id, "base": ctx.base,
            "editable": ctx.can("journeys:write") and j["status"] != "stopped",
            "can_campaign": ctx.can("campaigns:write"),
            "node_types": list(NODE_TYPES), "size": {"w": W, "h": H}, **_choices(ctx)}


@router.get("/ui/{account_id}/journeys")
@page
async def journeys_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = await run_in_threadpool(_list, ctx)
    return render(request, "journeys.html", ctx, journeys=rows)


def _page_args(ctx: PageContext, journey_id: int | None) -> dict[str, Any]:
    """The canvas's state, plus for writers who may read segments the segment builder's
    condition editor (``segment_conditions.html`` in a ``<template>``: its rows, operators
    and event names) for entry and condition segment definitions."""
    state = canvas_state(ctx, journey_id)
    editor = state["editable"] and ctx.can("segments:read")
    extra = {**builder_choices(ctx), "rows": range(3)} if editor else {"ops": OPS}
    return {"state": state, "journey": state["journey"], "report": state["report"],
            "segment_editor": editor, **extra}


@router.get("/ui/{account_id}/journeys/new")
@page
async def new_journey(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)  # journeys:write (the matrix)
    args = await run_in_threadpool(_page_args, ctx, None)
    return render(request, "journey.html", ctx, **args)


@router.get("/ui/{account_id}/journeys/{journey_id}")
@page
async def journey_page(request: Request, account_id: str, journey_id: int) -> Response:
    ctx = context(request, account_id)
    args = await run_in_threadpool(_page_args, ctx, journey_id)
    return render(request, "journey.html", ctx, **args)
