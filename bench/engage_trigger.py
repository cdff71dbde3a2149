"""Live trigger latency: event acknowledged → send attempted, p50/p99 (target p99 ≤ 1 s).

A real ``nudge serve`` with one running trigger campaign ("Added To Cart" with value ≥ 10,
webhook channel) and a local instant receiver. Events are uploaded one request at a time
(``/1/upload``) at ``--rate`` per second; for each, the latency is the time from the upload's
HTTP response (the ack: the event is durable) to the moment the receiver gets the webhook
POST carrying that event's sequence number (the send attempt reached the provider).

Reference, same run: the upload round trip itself (request → ack), i.e. what ingest costs
before the trigger path starts.

    python -m bench.engage_trigger                  # 300 events at 20/s
    python -m bench.engage_trigger --events 1000 --rate 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import threading
import time

import httpx

from bench.common import Server, header, loadavg, median, percentile, table


class Receiver:
    """Plain asyncio HTTP/1.1: records the arrival time of each POST by its body's seq."""

    def __init__(self) -> None:
        self.arrived: dict[int, float] = {}
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True).start()

    async def _main(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    n = 0
                    for line in head.split(b"\r\n")[1:]:
                        k, _, v = line.partition(b":")
                        if k.strip().lower() == b"content-length":
                            n = int(v)
                    body = await reader.readexactly(n) if n else b"{}"
                    now = time.perf_counter()
                    seq = json.loads(body).get("seq")
                    if seq is not None:
                        self.arrived.setdefault(int(seq), now)
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass

        server = await asyncio.start_server(handle, sock=self.sock)
        async with server:
            await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=300)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    rx = Receiver()
    url = f"http://127.0.0.1:{rx.port}/hook"
    with Server(env={"NUDGE_ENGAGE_POLL_MS": "250"}) as srv:
        c = httpx.Client(base_url=srv.url, headers=srv.headers, timeout=30)
        assert c.put("/1/channels/webhook", json={
            "provider": "http", "url": url, "secret": "bench-secret-0123456789"}).is_success
        users = [{"type": "profile", "identity": f"t{i}", "ts": int(time.time()),
                  "profileData": {"n": i}} for i in range(args.events)]
        for i in range(0, len(users), 1000):
            assert c.post("/1/upload", json={"d": users[i:i + 1000]}).is_success
        r = c.post("/1/campaigns", json={
            "name": "cart", "kind": "trigger", "channels": ["webhook"], "webhook_url": url,
            "trigger": {"event": "Added To Cart",
                        "where": [{"property": "value", "op": "gte", "value": 10}]},
            "content": {"webhook": {"body": '{"seq": {{ event.seq }}}'}}})
        assert r.status_code == 201, r.text
        assert c.post(f"/1/campaigns/{r.json()['id']}/send").is_success
        time.sleep(1.5)  # the bus caches campaigns for 1 s
        acked: dict[int, float] = {}
        rtt: list[float] = []
        gap = 1.0 / args.rate
        for i in range(args.events):
            t0 = time.perf_counter()
            resp = c.post("/1/upload", json={"d": [{
                "type": "event", "identity": f"t{i}", "ts": int(time.time()),
                "evtName": "Added To Cart", "evtData": {"value": 20, "seq": i}}]})
            t1 = time.perf_counter()
            assert resp.is_success, resp.text
            acked[i] = t1
            rtt.append(t1 - t0)
            time.sleep(max(0.0, gap - (time.perf_counter() - t0)))
        deadline = time.monotonic() + 30
        while len(rx.arrived) < args.events and time.monotonic() < deadline:
            time.sleep(0.1)
    lat = [rx.arrived[i] - acked[i] for i in acked if i in rx.arrived]
    header(f"engage trigger latency: {args.events} events at {args.rate:g}/s")
    print(table(["measure", "p50", "p99", "max"], [
        ["ack → send attempt reached provider",
         f"{median(lat) * 1000:.0f} ms", f"{percentile(lat, 99) * 1000:.0f} ms",
         f"{max(lat) * 1000:.0f} ms"],
        ["reference: upload request → ack", f"{median(rtt) * 1000:.0f} ms",
         f"{percentile(rtt, 99) * 1000:.0f} ms", f"{max(rtt) * 1000:.0f} ms"]]))
    print(f"\ndelivered {len(lat)}/{args.events}; load average {loadavg()}")


if __name__ == "__main__":
    main()
