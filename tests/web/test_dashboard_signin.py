"""Dashboard sign-in with TOTP (enrollment, then the challenge) and role-aware pages: a
viewer sees no edit controls and the server refuses the action when it is forged."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashboard_helpers import PASSWORD, add_user, enroll_and_sign_in, sign_in
from playwright.sync_api import Browser, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash-signin"))
    try:
        r = s.upload([{"identity": "alice", "type": "profile",
                       "profileData": {"Email": "alice@example.com", "Name": "Alice"}},
                      {"identity": "alice", "type": "event", "evtName": "Charged",
                       "evtData": {"Amount": 12}}])
        assert r.status_code == 200, r.text
        yield s
    finally:
        s.stop()


def test_owner_enrolls_mfa_then_signs_in_with_a_totp_code(srv: NudgeServer,
                                                          browser: Browser) -> None:
    add_user(srv, "owner@example.com", "owner")
    first = browser.new_context()
    totp = enroll_and_sign_in(first.new_page(), srv, "owner@example.com")
    first.close()

    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(srv.url + "/ui/login")
    page.get_by_label("Email").fill("owner@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Verification code")).to_be_visible()
    # A wrong code is refused and shown; the code of the next 30 s step (the one used at
    # enrollment cannot be used twice) signs in.
    page.get_by_label("Code").fill("000000" if totp.now() != "000000" else "111111")
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("[data-error]")).to_be_visible()
    next_step = totp.at(int(time.time()) + 30)
    page.get_by_label("Code").fill(next_step)
    page.get_by_role("button", name="Verify").click()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_be_visible()
    for label in ("Home", "Events", "People", "Settings"):
        expect(nav.get_by_role("link", name=label, exact=True)).to_be_visible()
    expect(page.locator(".role")).to_have_text("owner")
    ctx.close()


def test_pages_need_a_session(srv: NudgeServer) -> None:
    r = httpx.get(f"{srv.url}/ui/{srv.account_id}/people", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/ui/login")
    # Security headers: the CSP forbids inline scripts on the dashboard.
    page = httpx.get(srv.url + "/ui/login")
    csp = page.headers["content-security-policy"]
    script_src = csp.split("script-src")[1].split(";")[0]
    assert script_src.strip() == "'self'"
    assert "<script>" not in page.text and " on" + "click=" not in page.text


def test_viewer_sees_no_edit_controls_and_a_forged_erase_is_refused(
        srv: NudgeServer, browser: Browser, tmp_path: Path) -> None:
    add_user(srv, "viewer@example.com", "viewer")
    add_user(srv, "analyst@example.com", "analyst")
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, srv, "viewer@example.com")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Home", exact=True)).to_be_visible()
    expect(nav.get_by_role("link", name="People", exact=True)).to_have_count(0)  # profiles:read
    # The page itself is refused too, not only hidden from the menu.
    resp = page.goto(f"{srv.url}/ui/{srv.account_id}/people?q=alice")
    assert resp is not None and resp.status == 403
    ctx.close()

    # An analyst may read the profile but sees no GDPR buttons, and a forged erase (with a
    # valid session and CSRF token) is refused: alice still exists afterwards.
    ctx = browser.new_context()
    page = ctx.new_page()
    sign_in(page, srv, "analyst@example.com")
    page.goto(f"{srv.url}/ui/{srv.account_id}/people?q=alice")
    page.get_by_role("link", name="#").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("alice")
    expect(page.get_by_role("button", name="Erase…")).to_have_count(0)
    user_path = page.url.split(srv.url, 1)[1]
    csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")
    forged = page.request.post(srv.url + user_path + "/erase", headers={"X-CSRF-Token": csrf})
    assert forged.status == 403
    assert "privacy:manage" in forged.text()
    still = httpx.get(srv.url + "/1/profile", params={"identity": "alice"}, headers=srv.headers)
    assert still.status_code == 200
    ctx.close()
