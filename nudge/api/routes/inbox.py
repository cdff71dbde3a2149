"""The in-app inbox for client SDKs: ``/1/inbox``.

Who may read an inbox (see docs/api.md, "Inbox"):

- a server with the account passcode (``X-Nudge-Account-Id`` + ``X-Nudge-Passcode``), or a
  dashboard user, with the ``profiles:read`` / ``profiles:write`` permission, for any
  ``identity``;
- a client with the public write key (HTTP basic auth user, ``X-Nudge-Write-Key`` header, or
  ``write_key`` query parameter for EventSource, which cannot set headers) only with the
  ``user_hash`` the customer's server computed: hex HMAC-SHA256(inbox identity secret,
  identity). The write key alone is public and reads nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from nudge.engage.channel_config import ChannelDirectory, channel_directory, user_hash
from nudge.engage.inbox import Inbox
from nudge.errors import AuthError, ValidationError
from nudge.store.account import AccountStore
from nudge.tenancy.sessions import COOKIE as SESSION_COOKIE

from ..context import (
    PASSCODE_HEADERS,
    _header,
    nudge_of,
    passcode_account,
    write_key_account,
)

router = APIRouter(prefix="/1/inbox", tags=["inbox"])
KEEPALIVE_S = 15.0
MAX_LIMIT = 100


@dataclass
class _Reader:
    directory: ChannelDirectory
    account_id: str
    identity: str
    user_id: int | None
    store: AccountStore

    @property
    def inbox(self) -> Inbox:
        return self.directory.inbox

    def resolve(self) -> int | None:
        self.user_id = self.store.user_for("identity", self.identity)
        return self.user_id


def _param(request: Request, header: str, query: str) -> str | None:
    return request.headers.get(header) or request.query_params.get(query) or None


def _reader(request: Request) -> _Reader:
    identity = _param(request, "x-nudge-identity", "identity")
    if not identity or len(identity) > 1024:
        raise ValidationError("identity is required (X-Nudge-Identity header or identity "
                              "query parameter)", field="identity")
    nudge = nudge_of(request)
    directory = channel_directory(nudge)
    if _header(request, PASSCODE_HEADERS) or request.cookies.get(SESSION_COOKIE):
        # an API key (its kind's permissions apply: the write key has none here) or a
        # signed-in dashboard user
        _, account_id, store = passcode_account(request)
    else:
        if not (request.headers.get("authorization")
                or _param(request, "x-nudge-write-key", "write_key")):
            raise AuthError("passcode headers, or the write key with user_hash, are required")
        # the same resolution (basic auth user first) and per-key rate limit as every
        # write-key route
        _, account_id, store = write_key_account(
            request, body_key=_param(request, "x-nudge-write-key", "write_key"))
        given = _param(request, "x-nudge-user-hash", "user_hash")
        if not given:
            raise AuthError("user_hash is required with the write key")
        secret = directory.identity_secret(account_id)
        if not secret:
            raise AuthError("identity verification is not set up for this account "
                            "(PUT /1/channels/inapp)")
        if not hmac.compare_digest(user_hash(secret, identity), given.lower()):
            raise AuthError("user_hash does not match identity")
    reader = _Reader(directory, account_id, identity, None, store)
    return reader


def _int(request: Request, name: str, default: int | None, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        v = int(raw)
    except ValueError:
        raise ValidationError(f"{name} must be an integer", field=name) from None
    if not lo <= v <= hi:
        raise ValidationError(f"{name} must be between {lo} and {hi}", field=name)
    return v


@router.get("")
async def list_inbox(request: Request) -> Response:
    """Newest first: ``{"messages": [...], "unread": n, "next": cursor | null}``."""
    limit = _int(request, "limit", 20, 1, MAX_LIMIT)
    before = _int(request, "before", None, 1, 2**62)
    unread_only = request.query_params.get("unread_only", "false")
    if unread_only not in ("true", "false", "1", "0"):
        raise ValidationError("unread_only must be true or false", field="unread_only")
    r = await run_in_threadpool(_reader, request)
    await run_in_threadpool(r.resolve)
    page = await run_in_threadpool(r.inbox.page, r.account_id, r.user_id, limit=limit or 20,
                                   before=before, unread_only=unread_only in ("true", "1"))
    return JSONResponse({"messages": page.messages, "unread": page.unread,
                         "next": page.next_cursor})


async def _mark(request: Request, message_id: str, state: str) -> Response:
    r = await run_in_threadpool(_reader, request)
    await run_in_threadpool(r.resolve)
    item = await run_in_threadpool(r.inbox.mark, r.account_id, r.user_id, message_id, state)
    unread = await run_in_threadpool(r.inbox.unread, r.account_id, r.user_id)
    return JSONResponse({"message": item, "unread": unread})


@router.post("/{message_id}/read")
async def read(request: Request, message_id: str) -> Response:
    return await _mark(request, message_id, "read")


@router.post("/{message_id}/dismiss")
async def dismiss(request: Request, message_id: str) -> Response:
    return await _mark(request, message_id, "dismiss")


def _sse(event: str, data: object, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@router.get("/stream")
async def stream(request: Request) -> Response:
    """Server-Sent Events: ``ready`` (unread count) on connect, then one ``message`` event per
    new inbox message (``id:`` is its ``seq``; reconnecting with ``Last-Event-ID`` resumes
    after it), and ``: keepalive`` comments."""
    r = await run_in_threadpool(_reader, request)
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if last_id is not None and not last_id.isdigit():
        raise ValidationError("Last-Event-ID must be a message seq", field="last_event_id")
    await run_in_threadpool(r.resolve)
    start = (int(last_id) if last_id is not None
             else await run_in_threadpool(r.inbox.last_seq, r.account_id, r.user_id))
    unread = await run_in_threadpool(r.inbox.unread, r.account_id, r.user_id)
    return StreamingResponse(_events(request, r, start, unread), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(request: Request, r: _Reader, last: int, unread: int) -> AsyncIterator[str]:
    yield "retry: 2000\n" + _sse("ready", {"unread": unread})
    while r.user_id is None:  # a profile not created yet: wait for its first message
        await asyncio.sleep(1.0)
        if await request.is_disconnected():
            return
        await run_in_threadpool(r.resolve)
    with r.inbox.listen(r.account_id, r.user_id) as wake:
        while not await request.is_disconnected():
            wake.clear()  # before reading, so a message added meanwhile wakes us again
            for item in await run_in_threadpool(r.inbox.since, r.account_id, r.user_id, last):
                last = item["seq"]
                yield _sse("message", item, last)
            try:
                # Woken by this process's writes at once, by other processes' within the
                # inbox watcher's poll; the timeout is only the keepalive (and a safety net).
                await asyncio.wait_for(wake.wait(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ": keepalive\n\n"
