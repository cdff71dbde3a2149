"""Fixtures of the SDK tests; the real Nudge server fixtures come from the repo root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sdk_stub import Errors, StubUpload


@pytest.fixture
def stub() -> Iterator[StubUpload]:
    server = StubUpload()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def errors() -> Errors:
    return Errors()
