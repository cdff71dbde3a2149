"""Accessibility and widths of Home and the settings pages, checked in a real browser: every
visible form field has a label, text has WCAG AA contrast (4.5:1) on its background, the
keyboard (Tab) reaches the page's main action, and nothing overflows horizontally at 1280 px
or at tablet width (768 px)."""

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
# WCAG 2 contrast of each visible text element's colour against the first opaque background
# behind it (ancestors' background colours; images and gradients are not used by the pages).
LOW_CONTRAST = """() => {
  const lum = c => { const [r, g, b] = c.map(v => { v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const rgba = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const bg = e => { for (; e; e = e.parentElement) {
      const c = rgba(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3); }
    return [255, 255, 255]; };
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    const text = [...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    if (!e.offsetParent || !text) continue;
    const fg = rgba(getComputedStyle(e).color).slice(0, 3), [a, b] = [lum(fg), lum(bg(e))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) out.push(`${e.tagName} ${e.textContent.trim().slice(0, 40)} ${ratio}`);
  }
  return out; }"""
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
    assert page.evaluate(LOW_CONTRAST) == []
    if action:
        assert _tab_reaches(page, action), f"Tab never reaches {action!r} on {path}"
    page.close()
