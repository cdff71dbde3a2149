"""Dashboard analytics and segment pages (nudge/web/analytics.py, segments.py), driven in
Debian's Chromium against a real server: the numbers a marketer sees on the funnel and
retention pages, in their CSV export, and the segment builder's live reach equal what the
JSON API answers for the same request."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test user only
EMAIL = "analyst@example.com"
DAY = 86400


def _upload(srv: NudgeServer) -> None:
    """60 people over the last 20 days: launches, views, some purchases; a City each."""
    rng = random.Random(7)
    now = int(time.time())
    records = []
    for u in range(60):
        uid = f"u{u}"
        records.append({"type": "profile", "identity": uid, "ts": now - 30 * DAY,
                        "profileData": {"City": rng.choice(["Paris", "Lyon", "Nice"])}})
        start = now - rng.randint(1, 20) * DAY - rng.randint(0, DAY)
        for k in range(rng.randint(1, 8)):
            t = start + k * rng.randint(600, 2 * DAY)
            if t >= now:
                break
            records.append({"type": "event", "identity": uid, "ts": t, "evtName": "App Launched"})
            if rng.random() < 0.6:
                records.append({"type": "event", "identity": uid, "ts": t + 60,
                                "evtName": "Product Viewed"})
                if rng.random() < 0.4:
                    records.append({"type": "event", "identity": uid, "ts": t + 300,
                                    "evtName": "Charged",
                                    "evtData": {"Amount": rng.randint(5, 90)}})
    r = srv.upload(records)
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash"))
    try:
        subprocess.run([sys.executable, "-m", "nudge", "users", "create", EMAIL, "--account",
                        s.account_id, "--role", "owner", "--password-stdin", "--data-dir",
                        str(s.data_dir)], input=PASSWORD + "\n", text=True, check=True,
                       capture_output=True)
        _upload(s)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, srv: NudgeServer) -> Iterator[BrowserContext]:
    """One browser context signed in once (password, then TOTP enrollment, through the API
    in the context's own cookie jar): a TOTP code is accepted only once."""
    ctx = browser.new_context(accept_downloads=True)
    try:
        r = ctx.request.post(srv.url + "/auth/login", data={"email": EMAIL, "password": PASSWORD})
        assert r.ok and r.json()["stage"] == "enroll", r.text()
        csrf = r.json()["csrf_token"]
        secret = ctx.request.post(srv.url + "/auth/mfa/enroll",
                                  headers={"X-CSRF-Token": csrf}).json()["secret"]
        r = ctx.request.post(srv.url + "/auth/mfa/confirm", data={"code": pyotp.TOTP(secret).now()},
                             headers={"X-CSRF-Token": csrf})
        assert r.ok, r.text()
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(signed_in: BrowserContext) -> Iterator[Page]:
    p = signed_in.new_page()
    try:
        yield p
    finally:
        p.close()


def _api(srv: NudgeServer, path: str, body: dict) -> dict:  # type: ignore[type-arg]
    r = httpx.post(srv.url + path, json=body, headers=srv.headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _table(page: Page) -> list[list[str]]:
    return page.locator("#report-result table.report-table tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))")


def _num(text: str) -> float | None:
    return None if text == "" else float(text)


def _csv(page: Page) -> list[list[str]]:
    href = page.locator("#report-result a[data-export=csv]").get_attribute("href")
    assert href
    r = page.request.get(srv_url(page) + href)
    assert r.ok and r.headers["content-type"].startswith("text/csv"), r.text()
    return list(csv.reader(io.StringIO(r.text())))


def srv_url(page: Page) -> str:
    return page.url.split("/ui/", 1)[0]


def test_funnel_page_and_csv_match_the_api(page: Page, srv: NudgeServer) -> None:
    today = datetime.now(UTC).date()
    frm, to = (today - timedelta(days=25)).isoformat(), (today + timedelta(days=1)).isoformat()
    page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/funnels")
    # The simple fields: three steps in order, a 2-day window.
    page.fill("input[name=steps]", "App Launched, Product Viewed, Charged")
    page.fill("input[name=window_days]", "2")
    page.fill("input[name=from]", frm)
    page.fill("input[name=to]", to)
    page.click("#report-form button[type=submit]")
    expect(page.locator("#report-result table.report-table")).to_be_visible()
    expect(page.locator("#report-chart canvas")).to_have_count(1)

    api = _api(srv, "/1/analytics/funnels", {
        "steps": [{"event": "App Launched"}, {"event": "Product Viewed"}, {"event": "Charged"}],
        "order": "ordered", "window": {"days": 2}, "from": frm, "to": to})
    assert api["entered"] > 0 and 0 < api["converted"] < api["entered"]
    rows = _table(page)
    assert [r[1] for r in rows] == ["App Launched", "Product Viewed", "Charged"]
    assert [int(r[2]) for r in rows] == [s["users"] for s in api["steps"]]
    assert [_num(r[3]) for r in rows] == [s["conversion"] for s in api["steps"]]
    assert [int(r[5]) for r in rows] == [s["dropped"] for s in api["steps"]]
    assert page.locator("[data-figure=entered]").inner_text() == f"{api['entered']:,}"
    assert page.locator("[data-figure=converted]").inner_text() == f"{api['converted']:,}"

    exported = _csv(page)
    assert exported[0][:3] == ["step", "event", "users"]
    assert [int(r[2]) for r in exported[1:]] == [s["users"] for s in api["steps"]]
    assert [_num(r[7]) for r in exported[2:]] == [
        s["time_from_start"]["median_s"] for s in api["steps"][1:]]

    # PNG export: the chart's data URL is a PNG image.
    with page.expect_download() as dl:
        page.click("[data-png]")
    assert dl.value.suggested_filename == "funnels.png"
    assert open(dl.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_retention_page_and_csv_match_the_api(page: Page, srv: NudgeServer) -> None:
    today = datetime.now(UTC).date()
    body = {"start": {"event": "App Launched"}, "return": {"event": "Product Viewed"},
            "interval": "day", "periods": 5, "from": (today - timedelta(days=21)).isoformat(),
            "to": (today - timedelta(days=7)).isoformat()}
    page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/retention")
    page.click("details summary")
    page.fill("#report-json", json.dumps(body))  # the JSON box: any body the API takes
    page.click("#report-form button[type=submit]")
    expect(page.locator("#report-result table.report-table")).to_be_visible()
    expect(page.locator("#report-chart canvas")).to_have_count(1)

    api = _api(srv, "/1/analytics/retention", body)
    assert sum(c["size"] for c in api["cohorts"]) > 0
    rows = _table(page)
    n = 6  # periods 0..5
    assert len(rows) == len(api["cohorts"]) + 1
    for row, cohort in zip(rows, api["cohorts"], strict=False):
        assert int(row[1]) == cohort["size"]
        assert [_num(v) for v in row[2:2 + n]] == cohort["retained"]
        assert [_num(v) for v in row[2 + n:]] == cohort["percent"]
    assert [_num(v) for v in rows[-1][2:2 + n]] == api["total"]["retained"]

    exported = _csv(page)
    assert exported[0][:3] == ["cohort", "size", "period_0"]
    assert [int(r[1]) for r in exported[1:-1]] == [c["size"] for c in api["cohorts"]]
    assert [[_num(v) for v in r[2:2 + n]] for r in exported[1:-1]] == [
        c["retained"] for c in api["cohorts"]]


def test_bad_report_input_is_shown_and_names_the_field(page: Page, srv: NudgeServer) -> None:
    page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/funnels")
    page.fill("input[name=steps]", "App Launched")  # one step: a funnel needs 2 to 10
    page.click("#report-form button[type=submit]")
    expect(page.locator("#report-result")).to_contain_text("steps")
    expect(page.locator("#report-result table")).to_have_count(0)


def test_segment_builder_reach_matches_the_api_and_saves(page: Page, srv: NudgeServer) -> None:
    page.goto(f"{srv.url}/ui/{srv.account_id}/segments/new")
    page.select_option("select[name=type_0]", "did")
    page.fill("input[name=event_0]", "Charged")
    page.select_option("select[name=cop_0]", ">=")
    page.fill("input[name=cval_0]", "1")
    page.fill("input[name=days_0]", "30")
    page.select_option("select[name=type_1]", "profile")
    page.fill("input[name=pprop_1]", "City")
    page.select_option("select[name=pop_1]", "in")
    page.fill("input[name=pval_1]", "Paris, Nice")

    definition = {"and": [
        {"did": {"event": "Charged", "window": {"last": {"days": 30}},
                 "count": {"op": ">=", "value": 1}}},
        {"profile": {"property": "City", "op": "in", "value": ["Paris", "Nice"]}}]}
    api = _api(srv, "/1/segments/evaluate", {"definition": definition})
    assert api["count"] > 0
    expect(page.locator("[data-reach]")).to_have_text(f"{api['count']:,}")
    expect(page.locator("[data-explanation]")).to_have_text(api["explanation"])
    assert json.loads(page.locator("[data-definition]").text_content() or "") == definition

    # Switching to "any": the reach follows live.
    page.select_option("select[name=match]", "or")
    api_or = _api(srv, "/1/segments/evaluate", {"definition": {"or": definition["and"]}})
    assert api_or["count"] > api["count"]
    expect(page.locator("[data-reach]")).to_have_text(f"{api_or['count']:,}")

    # A condition added with "Add condition" takes part too.
    page.click("#add-condition")
    page.select_option("select[name=type_3]", "did_not")
    page.fill("input[name=event_3]", "Product Viewed")
    defn3 = {"or": [*definition["and"], {"did_not": {"event": "Product Viewed"}}]}
    api3 = _api(srv, "/1/segments/evaluate", {"definition": defn3})
    expect(page.locator("[data-reach]")).to_have_text(f"{api3['count']:,}")

    page.fill("#segment-name", "Buyers or Paris/Nice")
    page.click("#save-segment")
    page.wait_for_url(f"**/ui/{srv.account_id}/segments#segment-*")
    seg_id = int(page.url.rsplit("segment-", 1)[1])
    saved = httpx.get(f"{srv.url}/1/segments/{seg_id}", headers=srv.headers).json()
    assert saved["definition"] == defn3 and saved["name"] == "Buyers or Paris/Nice"
    count = httpx.get(f"{srv.url}/1/segments/{seg_id}/count", headers=srv.headers).json()
    assert count["count"] == api3["count"]
    expect(page.locator(f"#segment-{seg_id} [data-count]")).to_have_text(f"{count['count']:,}")


def test_save_a_funnel_to_a_board_and_open_it(page: Page, srv: NudgeServer) -> None:
    today = datetime.now(UTC).date()
    body = {"steps": [{"event": "App Launched"}, {"event": "Charged"}], "window": {"days": 3},
            "from": (today - timedelta(days=25)).isoformat(),
            "to": (today + timedelta(days=1)).isoformat()}
    page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/funnels")
    page.click("details summary")
    page.fill("#report-json", json.dumps(body))
    page.click("#report-form button[type=submit]")
    page.fill(".save-board input[name=board]", "Weekly review")
    page.fill(".save-board input[name=title]", "Launch to purchase")
    page.click(".save-board button[type=submit]")
    expect(page.locator("[data-saved]")).to_contain_text("Weekly review")

    # The board runs the saved report live: its figures are the API's for the same body.
    page.goto(f"{srv.url}/ui/{srv.account_id}/boards")
    page.get_by_role("link", name="Weekly review").click()
    expect(page.locator("h2")).to_have_text(["Launch to purchase"])
    api = _api(srv, "/1/analytics/funnels", body)
    users = page.locator("section.report table.report-table tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.cells[2].textContent))")
    assert users == [s["users"] for s in api["steps"]]
    assert page.goto(f"{srv.url}/ui/{srv.account_id}/boards/nothing-here").status == 404  # type: ignore[union-attr]


def test_rfm_grid_matches_the_api(page: Page, srv: NudgeServer) -> None:
    page.goto(f"{srv.url}/ui/{srv.account_id}/analytics/rfm")
    page.click("#report-form button[type=submit]")
    expect(page.locator("#report-result table.report-table")).to_be_visible()
    expect(page.locator("#report-chart canvas")).to_have_count(1)
    r = httpx.get(srv.url + "/1/predict/rfm", headers=srv.headers, timeout=60)
    assert r.status_code == 200, r.text
    api = r.json()
    assert api["buyers"] > 0
    rows = _table(page)
    assert [(row[0], int(row[1])) for row in rows] == [
        *((s["segment"], s["users"]) for s in api["segments"]),
        ("no_purchases", api["no_purchases"])]
