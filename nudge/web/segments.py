"""Segments pages: the visual builder (every condition type of docs/segments.md) with exact
live reach and the plain-language explanation as the marketer edits, and the saved-segment
list with live sizes. Counts and explanations come from the same ``SegmentEngine.count`` and
``explain`` the API's ``POST /1/segments/evaluate`` calls.

The builder's rows are plain form fields (``type_0``, ``event_0``, ...); ``definition_from_form``
turns them into the definition JSON (``and``/``or`` of the rows, each optionally negated).
The "JSON" box takes any definition and overrides the rows.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nudge.clock import clock
from nudge.errors import NudgeError
from nudge.query.profiles import event_catalog
from nudge.query.segments.evaluate import SegmentEngine
from nudge.query.segments.explain import explain
from nudge.query.segments.model import parse
from nudge.query.segments.saved import SegmentDirectory

from .charts import form_of
from .pages import PageContext, allow, context, page, render

router = APIRouter(include_in_schema=False)

TYPES = ["did", "did_not", "aggregate", "first_time", "last_did", "sequence", "profile",
         "reachable", "segment", "rfm_segment", "rfm_score", "intent_bucket", "intent_score"]
OPS = ["eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "not_contains",
       "starts_with", "between", "exists", "not_exists", "before_days_ago", "after_days_ago",
       "within_next_days", "anniversary_within_days"]
COUNT_OPS = [">=", ">", "<=", "<", "=", "!="]
MAX_ROWS = 20


class BuilderError(NudgeError):
    status = 422
    code = "invalid_segment"


def typed_value(text: str, op: str) -> Any:
    """A typed filter value from a text box: JSON when it parses (numbers, booleans, lists),
    a comma list for ``in``/``not_in``/``between``, else the text itself. Strict JSON, as
    the browser's ``JSON.parse`` in static/filter_rows.js (``NaN`` stays text); a test holds
    the two to the same answers."""
    text = text.strip()
    if op in ("exists", "not_exists"):
        return None
    if op in ("in", "not_in", "between") and not text.startswith("["):
        return [typed_value(p, "eq") for p in text.split(",") if p.strip()]
    try:
        return json.loads(text, parse_constant=_not_json)
    except (json.JSONDecodeError, ValueError):
        return text


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _number(form: dict[str, str], name: str) -> float | int:
    raw = form.get(name, "").strip()
    try:
        n = float(raw)
    except ValueError:
        raise BuilderError(f"{name}: must be a number, got {raw!r}", field=name) from None
    return int(n) if n.is_integer() else n


def filter_from_form(form: dict[str, str], i: int, prefix: str = "w") -> list[dict[str, Any]]:
    """The filter of row ``i`` of ``filter_row.html`` (``<prefix>prop_i``, ``op_i``, ``val_i``):
    ``[]`` when the row has no property. The segment builder and the campaign wizard's
    trigger filters read their rows with it."""
    prop = form.get(f"{prefix}prop_{i}", "").strip()
    if not prop:
        return []
    op = form.get(f"{prefix}op_{i}") or "eq"
    f: dict[str, Any] = {"property": prop, "op": op}
    if op not in ("exists", "not_exists"):
        f["value"] = typed_value(form.get(f"{prefix}val_{i}", ""), op)
    return [f]


def _row(form: dict[str, str], i: int) -> dict[str, Any] | None:
    kind = form.get(f"type_{i}", "")
    if not kind:
        return None
    if kind not in TYPES:
        raise BuilderError(f"type_{i}: must be one of {TYPES}", field=f"type_{i}")
    event = form.get(f"event_{i}", "").strip()
    where = filter_from_form(form, i)
    days = form.get(f"days_{i}", "").strip()
    window = {"window": {"last": {"days": _number(form, f"days_{i}")}}} if days else {}
    body: dict[str, Any]
    if kind in ("did", "did_not", "first_time"):
        body = {"event": event, **({"where": where} if where else {}), **window}
        if kind == "did" and form.get(f"cval_{i}", "").strip():
            body["count"] = {"op": form.get(f"cop_{i}") or ">=",
                             "value": _number(form, f"cval_{i}")}
    elif kind == "aggregate":
        body = {"event": event, **({"where": where} if where else {}), **window,
                "property": form.get(f"prop_{i}", "").strip(), "fn": form.get(f"fn_{i}") or "sum",
                "op": form.get(f"cop_{i}") or ">=", "value": _number(form, f"cval_{i}")}
    elif kind == "last_did":
        body = {"event": event, **({"where": where} if where else {})}
        key = "less_than" if form.get(f"when_{i}") == "less_than" else "more_than"
        body[key] = {"days": _number(form, f"ago_{i}")}
    elif kind == "sequence":
        body = {"first": {"event": event, **({"where": where} if where else {})},
                "then": {"event": form.get(f"then_{i}", "").strip()}, **window}
        if form.get(f"within_{i}", "").strip():
            body["within"] = {"hours": _number(form, f"within_{i}")}
        if form.get(f"happened_{i}") == "false":
            body["then_happened"] = False
    elif kind == "profile":
        filters = filter_from_form(form, i, "p")
        if not filters:
            raise BuilderError(f"pprop_{i}: a profile property is needed", field=f"pprop_{i}")
        body = filters[0]
    elif kind == "reachable":
        body = {"channel": form.get(f"channel_{i}") or "email"}
    elif kind == "segment":
        body = {"id": int(_number(form, f"seg_{i}")), "member": form.get(f"member_{i}") != "false"}
    elif kind == "rfm_segment":
        body = {"in": [p.strip() for p in form.get(f"list_{i}", "").split(",") if p.strip()]}
    elif kind == "rfm_score":
        body = {}
        for k in ("r", "f", "m"):
            scores = [int(p) for p in form.get(f"{k}_{i}", "").replace(" ", "").split(",")
                      if p.isdigit()]
            if scores:
                body[k] = scores
    elif kind == "intent_bucket":
        body = {"goal": int(_number(form, f"goal_{i}")),
                "in": [p.strip() for p in form.get(f"list_{i}", "").split(",") if p.strip()]}
    else:  # intent_score
        body = {"goal": int(_number(form, f"goal_{i}")), "op": form.get(f"cop_{i}") or ">=",
                "value": _number(form, f"cval_{i}")}
    cond: dict[str, Any] = {kind: body}
    return {"not": cond} if form.get(f"neg_{i}") == "on" else cond


def definition_from_form(form: dict[str, str]) -> Any:
    """The segment definition of a submitted builder form (the JSON box wins when filled)."""
    raw = form.get("json", "").strip()
    if raw:
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            raise BuilderError(f"json: not valid JSON ({exc.msg} at {exc.pos})",
                               field="json") from None
    rows = [c for i in range(MAX_ROWS) if (c := _row(form, i)) is not None]
    if not rows:
        raise BuilderError("type_0: add at least one condition", field="type_0")
    if len(rows) == 1:
        return rows[0]
    return {"or" if form.get("match") == "or" else "and": rows}


def _engine(ctx: PageContext) -> tuple[SegmentDirectory, SegmentEngine]:
    saved = SegmentDirectory(ctx.nudge.accounts.engine, ctx.account_id)
    return saved, SegmentEngine(ctx.store, ctx.timezone, saved.node)


def _name_of(saved: SegmentDirectory):  # type: ignore[no-untyped-def]
    def name(segment_id: int) -> str:
        try:
            return repr(saved.get(segment_id).name)
        except Exception:  # noqa: BLE001 - explanation only
            return f"#{segment_id}"
    return name


def evaluate(ctx: PageContext, definition: Any) -> dict[str, Any]:
    """What ``POST /1/segments/evaluate`` answers, for the builder."""
    saved, engine = _engine(ctx)
    node = parse(definition, clock.now())
    return {"count": engine.count(node), "explanation": explain(node, _name_of(saved))}


def _list(ctx: PageContext) -> list[dict[str, Any]]:
    saved, engine = _engine(ctx)
    out = []
    for s in saved.list():
        row = s.to_dict()
        try:
            node = parse(s.definition, clock.now())
            row["count"] = engine.count(node)
            row["explanation"] = explain(node, _name_of(saved))
        except NudgeError as exc:  # e.g. refers to a deleted segment: show why
            row["count"], row["explanation"] = None, str(exc)
        out.append(row)
    return out


def builder_choices(ctx: PageContext) -> dict[str, Any]:
    """What the condition rows offer (``segment_conditions.html``): event names, condition
    types, filter and count operators."""
    return {"events": [e["name"] for e in event_catalog(ctx.store)["events"]],
            "types": TYPES, "ops": OPS, "count_ops": COUNT_OPS}


@router.get("/ui/{account_id}/segments")
@page
async def segments_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    rows = await run_in_threadpool(_list, ctx)
    return render(request, "segments.html", ctx, segments=rows)


@router.get("/ui/{account_id}/segments/new")
@page
async def builder_page(request: Request, account_id: str) -> Response:
    ctx = context(request, account_id)
    choices = await run_in_threadpool(builder_choices, ctx)
    return render(request, "segment_builder.html", ctx, rows=range(3), **choices)


@router.get("/ui/{account_id}/segments/row")
@page
async def builder_row(request: Request, account_id: str) -> Response:
    """One more condition row (the builder's "Add condition")."""
    ctx = context(request, account_id)
    try:
        i = int(request.query_params.get("i", "0"))
    except ValueError:
        i = MAX_ROWS
    if not 0 <= i < MAX_ROWS:
        raise BuilderError(f"i: at most {MAX_ROWS} conditions", field="i")
    choices = await run_in_threadpool(builder_choices, ctx)
    return render(request, "segment_row.html", ctx, i=i, **choices)


@router.post("/ui/{account_id}/segments/reach")
@page
async def builder_reach(request: Request, account_id: str) -> Response:
    """Live reach of the form's definition (htmx, debounced): count, explanation, JSON."""
    ctx = context(request, account_id)
    form = await form_of(request)
    try:
        definition = definition_from_form(form)
        out = await run_in_threadpool(evaluate, ctx, definition)
    except NudgeError as exc:
        if exc.status >= 500:
            raise
        return render(request, "segment_reach.html", ctx, error=str(exc), count=None,
                      explanation="", definition=None)
    return render(request, "segment_reach.html", ctx, error=None, definition=definition, **out)


@router.post("/ui/{account_id}/segments")
@page
async def builder_save(request: Request, account_id: str) -> Response:
    """Save the builder's definition under a name (checked like ``POST /1/segments``)."""
    ctx = context(request, account_id)
    allow(ctx, "segments:write")
    form = await form_of(request)
    definition = definition_from_form(form)
    saved, engine = _engine(ctx)

    def create() -> Any:
        engine.sql(parse(definition, clock.now()))
        return saved.create(form.get("name", "").strip(), definition)

    seg = await run_in_threadpool(create)
    return Response(status_code=204,
                    headers={"HX-Redirect": f"{ctx.base}/segments#segment-{seg.id}"})
