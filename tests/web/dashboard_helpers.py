"""Shared by the dashboard tests: dashboard users created with the real CLI, and signing in
through the real sign-in pages in a Playwright page."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyotp
from playwright.sync_api import Browser, BrowserContext, Page, expect

from conftest import NudgeServer

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test users only


def add_user(srv: NudgeServer, email: str, role: str) -> None:
    """``nudge users create`` against the running server's data directory."""
    subprocess.run(
        [sys.executable, "-m", "nudge", "users", "create", email, "--account", srv.account_id,
         "--role", role, "--password-stdin", "--data-dir", str(srv.data_dir)],
        input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        env={**os.environ, "NUDGE_LOG_LEVEL": "warning"})


def sign_in(page: Page, srv: NudgeServer, email: str) -> None:
    """Password only: for roles that need no MFA (marketer, analyst, viewer)."""
    page.goto(srv.url + "/ui/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


def enroll_and_sign_in(page: Page, srv: NudgeServer, email: str) -> pyotp.TOTP:
    """An owner's first sign-in: password, then MFA enrollment from the QR page. Returns the
    authenticator (the secret shown under the QR code)."""
    page.goto(srv.url + "/ui/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Set up two-factor authentication")).to_be_visible()
    expect(page.locator(".qr svg")).to_be_visible()
    totp = pyotp.TOTP(page.locator("[data-secret]").inner_text().strip())
    page.get_by_label("Code from the app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("[data-recovery-codes]")).to_contain_text("-")
    page.get_by_role("link", name="Continue").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    return totp


def signed_in(browser: Browser, srv: NudgeServer, email: str) -> BrowserContext:
    """A new browser context signed in through ``POST /auth/login`` (the sign-in pages have
    their own tests; a request is not bound by the 5 s wait of an assertion on a loaded
    machine)."""
    ctx = browser.new_context()
    r = ctx.request.post(srv.url + "/auth/login", data={"email": email, "password": PASSWORD},
                         timeout=120_000)
    assert r.ok and r.json()["stage"] == "full", r.text()
    return ctx


def signed_in_with_mfa(browser: Browser, srv: NudgeServer, email: str) -> BrowserContext:
    """:func:`signed_in` for a role that must enroll MFA (owner, admin): password, then TOTP
    enrollment through ``/auth/mfa/enroll`` and ``/auth/mfa/confirm``."""
    ctx = browser.new_context()
    r = ctx.request.post(srv.url + "/auth/login", data={"email": email, "password": PASSWORD},
                         timeout=120_000)
    assert r.ok and r.json()["stage"] == "enroll", r.text()
    csrf = {"X-CSRF-Token": next(c["value"] for c in ctx.cookies() if c["name"] == "nudge_csrf")}
    r = ctx.request.post(srv.url + "/auth/mfa/enroll", headers=csrf, timeout=120_000)
    assert r.ok, r.text()
    code = pyotp.TOTP(r.json()["secret"]).now()
    r = ctx.request.post(srv.url + "/auth/mfa/confirm", data={"code": code}, headers=csrf,
                         timeout=120_000)
    assert r.ok and r.json()["stage"] == "full", r.text()
    return ctx


@contextmanager
def smtp_backed_server(tmp: Path, smtp_tmp: Path, env: dict[str, str],
                       users: dict[str, str]) -> Iterator[tuple[NudgeServer, Any]]:
    """A server whose email channel points at a real SMTP server (aiosmtpd, STARTTLS), with
    dashboard ``users`` ({email: role}) created: for the pages that send messages."""
    from tests.engage import engage_helpers as h
    from tests.engage.providers import SmtpServer, tls_pair

    with SmtpServer(tls_pair(smtp_tmp)) as smtp:
        srv = h.start_server(tmp, env)
        try:
            for email, role in users.items():
                add_user(srv, email, role)
            h.configure(srv, "email", smtp.channel_config())
            yield srv, smtp
        finally:
            srv.stop()


@contextmanager
def page_without_script_errors(ctx: BrowserContext) -> Iterator[Page]:
    """A new page in ``ctx`` that fails the test if a script on it throws."""
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
        assert not errors, f"script errors on the page: {errors}"
    finally:
        page.close()
