"""What the provider channels share: reading their configuration, talking HTTP, and turning
HTTP answers into outcomes.

Configuration errors are ``ValidationError`` with ``field="config.<name>"`` and never echo a
value (values are often secrets).
"""

from __future__ import annotations

import email.utils
import ssl
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx

from nudge.errors import ValidationError

from .base import SendResult
from .netguard import AddressRefused

DEFAULT_TIMEOUT_S = 10.0
MAX_RETRY_AFTER_S = 24 * 3600.0


class ProviderConfig:
    """Typed access to one channel's configuration dict, with field-named errors.

    Example::

        cfg = ProviderConfig(config, allowed={"base_url", "token"})
        token = cfg.text("token")
        base = cfg.url("base_url", "https://api.example.com")
    """

    def __init__(self, config: Any, allowed: Iterable[str]) -> None:
        if not isinstance(config, dict):
            raise ValidationError("config must be an object", field="config")
        allowed = set(allowed) | {"rate_per_second"}
        unknown = sorted(set(config) - allowed)
        if unknown:
            raise ValidationError(f"unknown field {unknown[0]!r}; allowed: {sorted(allowed)}",
                                  field=f"config.{unknown[0]}")
        self.raw = config
        if config.get("rate_per_second") is not None:
            self.number("rate_per_second", 1, 0.01, 1_000_000)

    def _err(self, name: str, why: str) -> ValidationError:
        return ValidationError(f"config.{name} {why}", field=f"config.{name}")

    def text(self, name: str, default: str | None = None, *, required: bool = True,
            max_len: int = 20_000) -> str | None:
        v = self.raw.get(name)
        if v is None or v == "":
            if default is None and required:
                raise self._err(name, "is required")
            return default
        if not isinstance(v, str) or len(v) > max_len:
            raise self._err(name, f"must be a string of at most {max_len} characters")
        return v

    def req(self, name: str, max_len: int = 20_000) -> str:
        v = self.text(name, max_len=max_len)
        assert v is not None
        return v

    def url(self, name: str, default: str | None = None, *, required: bool = True) -> str | None:
        v = self.text(name, default, required=required, max_len=2000)
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise self._err(name, "must be an http(s) URL")
        return v.rstrip("/")

    def number(self, name: str, default: float, lo: float, hi: float) -> float:
        v = self.raw.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self._err(name, f"must be a number between {lo} and {hi}")
        return float(v)

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.raw.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self._err(name, f"must be an integer between {lo} and {hi}")
        return v

    def flag(self, name: str, default: bool) -> bool:
        v = self.raw.get(name, default)
        if not isinstance(v, bool):
            raise self._err(name, "must be true or false")
        return v

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        v = self.raw.get(name, default)
        if v not in choices:
            raise self._err(name, f"must be one of {list(choices)}")
        return str(v)

    def obj(self, name: str) -> dict[str, Any]:
        v = self.raw.get(name)
        if not isinstance(v, dict):
            raise self._err(name, "must be an object")
        return v

    def timeout(self) -> float:
        return self.number("timeout_s", DEFAULT_TIMEOUT_S, 0.05, 120)

    def tls_context(self) -> ssl.SSLContext | bool:
        """``ca_pem`` (a PEM bundle to trust instead of the system store, e.g. a private
        relay's CA) or the system store."""
        pem = self.text("ca_pem", required=False, max_len=200_000)
        if pem is None:
            return True
        try:
            return ssl.create_default_context(cadata=pem)
        except ssl.SSLError:
            raise self._err("ca_pem", "is not a valid PEM certificate bundle") from None


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        secs = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        secs = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(secs, MAX_RETRY_AFTER_S))


def by_status(resp: httpx.Response, error: str | None = None) -> SendResult:
    """The generic mapping: 2xx sent; 408, 425, 429 and 5xx retry; other 4xx rejected."""
    code = resp.status_code
    if 200 <= code < 300:
        return SendResult("sent", status_code=code)
    reason = error or f"HTTP {code}"
    if code in (408, 425, 429) or code >= 500:
        return SendResult("retry", retry_after=retry_after(resp.headers.get("retry-after")),
                          error=reason, status_code=code)
    return SendResult("rejected", error=reason, status_code=code)


def transport_failure(exc: httpx.HTTPError) -> SendResult:
    """Timeouts and connection errors are transient: retry. A connection the SSRF guard
    refused (netguard.py) is not: rejected, with the reason."""
    if isinstance(exc.__cause__, AddressRefused):
        return SendResult("rejected", error=short(str(exc.__cause__), 300))
    kind = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection error"
    return SendResult("retry", error=f"{kind}: {type(exc).__name__}")


def json_or_empty(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def short(text: Any, limit: int = 200) -> str:
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "…"
