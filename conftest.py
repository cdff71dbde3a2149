"""Shared pytest fixtures: a real Nudge server on a temp data directory.

Tests talk to it over HTTP exactly as users do. The server runs in a subprocess
(``nudge serve``) so that tests can also kill -9 it and restart it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nudge_cli(data_dir: Path, *args: str) -> str:
    """Run the real `nudge` CLI and return its stdout."""
    out = subprocess.run(
        [sys.executable, "-m", "nudge", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "NUDGE_LOG_LEVEL": "warning"},
    )
    return out.stdout


@dataclass
class NudgeServer:
    """A running `nudge serve` process and one account on it."""

    data_dir: Path
    port: int
    account_id: str
    passcode: str
    write_key: str
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Nudge-Account-Id": self.account_id, "X-Nudge-Passcode": self.passcode}

    def start(self) -> None:
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nudge", "serve", "--data-dir", str(self.data_dir),
             "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            # Test servers talk to provider servers on 127.0.0.1: the SSRF guard's opt-in.
            env={**os.environ, "NUDGE_LOG_LEVEL": "info",
                 "NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS": "true", **self.extra_env},
        )
        deadline = time.monotonic() + 90  # a loaded 2-core box can take 30 s+
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("nudge serve exited:\n" + (self.data_dir / "server.log").read_text())
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()  # do not leave an orphan server running (and loading the machine)
        raise RuntimeError("nudge serve did not become ready")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """kill -9: no chance to flush or clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def upload(self, records: list[dict], **kw) -> httpx.Response:  # type: ignore[type-arg]
        return httpx.post(self.url + "/1/upload", json={"d": records}, headers=self.headers, **kw)


def make_server(tmp: Path, extra_env: dict[str, str] | None = None) -> NudgeServer:
    acct = json.loads(nudge_cli(tmp, "accounts", "create", "test", "--json"))
    srv = NudgeServer(tmp, free_port(), acct["id"], acct["passcode"], acct["write_key"],
                      extra_env or {})
    srv.start()
    return srv


@pytest.fixture
def nudge_server(tmp_path: Path) -> Iterator[NudgeServer]:
    """A fresh server with one account, on its own temp data dir."""
    srv = make_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NudgeServer]:
    """One server per test module, for read-mostly tests that use their own identities."""
    srv = make_server(tmp_path_factory.mktemp("nudge"))
    try:
        yield srv
    finally:
        srv.stop()


# Files that take longest start first under xdist (`make test` passes --no-loadscope-reorder,
# so work units keep this order): left to xdist's default order (most tests first), these
# one-test kill -9 files were scheduled last and set the suite's length on their own.
LONGEST_FIRST = (
    "tests/engage/test_crash.py",
    "tests/journeys/test_journey_crash.py",
    "tests/predict/test_cdnow.py",
    "sdks/python/tests/test_sdk_server.py",
    "tests/engage/test_delivery.py",
    "tests/predict/test_predict_api.py",
    "tests/privacy/test_backup.py",
    "tests/security/test_route_matrix.py",
    "tests/engage/test_durable_triggers.py",
    "tests/test_cli.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
