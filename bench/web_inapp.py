"""Web SDK: how soon an in-app message triggered by the page's own event is on screen.

    python -m bench.web_inapp [--rounds 20]

A real server (default settings) with a trigger campaign on the in-app channel; a page in
Debian's Chromium with nudge.js + nudge-messages.js, the user identified, the in-app
stream connected, the SDK sending each message at once (``flushAt: 1``). Each round the
page calls ``track('Bench Trigger')`` and a MutationObserver notes when the message element
appears: ingest, commit, live bus, trigger, outbox, delivery worker, inbox, SSE, render.
Reference, in the same page and server: the round trip of one ``POST /v1/batch`` from the
page (ingest until the commit is acknowledged), i.e. the floor any event-triggered
delivery starts from.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))

from browser import CHROMIUM, CHROMIUM_ARGS, StaticSite  # noqa: E402
from playwright.sync_api import sync_playwright  # noqa: E402

from bench.common import NUDGE, Server  # noqa: E402

ROUNDS_JS = """async (n) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const shown = new Promise((resolve) => {
      const mo = new MutationObserver(() => {
        if (document.querySelector('.nudge-msg')) { mo.disconnect(); resolve(performance.now()); }
      });
      mo.observe(document.body, {childList: true});
    });
    const t0 = performance.now();
    nudge.track('Bench Trigger', {i});
    out.push((await shown) - t0);
    document.querySelector('.nudge-msg .nudge-close').click();
    await new Promise((r) => setTimeout(r, 50));
  }
  return out;
}"""
REFERENCE_JS = """async ([host, key, n]) => {
  const out = [];
  for (let i = 0; i < n; i++) {
    const body = JSON.stringify({writeKey: key, batch: [
      {type: 'track', event: 'Reference', anonymousId: 'bench-ref', properties: {i}}]});
    const t0 = performance.now();
    const r = await fetch(host + '/v1/batch', {method: 'POST', body,
      headers: {'Content-Type': 'text/plain;charset=UTF-8'}});
    await r.json();
    out.push(performance.now() - t0);
  }
  return out;
}"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="nudge-bench-"))
    acct = json.loads(subprocess.run(
        [*NUDGE, "accounts", "create", "web", "--json", "--data-dir", str(data_dir)],
        check=True, capture_output=True, text=True).stdout)
    server = Server(data_dir=data_dir, account_id=acct["id"], passcode=acct["passcode"])
    site = StaticSite()
    with server:
        h = {"X-Nudge-Account-Id": acct["id"], "X-Nudge-Passcode": acct["passcode"]}
        secret = httpx.put(server.url + "/1/channels/inapp", json={}, headers=h).json()[
            "generated"]["identity_secret"]
        c = httpx.post(server.url + "/1/campaigns", headers=h, json={
            "name": "bench", "kind": "trigger", "channels": ["inapp"],
            "trigger": {"event": "Bench Trigger"},
            "content": {"inapp": {"title": "Hi", "body": "round {{ event.i }}"}}}).json()
        httpx.post(f"{server.url}/1/campaigns/{c['id']}/send", headers=h).raise_for_status()
        url = site.add("/page", f'<script src="{server.url}/sdk/nudge.js"></script>'
                                f'<script src="{server.url}/sdk/nudge-messages.js"></script>')
        user_hash = hmac.new(secret.encode(), b"bench-user", hashlib.sha256).hexdigest()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.evaluate("""async ([key, hash]) => {
                nudge.init({writeKey: key, flushAt: 1, trackSessions: false});
                nudge.identify('bench-user');
                await nudge.flush();
                await nudge.inapp.start({userHash: hash, toastMs: 0});
            }""", [acct["write_key"], user_hash])
            page.evaluate(ROUNDS_JS, 2)  # warm-up
            shown = page.evaluate(ROUNDS_JS, args.rounds)
            ack = page.evaluate(REFERENCE_JS, [server.url, acct["write_key"], args.rounds])
            browser.close()
    site.close()
    med, ref = statistics.median(shown), statistics.median(ack)
    q = statistics.quantiles(shown, n=10)
    print(f"rounds: {args.rounds}")
    print(f"track() -> in-app message on screen: median {med:.0f} ms, p90 {q[-1]:.0f} ms, "
          f"max {max(shown):.0f} ms")
    print(f"reference, POST /v1/batch acknowledged: median {ref:.1f} ms")
    print(f"ratio: {med / ref:.1f}x")


if __name__ == "__main__":
    main()
