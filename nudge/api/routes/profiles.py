"""Profile reads, the event timeline, explicit merges, and the event catalog."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.clock import clock
from nudge.errors import NotFound, ValidationError
from nudge.ingest.records import Record
from nudge.ingest.upload import normalize_identifier
from nudge.query.profiles import LOOKUP_KEYS, event_catalog, find_user, profile_view, timeline

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(tags=["profiles"])


def _float(request: Request, name: str) -> float | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValidationError(f"{name} must be epoch seconds", field=name) from None


@router.get("/1/profile")
async def get_profile(request: Request) -> Response:
    """The unified profile found by ``identity``, ``email``, ``phone`` or ``objectId``."""
    _, _, store = passcode_account(request)

    def read() -> dict[str, Any]:
        with store.read_position():  # one wait for the writes acknowledged before this read
            return profile_view(store, find_user(store, dict(request.query_params)))

    return JSONResponse({"status": "success", "profile": await run_in_threadpool(read)})


@router.get("/1/profile/events")
async def get_profile_events(request: Request) -> Response:
    """A person's events, newest first: ``from``/``to`` (epoch s), ``limit``, ``cursor``."""
    _, _, store = passcode_account(request)
    q = request.query_params
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        raise ValidationError("limit must be an integer", field="limit") from None
    since, until = _float(request, "from"), _float(request, "to")

    def read() -> dict[str, Any]:
        with store.read_position():
            uid = find_user(store, {k: v for k, v in q.items() if k in LOOKUP_KEYS})
            return timeline(store, uid, since=since, until=until, limit=limit,
                            cursor=q.get("cursor"), event=q.get("event"))

    return JSONResponse({"status": "success", **await run_in_threadpool(read)})


@router.get("/1/events/catalog")
async def get_event_catalog(request: Request) -> Response:
    """Event names with counts and their discovered property schema."""
    _, _, store = passcode_account(request)
    return JSONResponse({"status": "success", **await run_in_threadpool(event_catalog, store)})


def _identifier(body: dict[str, Any], key: str) -> tuple[str, str]:
    ref = body.get(key)
    if not isinstance(ref, dict) or len(ref) != 1:
        raise ValidationError(f'{key} must be an object with one identifier, e.g. '
                              '{"identity": "u1"}', field=key)
    (wire, value), = ref.items()
    if wire not in LOOKUP_KEYS or not isinstance(value, str) or not value:
        raise ValidationError(f"{key} must name identity, email, phone or objectId", field=key)
    kind = LOOKUP_KEYS[wire]
    return kind, normalize_identifier(kind, value)


@router.post("/1/profiles/merge")
async def merge_profiles(request: Request) -> Response:
    """Explicitly merge profile ``from`` into profile ``into`` (``into`` wins)."""
    _, _, store = passcode_account(request)
    body = await read_body(request)
    if not isinstance(body, dict):
        raise ValidationError("body must be an object", field="body")
    src, dst = _identifier(body, "from"), _identifier(body, "into")
    uids = await asyncio.gather(*(run_in_threadpool(store.user_for, *k) for k in (src, dst)))
    if None in uids:
        raise NotFound("no such profile")
    if uids[0] == uids[1]:
        raise ValidationError("from and into are the same profile", field="from")
    rec = Record(kind="profile", ids=dict([dst]), ts=clock.now(),
                 message_id=f"merge:{uids[0]}:{uids[1]}:{clock.now()}", merge_from=[src])
    result = await store.submit([rec])
    if result.errors[0] is not None:
        raise ValidationError(result.errors[0].error, field="into")
    return JSONResponse({"status": "success", "merged": uids[0], "into": uids[1]})
