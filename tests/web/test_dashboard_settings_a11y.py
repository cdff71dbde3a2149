"""Accessibility and widths of Home and the settings pages, checked in a real browser: every
visible form field has a label, the keyboard (Tab) reaches the page's main action, and
nothing overflows horizontally at 1280 px or at tablet width (768 px)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dashboard_helpers import add_user, signed_in_with_mfa
from playwright.sync_api import Browser, BrowserContext, Page

from conftest import NudgeServer, make_server

pytest_plugins = ["browser"]

# (path under /ui/{account}, the main action the keyboard must reach)
PAGES = [("", None), ("/settings", "Save timezone"), ("/settings/users", "Add user"),
         ("/settings/channels", "Add webhook"), ("/settings/keys", "New read key")]

UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.type !== 'hidden' && e.offsetParent !== null)
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
               && !e.getAttribute('aria-labelledby'))
  .map(e => e.outerHTML.slice(0, 120))"""
OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.fixture(scope="module")
def owner(browser: Browser, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[NudgeServer, BrowserContext]]:
    s = make_server(tmp_path_factory.mktemp("dash-a11y"))
    try:
        add_user(s, "owner@example.com", "owner")
        add_user(s, "someone.with.a.rather.long.address@example.com", "marketer")
        ctx = signed_in_with_mfa(browser, s, "owner@example.com")
        yield s, ctx
        ctx.close()
    finally:
        s.stop()


def _tab_reaches(page: Page, name: str, limit: int = 120) -> bool:
    page.locator("body").focus()
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => (document.activeElement.innerText || '').trim()")
        if focused == name:
            return True
    return False


@pytest.mark.parametrize(("path", "action"), PAGES)
def test_labels_keyboard_and_widths(owner: tuple[NudgeServer, BrowserContext], path: str,
                                    action: str | None) -> None:
    srv, ctx = owner
    page = ctx.new_page()
    for width in (1280, 768):
        page.set_viewport_size({"width": width, "height": 1000})
        page.goto(f"{srv.url}/ui/{srv.account_id}{path}")
        assert page.evaluate(UNLABELLED) == []
        assert page.evaluate(OVERFLOW) <= 0, f"{path} overflows at {width}px"
    if action:
        assert _tab_reaches(page, action), f"Tab never reaches {action!r} on {path}"
    page.close()
