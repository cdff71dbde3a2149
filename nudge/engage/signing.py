"""HMAC-SHA256 request signing for everything Nudge POSTs to customers' URLs.

Webhook channel messages and outbound event webhooks carry two headers:

- ``X-Nudge-Timestamp``: Unix seconds when the request was signed;
- ``X-Nudge-Signature``: ``v1=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>``.

A receiver recomputes the HMAC over the *raw* body bytes it received (before any JSON
parsing), compares in constant time, and refuses timestamps further than its replay window
(default 5 minutes) from its own clock, so a captured request cannot be replayed later.
During secret rotation the signature header may hold several ``v1=`` values separated by
commas; any one matching is enough.

Example (receiver side)::

    verify(secret, request.headers["X-Nudge-Timestamp"],
           request.headers["X-Nudge-Signature"], raw_body)   # raises SignatureError
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Nudge-Timestamp"
SIGNATURE_HEADER = "X-Nudge-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class SignatureError(Exception):
    """The signature is missing, malformed, wrong, or outside the replay window."""


def _as_bytes(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def signature(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The hex HMAC-SHA256 over ``f"{timestamp}." + body``."""
    msg = str(timestamp).encode() + b"." + body
    return hmac.new(_as_bytes(secret), msg, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers to send with ``body``: timestamp and ``v1=`` signature."""
    ts = int(time.time() if now is None else now)
    return {TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: f"{SCHEME}={signature(secret, ts, body)}"}


def verify(secret: str | bytes, timestamp: str | None, header: str | None, body: bytes,
           *, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> None:
    """Raise :class:`SignatureError` unless ``header`` signs ``body`` at ``timestamp`` and the
    timestamp is within ``tolerance_s`` of ``now``."""
    if not timestamp or not header:
        raise SignatureError("missing timestamp or signature header")
    try:
        ts = int(timestamp)
    except ValueError:
        raise SignatureError("timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError("timestamp outside the replay window")
    expected = signature(secret, ts, body)
    candidates = [p.strip()[len(SCHEME) + 1:] for p in header.split(",")
                  if p.strip().startswith(SCHEME + "=")]
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
