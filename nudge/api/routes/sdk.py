"""The web SDK for browsers: its files under ``/sdk/`` and the web push registration.

- ``/sdk/nudge.js`` (core), ``/sdk/nudge.mjs`` (the core as an ES module),
  ``/sdk/nudge-messages.js`` (in-app messages, inbox widget, web push),
  ``/sdk/nudge-sw.js`` (the push service worker, to be hosted on the customer's origin or
  pulled in with ``importScripts``);
- ``GET /sdk/webpush-key?write_key=`` the account's VAPID public key;
- ``POST /v1/webpush`` a browser's push subscription, attached to the visitor's profile as a
  ``webpush`` token (write key auth, like the Segment endpoints).

The source of truth is ``sdks/js/nudge.js`` (a classic script that is also a CommonJS
module). The ES module ``nudge.mjs`` is derived from it mechanically (:func:`esm_source`),
so the two cannot drift; ``python -m nudge.api.routes.sdk`` rewrites the copy in
``sdks/js/`` that the npm package ships.

Responses carry a strong ETag (a conditional request gets 304), a short public cache
lifetime (a page picks up a new SDK within the hour) and, when the client accepts it, a
gzip body compressed once at first use.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from nudge.clock import clock
from nudge.engage.channel_config import channel_directory
from nudge.engage.channels.webpush import WebPushChannel, parse_subscription
from nudge.errors import NotFound, ValidationError
from nudge.ingest.records import RecordInvalid
from nudge.ingest.upload import parse_record

from ..context import write_key_account
from .ingest import read_body, store_records

SDK_DIR = Path(__file__).resolve().parents[3] / "sdks" / "js"
CACHE_CONTROL = "public, max-age=3600"
CONTENT_TYPE = "text/javascript; charset=utf-8"  # RFC 9239

router = APIRouter(tags=["sdk"])

_UMD_END = "})(typeof self !== 'undefined' ? self : this, function (root) {\n"
ESM_EXPORTS = ("init", "track", "identify", "page", "alias", "reset", "optOut", "optIn",
                "isOptedOut", "flush", "anonymousId", "userId", "config", "queueInfo")


def esm_source(umd: str) -> str:
    """The ES module form of the UMD script: the same factory, called once and exported."""
    head, sep, rest = umd.partition(_UMD_END)
    if not sep or not rest.rstrip().endswith("});"):
        raise ValueError("sdks/js/nudge.js no longer has the expected UMD wrapper")
    comments = [line for line in head.splitlines(keepends=True) if line.startswith(("/*!", "//"))]
    body = rest.rstrip()[: -len("});")]
    return ("".join(comments)
            + "// Generated from nudge.js by `python -m nudge.api.routes.sdk`; do not edit.\n"
            + "const nudge = (function (root) {\n" + body
            + "})(typeof self !== 'undefined' ? self : globalThis);\n"
            + "export default nudge;\n"
            + f"export const {{ {', '.join(ESM_EXPORTS)} }} = nudge;\n")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str


FILES = ("nudge.js", "nudge.mjs", "nudge-messages.js", "nudge-sw.js")


@cache
def asset(name: str) -> Asset:
    if name == "nudge.mjs":
        text = esm_source((SDK_DIR / "nudge.js").read_text(encoding="utf-8"))
    else:
        text = (SDK_DIR / name).read_text(encoding="utf-8")
    body = text.encode()
    return Asset(body, gzip.compress(body, 9, mtime=0),
                 '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str) -> Response:
    source = "nudge.js" if name == "nudge.mjs" else name
    if not (SDK_DIR / source).is_file():
        raise NotFound(f"the web SDK is not installed next to this server (sdks/js/{source})")
    a = asset(name)
    gzipped = "gzip" in request.headers.get("accept-encoding", "")
    # A strong ETag names one representation, so the gzip body has its own.
    etag = a.etag[:-1] + '-gz"' if gzipped else a.etag
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": etag, "Vary": "Accept-Encoding"}
    wanted = request.headers.get("if-none-match", "").split(",")
    if etag in [t.strip().removeprefix("W/") for t in wanted]:
        return Response(status_code=304, headers=headers)
    if gzipped:
        headers["Content-Encoding"] = "gzip"
        return Response(a.gzipped, media_type=CONTENT_TYPE, headers=headers)
    return Response(a.body, media_type=CONTENT_TYPE, headers=headers)


@router.get("/sdk/webpush-key")
async def webpush_key(request: Request) -> Response:
    """``{"vapid_public_key": ...}``: the browser's ``applicationServerKey`` (public)."""
    nudge, account_id, _ = write_key_account(request, request.query_params.get("write_key"))

    def key() -> str:
        config = channel_directory(nudge).config(account_id, "webpush")
        if config is None:
            raise NotFound("web push is not configured for this account (PUT /1/channels/webpush)")
        return WebPushChannel.from_config(config).public_key()

    return JSONResponse({"vapid_public_key": await run_in_threadpool(key)})


@router.post("/v1/webpush")
async def webpush_subscribe(request: Request) -> Response:
    """A browser's push subscription: ``{"subscription": {"endpoint", "keys": {"p256dh",
    "auth"}}, "anonymousId"?, "userId"?, "writeKey"?}``; at least one of the ids. The
    subscription becomes the profile's ``webpush`` token (moving from any other profile)."""
    data = await read_body(request)
    body_key = data.get("writeKey") if isinstance(data, dict) else None
    nudge, account_id, store = write_key_account(request, body_key)
    if not isinstance(data, dict):
        raise ValidationError("body must be an object", field="subscription")
    try:
        sub = parse_subscription(json.dumps(data.get("subscription")))
    except ValueError as e:
        raise ValidationError(f"subscription: {e}", field="subscription") from None
    if urlsplit(sub["endpoint"]).scheme not in ("https", "http"):
        raise ValidationError("subscription.endpoint must be an http(s) URL",
                              field="subscription.endpoint")
    item: dict[str, object] = {"type": "token", "tokenData": {
        "type": "webpush", "id": {"endpoint": sub["endpoint"], "keys": {
            "p256dh": sub["keys"]["p256dh"], "auth": sub["keys"]["auth"]}}}}
    for wire, key in (("userId", "identity"), ("anonymousId", "objectId")):
        if data.get(wire) not in (None, ""):
            item[key] = data[wire]
    try:
        record = parse_record(item, 0, clock.now(), nudge.settings.limits)
    except RecordInvalid as e:
        raise ValidationError(e.error, field="subscription") from None
    with nudge.admit(account_id):
        result = await store_records(store, [record], [])
    if result.errors:
        raise ValidationError(result.errors[0].error, field=str(result.errors[0].code))
    return JSONResponse({"success": True})


@router.get("/sdk/{name}")
async def sdk_file(request: Request, name: str) -> Response:
    """One of the SDK files: ``nudge.js`` (classic script, also CommonJS), ``nudge.mjs``
    (ES module), ``nudge-messages.js``, ``nudge-sw.js``."""
    # Declared after /sdk/webpush-key, which it would otherwise shadow.
    if name not in FILES:
        raise NotFound(f"no SDK file {name!r}; there are {', '.join(FILES)}")
    return _serve(request, name)


if __name__ == "__main__":
    out = SDK_DIR / "nudge.mjs"
    out.write_text(esm_source((SDK_DIR / "nudge.js").read_text(encoding="utf-8")),
                   encoding="utf-8")
    sys.stdout.write(f"wrote {out}\n")
