"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from ..context import nudge_of

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> Response:
    """The process is alive."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """Ready to take traffic: control store reachable and startup finished."""
    nudge = nudge_of(request)
    if not nudge.ready:
        return JSONResponse({"status": "starting"}, status_code=503)
    try:
        nudge.accounts.list()
    except Exception:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "control store unavailable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
