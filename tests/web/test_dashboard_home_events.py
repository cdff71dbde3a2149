"""Home (live counters against GET /1/analytics/live, the lazily loaded recent campaigns,
the counters' refresh fragment) and Events (catalog against
GET /1/events/catalog, the live stream shows an event sent after the page opened)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dashboard_helpers import add_user, signed_in
from playwright.sync_api import Browser, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash-home"))
    try:
        records = [{"identity": f"u{i % 4}", "type": "event", "evtName": "Viewed" if i % 3
                    else "Charged", "evtData": {"Amount": i}} for i in range(12)]
        assert s.upload(records).status_code == 200
        add_user(s, "analyst@example.com", "analyst")
        yield s
    finally:
        s.stop()


def test_home_counters_match_the_live_api(srv: NudgeServer, browser: Browser) -> None:
    for name in ("Older", "Newer"):
        r = httpx.post(srv.url + "/1/campaigns", headers=srv.headers, json={
            "name": name, "kind": "api", "channels": ["email"],
            "content": {"email": {"subject": "Hi", "text": "Hello"}}})
        assert r.status_code == 201, r.text
    ctx = signed_in(browser, srv, "analyst@example.com")
    page = ctx.new_page()
    page.set_viewport_size({"width": 1024, "height": 1366})  # tablet
    page.goto(f"{srv.url}/ui/{srv.account_id}")
    # Recent campaigns load after the first paint, newest first, and leave no busy panel.
    rows = page.locator("#recent-campaigns [data-campaigns] tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Newer")
    expect(page.locator("[aria-busy=true]")).to_have_count(0)
    # The counters' 10 s refresh fetches them alone.
    counters = ctx.request.get(f"{srv.url}/ui/{srv.account_id}/home/counters")
    assert counters.ok and 'data-stat="today">12<' in counters.text()
    assert "Recent campaigns" not in counters.text()
    live = httpx.get(srv.url + "/1/analytics/live", headers=srv.headers).json()
    assert live["active_users"] == 4
    expect(page.locator("[data-stat=active-users]")).to_have_text(str(live["active_users"]))
    expect(page.locator("[data-stat=today]")).to_have_text("12")
    top = page.locator("table").first
    for e in live["top_events"]:
        expect(top).to_contain_text(e["event"])
    bars = page.locator("svg[data-minutes] rect[data-events]")  # drawn by the server
    expect(bars).to_have_count(len(live["minutes"]))
    assert sum(int(b.get_attribute("data-events") or 0) for b in bars.all()) == live["events"]
    ctx.close()


def test_events_catalog_and_live_stream(srv: NudgeServer, browser: Browser) -> None:
    ctx = signed_in(browser, srv, "analyst@example.com")
    page = ctx.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    catalog = httpx.get(srv.url + "/1/events/catalog", headers=srv.headers).json()["events"]
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(len(catalog))
    for i, e in enumerate(catalog):
        expect(rows.nth(i)).to_contain_text(e["name"])
        expect(rows.nth(i).locator("td.num")).to_have_text(str(e["count"]))
    expect(page.locator("#stream-status")).to_have_text("connected")
    assert srv.upload([{"identity": "u9", "type": "event", "evtName": "Signed Up",
                        "evtData": {"Plan": "trial"}}]).status_code == 200
    expect(page.locator("#stream li").first).to_contain_text("Signed Up", timeout=15000)
    ctx.close()
