"""Settings: an owner creates an API key from the dashboard (shown once, works against the
API), revokes it (refused afterwards), and finds both in the audit log; a marketer sees no
key administration and a forged key creation is refused."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dashboard_helpers import add_user, signed_in, signed_in_with_mfa
from playwright.sync_api import Browser, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash-settings"))
    try:
        add_user(s, "owner@example.com", "owner")
        add_user(s, "marketer@example.com", "marketer")
        yield s
    finally:
        s.stop()


def _read_key_works(srv: NudgeServer, secret: str) -> int:
    return httpx.get(srv.url + "/1/events/catalog", headers={
        "X-Nudge-Account-Id": srv.account_id, "X-Nudge-Passcode": secret}).status_code


def test_owner_creates_and_revokes_a_key_and_sees_the_audit_log(srv: NudgeServer,
                                                                browser: Browser) -> None:
    ctx = signed_in_with_mfa(browser, srv, "owner@example.com")
    page = ctx.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    page.get_by_role("link", name="API keys").click()
    page.get_by_role("button", name="New read key").click()
    secret = page.locator("[data-key-created] [data-secret]").inner_text().strip()
    assert _read_key_works(srv, secret) == 200

    page.reload()  # the new key is listed (by prefix only, never the secret)
    assert secret not in page.content()
    page.on("dialog", lambda d: d.accept())  # hx-confirm
    rows = page.locator("tbody tr", has_text="read")
    expect(rows).to_have_count(1)
    rows.get_by_role("button", name="Revoke").click()
    expect(page.locator("[data-revoked]")).to_be_visible()
    assert _read_key_works(srv, secret) == 401

    page.goto(f"{srv.url}/ui/{srv.account_id}/settings/audit")
    log = page.locator("table")
    expect(log).to_contain_text("key.created")
    expect(log).to_contain_text("key.revoked")
    expect(log).to_contain_text("user:owner@example.com")
    ctx.close()


def test_marketer_cannot_manage_keys(srv: NudgeServer, browser: Browser) -> None:
    ctx = signed_in(browser, srv, "marketer@example.com")
    page = ctx.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)
    resp = page.goto(f"{srv.url}/ui/{srv.account_id}/settings/keys")
    assert resp is not None and resp.status == 403
    csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")
    forged = page.request.post(f"{srv.url}/ui/{srv.account_id}/settings/keys?kind=passcode",
                               headers={"X-CSRF-Token": csrf})
    assert forged.status == 403
    assert "data-secret" not in forged.text()
    ctx.close()
