"""Provider configuration per channel: ``/1/channels`` (server passcode only).

``PUT /1/channels/{channel}`` validates by building the channel and stores the configuration
sealed; ``GET`` never returns secret fields, only which are set.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.engage.channel_config import ChannelDirectory, channel_directory

from ..context import passcode_account
from .ingest import read_body

router = APIRouter(prefix="/1/channels", tags=["channels"])


def _directory(request: Request) -> tuple[ChannelDirectory, str]:
    nudge, account_id, _ = passcode_account(request)
    return channel_directory(nudge), account_id


@router.get("")
async def list_channels(request: Request) -> Response:
    directory, account_id = _directory(request)
    views = await run_in_threadpool(directory.views, account_id)
    return JSONResponse({"channels": views})


@router.get("/{channel}")
async def get_channel(request: Request, channel: str) -> Response:
    directory, account_id = _directory(request)
    views = await run_in_threadpool(directory.views, account_id, channel)
    return JSONResponse({"channel": channel, "providers": views})


@router.put("/{channel}")
async def put_channel(request: Request, channel: str) -> Response:
    directory, account_id = _directory(request)
    body: Any = await read_body(request)
    view = await run_in_threadpool(directory.put, account_id, channel, body)
    return JSONResponse(view)


@router.delete("/{channel}")
async def delete_channel(request: Request, channel: str) -> Response:
    directory, account_id = _directory(request)
    provider = request.query_params.get("provider")
    n = await run_in_threadpool(directory.delete, account_id, channel, provider)
    return JSONResponse({"deleted": n})
