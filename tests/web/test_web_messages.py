"""In-app messages, the inbox widget and web push in a real browser against a real server
whose delivery service sends real campaigns (nudge-messages.js, nudge-sw.js)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from conftest import NudgeServer, make_server
from nudge.engage.channel_config import ChannelDirectory
from nudge.privacy.keys import Keyring, load_master_key
from nudge.store import control
from tests.engage.providers import WebPushServer, message

if TYPE_CHECKING:
    from browser import StaticSite

pytest_plugins = ["browser"]  # the browser, browser_context, page and site fixtures

SDK_DIR = Path(__file__).resolve().parents[2] / "sdks" / "js"
FAST = {"NUDGE_ENGAGE_POLL_MS": "50", "NUDGE_ENGAGE_BACKOFF_MS": "300"}
PAGE = """<!doctype html>
<html><head><title>Test shop</title>
<script src="{host}/sdk/nudge.js"></script><script src="{host}/sdk/nudge-messages.js"></script>
</head><body><h1>Test shop</h1><div id="inbox"></div></body></html>"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    srv = make_server(tmp_path_factory.mktemp("nudge"), FAST)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def inbox_secret(server: NudgeServer) -> str:
    r = api(server, "PUT", "/1/channels/inapp", {"ttl_days": 7})
    return r.json()["generated"]["identity_secret"]  # type: ignore[no-any-return]


def api(server: NudgeServer, method: str, path: str, body: Any = None,
        **kw: Any) -> httpx.Response:
    r = httpx.request(method, server.url + path, json=body, headers=server.headers, timeout=30,
                      **kw)
    assert r.status_code < 300, (r.status_code, r.text)
    return r


def wait_for(check: Any, what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def user_hash(secret: str, identity: str) -> str:
    return hmac.new(secret.encode(), identity.encode(), hashlib.sha256).hexdigest()


def signed_in_page(page: Page, site: StaticSite, server: NudgeServer, identity: str) -> None:
    page.goto(site.add("/shop", PAGE.format(host=server.url)))
    page.evaluate("""async ([key, who]) => {
        nudge.init({writeKey: key, flushInterval: 50});
        nudge.identify(who, {name: who});
        await nudge.flush();
    }""", [server.write_key, identity])
    wait_for(lambda: httpx.get(server.url + "/1/profile", params={"identity": identity},
                               headers=server.headers).status_code == 200, "the profile")


def events(server: NudgeServer, identity: str) -> list[dict[str, Any]]:
    r = httpx.get(server.url + "/1/profile/events", params={"identity": identity,
                                                            "limit": "1000"},
                  headers=server.headers)
    return list(reversed(r.json().get("events", []))) if r.status_code == 200 else []


def server_inbox(server: NudgeServer, identity: str) -> list[dict[str, Any]]:
    return api(server, "GET", "/1/inbox", params={"identity": identity}).json()["messages"]


def test_inbox_widget_lists_messages_live_and_marks_them_read(
        server: NudgeServer, inbox_secret: str, site: StaticSite, page: Page) -> None:
    who = "inbox-ann"
    signed_in_page(page, site, server, who)
    c = api(server, "POST", "/1/campaigns", {
        "name": "shipping", "kind": "api", "channels": ["inapp"],
        "content": {"inapp": {"title": "Order {{ data.order }}", "body": "It has shipped"}}})
    cid = c.json()["id"]
    api(server, "POST", f"/1/campaigns/{cid}/send")

    def send(order: str) -> None:
        api(server, "POST", "/1/send", {"campaign_id": cid, "to": [{"identity": who}],
                                        "data": {"order": order}, "request_id": order})

    send("A-1")
    send("A-2")
    wait_for(lambda: len(server_inbox(server, who)) == 2, "two inbox messages")

    page.evaluate("h => { window.box = nudge.inbox.mount(document.getElementById('inbox'),"
                  " {userHash: h}); return window.box.ready.then(() => true); }",
                  user_hash(inbox_secret, who))
    items = page.locator("#inbox .nudge-item")
    assert items.count() == 2
    assert items.nth(0).locator(".nudge-title").inner_text() == "Order A-2"  # newest first
    assert page.locator("#inbox .nudge-item.nudge-unread").count() == 2
    assert page.locator("#inbox .nudge-badge").inner_text() == "2"

    items.nth(1).click()  # read
    page.wait_for_selector("#inbox .nudge-unread >> nth=1", state="detached")
    assert page.locator("#inbox .nudge-badge").inner_text() == "1"
    read = {m["content"]["title"]: m["read"] for m in server_inbox(server, who)}
    assert read == {"Order A-1": True, "Order A-2": False}

    send("A-3")  # arrives over the stream while the widget is open
    page.wait_for_function("document.querySelectorAll('#inbox .nudge-item').length === 3")
    assert page.locator("#inbox .nudge-badge").inner_text() == "2"

    page.locator("#inbox .nudge-item", has_text="Order A-2").locator(".nudge-close").click()
    page.wait_for_function("document.querySelectorAll('#inbox .nudge-item').length === 2")
    assert {m["content"]["title"] for m in server_inbox(server, who)} == {"Order A-1",
                                                                        "Order A-3"}
    page.evaluate("nudge.flush()")
    timeline = wait_for(lambda: (e := events(server, who))
                        and {"Message Clicked", "Message Dismissed"} <= {x["evtName"] for x in e}
                        and e, "the click and dismissal events")
    by_name = {e["evtName"]: e["evtData"] for e in timeline}
    assert by_name["Message Clicked"]["campaign_id"] == cid
    assert by_name["Message Dismissed"]["campaign_id"] == cid
    assert by_name["Message Clicked"]["channel"] == "inapp"

    # Signing out ends the user's inbox access on this page.
    after = page.evaluate("() => { nudge.reset(); return nudge.inbox.list().then("
                          "() => 'listed', e => e.message); }")
    assert "identified user" in after


def test_inapp_campaign_triggered_by_an_event_appears_and_its_click_is_recorded(
        server: NudgeServer, inbox_secret: str, site: StaticSite, page: Page) -> None:
    who = "inapp-bo"
    signed_in_page(page, site, server, who)
    c = api(server, "POST", "/1/campaigns", {
        "name": "cart", "kind": "trigger", "channels": ["inapp"],
        "trigger": {"event": "Added To Cart"},
        "caps": [{"max": 1, "per": {"hours": 1}}],  # at most one such message an hour
        "content": {"inapp": {"title": "Still thinking?", "layout": "modal",
                              "button": "Back to {{ event.item }}",
                              "body": "Your {{ event.item }} is waiting"}}})
    cid = c.json()["id"]
    api(server, "POST", f"/1/campaigns/{cid}/send")
    bad = httpx.post(server.url + "/1/campaigns", headers=server.headers, timeout=30, json={
        "name": "bad", "kind": "trigger", "channels": ["inapp"],
        "trigger": {"event": "Added To Cart"},
        "content": {"inapp": {"body": "x", "layout": "popup"}}})
    assert bad.status_code == 400 and "content.inapp.layout" in bad.text

    # The page's default layout is a toast; the campaign's own layout (modal) wins.
    page.evaluate("h => nudge.inapp.start({userHash: h, layout: 'toast'})",
                  user_hash(inbox_secret, who))
    page.evaluate("async () => { nudge.track('Added To Cart', {item: 'red shoes'});"
                  " await nudge.flush(); }")
    box = page.wait_for_selector(".nudge-msg", timeout=20_000)
    assert "nudge-modal" in (box.get_attribute("class") or "")
    assert box.inner_text().count("Your red shoes is waiting") == 1
    assert page.locator(".nudge-overlay").count() == 1
    assert box.query_selector(".nudge-cta").inner_text() == "Back to red shoes"

    page.click(".nudge-msg .nudge-cta")
    page.wait_for_selector(".nudge-msg", state="detached")
    page.evaluate("nudge.flush()")
    timeline = wait_for(lambda: (e := events(server, who))
                        and {"Message Viewed", "Message Clicked"} <= {x["evtName"] for x in e}
                        and e, "view and click events")
    clicked = next(e["evtData"] for e in timeline if e["evtName"] == "Message Clicked")
    assert clicked["campaign_id"] == cid and clicked["channel"] == "inapp"
    wait_for(lambda: [m["read"] for m in server_inbox(server, who)] == [True],
             "the message marked read")

    # The campaign's frequency cap holds: a second trigger within the hour shows nothing.
    page.evaluate("async () => { nudge.track('Added To Cart', {item: 'blue hat'});"
                  " await nudge.flush(); }")

    def outbox() -> list[dict[str, Any]]:
        return api(server, "GET", "/1/outbox", params={"campaign_id": cid}).json()["messages"]

    second = wait_for(lambda: [m for m in outbox() if m["status"] != "sent"], "the capped one")
    assert [m["status"] for m in second] == ["skipped"], second
    assert page.locator(".nudge-msg").count() == 0
    assert len(server_inbox(server, who)) == 1


def deliver_inapp(server: NudgeServer, identity: str, content: dict[str, Any]) -> None:
    """Send one in-app message through the real in-app channel from this process, as a
    separate delivery worker would."""
    d = server.data_dir.resolve()
    engine = control.connect(f"sqlite:///{d / 'control.db'}")
    directory = ChannelDirectory(engine, Keyring(engine, load_master_key(
        "", d.parent / f"{d.name}.master-key")))
    uid = api(server, "GET", "/1/profile", params={"identity": identity}).json()["profile"]["id"]
    msg = message("inapp", "", content, account_id=server.account_id, user_id=uid,
                  meta={"campaign_id": "99"})

    async def send() -> str:
        return (await directory.build(server.account_id, "inapp").send(msg)).outcome

    # Playwright's sync API keeps an event loop in this thread: send from another one.
    try:
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(lambda: asyncio.run(send())).result() == "sent"
    finally:
        engine.dispose()


def test_inapp_layouts_banner_toast_and_inbox_only(
        server: NudgeServer, inbox_secret: str, site: StaticSite, page: Page) -> None:
    who = "layout-di"
    signed_in_page(page, site, server, who)
    page.evaluate("h => nudge.inapp.start({userHash: h, toastMs: 1500})",
                  user_hash(inbox_secret, who))

    deliver_inapp(server, who, {"title": "Top", "body": "A banner", "layout": "banner"})
    banner = page.wait_for_selector(".nudge-msg.nudge-banner", timeout=20_000)
    assert banner.inner_text().count("A banner") == 1
    page.click(".nudge-msg .nudge-close")  # dismissed
    page.wait_for_selector(".nudge-msg", state="detached")

    deliver_inapp(server, who, {"title": "Psst", "body": "A toast", "layout": "toast",
                                "deep_link": "javascript:alert(1)"})
    toast = page.wait_for_selector(".nudge-msg.nudge-toast", timeout=20_000)
    assert toast.query_selector(".nudge-cta").inner_text() == "OK"  # the link was refused
    page.wait_for_selector(".nudge-msg", state="detached")  # toasts leave by themselves

    deliver_inapp(server, who, {"title": "Later", "body": "Inbox only", "layout": "inbox"})
    wait_for(lambda: any(m["content"]["body"] == "Inbox only"
                         for m in server_inbox(server, who)), "the inbox-only message")
    page.wait_for_timeout(1000)  # the stream has had time to deliver it
    assert page.locator(".nudge-msg").count() == 0

    page.evaluate("nudge.flush()")
    timeline = wait_for(lambda: (e := [x for x in events(server, who)
                                       if x["evtName"].startswith("Message ")])
                        and len(e) >= 3 and e, "the reports")
    assert [e["evtName"] for e in timeline] == ["Message Viewed", "Message Dismissed",
                                                "Message Viewed"]


# ------------------------------------------------------------------ web push


@pytest.fixture
def push_service() -> Iterator[WebPushServer]:
    with WebPushServer() as s:
        yield s


def test_web_push_subscription_round_trip(
        server: NudgeServer, site: StaticSite, page: Page, browser_context: BrowserContext,
        push_service: WebPushServer) -> None:
    api(server, "PUT", "/1/channels/webpush", push_service.channel_config())
    who = "push-cy"
    site.add("/nudge-sw.js", (SDK_DIR / "nudge-sw.js").read_text(), "text/javascript")
    browser_context.grant_permissions(["notifications"], origin=site.url)
    signed_in_page(page, site, server, who)

    # The SDK's subscribe(): service worker registered with where to report, the VAPID key
    # fetched from Nudge. Headless Chromium has no push service, so the browser's own
    # pushManager.subscribe() stops there.
    outcome = page.evaluate("""async () => {
        try { await nudge.push.subscribe(); return 'subscribed'; }
        catch (e) { return 'push service: ' + e.name; }
    }""")
    reg = page.evaluate("""async () => {
        const r = await navigator.serviceWorker.ready;
        return r.active.scriptURL;
    }""")
    assert reg.startswith(site.url + "/nudge-sw.js?")
    assert f"host={server.url.replace(':', '%3A').replace('/', '%2F')}" in reg
    expected_key = httpx.get(server.url + "/sdk/webpush-key",
                             params={"write_key": server.write_key}).json()["vapid_public_key"]
    assert len(base64.urlsafe_b64decode(expected_key + "==")) == 65  # an uncompressed P-256 point
    assert outcome == "subscribed" or outcome.startswith("push service: "), outcome

    # From there on: a subscription as a push service would issue it (keys held by our test
    # push service) goes through the SDK to Nudge, and a campaign is encrypted to it.
    subscriber = push_service.subscribe()
    assert page.evaluate("s => nudge.push.register(s)", subscriber.subscription) is True
    profile = api(server, "GET", "/1/profile", params={"identity": who}).json()["profile"]
    assert [t["type"] for t in profile["push_tokens"]] == ["webpush"]
    assert profile["reachability"]["webpush"] is True

    c = api(server, "POST", "/1/campaigns", {
        "name": "sale", "kind": "api", "channels": ["webpush"],
        "content": {"webpush": {"title": "Flash sale", "body": "Hi {{ data.name }}",
                                "url": "https://shop.example/sale"}}}).json()
    api(server, "POST", f"/1/campaigns/{c['id']}/send")
    api(server, "POST", "/1/send", {"campaign_id": c["id"], "to": [{"identity": who}],
                                    "data": {"name": "Cy"}})
    [req] = wait_for(lambda: push_service.accepted, "the encrypted push")
    payload = req.parsed["payload"]  # decrypted with the subscription's private key
    assert payload["title"] == "Flash sale" and payload["body"] == "Hi Cy"
    assert b"Flash sale" not in req.body

    # The push delivered into the service worker (DevTools protocol): it shows the
    # notification and reports the view on the visitor's profile.
    cdp = browser_context.new_cdp_session(page)
    registrations: list[dict[str, Any]] = []
    cdp.on("ServiceWorker.workerRegistrationUpdated",
           lambda e: registrations.extend(e["registrations"]))
    cdp.send("ServiceWorker.enable")
    for _ in range(200):  # Playwright dispatches events only while it is called
        if registrations:
            break
        page.wait_for_timeout(50)
    assert registrations, "no service worker registration reported"
    cdp.send("ServiceWorker.deliverPushMessage", {
        "origin": site.url, "registrationId": registrations[0]["registrationId"],
        "data": json.dumps(payload)})
    viewed = wait_for(lambda: [e for e in events(server, who)
                               if e["evtName"] == "Message Viewed"], "the reported view")
    assert viewed[0]["evtData"]["channel"] == "webpush"
    assert viewed[0]["evtData"]["campaign_id"] == c["id"]


# ------------------------------------------------------------------ server side, no browser


def test_message_and_worker_scripts_are_served(server: NudgeServer) -> None:
    for name in ("nudge-messages.js", "nudge-sw.js"):
        r = httpx.get(f"{server.url}/sdk/{name}")
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/javascript; charset=utf-8"
        assert r.text == (SDK_DIR / name).read_text()
    missing = httpx.get(f"{server.url}/sdk/other.js")
    assert missing.status_code == 404 and "nudge-messages.js" in missing.json()["message"]


def test_webpush_registration_refuses_bad_input_and_changes_nothing(
        server: NudgeServer) -> None:
    srv = server
    good = {"endpoint": "https://push.example/abc", "keys": {"p256dh": "BNc", "auth": "x"}}

    def post(body: Any) -> httpx.Response:
        return httpx.post(srv.url + "/v1/webpush", content=json.dumps(body),
                          headers={"Content-Type": "text/plain"})

    cases = [
        ({"writeKey": srv.write_key, "anonymousId": "wp-d1", "subscription": {"endpoint": "x"}},
         400, "subscription"),
        ({"writeKey": srv.write_key, "anonymousId": "wp-d1",
          "subscription": {**good, "endpoint": "ftp://push.example/abc"}},
         400, "subscription.endpoint"),
        ({"writeKey": srv.write_key, "subscription": good}, 400, "subscription"),
        ({"writeKey": "not-a-key", "anonymousId": "wp-d1", "subscription": good}, 401, None),
    ]
    for body, status, field in cases:
        r = post(body)
        assert r.status_code == status, (body, r.text)
        if field:
            assert r.json()["field"] == field
    assert httpx.get(srv.url + "/1/profile", params={"objectId": "wp-d1"},
                     headers=srv.headers).status_code == 404
    ok = post({"writeKey": srv.write_key, "anonymousId": "wp-d1", "subscription": good})
    assert ok.status_code == 200
    prof = httpx.get(srv.url + "/1/profile", params={"objectId": "wp-d1"},
                     headers=srv.headers).json()["profile"]
    assert [t["type"] for t in prof["push_tokens"]] == ["webpush"]
