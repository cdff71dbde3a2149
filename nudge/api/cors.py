"""CORS for the endpoints browsers call directly: the Segment-spec ingest (``/v1/*``), the
web SDK files (``/sdk/*``) and the app inbox (``/1/inbox*``, write key + user hash).

Write keys are public by design (they ship inside web pages), so these endpoints answer any
origin unless ``NUDGE_CORS_ORIGINS`` lists the allowed ones. The passcode API (``/1/*``)
gets no CORS headers, and ``X-Nudge-Passcode`` is not an allowed header, so the inbox's
passcode form stays server-only too: a passcode must never live in a browser. Starlette's
CORS middleware does the protocol work; this only scopes it to the browser-facing paths.
"""

from __future__ import annotations

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from nudge.errors import ConfigError

BROWSER_PATHS = ("/v1/", "/sdk/", "/1/inbox")


def parse_origins(origins: str) -> list[str]:
    """``NUDGE_CORS_ORIGINS``: ``*`` or comma-separated ``scheme://host[:port]`` origins."""
    allowed = [o.strip().rstrip("/") for o in origins.split(",") if o.strip()]
    for o in allowed:
        scheme, sep, rest = o.partition("://")
        if o != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise ConfigError(f"NUDGE_CORS_ORIGINS: {o!r} is not an origin like "
                              "https://shop.example.com (scheme, host, optional port)")
    return allowed or ["*"]


class BrowserCORS:
    """Apply CORS (preflight and response headers) to :data:`BROWSER_PATHS` only."""

    def __init__(self, app: ASGIApp, origins: str = "*") -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=parse_origins(origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            # Segment-style clients send basic auth and may gzip their bodies; inbox
            # clients may name themselves in headers instead of query parameters.
            allow_headers=["Authorization", "Content-Type", "Content-Encoding",
                           "X-Nudge-Write-Key", "X-Nudge-Identity", "X-Nudge-User-Hash",
                           "Last-Event-ID"],
            expose_headers=["Retry-After"],
            max_age=86400,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(BROWSER_PATHS):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
