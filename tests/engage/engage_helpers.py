"""Helpers for the delivery-service tests: a real server, real provider servers, polling."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from conftest import NudgeServer, free_port, nudge_cli

T = TypeVar("T")


def wait_for(fn: Callable[[], T], timeout: float = 90.0, every: float = 0.1,
             what: str = "condition") -> T:
    """Poll ``fn`` until it returns something truthy (or fail after ``timeout`` s)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


def api(srv: Any, method: str, path: str, body: Any = None, ok: int | None = None,
        **kw: Any) -> httpx.Response:
    r = httpx.request(method, srv.url + path, json=body, headers=srv.headers, timeout=60, **kw)
    if ok is not None:
        assert r.status_code == ok, (r.status_code, r.text)
    return r


def configure(srv: Any, channel: str, config: dict[str, Any]) -> None:
    api(srv, "PUT", f"/1/channels/{channel}", config, ok=200)


def profiles(srv: Any, people: list[dict[str, Any]]) -> None:
    """Upload profiles: each {"identity", **profile properties}."""
    for i in range(0, len(people), 1000):
        recs = [{"type": "profile", "identity": p["identity"], "ts": int(time.time()),
                 "profileData": {k: v for k, v in p.items() if k != "identity"}}
                for p in people[i:i + 1000]]
        r = srv.upload(recs, timeout=120)
        assert r.status_code == 200 and r.json()["status"] == "success", r.text


def campaign(srv: Any, body: dict[str, Any], send: bool = True) -> dict[str, Any]:
    c = api(srv, "POST", "/1/campaigns", body, ok=201).json()
    if send:
        c = api(srv, "POST", f"/1/campaigns/{c['id']}/send", ok=200).json()
    return c


def outbox(srv: Any, **params: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = "0"
    while cursor:
        r = api(srv, "GET", "/1/outbox", params={**params, "limit": 1000, "cursor": cursor},
                ok=200).json()
        out += r["messages"]
        cursor = r["next_cursor"]
    return out


def everyone() -> dict[str, Any]:
    """An inline segment matching every profile."""
    return {"definition": {"profile": {"property": "$identity", "op": "exists"}}}


class CountingReceiver:
    """An instant webhook endpoint in a subprocess (tests/engage/receiver_proc.py) that
    records every request's ``X-Nudge-Idempotency-Key``. Like a provider that deduplicates
    on that key, ``accepted`` is the set of distinct keys; ``requests`` counts every POST,
    repeats included."""

    def __init__(self, directory: Path) -> None:
        import subprocess
        import sys

        self.log = directory / "received.log"
        port_file = directory / "receiver.port"
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.engage.receiver_proc",
                                      str(port_file), str(self.log)],
                                     cwd=Path(__file__).resolve().parents[2])
        wait_for(port_file.exists, timeout=120, what="receiver started")
        self.port = int(port_file.read_text())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def lines(self) -> list[str]:
        if not self.log.exists():
            return []
        text = self.log.read_text()
        return [x for x in text[:text.rfind("\n") + 1].splitlines() if x]

    @property
    def accepted(self) -> set[str]:
        return set(self.lines())

    @property
    def requests(self) -> int:
        return len(self.lines())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class PatientServer(NudgeServer):
    """``conftest.NudgeServer`` that waits up to 3 minutes for readiness: on a shared,
    loaded machine a cold start (imports, WAL replay) can take longer than 30 s."""

    def start(self) -> None:
        import os
        import subprocess
        import sys

        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nudge", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "NUDGE_LOG_LEVEL": "info",
                 "NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "true", **self.extra_env})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nudge serve exited:\n"
                                   + (self.data_dir / "server.log").read_text())
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()  # never leave a server behind
        raise RuntimeError("nudge serve did not become ready in 180 s")


def start_server(tmp: Path, extra_env: dict[str, str] | None = None) -> PatientServer:
    """Like ``conftest.make_server`` (one account, a real ``nudge serve``), patient."""
    import json

    acct = json.loads(nudge_cli(tmp, "accounts", "create", "test", "--json"))
    srv = PatientServer(tmp, free_port(), acct["id"], acct["passcode"], acct["write_key"],
                        extra_env or {})
    srv.start()
    return srv


class InProcessServer:
    """A real server (uvicorn over HTTP) in the test's own process, so the test can move
    ``nudge.clock`` for the scheduler and workers; ``restart`` stops it and starts a new
    app on the same data directory (the same account)."""

    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 account: tuple[str, str] | None = None) -> None:
        """``account`` (id, passcode) reuses an account created on ``tmp`` before."""
        import json

        if account is None:
            acct = json.loads(nudge_cli(tmp, "accounts", "create", "test", "--json"))
            account = acct["id"], acct["passcode"]
        self.data_dir, (self.account_id, self.passcode) = tmp, account
        # Provider servers listen on 127.0.0.1: the SSRF guard's opt-in.
        self.env = {"NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "true", **(env or {})}
        self.start()

    def start(self) -> None:
        import threading

        import uvicorn

        from nudge.api.app import create_app
        from nudge.config import load_settings

        self.port = free_port()
        self.settings = load_settings(env=dict(self.env), data_dir=self.data_dir)
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: _ready(self.url), timeout=120, what="in-process server ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "in-process server did not stop"

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Nudge-Account-Id": self.account_id, "X-Nudge-Passcode": self.passcode}

    def upload(self, records: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        kw.setdefault("timeout", 60)
        return httpx.post(self.url + "/1/upload", json={"d": records}, headers=self.headers,
                          **kw)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
