"""The web SDK in a real browser (Debian's Chromium) against a real Nudge server.

The test pages are served by a separate little web server (another origin), and load
``/sdk/nudge.js`` from Nudge the way a customer's site does, so every request the SDK makes
is a cross-origin request.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page

from conftest import NudgeServer, make_server
from nudge.api.cors import parse_origins
from nudge.api.routes.sdk import ESM_EXPORTS, esm_source
from nudge.errors import ConfigError

if TYPE_CHECKING:
    from browser import StaticSite

pytest_plugins = ["browser"]  # the browser, browser_context, page and site fixtures

PAGE = """<!doctype html>
<html><head><title>Test shop</title><script src="{host}/sdk/nudge.js"></script></head>
<body><h1>Test shop</h1></body></html>"""


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15) -> Any:
    """Poll until ``check()`` returns something truthy (delivery is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def profile(server: NudgeServer, **lookup: str) -> dict[str, Any] | None:
    r = httpx.get(server.url + "/1/profile", params=lookup, headers=server.headers)
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()["profile"]  # type: ignore[no-any-return]


def events(server: NudgeServer, **lookup: str) -> list[dict[str, Any]]:
    """The person's timeline, oldest first."""
    r = httpx.get(server.url + "/1/profile/events", params={**lookup, "limit": "1000"},
                  headers=server.headers)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return list(reversed(r.json()["events"]))


def open_shop(page: Page, site: StaticSite, server: NudgeServer, query: str = "",
              path: str = "/shop", **options: Any) -> None:
    url = site.add(path, PAGE.format(host=server.url))
    page.goto(url + query)
    page.evaluate("o => { nudge.init(o); }", {"writeKey": server.write_key, **options})


def names(evts: list[dict[str, Any]]) -> list[str]:
    return [e["evtName"] for e in evts]


# ------------------------------------------------------------------ serving the SDK


def test_sdk_is_served_as_javascript_with_caching_headers(shared_server: NudgeServer) -> None:
    url = shared_server.url + "/sdk/nudge.js"
    r = httpx.get(url, headers={"Accept-Encoding": "identity", "Origin": "http://shop.test"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=3600"
    assert r.headers["access-control-allow-origin"] == "*"
    assert "content-encoding" not in r.headers
    assert "nudge.init" in r.text or "init(options)" in r.text
    etag = r.headers["etag"]

    again = httpx.get(url, headers={"If-None-Match": etag, "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.content == b""

    zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.text == r.text  # httpx inflates it
    assert int(zipped.headers["content-length"]) < len(r.content)
    assert zipped.headers["etag"] != etag  # another representation, another validator
    assert httpx.get(url, headers={"If-None-Match": zipped.headers["etag"],
                                   "Accept-Encoding": "gzip"}).status_code == 304

    mjs = httpx.get(shared_server.url + "/sdk/nudge.mjs")
    assert mjs.headers["content-type"] == "text/javascript; charset=utf-8"
    assert "export default nudge;" in mjs.text
    assert mjs.headers["etag"] != etag


def test_webpush_key_is_404_until_web_push_is_configured(shared_server: NudgeServer) -> None:
    key = httpx.get(shared_server.url + "/sdk/webpush-key",
                    params={"write_key": shared_server.write_key})
    assert key.status_code == 404 and "PUT /1/channels/webpush" in key.json()["message"]
    bad = httpx.get(shared_server.url + "/sdk/webpush-key", params={"write_key": "nope"})
    assert bad.status_code == 401


def test_ingest_answers_cors_preflight_but_the_passcode_api_does_not(
        shared_server: NudgeServer) -> None:
    pre = httpx.options(shared_server.url + "/v1/batch", headers={
        "Origin": "http://shop.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "*"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()

    # Errors are readable cross-origin too (a browser SDK must tell a 401 from a 5xx).
    bad = httpx.post(shared_server.url + "/v1/batch", content=b'{"batch": []}',
                     headers={"Origin": "http://shop.test"}, auth=("wrong-key", ""))
    assert bad.status_code == 401
    assert bad.headers["access-control-allow-origin"] == "*"

    closed = httpx.options(shared_server.url + "/1/profile", headers={
        "Origin": "http://shop.test", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in closed.headers


# ------------------------------------------------------------------ identity and timeline


def test_anonymous_visitor_then_identify_is_one_person_with_the_full_timeline(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    open_shop(page, site, shared_server, flushInterval=50)
    page.evaluate("""async () => {
        nudge.page();
        nudge.track('Product Viewed', {sku: 'A1', price: 9.5});
        await nudge.flush();
    }""")
    anon = page.evaluate("nudge.anonymousId()")
    before = wait_for(lambda: profile(shared_server, objectId=anon), "the anonymous profile")
    assert before["identity"] is None

    page.evaluate("""async () => {
        nudge.identify('web-user-1', {email: 'W1@Example.com', plan: 'pro'});
        nudge.track('Order Completed', {total: 20});
        await nudge.flush();
    }""")
    person = wait_for(lambda: profile(shared_server, identity="web-user-1"), "the user")
    assert person["id"] == before["id"]  # the anonymous profile became the user's
    assert profile(shared_server, objectId=anon)["id"] == person["id"]  # type: ignore[index]
    assert person["identifiers"]["objectId"] == [anon]
    assert person["email"] == "w1@example.com"
    assert person["properties"]["plan"] == "pro"

    timeline = wait_for(lambda: (e := events(shared_server, identity="web-user-1"))
                        and len(e) >= 4 and e, "the timeline")
    assert names(timeline) == ["Session Started", "Page Viewed", "Product Viewed",
                               "Order Completed"]
    viewed = timeline[2]["evtData"]
    assert viewed["sku"] == "A1" and viewed["price"] == 9.5
    assert viewed["context.page.url"] == site.url + "/shop"
    assert viewed["context.library.name"] == "nudge.js"
    assert len({e["evtData"]["context.sessionId"] for e in timeline}) == 1

    # The ids persist across page loads; later events carry both and land on the same person.
    page.reload()
    page.evaluate("async o => { nudge.init(o); nudge.track('Came Back'); await nudge.flush(); }",
                  {"writeKey": shared_server.write_key, "flushInterval": 50})
    assert page.evaluate("[nudge.anonymousId(), nudge.userId()]") == [anon, "web-user-1"]
    wait_for(lambda: "Came Back" in names(events(shared_server, identity="web-user-1")),
             "the event after reload")


def test_anonymous_id_survives_in_the_cookie_when_local_storage_is_cleared(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    open_shop(page, site, shared_server)
    anon = page.evaluate("nudge.anonymousId()")
    page.evaluate("localStorage.clear()")
    page.reload()
    page.evaluate("o => { nudge.init(o); }", {"writeKey": shared_server.write_key})
    assert page.evaluate("nudge.anonymousId()") == anon


def test_utm_referrer_sessions_and_automatic_page_views(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    site.add("/landing", '<a id="go" href="/shop?utm_source=newsletter&utm_medium=email'
                         '&utm_campaign=spring">shop</a>')
    page.goto(site.url + "/landing")
    url = site.add("/shop", PAGE.format(host=shared_server.url))
    page.click("#go")
    page.wait_for_url(url + "?*")
    page.evaluate("""async o => {
        nudge.init(o);
        history.pushState({}, '', '/shop/cart');
        nudge.track('Cart Viewed');
        await nudge.flush();
    }""", {"writeKey": shared_server.write_key, "autoPageViews": True, "flushInterval": 50})
    anon = page.evaluate("nudge.anonymousId()")
    timeline = wait_for(lambda: (e := events(shared_server, objectId=anon)) and len(e) >= 4
                        and e, "the events")
    assert names(timeline) == ["Session Started", "Page Viewed", "Page Viewed", "Cart Viewed"]
    assert [e["evtData"]["path"] for e in timeline[1:3]] == ["/shop", "/shop/cart"]
    for e in timeline:
        data = e["evtData"]
        assert data["context.campaign.source"] == "newsletter"
        assert data["context.campaign.medium"] == "email"
        assert data["context.campaign.name"] == "spring"
        assert data["context.referrer.url"] == site.url + "/landing"
    assert len({e["evtData"]["context.sessionId"] for e in timeline}) == 1


def test_async_snippet_replays_calls_made_before_the_script_loaded(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    snippet = f"""<!doctype html><html><head><script>
      window.nudge = window.nudge || [];
      ['init', 'track', 'identify', 'page'].forEach(function (m) {{
        nudge[m] = nudge[m] || function () {{ nudge.push([m].concat([].slice.call(arguments))); }};
      }});
      nudge.init({{writeKey: '{shared_server.write_key}', host: '{shared_server.url}',
                   flushInterval: 50, trackSessions: false}});
      nudge.track('Early Bird', {{n: 1}});
    </script><script async src="{shared_server.url}/sdk/nudge.js"></script></head>
    <body></body></html>"""
    page.goto(site.add("/snippet", snippet))
    page.wait_for_function("typeof nudge.flush === 'function'")
    anon = page.evaluate("nudge.anonymousId()")
    timeline = wait_for(lambda: events(shared_server, objectId=anon), "the early event")
    assert names(timeline) == ["Early Bird"]


# ------------------------------------------------------------------ delivery


@pytest.mark.parametrize("leave", ["close", "navigate"])
def test_a_page_left_mid_batch_still_delivers_its_events(
        shared_server: NudgeServer, site: StaticSite, page: Page,
        browser_context: BrowserContext, leave: str) -> None:
    # A long interval: nothing is sent before the page goes away, except by the beacon.
    open_shop(page, site, shared_server, flushInterval=600_000, flushAt=1000)
    page.evaluate("() => { for (let i = 0; i < 5; i++) nudge.track('Clicked', {n: i}); }")
    anon = page.evaluate("nudge.anonymousId()")
    assert page.evaluate("nudge.queueInfo().queued") == 6
    assert events(shared_server, objectId=anon) == []
    if leave == "close":
        page.close()
    else:
        page.goto(site.add("/elsewhere", "<p>bye</p>"))
    timeline = wait_for(lambda: (e := events(shared_server, objectId=anon)) and len(e) >= 6
                        and e, "the beaconed events")
    assert names(timeline) == ["Session Started"] + ["Clicked"] * 5
    assert sorted(e["evtData"]["n"] for e in timeline[1:]) == [0, 1, 2, 3, 4]


def test_opted_out_visitor_sends_nothing(
        shared_server: NudgeServer, site: StaticSite, page: Page,
        browser_context: BrowserContext) -> None:
    sent: list[str] = []
    browser_context.on("request", lambda r: sent.append(r.url)
                       if r.url.startswith(shared_server.url + "/v1/") else None)
    open_shop(page, site, shared_server, flushInterval=600_000)
    page.evaluate("nudge.track('Before Opt Out')")  # queued, not yet sent
    page.evaluate("""async () => {
        nudge.optOut();
        nudge.track('Clicked');
        nudge.identify('opted-out-user', {email: 'no@example.com'});
        nudge.page();
        await nudge.flush();
    }""")
    anon = page.evaluate("nudge.anonymousId()")
    assert page.evaluate("nudge.queueInfo().queued") == 0
    # The choice is remembered on the device: a later visit sends nothing either.
    page.reload()
    page.evaluate("""async o => { nudge.init(o); nudge.track('Later'); await nudge.flush(); }""",
                  {"writeKey": shared_server.write_key, "flushInterval": 50})
    assert page.evaluate("nudge.isOptedOut()") is True
    page.close()  # no beacon either
    # Playwright delivers request events only while it is called: wait through it, so a
    # wrongly sent beacon would be in `sent`.
    browser_context.new_page().wait_for_timeout(1000)
    assert sent == []
    assert profile(shared_server, objectId=anon) is None
    assert profile(shared_server, identity="opted-out-user") is None


def test_opting_back_in_resumes_sending(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    open_shop(page, site, shared_server, flushInterval=50, optOutByDefault=True)
    page.evaluate("async () => { nudge.track('Without Consent'); await nudge.flush(); }")
    page.evaluate("async () => { nudge.optIn(); nudge.track('With Consent');"
                  " await nudge.flush(); }")
    anon = page.evaluate("nudge.anonymousId()")
    timeline = wait_for(lambda: events(shared_server, objectId=anon), "the consented event")
    assert "Without Consent" not in names(timeline) and "With Consent" in names(timeline)


def test_offline_queue_is_bounded_persists_and_flushes_when_back_online(
        shared_server: NudgeServer, site: StaticSite, page: Page,
        browser_context: BrowserContext) -> None:
    open_shop(page, site, shared_server, flushInterval=50, maxQueueSize=5)
    anon = page.evaluate("nudge.anonymousId()")
    browser_context.set_offline(True)
    page.evaluate("async () => { for (let i = 0; i < 8; i++) nudge.track('Offline', {n: i});"
                  " await nudge.flush(); }")
    # Session Started + 8 events, bounded to the newest 5.
    assert page.evaluate("nudge.queueInfo()") == {"queued": 5, "dropped": 4, "retrying": False,
                                                  "attempt": 0}
    stored = page.evaluate("JSON.parse(localStorage.getItem('nudge.queue'))")
    assert [m["properties"]["n"] for m in stored] == [3, 4, 5, 6, 7]

    browser_context.set_offline(False)  # the browser's "online" event flushes the queue
    timeline = wait_for(lambda: (e := events(shared_server, objectId=anon)) and len(e) >= 5
                        and e, "the queued events")
    assert [e["evtData"]["n"] for e in timeline] == [3, 4, 5, 6, 7]
    wait_for(lambda: page.evaluate("nudge.queueInfo().queued") == 0, "an empty queue")

    # Closed while offline: the queue stays in localStorage and the next visit sends it.
    browser_context.set_offline(True)
    page.evaluate("nudge.track('Queued While Offline')")
    page.close()
    browser_context.set_offline(False)
    again = browser_context.new_page()
    open_shop(again, site, shared_server, flushInterval=50)
    wait_for(lambda: "Queued While Offline" in names(events(shared_server, objectId=anon)),
             "the event queued on the earlier visit")


class FlakyProxy:
    """A real HTTP hop in front of Nudge that answers 503 to the first ``failures`` batches."""

    def __init__(self, upstream: str, failures: int) -> None:
        self.attempts = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.attempts += 1
                if proxy.attempts <= failures:
                    self.send_response(503)
                    self.send_header("Access-Control-Allow-Origin", "*")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("content-type", "origin", "authorization")}
                r = httpx.post(upstream + self.path, content=body, headers=headers)
                self.send_response(r.status_code)
                for k in ("content-type", "access-control-allow-origin"):
                    if k in r.headers:
                        self.send_header(k, r.headers[k])
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def flaky(shared_server: NudgeServer) -> Iterator[FlakyProxy]:
    p = FlakyProxy(shared_server.url, failures=3)
    yield p
    p.server.shutdown()
    p.server.server_close()


def test_5xx_answers_are_retried_with_backoff_until_delivered(
        shared_server: NudgeServer, site: StaticSite, page: Page, flaky: FlakyProxy) -> None:
    open_shop(page, site, shared_server, host=flaky.url, flushInterval=50, retryBaseMs=100)
    page.evaluate("() => { nudge.track('Retried', {n: 1}); nudge.track('Retried', {n: 2}); }")
    anon = page.evaluate("nudge.anonymousId()")
    wait_for(lambda: page.evaluate("nudge.queueInfo().attempt") >= 2, "a second failed attempt")
    timeline = wait_for(lambda: (e := events(shared_server, objectId=anon)) and len(e) >= 3
                        and e, "the retried events")
    assert flaky.attempts == 4  # three 503s, then one delivery
    assert names(timeline) == ["Session Started", "Retried", "Retried"]
    assert page.evaluate("nudge.queueInfo()")["queued"] == 0


def test_preflighted_cross_origin_call_works_from_a_page(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    page.goto(site.add("/plain", "<p>plain</p>"))
    status = page.evaluate("""async ([host, key]) => {
        const r = await fetch(host + '/v1/track', {method: 'POST',
            headers: {'Authorization': 'Basic ' + btoa(key + ':'),
                      'Content-Type': 'application/json'},
            body: JSON.stringify({userId: 'cors-user', event: 'Preflighted'})});
        return r.status;
    }""", [shared_server.url, shared_server.write_key])
    assert status == 200
    assert names(events(shared_server, identity="cors-user")) == ["Preflighted"]
    blocked = page.evaluate("""async ([host, headers]) => {
        try { await fetch(host + '/1/profile?identity=cors-user', {headers}); return 'read'; }
        catch (e) { return 'blocked'; }
    }""", [shared_server.url, shared_server.headers])
    assert blocked == "blocked"


# ------------------------------------------------------------------ the package itself


SDK_DIR = Path(__file__).resolve().parents[2] / "sdks" / "js"


def test_core_script_is_under_15_kb_gzipped() -> None:
    size = len(gzip.compress((SDK_DIR / "nudge.js").read_bytes(), 9))
    assert size < 15 * 1024, f"nudge.js is {size} bytes gzipped; the budget is 15 KB"


def test_es_module_copy_is_generated_from_the_script() -> None:
    # sdks/js/nudge.mjs is what npm consumers import; regenerate it with
    # `python -m nudge.api.routes.sdk` after editing nudge.js.
    expected = esm_source((SDK_DIR / "nudge.js").read_text(encoding="utf-8"))
    assert (SDK_DIR / "nudge.mjs").read_text(encoding="utf-8") == expected


def test_package_json_points_at_both_module_forms() -> None:
    pkg = json.loads((SDK_DIR / "package.json").read_text())
    assert (SDK_DIR / pkg["main"]).is_file() and pkg["main"].endswith("nudge.js")
    assert (SDK_DIR / pkg["module"]).is_file() and pkg["module"].endswith("nudge.mjs")
    assert pkg["dependencies"] == {}
    assert pkg["version"] in (SDK_DIR / "nudge.js").read_text()
    for f in pkg["files"]:
        assert (SDK_DIR / f).is_file(), f
    # The type declarations name every export of the ES module.
    types = (SDK_DIR / pkg["types"]).read_text()
    for name in ESM_EXPORTS:
        assert f"export const {name}: Nudge['{name}'];" in types, name


@pytest.mark.parametrize("value", ["shop.example.com", "https://shop.example.com/path",
                                   "ftp://shop.example.com", "https://"])
def test_cors_origins_setting_refuses_what_is_not_an_origin(value: str) -> None:
    with pytest.raises(ConfigError, match="NUDGE_CORS_ORIGINS"):
        parse_origins(value)


def test_restricted_cors_origins_answer_only_listed_origins(tmp_path: Path) -> None:
    server = make_server(tmp_path, {"NUDGE_CORS_ORIGINS": "https://shop.example.com"})
    try:
        def preflight(origin: str) -> httpx.Response:
            return httpx.options(server.url + "/v1/batch", headers={
                "Origin": origin, "Access-Control-Request-Method": "POST"})

        ok = preflight("https://shop.example.com")
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://shop.example.com"
        other = preflight("https://evil.example.net")
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers
    finally:
        server.stop()


def test_a_page_closed_during_an_outage_keeps_its_events_for_the_next_visit(
        shared_server: NudgeServer, site: StaticSite, browser_context: BrowserContext) -> None:
    down = FlakyProxy(shared_server.url, failures=10**6)  # every batch answered 503
    try:
        page = browser_context.new_page()
        open_shop(page, site, shared_server, host=down.url, flushInterval=50, retryBaseMs=200)
        page.evaluate("nudge.track('During Outage')")
        anon = page.evaluate("nudge.anonymousId()")
        wait_for(lambda: page.evaluate("nudge.queueInfo().retrying"), "a failed send")
        page.close()  # no beacon into the outage: its answer would never be seen
        attempts = down.attempts
    finally:
        down.server.shutdown()
        down.server.server_close()
    assert events(shared_server, objectId=anon) == []
    again = browser_context.new_page()
    open_shop(again, site, shared_server, flushInterval=50)
    timeline = wait_for(lambda: events(shared_server, objectId=anon), "the kept events")
    assert names(timeline) == ["Session Started", "During Outage"]
    assert attempts >= 1


def test_page_takes_segment_style_arguments(
        shared_server: NudgeServer, site: StaticSite, page: Page) -> None:
    open_shop(page, site, shared_server, flushInterval=50, trackSessions=False)
    page.evaluate("""async () => {
        nudge.page('Pricing');
        nudge.page('Docs', 'Install', {plan: 'pro'});
        nudge.page({section: 'top'});
        await nudge.flush();
    }""")
    anon = page.evaluate("nudge.anonymousId()")
    timeline = wait_for(lambda: (e := events(shared_server, objectId=anon)) and len(e) >= 3
                        and e, "the page views")
    props = [e["evtData"] for e in timeline]
    assert names(timeline) == ["Page Viewed"] * 3
    assert props[0]["name"] == "Pricing" and "category" not in props[0]
    assert (props[1]["category"], props[1]["name"], props[1]["plan"]) == ("Docs", "Install", "pro")
    assert props[2]["section"] == "top" and props[2]["path"] == "/shop"
