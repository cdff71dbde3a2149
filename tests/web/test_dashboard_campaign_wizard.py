"""The campaign wizard for every kind (nudge/web/campaign_wizard.py) in Debian's Chromium
against a real server: a live-trigger campaign with a property filter built in the wizard
delivers to a real SMTP server (aiosmtpd) when a matching event is ingested through the API,
and not for a non-matching one; an API-triggered campaign is sent by ``POST /1/send`` and
paused, resumed and stopped from its results page; a
recurring A/B campaign with control group, caps and quiet hours is saved as exactly the
definition the form describes; a bad cron expression is refused naming the field."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from dashboard_helpers import (
    page_without_script_errors,
    signed_in,
    smtp_backed_server,
)
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer

pytest_plugins = ["browser"]

MARKETER, VIEWER = "wiz@example.com", "wizv@example.com"
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_ENGAGE_BACKOFF_MS": "300"}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NudgeServer, SmtpServer]]:
    with smtp_backed_server(tmp_path_factory.mktemp("nudge"), tmp_path_factory.mktemp("tls"),
                            FAST, {MARKETER: "marketer", VIEWER: "viewer"}) as pair:
        yield pair


@pytest.fixture(scope="module")
def srv(servers: tuple[NudgeServer, SmtpServer]) -> NudgeServer:
    return servers[0]


@pytest.fixture(scope="module")
def smtp(servers: tuple[NudgeServer, SmtpServer]) -> SmtpServer:
    return servers[1]


@pytest.fixture(scope="module")
def marketer_context(browser: Browser, srv: NudgeServer) -> Iterator[BrowserContext]:
    ctx = signed_in(browser, srv, MARKETER)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def page(marketer_context: BrowserContext) -> Iterator[Page]:
    with page_without_script_errors(marketer_context) as p:
        yield p


def _email(page: Page, subject: str, text: str) -> None:
    page.select_option("#c-channel-0", "email")
    page.fill("#c-subject", subject)
    page.fill("#c-text", text)


def _create(page: Page) -> int:
    page.click("#create-draft")
    try:
        page.wait_for_url("**/review", timeout=15000)
    except Exception:
        raise AssertionError("no review page; the wizard says: "
                             + page.locator("#wizard-error").inner_text()) from None
    return int(page.url.rsplit("/", 2)[1])


def test_trigger_campaign_from_the_wizard_arrives_when_the_event_is_ingested(
        page: Page, srv: NudgeServer, smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": f"t{i}", "Email": f"t{i}@example.com", "first_name": f"T{i}"}
                     for i in range(2)])
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new")
    page.check("#c-kind-trigger")
    expect(page.locator("#c-trigger-event")).to_be_visible()
    expect(page.locator("#c-cron")).to_be_hidden()
    page.fill("#c-name", "Welcome pro")
    page.fill("#c-trigger-event", "Signed Up")
    page.fill("#c-tf-prop-0", "plan")
    page.select_option("#c-tf-op-0", "eq")
    page.fill("#c-tf-value-0", "pro")
    page.fill("#c-tf-prop-1", "seats")
    page.select_option("#c-tf-op-1", "gte")
    page.fill("#c-tf-value-1", "2")
    _email(page, "Welcome {{ profile.first_name }} ({{ event.plan }})", "Hello")
    expect(page.locator("[data-reach-note]")).to_contain_text("everyone who does Signed Up")
    cid = _create(page)
    saved = h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()
    assert saved["kind"] == "trigger"
    assert saved["definition"]["trigger"] == {
        "event": "Signed Up", "where": [{"property": "plan", "op": "eq", "value": "pro"},
                                        {"property": "seats", "op": "gte", "value": 2}]}
    expect(page.locator("[data-starts]")).to_have_text(
        "When someone does Signed Up with plan eq pro and seats gte 2")
    page.click("#send-campaign")  # "Start listening"
    page.wait_for_url(f"**/campaigns/{cid}")
    assert h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()["status"] == "running"

    before = len(smtp.messages)
    now = int(time.time())
    r = srv.upload([
        {"type": "event", "identity": "t0", "ts": now, "evtName": "Signed Up",
         "evtData": {"plan": "free", "seats": 5}},  # filtered out
        {"type": "event", "identity": "t1", "ts": now, "evtName": "Signed Up",
         "evtData": {"plan": "pro", "seats": 3}}])
    assert r.status_code == 200, r.text
    h.wait_for(lambda: len(smtp.messages) > before, what="the welcome email")
    time.sleep(2)  # a wrongly sent second message would have arrived by now
    got = [(str(m["to"]), str(m["subject"])) for m in smtp.messages[before:]]
    assert got == [("t1@example.com", "Welcome T1 (pro)")]
    rep = h.wait_for(lambda: (x := h.api(srv, "GET", f"/1/campaigns/{cid}/report", ok=200)
                              .json())["by_variant_channel"] and
                     sum(c["sent"] for c in x["by_variant_channel"]) == 1 and x, what="sent=1")
    page.reload()
    expect(page.locator("tr[data-variant='A'] [data-stage=sent]")).to_have_text(
        str(sum(c["sent"] for c in rep["by_variant_channel"] if c["variant"] == "A")))


def test_api_campaign_from_the_wizard_is_sent_by_post_send(
        page: Page, srv: NudgeServer, smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": "api1", "Email": "api1@example.com"}])
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new?kind=api")
    expect(page.locator("#c-kind-api")).to_be_checked()
    page.fill("#c-name", "Receipt")
    _email(page, "Your receipt {{ data.order }}", "Thanks")
    cid = _create(page)
    expect(page.locator("[data-starts]")).to_contain_text("POST /1/send")
    page.click("#send-campaign")  # "Activate"
    page.wait_for_url(f"**/campaigns/{cid}")
    before = len(smtp.messages)
    h.api(srv, "POST", "/1/send", {"campaign_id": cid, "to": [{"identity": "api1"}],
                                   "data": {"order": "A-17"}}, ok=202)
    h.wait_for(lambda: len(smtp.messages) > before, what="the receipt")
    assert [str(m["subject"]) for m in smtp.messages[before:]] == ["Your receipt A-17"]

    # The results page runs its lifecycle: pause, resume, stop (after a confirmation).
    def status() -> str:
        return str(h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()["status"])

    page.click("#pause-campaign")
    expect(page.locator("[data-campaign-status]")).to_have_text("paused")
    assert status() == "paused"
    page.click("#resume-campaign")
    expect(page.locator("[data-campaign-status]")).to_have_text("running")
    assert status() == "running"
    page.get_by_role("button", name="Stop", exact=True).click()
    page.click("#stop-campaign")
    expect(page.locator("[data-campaign-status]")).to_have_text("stopped")
    assert status() == "stopped"
    expect(page.locator("#pause-campaign, #resume-campaign, #stop-campaign")).to_have_count(0)


def test_recurring_ab_campaign_with_control_caps_and_quiet_hours(
        page: Page, srv: NudgeServer) -> None:
    h.profiles(srv, [{"identity": f"r{i}", "Email": f"r{i}@example.com", "Tier": "gold"}
                     for i in range(4)])
    seg = h.api(srv, "POST", "/1/segments", {"name": "gold tier", "definition": {
        "profile": {"property": "Tier", "op": "eq", "value": "gold"}}}, ok=201).json()
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new")
    page.check("#c-kind-recurring")
    expect(page.locator("#c-trigger-event")).to_be_hidden()
    page.fill("#c-name", "Weekly digest")
    page.select_option("#c-segment", str(seg["id"]))
    page.fill("#c-cron", "0 9 * * 1")
    page.fill("#c-cron-tz", "Europe/Paris")
    page.select_option("#c-channel-0", "email")
    page.select_option("#c-channel-1", "sms")
    page.fill("input[name=fallback_hours]", "4")
    page.fill("#c-subject", "Digest")
    page.fill("#c-html", "<p>A</p>")
    page.fill("#c-sms", "Digest by SMS")
    page.fill("#c-b-percent", "40")
    page.fill("#c-b-subject", "Your digest")
    page.fill("#c-control", "10")
    page.fill("input[name=cap_max]", "2")
    page.fill("input[name=cap_days]", "7")
    page.fill("input[name=quiet_start]", "22:00")
    page.fill("input[name=quiet_end]", "07:30")
    page.select_option("select[name=quiet_action]", "drop")
    expect(page.locator("[data-audience]")).to_have_text("4")  # the live reach of the form
    cid = _create(page)
    d = h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()["definition"]
    assert d == {
        "name": "Weekly digest", "kind": "recurring", "channels": ["email", "sms"],
        "content": {"email": {"subject": "Digest", "html": "<p>A</p>"},
                    "sms": {"body": "Digest by SMS"}},
        "audience": {"segment_id": seg["id"]}, "fallback_after": {"hours": 4},
        "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Paris"},
        "caps": [{"max": 2, "per": {"days": 7}}],
        "quiet_hours": {"start": "22:00", "end": "07:30", "action": "drop"},
        "variants": [{"name": "A", "percent": 50},
                     {"name": "B", "percent": 40,
                      "content": {"email": {"subject": "Your digest", "html": "<p>A</p>"}}}],
        "control_percent": 10}
    est = h.api(srv, "GET", f"/1/campaigns/{cid}/estimate", ok=200).json()
    expect(page.locator("[data-audience]")).to_have_text(str(est["audience"]))
    expect(page.locator("[data-split]")).to_have_text("A 50%, B 40%, control group 10%")
    expect(page.locator("[data-policy]")).to_have_text(
        "at most 2 per 7 days; quiet 22:00-07:30 (drop)")
    expect(page.locator("[data-channels]")).to_have_text("email → sms")
    page.fill("#preview-who", "r1")
    page.click("form[hx-post$='/preview'] button")
    expect(page.locator("[data-subject]").first).to_be_visible()
    page.click("#send-campaign")  # "Start the schedule"
    page.wait_for_url(f"**/campaigns/{cid}")
    after = h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()
    assert after["status"] == "scheduled" and after["next_run_at"] > time.time()


def test_a_bad_cron_is_refused_naming_the_field(page: Page, srv: NudgeServer) -> None:
    seg = h.api(srv, "POST", "/1/segments", {"name": "anyone", "definition": {
        "profile": {"property": "$identity", "op": "exists"}}}, ok=201).json()
    n = len(h.api(srv, "GET", "/1/campaigns", ok=200).json()["campaigns"])
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new")
    page.check("#c-kind-recurring")
    page.fill("#c-name", "Broken schedule")
    page.select_option("#c-segment", str(seg["id"]))
    page.fill("#c-cron", "every monday")
    _email(page, "x", "y")
    page.click("#create-draft")
    expect(page.locator("#wizard-error")).to_contain_text("schedule.cron")
    assert len(h.api(srv, "GET", "/1/campaigns", ok=200).json()["campaigns"]) == n


def test_a_viewer_gets_no_wizard_and_no_lifecycle_and_forged_posts_are_refused(
        browser: Browser, srv: NudgeServer) -> None:
    c = h.api(srv, "POST", "/1/campaigns", {
        "name": "Running one", "kind": "api", "channels": ["email"],
        "content": {"email": {"subject": "s", "text": "t"}}}, ok=201).json()
    h.api(srv, "POST", f"/1/campaigns/{c['id']}/send", ok=200)
    ctx = signed_in(browser, srv, VIEWER)
    try:
        page = ctx.new_page()
        page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/{c['id']}")
        expect(page.locator("[data-campaign-status]")).to_have_text("running")
        expect(page.locator("#campaign-actions")).to_have_count(0)
        r = page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new")
        assert r is not None and r.status == 403
        csrf = next(x["value"] for x in ctx.cookies() if x["name"] == "nudge_csrf")
        base = f"{srv.url}/ui/{srv.account_id}/campaigns"
        for path in (f"{base}/{c['id']}/pause", f"{base}/{c['id']}/stop", base):
            resp = ctx.request.post(path, headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
                                    form={"name": "Forged", "kind": "api",
                                          "channel_0": "email", "email_subject": "x",
                                          "email_text": "y"})
            assert resp.status == 403, (path, resp.status)
        assert h.api(srv, "GET", f"/1/campaigns/{c['id']}", ok=200).json()["status"] == \
            "running"
        names = [x["name"] for x in h.api(srv, "GET", "/1/campaigns", ok=200).json()["campaigns"]]
        assert "Forged" not in names
    finally:
        ctx.close()
