"""What every benchmark needs: a real server, process stats, medians and tables."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
NUDGE = [sys.executable, "-m", "nudge"]


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def header(title: str) -> None:
    print(f"\n## {title}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {machine()}")
    print(f"# command: {command()}", flush=True)
    print(f"# code: {code_version()}", flush=True)


def code_version() -> str:
    """The commit the measured code is at, and whether nudge/ had uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "nudge"], cwd=ROOT,
                               check=True, capture_output=True, text=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    changed = [line[3:].removeprefix("nudge/") for line in dirty if line.strip()]
    if not changed:
        return head
    more = f", ... ({len(changed)} files)" if len(changed) > 4 else ""
    return f"{head} + uncommitted changes in nudge/ ({', '.join(changed[:4])}{more})"


def command() -> str:
    """How this benchmark was started, as one would type it (``python -m bench.<name> ...``)."""
    prog = Path(sys.argv[0])
    head = (["python", "-m", f"bench.{prog.stem}"] if prog.parent == Path(__file__).parent
            else [Path(sys.executable).name, sys.argv[0]])
    return " ".join([*head, *sys.argv[1:]])


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def timed(fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Seconds per call, ``reps`` times after ``warmup`` unmeasured calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
             for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v >= 1000:
            return f"{v:,.0f}"
        if v >= 100:
            return f"{v:.0f}"
        if v >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(ours: float, ref: float) -> str:
    return f"{ours / ref:.2f}x" if ref else "-"


# -- processes ----------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A real ``nudge serve`` on a temp data directory, with one account."""

    env: dict[str, str] = field(default_factory=dict)
    data_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="nudge-bench-")))
    port: int = field(default_factory=free_port)
    account_id: str = ""
    passcode: str = ""
    proc: subprocess.Popen[bytes] | None = None
    keep: bool = False
    # Run the server from another checkout (before/after comparisons): `python -m nudge`
    # imports the package from the working directory first.
    root: Path | None = None

    def __post_init__(self) -> None:
        if not self.account_id:
            out = subprocess.run([*NUDGE, "accounts", "create", "bench", "--json",
                                  "--data-dir", str(self.data_dir)],
                                 check=True, capture_output=True, text=True,
                                 env={**os.environ, "NUDGE_LOG_LEVEL": "warning"})
            acct = json.loads(out.stdout)
            self.account_id, self.passcode = acct["id"], acct["passcode"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Nudge-Account-Id": self.account_id, "X-Nudge-Passcode": self.passcode}

    @property
    def db_path(self) -> Path:
        return self.data_dir / "accounts" / self.account_id / "events.duckdb"

    def start(self) -> Server:
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [*NUDGE, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
            # Benchmarks send to receivers on 127.0.0.1: the SSRF guard's opt-in.
            env={**os.environ, "NUDGE_LOG_LEVEL": "warning",
                 "NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "true", **self.env})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log_text = (self.data_dir / "server.log").read_text()
                raise RuntimeError("nudge serve exited:\n" + log_text)
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("nudge serve did not become ready")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self) -> None:
        self.stop()
        if not self.keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def loadavg() -> str:
    """The 1-minute load average and the core count: other processes competing for CPU."""
    return f"{Path('/proc/loadavg').read_text().split()[0]} on {os.cpu_count()} cores"
