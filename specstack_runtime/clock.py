"""The time the runtime reads, as an object a test can replace.

`Clock.time` is the wall clock (what timestamps and token expiries are written in);
`Clock.monotonic` measures intervals (cache lifetimes, renewal times). Code that
decides by time takes a clock, defaulting to `SYSTEM_CLOCK`; a test passes one it
moves forward itself instead of sleeping.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
