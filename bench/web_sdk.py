"""Web SDK: the cost of ``nudge.track()`` in Chromium, against a reference build of the SDK.

    python -m bench.web_sdk [--reference-rev cfee4fb | --reference FILE] [--rounds 5]

The reference is an earlier nudge.js (by default revision cfee4fb: the queue written to
localStorage on every message, ids/session/opt-out read from storage on every message).
Both run in the same browser, on pages of the same origin layout, with the same workload:
the visitor is offline and the queue is full (1000 messages, the default bound), the worst
case, since every message then rewrites the whole stored queue. Measured inside the page
with ``performance.now()``:

- a loop of 1000 ``track()`` calls in one task;
- single ``track()`` calls, one per task (as user clicks are), mean per call over 200.

Needs Debian's Chromium (``apt-get install -y chromium``) and Playwright.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "web"))

from browser import CHROMIUM, CHROMIUM_ARGS, StaticSite  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402

LOOP = """() => {
  const t = performance.now();
  for (let i = 0; i < 1000; i++) nudge.track('Bench', {i, sku: 'A' + i, price: i * 1.5});
  return performance.now() - t;
}"""
SINGLES = """async () => {
  let total = 0;
  for (let i = 0; i < 200; i++) {
    const t = performance.now();
    nudge.track('One', {i});
    total += performance.now() - t;
    await new Promise((r) => setTimeout(r, 0));
  }
  return total / 200;
}"""


def measure(page: Page, rounds: int) -> tuple[float, float]:
    page.evaluate("nudge.init({writeKey: 'k', host: 'http://127.0.0.1:9', trackSessions: false})")
    page.evaluate("() => { for (let i = 0; i < 1000; i++) nudge.track('Fill', {i}); }")
    loops = [page.evaluate(LOOP) for _ in range(rounds)]
    singles = [page.evaluate(SINGLES) for _ in range(rounds)]
    return statistics.median(loops), statistics.median(singles)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--reference-rev", default="cfee4fb")
    p.add_argument("--reference", type=Path, help="a nudge.js file to compare with instead")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    ours = (ROOT / "sdks" / "js" / "nudge.js").read_text()
    if args.reference:
        reference = args.reference.read_text()
    else:
        reference = subprocess.run(["git", "show", f"{args.reference_rev}:sdks/js/nudge.js"],
                                   cwd=ROOT, check=True, capture_output=True, text=True).stdout
    site = StaticSite()
    results = {}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, source in (("nudge.js", ours), ("reference", reference)):
                site.add(f"/{name}/sdk.js", source, "text/javascript")
                url = site.add(f"/{name}/page", f'<script src="/{name}/sdk.js"></script>')
                ctx = browser.new_context()  # its own localStorage
                page = ctx.new_page()
                page.goto(url)
                ctx.set_offline(True)
                results[name] = measure(page, args.rounds)
                ctx.close()
            browser.close()
    finally:
        site.close()
    (loop, single), (ref_loop, ref_single) = results["nudge.js"], results["reference"]
    print(f"{'offline, full queue (1000)':<34}{'nudge.js':>12}{'reference':>12}{'ratio':>9}")
    print(f"{'1000 track() in one task, ms':<34}{loop:>12.1f}{ref_loop:>12.1f}"
          f"{ref_loop / loop:>8.0f}x")
    print(f"{'one track() per task, ms/call':<34}{single:>12.3f}{ref_single:>12.3f}"
          f"{ref_single / single:>8.0f}x")


if __name__ == "__main__":
    main()
