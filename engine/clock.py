"""Time as the engine sees it: injectable, so expiry and campaign windows test without sleeping.

Two readings, because two kinds of time are kept. Campaign windows are instants of the
calendar ("the sale ends at 02:00"), and timestamps say when things happened: both follow
the wall clock, `now_ms()`. A hold's TTL is a duration the caller asked for: it follows
`steady_ms()`, which a step of the wall clock (NTP, an operator) does not move, so a step
forward expires no hold early and a step back keeps none longer (the monotonic clock it
follows also stops while the machine is suspended: that time does not count). Both are
milliseconds since the Unix epoch and equal until the wall clock is stepped; stored
expiries are read against steady time after a restart, which starts again from the wall
clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

NS_PER_MS = 1_000_000


class Clock(Protocol):
    """Anything with now_ms(): milliseconds since the Unix epoch, never going backwards.
    A clock may also have now_and_steady_ms() (see the module's docstring); without it,
    expiry follows now_ms() too."""

    def now_ms(self) -> int: ...


def clock_reader(clock: Clock) -> Callable[[], tuple[int, int]]:
    """A function returning (wall ms, steady ms) of one moment, for any clock."""
    both = getattr(clock, "now_and_steady_ms", None)
    if both is not None:
        return both

    def same() -> tuple[int, int]:
        now = clock.now_ms()
        return now, now

    return same


class SystemClock:
    """Wall-clock milliseconds, clamped so a step back of the system clock never reopens
    an expired hold or a closed window; and steady milliseconds, the wall time less the
    net step the wall clock has taken since this clock was made (measured against the
    monotonic clock), equal to the wall time as long as nobody steps it. The time sources
    are injectable so that tests can step the wall clock."""

    def __init__(self, wall_ns: Callable[[], int] = time.time_ns,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._last = 0
        self._lock = threading.Lock()
        self._offset_ns = wall_ns() - monotonic_ns()  # wall - monotonic, before any step

    def now_ms(self) -> int:
        return self.now_and_steady_ms()[0]

    def steady_ms(self) -> int:
        return self.now_and_steady_ms()[1]

    def now_and_steady_ms(self) -> tuple[int, int]:
        """(wall ms, steady ms), read at one moment."""
        wall_ns = self._wall_ns()
        step_ms = round((wall_ns - self._monotonic_ns() - self._offset_ns) / NS_PER_MS)
        wall = wall_ns // NS_PER_MS
        steady = wall - step_ms
        with self._lock:
            if wall < self._last:
                return self._last, steady
            self._last = wall
            return wall, steady


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
