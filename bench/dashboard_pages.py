"""Dashboard on demo data: screenshots of each main page (docs/screenshots/*.png), and the
load time of every main page, cold and warm, in the server and in the browser.

    .venv/bin/python -m bench.dashboard_pages [--users 50000 --events 2000000] [--runs 10]
        [--browser-runs 5] [--demo-dir DIR] [--shots-only]

Starts a real server on a temp directory filled by ``nudge demo`` (``--demo-dir``: a demo
made once in DIR, by this script if DIR is empty, and copied for each run: the default
demo takes minutes to make). Then either

- ``--shots-only``: signs an owner in through the real pages (TOTP enrollment) and
  screenshots Home, Events, People (search), a person's profile, Settings, API keys at
  1280 px and Home at tablet width (1024 px) (``make screenshots``); or
- times every main page (MAIN_PAGES, plus the profile of the person with the most events)
  for a marketer signed in (``marketer_page``): **cold**, the first request of the page
  since the server started, opened in Chromium after only the sign-in page (time to first
  byte, first contentful paint, load event, and all lazy panels loaded: no
  ``[aria-busy=true]`` left); then
  **warm**, the server time of ``--runs`` GETs over HTTP (medians, and CPU time of the
  server process per request) and ``--browser-runs`` navigations (medians). Reference in
  the same process on the same data: ``GET /1/analytics/live`` with the passcode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
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
# The main pages timed: (name, path under /ui/{account}); the profile of the person with
# the most events is added at run time (its timeline is the longest).
MAIN_PAGES = [("home", ""), ("events", "/events"), ("people search", "/people?q=1"),
              ("person", "/people/1"), ("segments", "/segments"), ("analytics", "/analytics"),
              ("campaigns", "/campaigns"), ("journeys", "/journeys"), ("settings", "/settings"),
              ("users", "/settings/users"), ("channels", "/settings/channels"),
              ("audit", "/settings/audit")]
# In the page, from the navigation start: when the last lazy panel (``aria-busy=true``,
# loaded by htmx) was swapped in with none left busy.
PANELS_SCRIPT = """window.__panelsAt = 0;
document.addEventListener('htmx:afterSettle', () => {
  if (!document.querySelector('[aria-busy=true]')) window.__panelsAt = performance.now(); });"""
PANELS_LOADED = """() => document.readyState === 'complete'
  && performance.getEntriesByType('navigation')[0].loadEventEnd > 0
  && !document.querySelector('[aria-busy=true], .htmx-request')"""
# Navigation and paint timing, ms from the navigation start; all panels loaded is the later
# of the load event and the last panel.
TIMING = """() => { const n = performance.getEntriesByType('navigation')[0];
  const p = performance.getEntriesByName('first-contentful-paint')[0];
  return {ttfb: n.responseStart - n.requestStart, fcp: p ? p.startTime : null,
          load: n.loadEventEnd, panels: Math.max(n.loadEventEnd, window.__panelsAt)}; }"""


def demo_data(tmp: Path, users: int, events: int, demo_dir: Path | None) -> Path:
    """A data directory with a demo account: made in ``tmp``, or copied from ``demo_dir``
    (made there first if it holds none) with its master key."""
    if demo_dir is None:
        nudge_cli(tmp, "demo", "--users", str(users), "--events", str(events))
        return tmp
    if not (demo_dir / "demo-account.json").exists():
        nudge_cli(demo_dir, "demo", "--users", str(users), "--events", str(events))
    data = tmp / "data"
    shutil.copytree(demo_dir, data)
    shutil.copy(demo_dir.with_name(demo_dir.name + ".master-key"),
                data.with_name("data.master-key"))
    return data


def busiest_person(data: Path, account_id: str) -> int:
    """The user id with the most events (read before the server opens the store)."""
    from nudge.config import load_settings
    from nudge.store.registry import StoreRegistry

    stores = StoreRegistry(load_settings(env={}, data_dir=data))
    try:
        with stores.get(account_id).cursor() as cur:
            return int(cur.execute("SELECT user_id FROM profiles ORDER BY event_count DESC, "
                                   "user_id LIMIT 1").fetchall()[0][0])
    finally:
        stores.close()


def demo_server(tmp: Path, users: int, events: int, demo_dir: Path | None = None,
                on_data: Callable[[Path, str], None] | None = None) -> NudgeServer:
    """A started server on demo data; ``on_data(data_dir, account_id)`` runs before it
    starts (the store files are free then)."""
    data = demo_data(tmp, users, events, demo_dir)
    accounts = json.loads(nudge_cli(data, "accounts", "list", "--json"))
    acct = accounts[0] if isinstance(accounts, list) else accounts["accounts"][0]
    key = json.loads(nudge_cli(data, "accounts", "rotate-key", acct["id"], "--json"))
    if on_data is not None:
        on_data(data, acct["id"])
    srv = NudgeServer(data, free_port(), acct["id"], key["passcode"], "")
    srv.start()
    return srv


@contextmanager
def marketer_page(users: int, events: int, demo_dir: Path | None = None,
                  on_data: Callable[[Path, str], None] | None = None
                  ) -> Iterator[tuple[NudgeServer, Page]]:
    """A server on a fresh demo of this size and a 1280px Chromium page signed in as a
    marketer (through POST /auth/login): for the page benchmarks and screenshots."""
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        srv = demo_server(Path(d), users, events, demo_dir, on_data)
        print(f"demo ready and server up in {time.perf_counter() - t0:.0f} s")
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


def open_page(page: Page, url: str) -> dict[str, float] | None:
    """Navigate and return ttfb, fcp, load and panels (ms from the navigation start);
    None when the page is not 200 for this user."""
    resp = page.goto(url, wait_until="load", timeout=120_000)
    if resp is None or resp.status != 200:
        return None
    page.wait_for_function(PANELS_LOADED, timeout=120_000)
    return page.evaluate(TIMING)  # type: ignore[no-any-return]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_ms(srv: NudgeServer, url: str, cookies: dict[str, str], n: int
              ) -> tuple[float, float]:
    """Median wall ms of ``n`` GETs, and the server process's mean CPU ms per request."""
    assert srv.proc is not None
    cpu0 = cpu_s(srv.proc.pid)
    ms = median_ms(lambda: httpx.get(url, cookies=cookies, timeout=120,
                                     follow_redirects=True), n)
    return ms, (cpu_s(srv.proc.pid) - cpu0) * 1000 / n


def time_pages(srv: NudgeServer, page: Page, runs: int, browser_runs: int,
               busiest: int | None) -> None:
    base = f"{srv.url}/ui/{srv.account_id}"
    pages = list(MAIN_PAGES)
    if busiest is not None:
        pages.insert(4, ("busiest person", f"/people/{busiest}"))
    page.add_init_script(PANELS_SCRIPT)
    # A person's first visit comes through the sign-in page, which loads the same CSS and
    # scripts (the session here was made by POST /auth/login, which loads none).
    page.goto(srv.url + "/ui/login", wait_until="load")
    cold = {name: open_page(page, base + suffix) for name, suffix in pages}
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    print("| page | cold: TTFB / FCP / load / all panels | warm server (CPU) | ratio to"
          " live | warm browser: FCP / load / all panels |")
    print("|---|---|---|---|---|")
    for name, suffix in pages:
        c = cold[name]
        if c is None:
            print(f"| {name} `{suffix}` | not open to a marketer | | | |")
            continue
        ref_ms = median_ms(lambda: httpx.get(srv.url + "/1/analytics/live",
                                             headers=srv.headers), runs)
        ms, cpu = server_ms(srv, base + suffix, cookies, runs)
        warm = [open_page(page, base + suffix) or {} for _ in range(browser_runs)]
        med = {k: statistics.median(w[k] or 0 for w in warm) for k in ("fcp", "load", "panels")}
        print(f"| {name} `{suffix or '/'}` | {c['ttfb']:.0f} / {c['fcp'] or 0:.0f} / "
              f"{c['load']:.0f} / {c['panels']:.0f} ms | {ms:.1f} ms ({cpu:.1f} ms) | "
              f"{ms / ref_ms:.2f} (live {ref_ms:.1f} ms) | {med['fcp']:.0f} / "
              f"{med['load']:.0f} / {med['panels']:.0f} ms |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--browser-runs", type=int, default=5)
    ap.add_argument("--demo-dir", type=Path, default=None)
    ap.add_argument("--shots-only", action="store_true")
    args = ap.parse_args()
    if not args.shots_only:
        found: dict[str, int] = {}
        with marketer_page(args.users, args.events, args.demo_dir, lambda d, a: found.update(
                busiest=busiest_person(d, a))) as (srv, page):
            time_pages(srv, page, args.runs, args.browser_runs, found.get("busiest"))
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        srv = demo_server(Path(d), args.users, args.events, args.demo_dir)
        print(f"demo ready and server up in {time.perf_counter() - t0:.0f} s")
        try:
            add_user(srv, "owner@example.com", "owner")
            shots(srv)
        finally:
            srv.stop()


def shots(srv: NudgeServer) -> None:
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

        browser.close()


if __name__ == "__main__":
    main()
