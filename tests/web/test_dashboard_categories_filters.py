"""Subscription categories and the canvas's filter form, in Debian's Chromium against a real
server with a real SMTP server (aiosmtpd):

- an admin creates a category in Settings, the campaign wizard offers it, the email of that
  campaign carries a preference-page link where the recipient unsubscribes from that
  category (their profile page then shows it), and the next campaign in the category skips
  them with reason ``unsubscribed``;
- a viewer sees the categories in Settings without edit controls and the server refuses a
  forged post;
- on the journey canvas a marketer sets the entry (trigger) event's filters and a condition
  node's event filters with the segment builder's filter rows, publishes, and the API
  returns exactly those filters."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from dashboard_helpers import (
    page_without_script_errors,
    signed_in,
    signed_in_with_mfa,
    smtp_backed_server,
)
from playwright.sync_api import Browser, Page, expect

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer

pytest_plugins = ["browser"]

ADMIN, MARKETER, VIEWER = "cat-admin@example.com", "cat-m@example.com", "cat-v@example.com"
FAST = {"NUDGE_ENGAGE_POLL_MS": "50"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NudgeServer, SmtpServer]]:
    with smtp_backed_server(tmp_path_factory.mktemp("nudge"), tmp_path_factory.mktemp("tls"),
                            FAST, {ADMIN: "admin", MARKETER: "marketer",
                                   VIEWER: "viewer"}) as pair:
        yield pair


@pytest.fixture(scope="module")
def srv(servers: tuple[NudgeServer, SmtpServer]) -> NudgeServer:
    return servers[0]


@pytest.fixture
def admin(browser: Browser, srv: NudgeServer) -> Iterator[Page]:
    ctx = signed_in_with_mfa(browser, srv, ADMIN)
    try:
        with page_without_script_errors(ctx) as p:
            yield p
    finally:
        ctx.close()


def _settled(srv: NudgeServer, cid: int) -> list[dict[str, str]]:
    return h.wait_for(lambda: [m for m in h.outbox(srv, campaign_id=cid)
                               if m["status"] in ("sent", "delivered", "skipped")],
                      what=f"campaign {cid} settled")


def test_category_from_settings_to_wizard_to_preference_page_to_skip(
        admin: Page, srv: NudgeServer, servers: tuple[NudgeServer, SmtpServer]) -> None:
    smtp = servers[1]
    page = admin
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
    page.get_by_label("New category name").fill("Product news")
    page.get_by_label("Description", exact=True).fill("What we shipped this month")
    page.get_by_role("button", name="Add category").click()
    expect(page.locator("#category-result [data-saved]")).to_contain_text("product-news")
    row = page.locator("#category-list tr[data-category=product-news]")
    expect(row.locator("input[name=name]")).to_have_value("Product news")  # list reloaded
    # Rename, describe and archive another one in its row.
    h.api(srv, "POST", "/1/subscription-categories", {"name": "Old stuff", "key": "old"}, ok=201)
    page.reload()
    page.get_by_label("Name of old").fill("Retired offers")
    page.get_by_label("Description of old").fill("No longer sent")
    page.get_by_role("button", name="Save old").click()
    expect(page.locator("#category-row-result [data-saved]")).to_contain_text("Retired offers")
    page.get_by_role("button", name="Archive old").click()
    expect(page.locator("tr[data-category=old] .badge")).to_have_text("archived")
    old = h.api(srv, "GET", "/1/subscription-categories/old", ok=200).json()
    assert (old["name"], old["description"], old["archived"]) == (
        "Retired offers", "No longer sent", True)

    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new?kind=api")
    expect(page.locator("#c-category option[value=product-news]")).to_have_text(
        "Product news — What we shipped this month")
    expect(page.locator("#c-category option[value=old]")).to_have_count(0)  # archived
    expect(page.locator("#c-category")).to_have_value("general")  # the default
    page.fill("#c-name", "Shipped in November")
    page.select_option("#c-category", "product-news")
    page.select_option("#c-channel-0", "email")
    page.fill("#c-subject", "New this month")
    page.fill("#c-text", "Hello")
    page.click("#create-draft")
    page.wait_for_url("**/review")
    expect(page.locator("[data-category]")).to_have_text("product-news")
    cid = int(page.url.rsplit("/", 2)[1])
    page.click("#send-campaign")  # "Activate"
    page.wait_for_url(f"**/campaigns/{cid}")

    h.profiles(srv, [{"identity": "pn1", "Email": "pn1@example.com"}])
    before = len(smtp.messages)
    h.api(srv, "POST", "/1/send", {"campaign_id": cid, "to": [{"identity": "pn1"}]}, ok=202)
    h.wait_for(lambda: len(smtp.messages) > before, what="the first email")
    url = str(smtp.messages[before]["List-Unsubscribe"]).strip("<>")

    # The recipient's preference page: every category per channel where they can be
    # reached (an email address and the in-app inbox; no phone: no SMS), with its state.
    page.goto(srv.url + urlsplit(url).path)
    box = page.get_by_label("Product news by email")
    expect(box).to_be_checked()
    expect(page.get_by_label("General by email")).to_be_checked()
    expect(page.get_by_label("Product news by inapp")).to_be_checked()
    expect(page.get_by_label("Product news by sms")).to_have_count(0)
    box.uncheck()
    page.get_by_role("button", name="Save preferences").click()
    expect(page.get_by_role("heading", name="Preferences saved")).to_be_visible()
    page.go_back()
    page.reload()
    expect(page.get_by_label("Product news by email")).not_to_be_checked()
    expect(page.get_by_label("General by email")).to_be_checked()
    subs = h.api(srv, "GET", "/1/subscriptions", params={"identity": "pn1"}, ok=200).json()
    assert subs["subscriptions"] == [{"channel": "email", "category": "product-news",
                                      "subscribed": False}]
    page.goto(f"{srv.url}/ui/{srv.account_id}/people/{subs['user_id']}")  # the 360 profile
    expect(page.locator("[data-subscriptions]")).to_contain_text(
        "Product news by emailunsubscribed")

    # The next campaign in that category skips them; one in the default category does not.
    later = h.campaign(srv, {"name": "Shipped in December", "kind": "api",
                             "channels": ["email"], "category": "product-news",
                             "content": {"email": {"subject": "December", "text": "x"}}})
    other = h.campaign(srv, {"name": "Receipt", "kind": "api", "channels": ["email"],
                             "content": {"email": {"subject": "Receipt", "text": "x"}}})
    for c in (later, other):
        h.api(srv, "POST", "/1/send", {"campaign_id": c["id"], "to": [{"identity": "pn1"}]},
              ok=202)
    assert [(m["status"], m["reason"]) for m in _settled(srv, later["id"])] == [
        ("skipped", "unsubscribed")]
    assert [m["status"] for m in _settled(srv, other["id"])] in (["sent"], ["delivered"])


def test_viewer_sees_categories_without_controls_and_is_refused(
        browser: Browser, srv: NudgeServer) -> None:
    ctx = signed_in(browser, srv, VIEWER)
    try:
        with page_without_script_errors(ctx) as page:
            page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
            expect(page.locator("#category-list tr[data-category=general]")).to_contain_text(
                "General")
            expect(page.locator("#categories input, #categories button")).to_have_count(0)
            csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")
            r = ctx.request.post(f"{srv.url}/ui/{srv.account_id}/settings/categories",
                                 form={"name": "Viewer's own"},
                                 headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
            assert r.status == 403, r.text()
            r = ctx.request.post(f"{srv.url}/ui/{srv.account_id}/settings/categories/general",
                                 form={"name": "Renamed"},
                                 headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
            assert r.status == 403, r.text()
    finally:
        ctx.close()
    cats = h.api(srv, "GET", "/1/subscription-categories", ok=200).json()["categories"]
    assert "Viewer's own" not in [c["name"] for c in cats]
    assert cats[0]["name"] == "General"


def _filter(page: Page, legend: str, n: int, prop: str, op: str, value: str) -> None:
    page.get_by_role("button", name=f"Add filter: {legend}").click()
    page.get_by_label(f"{legend}: property {n}").fill(prop)
    page.get_by_label(f"{legend}: operator {n}").select_option(op)
    page.get_by_label(f"{legend}: value {n}").fill(value)


def test_canvas_filters_are_edited_in_rows_and_published(browser: Browser,
                                                         srv: NudgeServer) -> None:
    ctx = signed_in(browser, srv, MARKETER)
    try:
        with page_without_script_errors(ctx) as page:
            page.goto(f"{srv.url}/ui/{srv.account_id}/journeys/new")
            page.get_by_label("Name", exact=True).fill("Big carts")
            page.get_by_label("Entry event", exact=True).fill("Added To Cart")
            _filter(page, "Entry event filters", 1, "value", "gte", "10")
            _filter(page, "Entry event filters", 2, "plan", "in", "pro, team")
            _filter(page, "Entry event filters", 3, "coupon", "exists", "")
            _filter(page, "Entry event filters", 4, "dropped", "eq", "x")
            page.get_by_role("button", name="Remove filter 4: Entry event filters").click()
            page.click("#journey-settings")
            page.select_option("#add-type", "condition")
            page.click("#add-node")
            page.get_by_label("Event", exact=True).fill("Charged")
            _filter(page, "Event filters", 1, "Amount", "gt", "100")
            page.get_by_label("At least this many times since entering").fill("2")
            page.locator("g[data-node=condition]").click()
            page.select_option("#add-type", "exit")
            page.click("#add-node")  # yes -> exit
            page.locator("g[data-node=condition]").click()
            page.get_by_label("Then (no)").select_option("exit")
            with page.expect_response("**/publish") as resp:
                page.click("#publish-journey")
            assert resp.value.status == 200, resp.value.text()
            expect(page.locator("[data-journey-status]")).to_have_text("published")
            jid = int(page.url.rsplit("/", 1)[1])
            d = h.api(srv, "GET", f"/1/journeys/{jid}", ok=200).json()["definition"]
            assert d["entry"] == {"event": "Added To Cart", "where": [
                {"property": "value", "op": "gte", "value": 10},
                {"property": "plan", "op": "in", "value": ["pro", "team"]},
                {"property": "coupon", "op": "exists"}]}
            assert d["nodes"][0]["did"] == {"event": "Charged", "count": 2, "where": [
                {"property": "Amount", "op": "gt", "value": 100}]}
            # Reopened, the rows show the stored filters.
            page.reload()
            expect(page.get_by_label("Entry event filters: value 2")).to_have_value("pro, team")
            expect(page.get_by_label("Entry event filters: operator 3")).to_have_value("exists")
    finally:
        ctx.close()
