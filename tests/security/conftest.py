"""Fixtures for the security tests (helpers in security_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from security_helpers import App, make_settings
from starlette.testclient import TestClient

from nudge.api.app import create_app
from nudge.clock import clock


@pytest.fixture
def inproc(tmp_path: Path) -> Iterator[App]:
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
