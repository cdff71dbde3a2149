"""Settings edit forms against a real server: the owner changes the account timezone (the
API's reports use it at once), sets and replaces channel provider credentials that never
come back to the browser, manages users and roles, caps, quiet hours and webhooks, each
with field errors for bad input and an audit entry; a viewer and a marketer get no edit
controls and their forged posts are refused with nothing changed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dashboard_helpers import add_user, signed_in, signed_in_with_mfa
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]

OWNER, MARKETER, VIEWER = "owner@example.com", "marketer@example.com", "viewer@example.com"
SECRET = "smtp-pass-Zq8-never-shown"  # noqa: S105 - a test credential


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    s = make_server(tmp_path_factory.mktemp("dash-settings-forms"))
    try:
        for email, role in ((OWNER, "owner"), (MARKETER, "marketer"), (VIEWER, "viewer")):
            add_user(s, email, role)
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def owner(browser: Browser, srv: NudgeServer) -> Iterator[BrowserContext]:
    ctx = signed_in_with_mfa(browser, srv, OWNER)
    yield ctx
    ctx.close()


def _api(srv: NudgeServer, path: str) -> dict:
    r = httpx.get(srv.url + path, headers=srv.headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _audit_actions(ctx: BrowserContext, srv: NudgeServer) -> list[str]:
    r = ctx.request.get(srv.url + "/1/audit", headers={"X-Nudge-Account-Id": srv.account_id})
    assert r.ok, r.text()
    return [e["action"] for e in r.json()["entries"]]


def test_owner_edits_timezone_and_the_reports_use_it(srv: NudgeServer,
                                                     owner: BrowserContext) -> None:
    page = owner.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
    expect(page.locator("[data-timezone]")).to_have_text("UTC")
    page.get_by_label("Timezone").fill("Mars/Olympus_Mons")
    page.get_by_role("button", name="Save timezone").click()
    expect(page.locator("#account-result [role=alert]")).to_contain_text("timezone")
    assert _api(srv, "/1/analytics/live")["now"].endswith("+00:00")  # nothing changed

    page.get_by_label("Timezone").fill("Asia/Kolkata")
    page.get_by_role("button", name="Save timezone").click()
    expect(page.locator("#account-result [data-saved]")).to_contain_text("Asia/Kolkata")
    page.reload()
    expect(page.locator("[data-timezone]")).to_have_text("Asia/Kolkata")
    assert _api(srv, "/1/analytics/live")["now"].endswith("+05:30")
    assert "account.timezone_changed" in _audit_actions(owner, srv)
    page.close()


def _fill_email_provider(page: Page, config: str, password: str) -> None:
    card = page.locator("[data-provider=email-smtp]")
    card.get_by_label("Settings (JSON").fill(config)
    card.get_by_label("password").fill(password)
    card.get_by_role("button", name="settings").click()


def test_provider_credentials_are_write_only(srv: NudgeServer, owner: BrowserContext) -> None:
    page = owner.new_page()
    bodies: list[str] = []
    page.on("response", lambda r: bodies.append(r.text()) if r.url.startswith(srv.url)
            and "/static/" not in r.url else None)
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings/channels")
    card = page.locator("[data-provider=email-smtp]")
    expect(card.get_by_label("password (not set)")).to_be_visible()

    # invalid settings: the provider's own validation names the field; nothing is stored
    _fill_email_provider(page, '{"host": "127.0.0.1", "username": "mailer"}', SECRET)
    expect(card.locator("[role=alert]")).to_contain_text("config.from")
    assert _api(srv, "/1/channels/email")["providers"] == []

    good = ('{"host": "127.0.0.1", "port": 2525, "security": "none", "from": '
            '"news@example.com", "username": "mailer", "password": "ignored-in-json"}')
    _fill_email_provider(page, good, SECRET)
    expect(card.locator("[data-saved]")).to_contain_text("secrets set: password")
    view = _api(srv, "/1/channels/email")["providers"][0]
    assert view["secrets_set"] == ["password"] and view["config"]["port"] == 2525

    page.reload()  # listed as set, the value nowhere in the page
    card = page.locator("[data-provider=email-smtp]")
    expect(card.get_by_label("password (set — type to replace)")).to_have_value("")
    # replace the settings, leave the credential empty: the stored one is kept
    _fill_email_provider(page, good.replace("2525", "2626"), "")
    expect(card.locator("[data-saved]")).to_contain_text("secrets set: password")
    assert _api(srv, "/1/channels/email")["providers"][0]["config"]["port"] == 2626
    page.reload()
    page.close()
    assert bodies and not any(SECRET in b or "ignored-in-json" in b for b in bodies)
    assert "channel.configured" in _audit_actions(owner, srv)


def test_owner_manages_users_and_roles(srv: NudgeServer, owner: BrowserContext) -> None:
    page = owner.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings/users")
    page.locator("#new-email").evaluate("e => e.type = 'text'")  # past the browser's check
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#add-result [role=alert]")).to_contain_text("email")
    page.get_by_label("Email").fill("new@example.com")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Add user").click()
    expect(page.locator("#add-result [data-reset-token]")).not_to_be_empty()

    page.reload()
    row = page.locator("tr[data-member='new@example.com']")
    row.get_by_label("Role of new@example.com").select_option("analyst")
    row.get_by_role("button", name="Change role").click()
    expect(row.locator("[data-saved]")).to_contain_text("now analyst")
    row.get_by_role("button", name="Reset MFA").click()
    expect(row.locator("[data-saved]")).to_contain_text("MFA reset")

    # the last owner cannot be demoted: a field error, the role stays
    me = page.locator(f"tr[data-member='{OWNER}']")
    me.get_by_label(f"Role of {OWNER}").select_option("viewer")
    me.get_by_role("button", name="Change role").click()
    expect(me.locator("[role=alert]")).to_contain_text("last owner")

    row.get_by_role("button", name="Remove").click()
    expect(row.locator("[data-saved]")).to_contain_text("removed")
    users = owner.request.get(srv.url + "/1/users",
                              headers={"X-Nudge-Account-Id": srv.account_id}).json()["users"]
    roles = {u["email"]: u["role"] for u in users}
    assert "new@example.com" not in roles and roles[OWNER] == "owner"
    actions = _audit_actions(owner, srv)
    for a in ("user.added", "user.role_changed", "user.mfa_reset", "user.removed"):
        assert a in actions
    page.close()


def test_caps_quiet_hours_and_webhooks(srv: NudgeServer, owner: BrowserContext) -> None:
    page = owner.new_page()
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
    page.get_by_label("Caps").fill('[{"max": -1, "per": {"days": 1}}]')
    page.get_by_role("button", name="Save caps and quiet hours").click()
    expect(page.locator("#policy-result [role=alert]")).to_contain_text("caps[0].max")
    page.get_by_label("Caps").fill('[{"max": 3, "per": {"days": 1}}]')
    page.get_by_label("Quiet hours from").fill("22:00")
    page.get_by_label("until").fill("25:00")
    page.get_by_role("button", name="Save caps and quiet hours").click()
    expect(page.locator("#policy-result [role=alert]")).to_contain_text("quiet_hours.end")
    assert _api(srv, "/1/engage/policy") == {}
    page.get_by_label("until").fill("07:30")
    page.get_by_label("Messages in quiet hours").select_option("drop")
    page.get_by_role("button", name="Save caps and quiet hours").click()
    expect(page.locator("#policy-result [data-saved]")).to_be_visible()
    assert _api(srv, "/1/engage/policy") == {
        "caps": [{"max": 3, "per": {"days": 1}}],
        "quiet_hours": {"start": "22:00", "end": "07:30", "action": "drop"}}

    page.goto(f"{srv.url}/ui/{srv.account_id}/settings/channels")
    page.get_by_label("Event").fill("Charged")
    page.get_by_label("URL").fill("ftp://example.com/hook")
    page.locator("#wh-url").evaluate("e => e.type = 'text'")  # past the browser's own check
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#webhook-result [role=alert]")).to_contain_text("url")
    page.get_by_label("URL").fill("https://example.com/hook")
    page.get_by_role("button", name="Add webhook").click()
    expect(page.locator("#webhook-result [data-saved]")).to_be_visible()
    hooks = _api(srv, "/1/webhooks")["webhooks"]
    assert [(h["event"], h["url"]) for h in hooks] == [("Charged", "https://example.com/hook")]
    page.reload()
    page.locator(f"#webhook-{hooks[0]['id']}").get_by_role("button", name="Delete").click()
    expect(page.locator("[data-saved]")).to_contain_text("deleted")
    assert _api(srv, "/1/webhooks")["webhooks"] == []
    assert {"engage.policy_changed", "webhook.created", "webhook.deleted"} <= set(
        _audit_actions(owner, srv))
    page.close()


FORGED = [("settings/account", {"timezone": "Europe/Paris"}),
          ("settings/users", {"email": "intruder@example.com", "role": "owner"}),
          ("settings/channels/email", {"provider": "smtp", "config": "{}",
                                       "secret_password": "x"}),
          ("settings/webhooks", {"url": "https://evil.example.com/", "event": "Charged"})]


@pytest.mark.parametrize("email", [MARKETER, VIEWER])
def test_other_roles_get_no_controls_and_forged_posts_are_refused(
        srv: NudgeServer, browser: Browser, owner: BrowserContext, email: str) -> None:
    before = _api(srv, "/1/analytics/live")["now"][-6:]
    ctx = signed_in(browser, srv, email)
    page = ctx.new_page()
    page.goto(f"{srv.url}/ui/{srv.account_id}/settings")
    expect(page.get_by_role("heading", name="Account")).to_be_visible()
    expect(page.get_by_role("button", name="Save timezone")).to_have_count(0)
    expect(page.get_by_role("link", name="Channel providers and webhooks")).to_have_count(0)
    resp = page.goto(f"{srv.url}/ui/{srv.account_id}/settings/channels")
    assert resp is not None and resp.status == 403
    csrf = next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")
    for path, form in FORGED:
        r = page.request.post(f"{srv.url}/ui/{srv.account_id}/{path}", form=form,
                              headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
        assert r.status == 403, (path, r.status)
    if email == VIEWER:  # marketers may edit caps, as with PUT /1/engage/policy
        expect(page.get_by_role("button", name="Save caps and quiet hours")).to_have_count(0)
        r = page.request.post(f"{srv.url}/ui/{srv.account_id}/settings/policy",
                              form={"caps": "[]"}, headers={"X-CSRF-Token": csrf})
        assert r.status == 403
    assert _api(srv, "/1/analytics/live")["now"][-6:] == before
    assert "evil.example.com" not in str(_api(srv, "/1/webhooks"))
    users = owner.request.get(srv.url + "/1/users",
                              headers={"X-Nudge-Account-Id": srv.account_id}).json()["users"]
    assert "intruder@example.com" not in {u["email"] for u in users}
    ctx.close()
