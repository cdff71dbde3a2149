"""People: search by any identifier, the 360 profile, and erasing a person from their
profile page (with confirmation), checked against the API afterwards."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from dashboard_helpers import add_user, enroll_and_sign_in
from playwright.sync_api import Browser, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]
CAROL_EVENTS, CAROL_T0 = 250, 1_790_000_000


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash-people"))
    try:
        records = []
        for name in ("alice", "bob"):
            records.append({"identity": name, "type": "profile", "profileData": {
                "Email": f"{name}@example.com", "Phone": "+14155550100" if name == "bob"
                else "+14155550199", "Name": name.title(),
                "Plan": "pro" if name == "alice" else "free"}})
            records += [{"identity": name, "type": "event", "evtName": "Viewed",
                         "evtData": {"Page": f"/p/{i}"}} for i in range(3)]
        r = s.upload(records)
        assert r.status_code == 200 and not r.json()["unprocessed"], r.text
        # carol: more events than one timeline page (100 rows), one second apart.
        r = s.upload([{"identity": "carol", "type": "profile", "profileData": {"Name": "Carol"}}]
                     + [{"identity": "carol", "type": "event", "evtName": "Viewed",
                         "ts": CAROL_T0 + i, "evtData": {"Page": f"/q/{i}"}}
                        for i in range(CAROL_EVENTS)])
        assert r.status_code == 200 and not r.json()["unprocessed"], r.text
        add_user(s, "owner@example.com", "owner")
        add_user(s, "reader@example.com", "owner")  # the timeline test's own sign-in
        for name, plan in (("Pro plan", "pro"), ("Free plan", "free")):
            seg = httpx.post(s.url + "/1/segments", headers=s.headers, json={
                "name": name, "definition": {"profile": {"property": "Plan", "op": "eq",
                                                         "value": plan}}})
            assert seg.status_code == 201, seg.text
        yield s
    finally:
        s.stop()


def test_search_by_any_identifier_and_erase_from_the_profile(srv: NudgeServer,
                                                             browser: Browser) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    enroll_and_sign_in(page, srv, "owner@example.com")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="People").click()

    # By phone (normalized the way ingestion normalizes it), then by email.
    page.get_by_label("Identity, email, phone, object id or user id").fill("+1 415 555 0100")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results table")).to_contain_text("bob@example.com")
    expect(page.locator("#results table")).not_to_contain_text("alice")
    page.get_by_label("Identity, email, phone, object id or user id").fill("ALICE@example.com")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#results table")).to_contain_text("alice@example.com")
    page.locator("#results").get_by_role("link").first.click()

    # The profile: identifiers, properties, reachability and the timeline.
    expect(page.get_by_role("heading", level=1)).to_contain_text("alice")
    expect(page.locator("dl.props").first).to_contain_text("alice@example.com")
    expect(page.get_by_text("Plan", exact=True)).to_be_visible()
    expect(page.locator("#timeline tr")).to_have_count(3)
    expect(page.locator("#timeline")).to_contain_text("/p/2")
    # Segments they are in (a member of "Pro plan", not of "Free plan").
    expect(page.get_by_text("Pro plan")).to_be_visible()
    expect(page.get_by_text("Free plan")).to_have_count(0)

    # Erase: the dialog asks first; cancelling changes nothing.
    page.get_by_role("button", name="Erase…").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be undone")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    assert httpx.get(srv.url + "/1/profile", params={"identity": "alice"},
                     headers=srv.headers).status_code == 200

    page.get_by_role("button", name="Erase…").click()
    page.get_by_role("dialog").get_by_role("button", name="Erase permanently").click()
    expect(page.locator("[data-gdpr-done]")).to_contain_text("erased")

    gone = httpx.get(srv.url + "/1/profile", params={"identity": "alice"}, headers=srv.headers)
    assert gone.status_code == 404
    kept = httpx.get(srv.url + "/1/profile", params={"identity": "bob"}, headers=srv.headers)
    assert kept.status_code == 200
    # Searching again finds nobody.
    page.goto(f"{srv.url}/ui/{srv.account_id}/people?q=alice@example.com")
    expect(page.locator("[data-empty]")).to_be_visible()
    ctx.close()


def test_the_timeline_loads_older_pages_as_it_scrolls(srv: NudgeServer, browser: Browser) -> None:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    enroll_and_sign_in(page, srv, "reader@example.com")
    carol = httpx.get(srv.url + "/1/profile", params={"identity": "carol"}, headers=srv.headers)
    assert carol.status_code == 200, carol.text
    page.goto(f"{srv.url}/ui/{srv.account_id}/people/{carol.json()['profile']['id']}")
    rows = page.locator("#timeline tr")
    # The newest event first; the oldest is not on the first page.
    expect(rows.first).to_contain_text(f"/q/{CAROL_EVENTS - 1}")
    for _ in range(10):  # scroll the timeline to its end until no page is left to load
        rows.last.scroll_into_view_if_needed()
        if page.locator("#timeline").get_by_text("Loading more").count() == 0:
            break
        page.wait_for_timeout(300)
    expect(rows).to_have_count(CAROL_EVENTS)
    expect(rows.last).to_contain_text("/q/0")
    texts = rows.locator("td:nth-child(3)").all_inner_texts()
    assert [json.loads(t)["Page"] for t in texts] == [
        f"/q/{i}" for i in reversed(range(CAROL_EVENTS))]  # each once, newest first
    ctx.close()
