"""Screenshots of the dashboard's analytics, segment and campaign pages on demo data
(docs/screenshots/analytics-*.png, segment-builder.png, segments.png, campaigns.png).
Part of ``make screenshots``.

    .venv/bin/python -m bench.dashboard_pages_analytics [--users 20000 --events 500000]
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import Page

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.dashboard_pages import SHOTS, marketer_page  # noqa: E402

REPORTS = {
    "trends": {"series": [{"event": "App Launched", "measure": "unique_users"},
                          {"event": "Charged", "measure": "unique_users"}],
               "interval": "day", "compare": True},
    "funnels": {"steps": [{"event": "Product Viewed"}, {"event": "Added To Cart"},
                          {"event": "Checkout Started"}, {"event": "Charged"}],
                "window": {"days": 1}},
    "retention": {"start": {"event": "App Launched"}, "interval": "week", "periods": 6},
    "flows": {"event": "Product Viewed", "steps": 3},
    "dayparting": {"event": "App Launched", "measure": "unique_users"},
}


def shoot(page: Page, name: str) -> None:
    page.wait_for_timeout(600)  # let the chart draw
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    print("wrote", SHOTS / f"{name}.png")


def run(url: str, account_id: str, page: Page) -> None:
    base = f"{url}/ui/{account_id}"
    today = datetime.now(UTC).date()
    span = {"from": (today - timedelta(days=56)).isoformat(),
            "to": (today + timedelta(days=1)).isoformat()}
    for kind, body in REPORTS.items():
        page.goto(f"{base}/analytics/{kind}")
        page.click("details summary")
        page.fill("#report-json", json.dumps({**body, **span}))
        page.click("#report-form button[type=submit]")
        page.locator("#report-result table").wait_for(timeout=120_000)
        shoot(page, f"analytics-{kind}")
    page.goto(f"{base}/segments/new")
    page.select_option("select[name=type_0]", "did")
    page.fill("input[name=event_0]", "Charged")
    page.fill("input[name=cval_0]", "2")
    page.fill("input[name=days_0]", "30")
    page.select_option("select[name=type_1]", "reachable")
    page.locator("[data-reach]").wait_for(timeout=60_000)
    shoot(page, "segment-builder")
    page.fill("#segment-name", "Repeat buyers, emailable")
    page.click("#save-segment")
    page.wait_for_url("**/segments#segment-*")
    shoot(page, "segments")
    page.goto(f"{base}/campaigns")
    shoot(page, "campaigns")  # the wizard: bench/dashboard_pages_journeys.py


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--events", type=int, default=500_000)
    args = ap.parse_args()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with marketer_page(args.users, args.events) as (srv, page):
        run(srv.url, srv.account_id, page)

if __name__ == "__main__":
    main()
