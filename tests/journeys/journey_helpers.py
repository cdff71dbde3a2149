"""An in-process Nudge server (real uvicorn over HTTP) whose clock the test moves.

The journey engine, delivery workers and stores run in this process, so moving
``nudge.clock.clock.offset`` moves time for all of them at once — the one clock the
code reads (never time.time()).
"""

from __future__ import annotations

import time
from typing import Any

from nudge.clock import clock
from tests.engage.engage_helpers import InProcessServer


class LocalServer(InProcessServer):
    """tests/engage's in-process server, plus the journey engine and a clock reset."""

    def stop(self, keep_clock: bool = False) -> None:
        super().stop()
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
