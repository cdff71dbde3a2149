"""Journeys: ``/1/journeys`` CRUD, lifecycle, validate, report, a user's path, API entry.
Shapes: docs/journeys.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.errors import Conflict, ValidationError
from nudge.journeys.directory import JourneyDirectory
from nudge.journeys.engine import JourneyEngine
from nudge.journeys.model import json_schema, parse
from nudge.journeys.report import journey_report, user_path
from nudge.journeys.validate import JourneyInvalid, problems
from nudge.query.profiles import find_user

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(tags=["journeys"])
LOOKUPS = ("identity", "email", "phone", "objectId")
MAX_API_ENTRIES = 1000


class _Ctx:
    def __init__(self, request: Request) -> None:
        self.nudge, self.account_id, self.store = passcode_account(request)
        self.engine: JourneyEngine = request.app.state.journeys
        self.journeys = JourneyDirectory(self.engine.engine, self.account_id)

    def changed(self) -> None:
        self.engine.invalidate(self.account_id)


async def _body(request: Request) -> dict[str, Any]:
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    return body


def _user(ctx: _Ctx, who: Any, field: str) -> int:
    if not isinstance(who, dict) or not any(k in who for k in LOOKUPS):
        raise ValidationError(f"{field} must be an object naming one of {', '.join(LOOKUPS)}",
                              field=field)
    try:
        return find_user(ctx.store, {k: str(v) for k, v in who.items() if k in LOOKUPS})
    except ValidationError as e:
        raise ValidationError(f"{field}: {e.message}", field=field) from None


@router.get("/1/journeys/schema")
async def schema(request: Request) -> Response:
    """The published JSON Schema of a journey definition."""
    _Ctx(request)
    return JSONResponse(json_schema())


@router.post("/1/journeys/validate")
async def validate_route(request: Request) -> Response:
    """Check a definition without saving: ``{"valid": true}`` or 400 with every problem."""
    _Ctx(request)
    body = await _body(request)
    j = parse(body)
    ps = problems(j)
    if ps:
        p = ps[0]
        raise JourneyInvalid(ps, f"{p.field}: node {p.node!r}: {p.reason}", field=p.field)
    return JSONResponse({"valid": True, "nodes": len(j.nodes)})


@router.post("/1/journeys", status_code=201)
async def create(request: Request) -> Response:
    ctx = _Ctx(request)
    out = await run_in_threadpool(ctx.journeys.create, await _body(request))
    return JSONResponse(out, status_code=201)


@router.get("/1/journeys")
async def list_journeys(request: Request) -> Response:
    ctx = _Ctx(request)
    out = await run_in_threadpool(ctx.journeys.list, request.query_params.get("status"))
    return JSONResponse({"journeys": out})


@router.get("/1/journeys/{journey_id}")
async def get(journey_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse(await run_in_threadpool(ctx.journeys.get, journey_id))


@router.get("/1/journeys/{journey_id}/versions/{version}")
async def get_version(journey_id: int, version: int, request: Request) -> Response:
    ctx = _Ctx(request)
    return JSONResponse(await run_in_threadpool(ctx.journeys.version, journey_id, version))


@router.put("/1/journeys/{journey_id}")
async def update(journey_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    out = await run_in_threadpool(ctx.journeys.update, journey_id, await _body(request))
    return JSONResponse(out)


@router.delete("/1/journeys/{journey_id}")
async def delete(journey_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.journeys.delete, journey_id)
    ctx.changed()
    return JSONResponse({"deleted": journey_id})


async def _transition(request: Request, journey_id: int, name: str) -> Response:
    ctx = _Ctx(request)
    out = await run_in_threadpool(getattr(ctx.journeys, name), journey_id)
    ctx.changed()
    return JSONResponse(out)


@router.post("/1/journeys/{journey_id}/publish")
async def publish(journey_id: int, request: Request) -> Response:
    """Freeze the draft as a new version; new entries use it."""
    return await _transition(request, journey_id, "publish")


@router.post("/1/journeys/{journey_id}/pause")
async def pause(journey_id: int, request: Request) -> Response:
    return await _transition(request, journey_id, "pause")


@router.post("/1/journeys/{journey_id}/resume")
async def resume(journey_id: int, request: Request) -> Response:
    return await _transition(request, journey_id, "resume")


@router.post("/1/journeys/{journey_id}/stop")
async def stop(journey_id: int, request: Request) -> Response:
    return await _transition(request, journey_id, "stop")


@router.get("/1/journeys/{journey_id}/report")
async def report(journey_id: int, request: Request) -> Response:
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.journeys.get, journey_id)
    return JSONResponse(await run_in_threadpool(journey_report, ctx.engine.engine, journey_id))


@router.get("/1/journeys/{journey_id}/users")
async def path(journey_id: int, request: Request) -> Response:
    """One person's entries and steps: ``?identity=`` (or email, phone, objectId)."""
    ctx = _Ctx(request)
    await run_in_threadpool(ctx.journeys.get, journey_id)
    uid = await run_in_threadpool(_user, ctx, dict(request.query_params), "query")
    entries = await run_in_threadpool(user_path, ctx.engine.engine, journey_id, uid)
    return JSONResponse({"journey_id": journey_id, "user_id": uid, "entries": entries})


@router.post("/1/journeys/{journey_id}/enter")
async def enter(journey_id: int, request: Request) -> Response:
    """API entry: ``{"to": [{"identity": ...}], "data"?, "request_id"?}`` (202)."""
    ctx = _Ctx(request)
    body = await _body(request)
    j = await run_in_threadpool(ctx.journeys.get, journey_id)
    if j["status"] != "published":
        raise Conflict(f"a {j['status']} journey takes no entries")
    to = body.get("to")
    if not isinstance(to, list) or not to or len(to) > MAX_API_ENTRIES:
        raise ValidationError(f"to must be a list of 1 to {MAX_API_ENTRIES} people", field="to")
    data = body.get("data")
    if data is not None and not isinstance(data, dict):
        raise ValidationError("data must be an object", field="data")
    rid = body.get("request_id")
    if rid is not None and (not isinstance(rid, str) or not rid or len(rid) > 100):
        raise ValidationError("request_id must be a string of 1 to 100 characters",
                              field="request_id")
    uids = [await run_in_threadpool(_user, ctx, w, f"to[{i}]") for i, w in enumerate(to)]
    people = [(u, f"a:{rid}:{u}" if rid else f"a:{request_id(u)}", data) for u in uids]
    n = await run_in_threadpool(ctx.engine.enter, ctx.account_id, journey_id, j["version"],
                                people)
    return JSONResponse({"entered": n, "requested": len(uids)}, status_code=202)


def request_id(uid: int) -> str:
    import uuid

    return f"{uid}:{uuid.uuid4().hex}"
