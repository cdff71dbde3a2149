"""HTTP delivery of one upload request, with retries.

Transient failures (429, 5xx, connection errors, timeouts) are retried with exponential
backoff and full jitter; a ``Retry-After`` header is honoured as a lower bound. The body is
sent unchanged on every attempt, so each record keeps its ``msgId`` and the server
deduplicates a record whose earlier attempt was stored but not acknowledged.
"""

from __future__ import annotations

import email.utils
import gzip
import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from nudge_sdk._version import __version__
from nudge_sdk.errors import NO_RESPONSE

logger = logging.getLogger("nudge_sdk")

UPLOAD_PATH = "/1/upload"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One entry of the response's ``unprocessed`` list."""

    index: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class UploadResult:
    """The outcome of one request: delivered (``status == 200``) or failed."""

    status: int  # HTTP status of the last attempt; NO_RESPONSE if there was none
    message: str = ""
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def delivered(self) -> bool:
        return self.status == 200


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry a transient failure."""

    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After beyond this is treated as this: a misconfigured header must not stall
    # the sending thread for hours.
    max_retry_after: float = 300.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based).

        Full jitter (uniform in 0..min(max_delay, base_delay * 2**retry)) spreads out clients
        that failed together; the server's Retry-After, when given, is a lower bound.
        """
        ceiling = min(self.max_delay, self.base_delay * (2**retry))
        jittered = random.uniform(0, ceiling)
        if retry_after is None:
            return jittered
        return max(min(retry_after, self.max_retry_after), jittered)


class Transport:
    """Posts upload bodies to one Nudge server for one account."""

    def __init__(
        self,
        host: str,
        account_id: str,
        passcode: str,
        *,
        gzip: bool = True,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._host = host.rstrip("/")
        self._url = self._host + UPLOAD_PATH
        self._gzip = gzip
        self._retry = retry or RetryPolicy()
        self._http = httpx.Client(
            timeout=timeout,
            headers={
                "X-Nudge-Account-Id": account_id,
                "X-Nudge-Passcode": passcode,
                "Content-Type": "application/json",
                "User-Agent": f"nudge-sdk-python/{__version__}",
            },
        )

    def close(self) -> None:
        self._http.close()

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        """One GET of ``path`` on the server (not retried: the caller decides)."""
        return self._http.get(self._host + path, params=params)

    def upload(self, body: bytes, abort: threading.Event | None = None) -> UploadResult:
        """Send one ``{"d": [...]}`` body, retrying transient failures.

        ``abort`` cuts retries short (used when the client is closed with a timeout).
        """
        abort = abort or threading.Event()
        content, headers = self._encode(body)
        retry = 0
        while True:
            result, retry_after = self._attempt(content, headers)
            if not _is_transient(result.status) or retry >= self._retry.max_retries:
                return result
            delay = self._retry.delay(retry, retry_after)
            logger.info("nudge upload failed (%s: %s); retry %d in %.2fs", result.status,
                        result.message, retry + 1, delay)
            if abort.wait(delay):
                return UploadResult(result.status, result.message + " (gave up: client closed)")
            retry += 1

    def _encode(self, body: bytes) -> tuple[bytes, dict[str, str]]:
        if not self._gzip:
            return body, {}
        # mtime=0 keeps the bytes identical across attempts and runs.
        return gzip.compress(body, compresslevel=6, mtime=0), {"Content-Encoding": "gzip"}

    def _attempt(
        self, content: bytes, headers: dict[str, str]
    ) -> tuple[UploadResult, float | None]:
        """One POST; returns the result and the server's Retry-After, if any."""
        try:
            response = self._http.post(self._url, content=content, headers=headers)
        except httpx.TransportError as exc:
            # Connection refused/reset, timeouts, protocol errors: all worth retrying.
            return UploadResult(NO_RESPONSE, f"{type(exc).__name__}: {exc}"), None
        if response.status_code == 200:
            return _parse_success(response), None
        return (UploadResult(response.status_code, _error_message(response)),
                _retry_after(response.headers.get("Retry-After")))


def _is_transient(status: int) -> bool:
    return status == NO_RESPONSE or status == 429 or status >= 500


def _parse_success(response: httpx.Response) -> UploadResult:
    try:
        data = response.json()
        rejections = [Rejection(int(u["index"]), int(u["code"]), str(u.get("error", "")))
                      for u in data.get("unprocessed") or []]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # The request was accepted; without a readable body there is nothing per record
        # to report, and resending could not make it more delivered.
        logger.warning("nudge upload: unreadable 200 response (%s): %.200s", exc, response.text)
        return UploadResult(200, "unreadable response")
    return UploadResult(200, str(data.get("status", "")), rejections)


def _error_message(response: httpx.Response) -> str:
    """The server's error text, from a JSON body if it has one."""
    text = response.text
    try:
        data: Any = json.loads(text)
    except ValueError:
        return text[:500] or response.reason_phrase
    if isinstance(data, dict):
        for key in ("error", "message", "detail"):
            if data.get(key):
                return str(data[key])[:500]
    return text[:500]


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
