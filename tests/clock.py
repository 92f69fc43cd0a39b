"""A clock tests move forward themselves, instead of sleeping past a lifetime."""

from __future__ import annotations

import time


class FakeClock:
    """Starts at the machine's clocks' readings; moves only when `advance` is called."""

    def __init__(self) -> None:
        self.now = time.time()
        self.ticks = time.monotonic()

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.ticks

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.ticks += seconds
