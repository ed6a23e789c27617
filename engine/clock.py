"""Time as the engine sees it: injectable, so expiry and campaign windows test without sleeping."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Anything with now_ms(): milliseconds since the Unix epoch, never going backwards."""

    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock milliseconds, clamped so a step back of the system clock never reopens
    an expired hold."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        t = time.time_ns() // 1_000_000
        with self._lock:
            if t < self._last:
                return self._last
            self._last = t
            return t


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ms and return the new time."""
        if ms < 0:
            raise ValueError("a clock does not go backwards")
        self._now += ms
        return self._now

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a clock does not go backwards")
        self._now = now_ms
