"""An in-process Nudge server (real uvicorn over HTTP) whose clock the test moves.

The journey engine, delivery workers and stores run in this process, so moving
``nudge.clock.clock.offset`` moves time for all of them at once — the one clock the
code reads (never time.time()).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from conftest import free_port, nudge_cli
from nudge.clock import clock
from nudge.config import load_settings


class LocalServer:
    def __init__(self, tmp: Path, env: dict[str, str] | None = None,
                 account: tuple[str, str] | None = None) -> None:
        """A server on ``tmp``; ``account`` (id, passcode) reuses an account created by an
        earlier server on the same directory (a restart)."""
        from nudge.api.app import create_app

        if account is None:
            acct = json.loads(nudge_cli(tmp, "accounts", "create", "test", "--json"))
            account = acct["id"], acct["passcode"]
        self.account_id, self.passcode = account
        self.port = free_port()
        # Provider servers listen on 127.0.0.1: the SSRF guard's opt-in, as for every test server.
        self.settings = load_settings(env={"NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "true",
                                           **(env or {})},
                                      data_dir=tmp)
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", log_config=None))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("in-process server did not become ready")

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

    def stop(self, keep_clock: bool = False) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        if not keep_clock:
            clock.offset = 0.0

    @property
    def journeys(self) -> Any:
        return self.app.state.journeys


def advance(seconds: float) -> None:
    """Move the one clock forward."""
    clock.offset += seconds


def set_clock(at: float) -> None:
    """Put the one clock at epoch ``at`` (it runs on from there)."""
    clock.offset = at - time.time()


def event(identity: str, name: str, props: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "event", "identity": identity, "ts": int(clock.now()), "evtName": name,
            "evtData": props or {}}
