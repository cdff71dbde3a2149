"""Helpers and fixtures for the security tests: the real app in-process (so tests can move
the one clock) with a real control store and account stores on a temp dir, and signed-in
dashboard users. Test modules import the fixture from here (no conftest in this folder, so
the root conftest stays the only ``conftest`` module).

Tests that need no clock control use the root conftest's real server (``nudge serve``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pyotp
import pytest
from starlette.testclient import TestClient

from nudge.api.app import create_app
from nudge.clock import clock
from nudge.config import Settings, load_settings
from nudge.tenancy.accounts import NewAccount

PASSWORD = "correct horse battery staple 42"  # noqa: S105 - test users only


@dataclass
class App:
    client: TestClient
    app: Any
    a: NewAccount
    b: NewAccount

    @property
    def auth(self) -> Any:
        return self.app.state.auth

    def key_headers(self, acct: NewAccount | None = None, key: str | None = None,
                    ) -> dict[str, str]:
        acct = acct or self.a
        return {"X-Nudge-Account-Id": acct.account.id, "X-Nudge-Passcode": key or acct.passcode}

    def new_client(self) -> TestClient:
        """Another browser: its own cookie jar, same app."""
        return TestClient(self.app, raise_server_exceptions=False)

    def user(self, email: str, role: str, acct: NewAccount | None = None,
             password: str = PASSWORD) -> int:
        return self.auth.users.create(email, (acct or self.a).account.id, role,
                                      password=password).id


def make_settings(tmp: Path, **overrides: object) -> Settings:
    names = {f.name for f in fields(Settings)}
    if "engage_workers" in names:
        overrides.setdefault("engage_workers", 0)  # no delivery workers needed here
    return load_settings(env={"NUDGE_MASTER_KEY_FILE": str(tmp.parent / (tmp.name + ".key"))},
                         data_dir=tmp, **overrides)


@pytest.fixture(name="inproc")
def inproc_fixture(tmp_path: Path) -> Iterator[App]:
    """The app on a temp dir with accounts A and B; the clock is restored afterwards."""
    app = create_app(make_settings(tmp_path))
    a = app.state.nudge.accounts.create("A")
    b = app.state.nudge.accounts.create("B")
    offset = clock.offset
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield App(client, app, a, b)
    finally:
        clock.offset = offset


class Browser:
    """A dashboard user's browser: cookies plus the CSRF token echoed on unsafe requests."""

    def __init__(self, client: TestClient, account_id: str | None = None) -> None:
        self.c = client
        self.csrf: str | None = None
        self.account_id = account_id
        self.totp_secret: str | None = None
        self.recovery_codes: list[str] = []

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {}
        if self.csrf:
            h["X-CSRF-Token"] = self.csrf
        if self.account_id:
            h["X-Nudge-Account-Id"] = self.account_id
        return {**h, **(extra or {})}

    def _keep(self, r: Any) -> Any:
        if r.status_code == 200 and "csrf_token" in (r.json() if r.content else {}):
            self.csrf = r.json()["csrf_token"]
        return r

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        headers = self._headers(kw.pop("headers", None))
        return self._keep(self.c.post(path, json=json, headers=headers, **kw))

    def get(self, path: str, **kw: Any) -> Any:
        return self.c.get(path, headers=self._headers(kw.pop("headers", None)), **kw)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        return self.c.request(method, path, headers=self._headers(kw.pop("headers", None)), **kw)

    def login(self, email: str, password: str = PASSWORD) -> Any:
        return self.post("/auth/login", {"email": email, "password": password})

    def code(self) -> str:
        assert self.totp_secret
        return pyotp.TOTP(self.totp_secret).at(clock.now())

    def enroll(self) -> None:
        r = self.post("/auth/mfa/enroll")
        assert r.status_code == 200, r.text
        self.totp_secret = r.json()["secret"]
        r = self.post("/auth/mfa/confirm", {"code": self.code()})
        assert r.status_code == 200, r.text
        self.recovery_codes = r.json()["recovery_codes"]

    def sign_in(self, email: str, password: str = PASSWORD) -> Browser:
        """All the way to a full session (enrolling or answering MFA as needed)."""
        r = self.login(email, password)
        assert r.status_code == 200, r.text
        stage = r.json()["stage"]
        if stage == "enroll":
            self.enroll()
        elif stage == "mfa":
            clock.offset += 30  # a fresh TOTP step: the last code was used
            r = self.post("/auth/mfa/verify", {"code": self.code()})
            assert r.status_code == 200, r.text
        return self
