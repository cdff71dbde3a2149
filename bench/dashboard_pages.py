"""Dashboard on demo data: screenshots of each main page (docs/screenshots/*.png) and the
first-page load time.

    .venv/bin/python -m bench.dashboard_pages [--users 50000 --events 2000000] [--shots-only]

Starts a real server on a temp directory filled by ``nudge demo``, signs an owner in through
the real pages (TOTP enrollment), then:
- screenshots Home, Events, People (search), a person's profile, Settings, API keys at 1280 px
  and Home at tablet width (1024 px);
- times the first page: GET /ui/{account} (server-rendered Home, signed-in session) against a
  reference in the same process on the same data, GET /1/analytics/live with the passcode
  (the query the page runs), N runs each, medians; then every main page (MAIN_PAGES) the
  same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyotp
from playwright.sync_api import Page, sync_playwright

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "web"))
from browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from dashboard_helpers import PASSWORD, add_user  # noqa: E402

from conftest import NudgeServer, free_port, nudge_cli  # noqa: E402

SHOTS = Path(__file__).parents[1] / "docs" / "screenshots"
# The main pages timed after the first page: (name, path under /ui/{account}).
MAIN_PAGES = [("home", ""), ("events", "/events"), ("people search", "/people?q=1"),
              ("person", "/people/1"), ("segments", "/segments"), ("analytics", "/analytics"),
              ("campaigns", "/campaigns"), ("journeys", "/journeys"), ("settings", "/settings"),
              ("users", "/settings/users"), ("channels", "/settings/channels"),
              ("audit", "/settings/audit")]


def demo_server(tmp: Path, users: int, events: int) -> NudgeServer:
    nudge_cli(tmp, "demo", "--users", str(users), "--events", str(events))
    accounts = json.loads(nudge_cli(tmp, "accounts", "list", "--json"))
    acct = accounts[0] if isinstance(accounts, list) else accounts["accounts"][0]
    key = json.loads(nudge_cli(tmp, "accounts", "rotate-key", acct["id"], "--json"))
    srv = NudgeServer(tmp, free_port(), acct["id"], key["passcode"], "")
    srv.start()
    return srv


@contextmanager
def marketer_page(users: int, events: int) -> Iterator[tuple[NudgeServer, Page]]:
    """A server on a fresh demo of this size and a 1280px Chromium page signed in as a
    marketer (through POST /auth/login): for the page benchmarks and screenshots."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        srv = demo_server(Path(d), users, events)
        print(f"demo loaded and server up in {time.perf_counter() - t0:.0f} s")
        try:
            add_user(srv, "marketer@example.com", "marketer")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                ctx = browser.new_context(viewport={"width": 1280, "height": 900})
                r = ctx.request.post(srv.url + "/auth/login", timeout=120_000, data={
                    "email": "marketer@example.com", "password": PASSWORD})
                assert r.ok, r.text()
                yield srv, ctx.new_page()
                browser.close()
        finally:
            srv.stop()


def median_ms(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = fn()
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text[:300]
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--shots-only", action="store_true")
    args = ap.parse_args()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        srv = demo_server(Path(d), args.users, args.events)
        print(f"demo loaded and server up in {time.perf_counter() - t0:.0f} s")
        try:
            add_user(srv, "owner@example.com", "owner")
            run(srv, args)
        finally:
            srv.stop()


def run(srv: NudgeServer, args: argparse.Namespace) -> None:
    base = f"{srv.url}/ui/{srv.account_id}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        page = ctx.new_page()
        page.goto(srv.url + "/ui/login")
        page.get_by_label("Email").fill("owner@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.locator("[data-secret]").wait_for()
        page.screenshot(path=str(SHOTS / "mfa-enroll.png"))
        totp = pyotp.TOTP(page.locator("[data-secret]").inner_text().strip())
        page.get_by_label("Code from the app").fill(totp.now())
        page.get_by_role("button", name="Turn on").click()
        page.get_by_role("link", name="Continue").click()
        page.wait_for_load_state("networkidle")

        def shot(name: str, url: str, full: bool = True) -> None:
            page.goto(url)
            page.wait_for_timeout(800)  # let charts draw and the stream connect
            page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)
            print("wrote", SHOTS / f"{name}.png")

        shot("home", base)
        shot("events", base + "/events", full=False)
        shot("people-search", base + "/people?q=1")  # user id 1 of the demo
        page.locator("#results a").first.click()
        page.wait_for_timeout(500)
        page.screenshot(path=str(SHOTS / "person.png"), full_page=False)
        print("wrote", SHOTS / "person.png")
        shot("settings", base + "/settings")
        shot("settings-keys", base + "/settings/keys")
        shot("settings-users", base + "/settings/users")
        shot("settings-channels", base + "/settings/channels")
        page.set_viewport_size({"width": 1024, "height": 1366})
        shot("home-tablet", base, full=False)

        if not args.shots_only:
            cookies = {c["name"]: c["value"] for c in ctx.cookies()}
            page_ms = median_ms(lambda: httpx.get(base, cookies=cookies), args.runs)
            ref_ms = median_ms(lambda: httpx.get(srv.url + "/1/analytics/live",
                                                 headers=srv.headers), args.runs)
            print(f"first page GET /ui/{{account}}: median {page_ms:.1f} ms over {args.runs}"
                  f" runs; reference GET /1/analytics/live: median {ref_ms:.1f} ms;"
                  f" ratio {page_ms / ref_ms:.2f}")
            for name, suffix in MAIN_PAGES:  # every main page, server time, same session
                ms = median_ms(lambda s=suffix: httpx.get(base + s, cookies=cookies, timeout=120,
                                                          follow_redirects=True),
                               args.runs)
                print(f"  GET /ui/{{account}}{suffix}: median {ms:.1f} ms ({name}; ratio to"
                      f" the live reference {ms / ref_ms:.2f})")
        browser.close()


if __name__ == "__main__":
    main()
