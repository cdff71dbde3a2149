"""SDKs record opens through the signed tracking URL: an in-app message shown by the web SDK
(nudge-messages.js, in Chromium), an inbox message listed by its inbox widget, and an inbox
message read with the Python SDK (``Client.inbox`` + ``Client.record_open``) each count as
opened in the campaign report — once, however often they are seen."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import nudge_sdk
import pytest
from playwright.sync_api import Page

from conftest import NudgeServer, make_server
from tests.engage import engage_helpers as h

if TYPE_CHECKING:
    from tests.web.browser import StaticSite

pytest_plugins = ["tests.web.browser"]  # the browser, page and site fixtures

PAGE = """<!doctype html><html><head><title>Shop</title>
<script src="{host}/sdk/nudge.js"></script><script src="{host}/sdk/nudge-messages.js"></script>
</head><body><div id="inbox"></div></body></html>"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    srv = make_server(tmp_path_factory.mktemp("nudge"), {"NUDGE_ENGAGE_POLL_MS": "50"})
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def secret(server: NudgeServer) -> str:
    r = h.api(server, "PUT", "/1/channels/inapp", {"ttl_days": 7}, ok=200)
    return r.json()["generated"]["identity_secret"]  # type: ignore[no-any-return]


def user_hash(secret: str, identity: str) -> str:
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def api_campaign(srv: NudgeServer, name: str, inapp: dict[str, Any]) -> int:
    c = h.campaign(srv, {"name": name, "kind": "api", "channels": ["inapp"],
                         "content": {"inapp": inapp}})
    return int(c["id"])


def send(srv: NudgeServer, cid: int, identity: str) -> None:
    h.profiles(srv, [{"identity": identity}])
    h.api(srv, "POST", "/1/send", {"campaign_id": cid, "to": [{"identity": identity}]},
          ok=202)
    h.wait_for(lambda: [m["status"] for m in h.outbox(srv, campaign_id=cid)] == ["sent"],
               what="the in-app message stored")


def opened(srv: NudgeServer, cid: int) -> int:
    r = h.api(srv, "GET", f"/1/campaigns/{cid}/report", ok=200).json()
    return sum(cell["opened"] for cell in r["by_variant_channel"])


def open_page(page: Page, site: StaticSite, srv: NudgeServer, who: str) -> None:
    page.goto(site.add(f"/shop-{who}", PAGE.format(host=srv.url)))
    page.evaluate("([key, who]) => { nudge.init({writeKey: key, flushInterval: 50});"
                  " nudge.identify(who); }", [srv.write_key, who])


def test_web_sdk_records_the_open_of_a_shown_in_app_message(
        server: NudgeServer, secret: str, site: StaticSite, page: Page) -> None:
    who = "open-web-1"
    cid = api_campaign(server, "popup", {"title": "Hello", "body": "A toast",
                                         "layout": "toast"})
    h.profiles(server, [{"identity": who}])
    open_page(page, site, server, who)
    page.evaluate("h => nudge.inapp.start({userHash: h})", user_hash(secret, who))
    send(server, cid, who)  # arrives live on the page's stream and pops up
    page.wait_for_selector(".nudge-msg", timeout=20_000)
    h.wait_for(lambda: opened(server, cid) == 1, what="the open in the report")
    (m,) = h.outbox(server, campaign_id=cid)
    assert m["opened_at"] is not None


def test_web_sdk_inbox_widget_records_opens_once(
        server: NudgeServer, secret: str, site: StaticSite, page: Page) -> None:
    who = "open-web-2"
    cid = api_campaign(server, "inbox", {"title": "In your inbox", "body": "b",
                                         "layout": "inbox"})
    send(server, cid, who)
    open_page(page, site, server, who)
    page.evaluate("h => { window.box = nudge.inbox.mount(document.getElementById('inbox'),"
                  " {userHash: h}); return window.box.ready.then(() => true); }",
                  user_hash(secret, who))
    assert page.locator("#inbox .nudge-item").count() == 1
    h.wait_for(lambda: opened(server, cid) == 1, what="the inbox open in the report")
    page.evaluate("() => window.box.refresh().then(() => true)")  # seen again: no new open
    page.reload()  # a new page load requests it again; the server still counts one
    open_page(page, site, server, who)
    page.evaluate("h => nudge.inbox.mount(document.getElementById('inbox'), {userHash: h})"
                  ".ready.then(() => true)", user_hash(secret, who))
    assert opened(server, cid) == 1


def test_python_sdk_reads_the_inbox_and_records_the_open(server: NudgeServer,
                                                         secret: str) -> None:
    who = "open-py-1"
    cid = api_campaign(server, "py", {"title": "From the server", "body": "b",
                                      "layout": "inbox"})
    send(server, cid, who)
    with nudge_sdk.Client(server.account_id, server.passcode, host=server.url,
                          sync_mode=True) as client:
        page = client.inbox(who)
        (msg,) = page["messages"]
        assert msg["content"]["title"] == "From the server" and page["unread"] == 1
        assert client.record_open(msg) is True
        assert client.record_open(msg) is True  # repeated: still one open
        with pytest.raises(ValueError, match="open_url"):
            client.record_open({"content": {"title": "no link"}})
    assert opened(server, cid) == 1
    opens = [e for e in h.api(server, "GET", "/1/profile/events",
                              params={"identity": who, "limit": "100"}, ok=200).json()["events"]
             if e["evtName"] == "Message Opened"]
    assert len(opens) == 1 and opens[0]["evtData"]["campaign_id"] == cid
