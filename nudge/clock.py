"""The one clock. Tests move time by replacing ``clock.now``; code never calls time.time()."""

from __future__ import annotations

import time


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        return time.time() + self.offset


clock = Clock()
