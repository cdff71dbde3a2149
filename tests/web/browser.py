"""Reusable browser fixtures: Playwright driving Debian's Chromium (never a downloaded browser).

- ``browser``: one headless Chromium per test session (starting it costs about a second).
- ``browser_context``: a fresh context per test (own cookies, localStorage, offline switch).
- ``page``: a page in that context.
- ``site``: a tiny static web server on its own port, i.e. a different origin than the Nudge
  server, for pages that embed Nudge the way a customer's site does.

A test module in tests/web gets them with ``pytest_plugins = ["browser"]`` (tests/web is on
``sys.path`` under pytest's default import mode). There is deliberately no conftest.py here:
it would shadow the root one, whose ``NudgeServer`` the tests import.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = os.environ.get("NUDGE_TEST_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps trying to reach the internet.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]


# Module scope, not session: a running sync Playwright keeps an event loop in the thread, so
# later modules in the same (xdist) worker could not use asyncio.run(), and this plugin is
# loaded under two names (`browser`, `tests.web.browser`) whose browsers must not overlap.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's Chromium (apt-get install -y "
                    "chromium; .ci/run does it) or set NUDGE_TEST_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def browser_context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(browser_context: BrowserContext) -> Page:
    return browser_context.new_page()


class StaticSite:
    """Serves registered pages from memory: ``site.add("/shop", html)``; ``site.url``."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[str, bytes]] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?", 1)[0]
                site.requests.append(self.path)
                if path not in site.pages:
                    self.send_error(404)
                    return
                ctype, body = site.pages[path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, path: str, body: str, content_type: str = "text/html; charset=utf-8") -> str:
        """Register a page; returns its absolute URL."""
        self.pages[path] = (content_type, body.encode())
        return self.url + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[StaticSite]:
    s = StaticSite()
    try:
        yield s
    finally:
        s.close()
