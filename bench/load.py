"""An HTTP load generator in separate processes: pre-encoded upload bodies over keep-alive.

The generator must cost the server as little CPU as possible (both share two cores), so
requests are built before the clock starts and sent over raw asyncio (uvloop) connections:
no HTTP client library, no JSON work while measuring except reading the small response.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder()


def encode_bodies(records: list[dict[str, Any]], batch: int = 100) -> list[bytes]:
    """Upload bodies of ``batch`` records each."""
    return [_ENC.encode({"d": records[i:i + batch]}) for i in range(0, len(records), batch)]


def request_bytes(port: int, headers: dict[str, str], body: bytes,
                  path: str = "/1/upload") -> bytes:
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


@dataclass
class LoadResult:
    requests: int = 0
    events: int = 0  # records the server reported processed
    rejected: int = 0  # records refused (per-record errors) or lost to non-200 answers
    retries: int = 0  # 429 answers (retried)
    t_first: float = float("inf")  # time.monotonic(), comparable across processes on Linux
    t_last: float = 0.0
    cpu_s: float = 0.0  # load generator CPU seconds while sending
    latencies: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.t_last - self.t_first

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.events += other.events
        self.rejected += other.rejected
        self.retries += other.retries
        self.t_first = min(self.t_first, other.t_first)
        self.t_last = max(self.t_last, other.t_last)
        self.cpu_s += other.cpu_s
        self.latencies += other.latencies


async def _worker_main(port: int, headers: dict[str, str], bodies: list[bytes], connections: int,
                       rate: float | None, duration: float | None, start: Any,
                       stop: Any) -> LoadResult:
    reqs = [request_bytes(port, headers, b) for b in bodies]
    sizes = [b.count(b'"msgId"') for b in bodies]
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections)]
    res = LoadResult()
    state = {"next": 0}
    await asyncio.get_running_loop().run_in_executor(None, start.wait)
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)

    def take() -> tuple[bytes, int, float] | None:
        k = state["next"]
        state["next"] += 1
        cycle, i = divmod(k, len(reqs))
        if stop.is_set() or (duration is None and cycle > 0):
            return None
        if duration is not None and time.monotonic() - t0 > duration:
            return None
        req = reqs[i]
        if cycle:  # a fresh msgId for every event of a repeated body
            req = req.replace(b'"msgId":"', b'"msgId":"r%d-' % cycle)
            head, _, body = req.partition(b"\r\n\r\n")
            head = head.replace(b"Content-Length: %d" % len(bodies[i]),
                                b"Content-Length: %d" % len(body))
            req = head + b"\r\n\r\n" + body
        due = t0 + k / rate if rate else 0.0
        return req, sizes[i], due

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (job := take()) is not None:
            req, n, due = job
            if due:
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            while True:
                sent = time.monotonic()
                res.t_first = min(res.t_first, sent)
                writer.write(req)
                status, body = await read_response(reader)
                if status != 429:
                    break
                res.retries += 1
                await asyncio.sleep(0.01)
            done = time.monotonic()
            res.t_last = max(res.t_last, done)
            res.requests += 1
            res.latencies.append(done - sent)
            if status == 200:
                processed = _DEC.decode(body)["processed"]
                res.events += processed
                res.rejected += n - processed
            else:
                res.rejected += n

    await asyncio.gather(*(connection(r, w) for r, w in conns))
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res.cpu_s = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    for _, w in conns:
        w.close()
    return res


def _worker(port: int, headers: dict[str, str], bodies: list[bytes], connections: int,
            rate: float | None, duration: float | None, start: Any, stop: Any, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(_worker_main(port, headers, bodies, connections, rate, duration, start,
                                   stop))
    out.put(res)


class Load:
    """Worker processes sending ``bodies`` (split between them) to a server.

    ``rate`` (requests/s in total) paces the load; ``duration`` repeats the bodies (with fresh
    msgIds) until that many seconds have passed or ``stop()`` is called.
    """

    def __init__(self, port: int, headers: dict[str, str], bodies: list[bytes], *,
                 processes: int = 2, connections: int = 8, rate: float | None = None,
                 duration: float | None = None) -> None:
        ctx = mp.get_context("fork")  # children inherit the encoded bodies without pickling
        self._start = ctx.Barrier(processes + 1)
        self._stop = ctx.Event()
        self._out: Any = ctx.Queue()
        per_rate = rate / processes if rate else None
        self._procs = [ctx.Process(target=_worker, daemon=True, args=(
            port, headers, bodies[w::processes], connections, per_rate, duration,
            self._start, self._stop, self._out)) for w in range(processes)]

    def start(self) -> None:
        for p in self._procs:
            p.start()
        self._start.wait()  # every worker has connected; go

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> LoadResult:
        total = LoadResult()
        for _ in self._procs:
            total.merge(self._out.get())
        for p in self._procs:
            p.join()
        return total

    def run(self) -> LoadResult:
        self.start()
        return self.join()
