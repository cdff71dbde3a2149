"""A scripted stand-in for the ``/1/upload`` *protocol* (not for Nudge).

Used only by test_sdk_protocol.py, to drive the SDK through situations a healthy server
does not produce on demand: 503s, 429s with Retry-After, 413s, unreadable replies. Whether
records are really stored is tested against the real server (see test_sdk_server.py).
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; None -> a "success" body for the request's records
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    headers: dict[str, str]
    raw: bytes
    records: list[dict[str, Any]]
    at: float


class StubUpload:
    """Replies to each POST with the next scripted Reply (then 200 success), logs requests."""

    def __init__(self) -> None:
        self.script: list[Reply | Callable[[Request], Reply]] = []
        self.requests: list[Request] = []
        self._answered: list[tuple[Request, int]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def then(self, *replies: Reply | Callable[[Request], Reply]) -> StubUpload:
        self.script.extend(replies)
        return self

    def delivered(self) -> list[dict[str, Any]]:
        """Records of requests answered 200, in order."""
        return [r for req, status in self._answered if status == 200 for r in req.records]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _reply_to(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            step = self.script.pop(0) if self.script else Reply()
        reply = step(request) if callable(step) else step
        if reply.body is None and reply.status == 200:
            n = len(request.records)
            reply = Reply(200, {"status": "success", "processed": n, "unprocessed": []},
                          reply.headers)
        with self._lock:
            self._answered.append((request, reply.status))
        return reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                data = gzip.decompress(raw) if self.headers.get("Content-Encoding") else raw
                request = Request(dict(self.headers), raw, json.loads(data)["d"],
                                  time.monotonic())
                reply = stub._reply_to(request)
                payload = json.dumps(reply.body or {}).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler


class Errors(list):  # type: ignore[type-arg]
    """An on_error callback that collects what it is given (thread-safe append)."""

    def __call__(self, error: Any) -> None:
        self.append(error)
