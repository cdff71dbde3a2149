"""GDPR requests: ``/1/gdpr/access``, ``/1/gdpr/erase``, ``/1/gdpr/suppress``,
``/1/gdpr/unsuppress`` and the receipts ``/1/gdpr/requests/{request_id}``.

Each takes ``{"subjects": [{"email": ...}, {"identity": ...}, {"user_id": ...}]}`` and
answers when the request is complete (docs/privacy.md).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.privacy import suppression
from nudge.privacy.gdpr import GdprRequests, Subject, get_request, parse_subjects

from ..context import Nudge, passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/gdpr", tags=["gdpr"])
suppression.register_with_policy()  # every channel refuses suppressed people


async def _prepare(request: Request) -> tuple[Nudge, GdprRequests, list[Subject], str]:
    nudge, account_id, store = passcode_account(request)
    subjects = parse_subjects(await read_body(request))
    caller = getattr(request.state, "caller", None)
    actor = getattr(caller, "principal", None) or "passcode"
    service = GdprRequests(nudge.accounts.engine, nudge.keyring, store,
                           nudge.accounts.get(account_id).timezone)
    return nudge, service, subjects, actor


def _json(body: dict[str, Any]) -> Response:
    return JSONResponse({"status": "success", **body})


@router.post("/access")
async def access(request: Request) -> Response:
    """A complete machine-readable export of each person named."""
    _, service, subjects, actor = await _prepare(request)
    return _json(await run_in_threadpool(service.access, subjects, actor))


@router.post("/erase")
async def erase(request: Request) -> Response:
    """Delete each person everywhere; returns when nothing can see them any more."""
    _, service, subjects, actor = await _prepare(request)
    return _json(await run_in_threadpool(service.erase, subjects, actor))


@router.post("/suppress")
async def suppress(request: Request) -> Response:
    """Keep each person but drop their events and refuse every channel to them."""
    _, service, subjects, actor = await _prepare(request)
    return _json(await run_in_threadpool(service.suppress, subjects, actor))


@router.post("/unsuppress")
async def unsuppress(request: Request) -> Response:
    """Lift suppression."""
    _, service, subjects, actor = await _prepare(request)
    return _json(await run_in_threadpool(service.suppress, subjects, actor, True))


@router.get("/requests/{request_id}")
async def receipt(request_id: str, request: Request) -> Response:
    """The receipt of an earlier request of this account."""
    nudge, account_id, _ = passcode_account(request)
    return _json(await run_in_threadpool(get_request, nudge.accounts.engine, account_id,
                                         request_id, nudge.keyring))
