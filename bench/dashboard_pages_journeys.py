"""Screenshots of the journey canvas and the campaign wizard's kinds on demo data
(docs/screenshots/journeys.png, journey-canvas.png, journey-invalid.png, campaign-new.png,
campaign-new-trigger.png, campaign-new-recurring.png, campaign-review.png). Part of
``make screenshots``.

    .venv/bin/python -m bench.dashboard_pages_journeys [--users 20000 --events 500000]

The journey is published through the API and 40 people are entered through the API, so
the canvas shows real counts on its nodes. Also prints the median server time of the
journey page (signed in) and of ``GET /1/journeys/{id}/report`` (the reference: the one
query the page adds to loading the journey) over ``--runs`` requests each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx
from playwright.sync_api import Page

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.dashboard_pages import SHOTS, marketer_page, median_ms  # noqa: E402
from conftest import NudgeServer  # noqa: E402


def shoot(page: Page, name: str) -> None:
    page.wait_for_timeout(600)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    print("wrote", SHOTS / f"{name}.png")


def api(srv: NudgeServer, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
    r = httpx.request(method, srv.url + path, json=body, headers=srv.headers, timeout=120)
    assert r.status_code < 300, (path, r.status_code, r.text)
    return r.json()  # type: ignore[no-any-return]


def seed(srv: NudgeServer) -> int:
    """An API email campaign, a published abandoned-cart journey, 40 people in it."""
    people = [{"type": "profile", "identity": f"shot{i}", "ts": int(time.time()),
               "profileData": {"Email": f"shot{i}@example.com"}} for i in range(40)]
    assert srv.upload(people).status_code == 200
    mail = api(srv, "POST", "/1/campaigns", {
        "name": "Cart reminder", "kind": "api", "channels": ["email", "sms"],
        "fallback_after": {"hours": 4},
        "content": {"email": {"subject": "You left something", "text": "Come back"},
                    "sms": {"body": "Your cart is waiting"}}})
    j = api(srv, "POST", "/1/journeys", {
        "name": "Abandoned cart", "entry": {"api": True}, "start": "wait",
        "nodes": [
            {"id": "wait", "type": "wait_event", "event": "Charged", "timeout": {"days": 1},
             "on_event": "done", "on_timeout": "test"},
            {"id": "test", "type": "split", "branches": [{"percent": 50, "next": "remind"},
                                                         {"percent": 50, "next": "tag"}]},
            {"id": "remind", "type": "send", "campaign_id": mail["id"], "next": "done"},
            {"id": "tag", "type": "update_profile", "set": {"cart_abandoner": True},
             "next": "done"},
            {"id": "done", "type": "exit"}],
        "goal": {"event": "Charged"}, "exit_when": [{"event": "Uninstalled"}],
        "reentry": {"mode": "after", "after": {"days": 7}, "max_entries": 3}})
    api(srv, "POST", f"/1/journeys/{j['id']}/publish")
    api(srv, "POST", f"/1/journeys/{j['id']}/enter",
        {"to": [{"identity": f"shot{i}"} for i in range(40)]})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and \
            api(srv, "GET", f"/1/journeys/{j['id']}/report")["entered"] < 40:
        time.sleep(0.5)
    return int(j["id"])


def timing(srv: NudgeServer, page: Page, jid: int, runs: int) -> None:
    jar = {c["name"]: c["value"] for c in page.context.cookies()}  # the signed-in session

    def canvas() -> object:
        return httpx.get(f"{srv.url}/ui/{srv.account_id}/journeys/{jid}", cookies=jar,
                         timeout=60)

    def report() -> object:
        return httpx.get(f"{srv.url}/1/journeys/{jid}/report", headers=srv.headers, timeout=60)

    canvas(), report()  # warm
    page_ms, ref_ms = median_ms(canvas, runs), median_ms(report, runs)
    print(f"journey canvas page: median {page_ms:.1f} ms; GET /1/journeys/{{id}}/report: "
          f"median {ref_ms:.1f} ms; ratio {page_ms / ref_ms:.2f} ({runs} runs each)")


def run(srv: NudgeServer, page: Page, runs: int = 20) -> None:
    base = f"{srv.url}/ui/{srv.account_id}"
    jid = seed(srv)
    timing(srv, page, jid, runs)
    page.goto(f"{base}/journeys")
    shoot(page, "journeys")
    page.goto(f"{base}/journeys/{jid}")
    page.locator("g[data-node='wait']").click()
    shoot(page, "journey-canvas")
    page.goto(f"{base}/journeys/new")
    page.get_by_label("Name", exact=True).fill("Win-back")
    page.get_by_label("Entry event", exact=True).fill("App Uninstalled")
    page.select_option("#add-type", "delay")
    page.click("#add-node")
    page.select_option("#add-type", "condition")
    page.click("#add-node")
    page.get_by_label("Event", exact=True).fill("App Installed")
    page.click("#journey-settings")
    page.select_option("#add-type", "exit")
    page.click("#add-node")
    page.click("#validate-journey")
    page.locator("#journey-problems li").first.wait_for()
    shoot(page, "journey-invalid")
    page.goto(f"{base}/campaigns/new")
    shoot(page, "campaign-new")
    page.check("#c-kind-trigger")
    page.fill("#c-name", "Cart abandoned")
    page.fill("#c-trigger-event", "Added To Cart")
    page.fill("#c-tf-prop-0", "Amount")
    page.select_option("#c-tf-op-0", "gte")
    page.fill("#c-tf-value-0", "50")
    page.fill("#c-unless-event", "Charged")
    page.fill("#c-unless-within", "1")
    page.select_option("#c-channel-0", "email")
    page.select_option("#c-channel-1", "push")
    page.fill("#c-subject", "Still thinking about it, {{ profile.first_name | default: 'there' }}?")
    page.fill("#c-text", "Your cart is waiting.")
    page.fill("#c-push-body", "Your cart is waiting")
    page.locator("[data-reach-note]").wait_for()
    shoot(page, "campaign-new-trigger")
    page.click("#create-draft")
    page.wait_for_url("**/review")
    shoot(page, "campaign-review")
    page.goto(f"{base}/campaigns/new")
    page.check("#c-kind-recurring")
    page.fill("#c-name", "Weekly digest")
    page.fill("#c-cron", "0 9 * * 1")
    shoot(page, "campaign-new-recurring")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with marketer_page(args.users, args.events) as (srv, page):
        run(srv, page, args.runs)

if __name__ == "__main__":
    main()
