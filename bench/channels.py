"""Channels: why instances are cached (one connection pool / SMTP session per channel).

Two designs, same messages, same local provider servers (``tests/engage/providers.py``),
same process, rounds interleaved, medians reported:

- **webhook**: signed JSON POSTs to a local receiver that verifies every signature, 16 sends
  in flight; *pooled* = one ``WebhookChannel`` (one httpx client, keep-alive) for all
  messages, as ``ChannelDirectory.build`` hands out; *per message* = a channel built and
  closed for each message (a new TCP connection each time).
- **email**: messages through aiosmtpd with STARTTLS + AUTH (self-signed cert);
  *session* = one ``EmailChannel`` keeping its SMTP session open; *per message* = connect,
  EHLO, STARTTLS, AUTH, send, QUIT for each.

    python -m bench.channels                       # 1000 webhooks, 200 emails, 3 rounds
    python -m bench.channels --webhooks 5000 --emails 500 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import header, loadavg
from nudge.engage.channels import netguard
from nudge.engage.channels.email import EmailChannel
from nudge.engage.channels.webhook import WebhookChannel
from tests.engage.providers import SmtpServer, WebhookReceiver, message, tls_pair

SECRET = "bench-secret-" + "x" * 20


RETRIES: dict[str, int] = {}


async def _webhooks(config: dict[str, Any], n: int, pooled: bool) -> float:
    sem = asyncio.Semaphore(16)
    shared = WebhookChannel.from_config(config) if pooled else None
    label = "webhook pooled" if pooled else "webhook per message"

    async def one(i: int) -> None:
        async with sem:
            m = message("webhook", "", {"body": {"i": i}})
            for _ in range(10):  # a `retry` outcome is sent again, as the workers would
                ch = shared or WebhookChannel.from_config(config)
                try:
                    r = await ch.send(m)
                finally:
                    if shared is None:
                        await ch.close()
                if r.outcome == "sent":
                    return
                assert r.outcome == "retry", r
                RETRIES[label] = RETRIES.get(label, 0) + 1
            raise AssertionError(f"not sent after 10 attempts: {r}")

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - t0
    if shared is not None:
        await shared.close()
    return n / elapsed


async def _emails(config: dict[str, Any], n: int, pooled: bool) -> float:
    shared = EmailChannel.from_config(config) if pooled else None
    content = {"subject": "Bench", "html": "<p>Hello <b>there</b></p>",
               "unsubscribe_url": "https://nudge.example/u/x"}
    t0 = time.perf_counter()
    for _ in range(n):
        ch = shared or EmailChannel.from_config(config)
        r = await ch.send(message("email", "ada@example.org", content))
        assert r.outcome == "sent", r
        if shared is None:
            await ch.close()
    elapsed = time.perf_counter() - t0
    if shared is not None:
        await shared.close()
    return n / elapsed


def main() -> None:
    netguard.configure(True)  # the providers here listen on 127.0.0.1
    ap = argparse.ArgumentParser()
    ap.add_argument("--webhooks", type=int, default=1000)
    ap.add_argument("--emails", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    header("Channels: one cached channel instance vs one per message")
    results: dict[str, list[float]] = {k: [] for k in (
        "webhook pooled", "webhook per message", "email session", "email per message")}
    with tempfile.TemporaryDirectory() as tmp, WebhookReceiver(SECRET) as hook, \
            SmtpServer(tls_pair(Path(tmp))) as smtp:
        wcfg = {**hook.channel_config(), "timeout_s": 30}
        ecfg = {**smtp.channel_config(), "timeout_s": 30}
        asyncio.run(_webhooks(wcfg, 50, True))  # warm up
        for _ in range(args.rounds):
            results["webhook pooled"].append(asyncio.run(_webhooks(wcfg, args.webhooks, True)))
            results["webhook per message"].append(
                asyncio.run(_webhooks(wcfg, args.webhooks, False)))
            results["email session"].append(asyncio.run(_emails(ecfg, args.emails, True)))
            results["email per message"].append(
                asyncio.run(_emails(ecfg, args.emails, False)))
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"{'design':<22} {'median msg/s':>12}   rounds")
    for k, v in results.items():
        print(f"{k:<22} {med[k]:>12.0f}   {', '.join(f'{x:.0f}' for x in v)}")
    webhook = med["webhook pooled"] / med["webhook per message"]
    print(f"webhook pooled / per message: {webhook:.2f}x")
    print(f"email session / per message:  {med['email session'] / med['email per message']:.2f}x")
    print(f"transient failures retried: {RETRIES or 'none'}")
    print(f"# medians of {args.rounds} interleaved rounds; load {loadavg()}")


if __name__ == "__main__":
    main()
