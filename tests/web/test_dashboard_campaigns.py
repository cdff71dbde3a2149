"""Dashboard campaign pages (nudge/web/campaigns.py) in Debian's Chromium against a real
server: an email campaign to a saved segment is delivered to a real SMTP server (aiosmtpd),
and the list and results pages show the same sent/delivered/opened/clicked/converted figures
per variant as ``GET /1/campaigns/{id}/report``. The wizard for the other kinds (recurring,
trigger, API) is tested in test_dashboard_campaign_wizard.py."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer
from tests.engage import engage_helpers as h
from tests.engage.providers import SmtpServer, tls_pair

pytest_plugins = ["browser"]

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test user only
EMAIL = "marketer@example.com"
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_ENGAGE_BACKOFF_MS": "300",
        "NUDGE_ENGAGE_MAX_ATTEMPTS": "4", "NUDGE_ENGAGE_SEND_TIMEOUT_MS": "4000"}
STAGES = ("sent", "delivered", "opened", "clicked", "converted")


@pytest.fixture(scope="module")
def smtp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmtpServer]:
    with SmtpServer(tls_pair(tmp_path_factory.mktemp("tls"))) as s:
        yield s


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, smtp: SmtpServer) -> Iterator[NudgeServer]:
    s = h.start_server(tmp_path_factory.mktemp("nudge"), FAST)
    try:
        subprocess.run([sys.executable, "-m", "nudge", "users", "create", EMAIL, "--account",
                        s.account_id, "--role", "owner", "--password-stdin", "--data-dir",
                        str(s.data_dir)], input=PASSWORD + "\n", text=True, check=True,
                       capture_output=True)
        h.configure(s, "email", smtp.channel_config())
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def signed_in(browser: Browser, srv: NudgeServer) -> Iterator[BrowserContext]:
    ctx = browser.new_context()
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


def test_campaign_to_a_segment_arrives_and_results_match_the_api(
        signed_in: BrowserContext, srv: NudgeServer, smtp: SmtpServer) -> None:
    h.profiles(srv, [{"identity": f"c{i}", "Email": f"c{i}@example.com",
                      "Plan": "pro" if i % 3 == 0 else "free"} for i in range(12)])
    seg = h.api(srv, "POST", "/1/segments", {
        "name": "pro", "definition": {"profile": {"property": "Plan", "op": "eq",
                                                  "value": "pro"}}}, ok=201).json()
    before = len(smtp.messages)
    c = h.campaign(srv, {
        "name": "Pro tips", "channels": ["email"],
        "audience": {"definition": {"segment": {"id": seg["id"]}}},
        "content": {"email": {"subject": "Tips for {{ profile.identity }}",
                              "html": "<p>Hi</p>", "text": "Hi"}}})
    h.wait_for(lambda: len(smtp.messages) - before >= 4, what="4 emails")
    got = sorted(str(m["to"]) for m in smtp.messages[before:])
    assert got == ["c0@example.com", "c3@example.com", "c6@example.com", "c9@example.com"]
    report = h.wait_for(lambda: (r := h.api(srv, "GET", f"/1/campaigns/{c['id']}/report",
                                            ok=200).json())["status"] == "completed" and r,
                        what="campaign completed")
    totals = {k: sum(cell[k] for cell in report["by_variant_channel"]) for k in STAGES}
    assert totals["sent"] == 4

    page: Page = signed_in.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns")
    row = page.locator(f"#campaign-{c['id']}")
    expect(row).to_contain_text("Pro tips")
    for k in STAGES:
        assert row.locator(f"[data-stage={k}]").inner_text() == f"{totals[k]:,}"

    row.get_by_role("link", name="Pro tips").click()
    expect(page.locator("h1")).to_contain_text("Pro tips")
    expect(page.locator("#campaign-chart canvas")).to_have_count(1)
    variants = {cell["variant"] for cell in report["by_variant_channel"]}
    for v in variants:
        cells = [x for x in report["by_variant_channel"] if x["variant"] == v]
        tr = page.locator(f"tr[data-variant='{v}']")
        for k in STAGES:
            assert tr.locator(f"[data-stage={k}]").inner_text() == f"{sum(x[k] for x in cells):,}"
    page.close()


def test_a_campaign_of_nobody_is_404(signed_in: BrowserContext, srv: NudgeServer) -> None:
    page = signed_in.new_page()
    r = page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/999999")
    assert r is not None and r.status == 404
    page.close()


def test_wizard_builds_an_email_campaign_that_arrives(
        signed_in: BrowserContext, srv: NudgeServer, smtp: SmtpServer) -> None:
    """Segment → wizard (reach, channel, Liquid content, control group) → review (reach and
    a preview rendered for one person) → send → the emails arrive at the SMTP server."""
    h.profiles(srv, [{"identity": f"w{i}", "Email": f"w{i}@example.com", "first_name": f"W{i}",
                      "Tier": "gold" if i < 5 else "basic"} for i in range(9)])
    seg = h.api(srv, "POST", "/1/segments", {
        "name": "gold", "definition": {"profile": {"property": "Tier", "op": "eq",
                                                   "value": "gold"}}}, ok=201).json()
    page: Page = signed_in.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/campaigns/new")
    page.fill("#c-name", "Gold welcome")
    page.select_option("#c-segment", str(seg["id"]))
    page.select_option("#c-channel-0", "email")
    page.fill("#c-subject", "Welcome {{ profile.first_name }}")
    page.fill("#c-html", "<p>Hello {{ profile.first_name }}</p>")
    page.fill("#c-text", "Hello {{ profile.first_name }}")
    est = h.api(srv, "POST", "/1/campaigns/estimate", {
        "name": "x", "channels": ["email"], "audience": {"segment_id": seg["id"]},
        "content": {"email": {"subject": "s", "html": "h"}}}, ok=200).json()
    assert est["audience"] == 5
    expect(page.locator("[data-audience]")).to_have_text("5")
    expect(page.locator("[data-reachable=email]")).to_have_text(str(est["reachable"]["email"]))

    page.click("#create-draft")
    page.wait_for_url("**/review")
    cid = int(page.url.rsplit("/", 2)[1])
    expect(page.locator("[data-audience]")).to_have_text("5")
    page.fill("#preview-who", "w2")
    page.click("#preview form button[type=submit], form[hx-post$='/preview'] button")
    expect(page.locator("[data-subject]").first).to_have_text("Welcome W2")

    before = len(smtp.messages)
    page.click("#send-campaign")
    page.wait_for_url(f"**/campaigns/{cid}")
    h.wait_for(lambda: len(smtp.messages) - before >= 5, what="5 emails")
    got = sorted(str(m["subject"]) for m in smtp.messages[before:])
    assert got == [f"Welcome W{i}" for i in range(5)]
    saved = h.api(srv, "GET", f"/1/campaigns/{cid}", ok=200).json()
    assert saved["definition"]["audience"] == {"segment_id": seg["id"]}
    page.close()


def test_journey_graph_shows_the_api_counts(signed_in: BrowserContext, srv: NudgeServer) -> None:
    """A published journey entered through the API is drawn node by node, each with the
    counts of GET /1/journeys/{id}/report (steps run, people waiting there now)."""
    h.profiles(srv, [{"identity": f"j{i}"} for i in range(6)])
    j = h.api(srv, "POST", "/1/journeys", {
        "name": "Onboarding", "entry": {"api": True}, "start": "split",
        "nodes": [{"id": "split", "type": "split",
                   "branches": [{"percent": 50, "next": "tag"}, {"percent": 50, "next": "wait"}]},
                  {"id": "tag", "type": "update_profile", "set": {"onboarded": True},
                   "next": "done"},
                  {"id": "wait", "type": "delay", "duration": {"days": 3}, "next": "done"},
                  {"id": "done", "type": "exit"}]}, ok=201).json()
    h.api(srv, "POST", f"/1/journeys/{j['id']}/publish", ok=200)
    h.api(srv, "POST", f"/1/journeys/{j['id']}/enter",
          {"to": [{"identity": f"j{i}"} for i in range(6)]}, ok=202)
    report = h.wait_for(lambda: (r := h.api(srv, "GET", f"/1/journeys/{j['id']}/report",
                                            ok=200).json())["entered"] == 6 and
                        sum(r["steps"].get("split", {}).values()) == 6 and
                        r["active"] == r["at_node"].get("wait", 0) and r,
                        what="6 entries split, the active ones all waiting in the delay")
    page = signed_in.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/journeys")
    page.get_by_role("link", name="Onboarding").click()
    expect(page.locator("[data-figure=entered]")).to_have_text("6")
    for node in ("split", "tag", "wait", "done"):
        g = page.locator(f"g[data-node={node}]")
        assert int(g.locator("[data-waiting]").text_content() or "") == \
            report["at_node"].get(node, 0)
    assert int(page.locator("g[data-node=split] [data-passed]").text_content() or "") == 6
    assert page.locator("line[data-edge]").count() == 4
    page.close()
