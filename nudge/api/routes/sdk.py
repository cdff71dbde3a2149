"""The web SDK files, served to browsers: ``/sdk/nudge.js`` and ``/sdk/nudge.mjs``.

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
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import Response

from nudge.errors import NotFound

SDK_DIR = Path(__file__).resolve().parents[3] / "sdks" / "js"
CACHE_CONTROL = "public, max-age=3600"
CONTENT_TYPE = "text/javascript; charset=utf-8"  # RFC 9239

router = APIRouter(tags=["sdk"])

_UMD_END = "})(typeof self !== 'undefined' ? self : this, function (root) {\n"
_ESM_EXPORTS = ("init", "track", "identify", "page", "alias", "reset", "optOut", "optIn",
                "isOptedOut", "flush", "anonymousId", "userId", "queueInfo")


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
            + f"export const {{ {', '.join(_ESM_EXPORTS)} }} = nudge;\n")


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes
    etag: str


@cache
def asset(name: str) -> Asset:
    umd = (SDK_DIR / "nudge.js").read_text(encoding="utf-8")
    text = umd if name == "nudge.js" else esm_source(umd)
    body = text.encode()
    return Asset(body, gzip.compress(body, 9, mtime=0),
                 '"' + hashlib.sha256(body).hexdigest()[:32] + '"')


def _serve(request: Request, name: str) -> Response:
    if not (SDK_DIR / "nudge.js").is_file():
        raise NotFound("the web SDK is not installed next to this server (sdks/js/nudge.js)")
    a = asset(name)
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": a.etag, "Vary": "Accept-Encoding"}
    wanted = request.headers.get("if-none-match", "").split(",")
    if a.etag in [t.strip().removeprefix("W/") for t in wanted]:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(a.gzipped, media_type=CONTENT_TYPE, headers=headers)
    return Response(a.body, media_type=CONTENT_TYPE, headers=headers)


@router.get("/sdk/nudge.js")
async def nudge_js(request: Request) -> Response:
    """The web SDK as a classic script (``<script src>``; also a CommonJS module)."""
    return _serve(request, "nudge.js")


@router.get("/sdk/nudge.mjs")
async def nudge_mjs(request: Request) -> Response:
    """The web SDK as an ES module (``import nudge from ".../sdk/nudge.mjs"``)."""
    return _serve(request, "nudge.mjs")


if __name__ == "__main__":
    out = SDK_DIR / "nudge.mjs"
    out.write_text(esm_source((SDK_DIR / "nudge.js").read_text(encoding="utf-8")),
                   encoding="utf-8")
    sys.stdout.write(f"wrote {out}\n")
