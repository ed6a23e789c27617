"""Admission: a bound on the work in flight across the server, the pause while a
consistency check runs, and the refusal of new work while shutting down; the caller's
rate (server/rates.py) is charged here too, so every call counts it the same way.

Past the bound a call is shed at once with RESOURCE_EXHAUSTED and a retry hint instead of
queueing: a queue would only turn overload into timeouts, and a shed caller knows to back
off. A call whose deadline passed before its work started is dropped unstarted.

The bound follows the server's own speed (Little's law): operations in flight may reach
what the server answers in `queue_ms`, at the best answering rate it showed recently. At
five times its capacity the server then still answers what it admits in about the time it
takes when merely busy, instead of letting a queue of seconds build in front of everyone.
A fixed count could not do that: the same 100,000 operations are 3 seconds of work for
one machine and 300 ms for another. `ops_max` stays the hard ceiling.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc

from .rates import Bucket
from .status import CallError, deadline_exceeded, shed, unavailable

SHED_RETRY_AFTER_MS_MIN = 10  # the smallest retry hint sent with a shed call
# Below this many operations in flight nothing is shed for speed: a burst after a quiet
# spell (a flash sale opening) must not be refused because the server was idle before.
INFLIGHT_OPS_FLOOR = 1_000
RATE_WINDOW_S = 0.05  # the admission's decisions are revised every window this long
# The answering rate is measured over the last this many windows: group commit answers in
# bursts (hundreds at each commit), and one window's count over- or underestimates.
RATE_SPAN_WINDOWS = 4
# The best rate fades by half in this time, so a server slowed for good (a slower disk, a
# heavier mix of calls) lowers its bound within a minute, while a quiet spell before a
# sale does not (the bound never falls below INFLIGHT_OPS_FLOOR anyway).
RATE_HALF_LIFE_S = 30.0
# While calls are being shed, reading and refusing them takes the event loop's time too;
# past this share of a window's wall time spent by the loop thread, admitted work is
# squeezed so the loop keeps reading (or the refusals, too, would wait in a queue). Not
# 1.0: the writer and gRPC's poller hold the GIL part of the time, and measured here a
# loop with a backlog showed 0.8 to 0.93 of a core.
LOOP_BUSY_SHARE_MAX = 0.8
SQUEEZE_DOWN = 0.5  # per window while the loop is past LOOP_BUSY_SHARE_MAX and shedding
# Per window while shedding with the loop below that share (or shedding only a few):
# gently, as each step up lets more work in while the flood goes on. A window that sheds
# nothing ends the squeeze.
SQUEEZE_UP = 1.25
SQUEEZE_MIN = 0.02
# Squeeze only for a flood: when at least this share of a window's operations was shed.
# Slightly past capacity, a few refusals are the bound working, not a loop swamped by them.
SHED_SHARE_MIN = 0.25
# With nothing in flight and no window closed for this long, the flood, if there was one,
# is over: a burst after the quiet meets the full bound. (Only with nothing in flight: a
# slow commit during a flood also leaves windows open.)
RATE_WINDOW_IDLE_S = 4 * RATE_WINDOW_S


class Admission:
    """Counts operations in flight (a unary call is one; a batch or a Session message
    counts its operations) and refuses new ones past the bound (module docstring)."""

    def __init__(self, ops_max: int, queue_ms: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.ops_max = ops_max
        self.queue_ms = queue_ms
        self.ops = 0  # started and not answered yet
        self.shed_total = 0  # operations refused for the bound, since start
        self.closing = False
        self.paused = False
        self._resumed: asyncio.Event | None = None
        self._clock = clock
        self.limit = min(ops_max, INFLIGHT_OPS_FLOOR)  # the bound now (see _measure)
        self.rate_best = 0.0  # operations answered per second, the best recent span, fading
        self.squeeze = 1.0  # the share of the rate's bound admitted now (see _measure)
        self._answered = 0  # in the current window
        self._window_start = clock()
        self._span: collections.deque[tuple[int, float]] = collections.deque(
            maxlen=RATE_SPAN_WINDOWS)  # (answered, seconds) of the last windows
        # The loop thread's CPU clock (leave() runs on the loop), and shed at window start.
        self._cpu_clock = cpu_clock
        self._cpu_start = cpu_clock()
        self._shed_start = 0

    def refusal(self, n: int) -> CallError | None:
        """Why n more operations may not start now, or None (then count them in).

        A call is admitted while fewer than `limit` operations are in flight, however
        many it carries: a large batch is never starved by a stream of small calls, and
        the overshoot is one call. Only `ops_max` is a hard bound."""
        if self.closing:
            return unavailable("the server is shutting down; retry with the same ids")
        ops = self.ops
        if not ops:
            if self.squeeze < 1.0 and self._clock() - self._window_start > RATE_WINDOW_IDLE_S:
                self._unsqueeze()  # nothing in flight, nothing answered for a while
        elif ops >= self.limit or ops + n > self.ops_max:
            return self.shed(n)
        self.ops = ops + n
        return None

    def full(self) -> bool:
        """True while refusal() would shed any call for the bound (not for ops_max)."""
        ops = self.ops
        return ops > 0 and ops >= self.limit

    def shed(self, n: int) -> CallError:
        """Refuse n operations for the bound (or UNAVAILABLE while shutting down): what
        refusal() answers past it, for callers that found the server full()."""
        if self.closing:
            return unavailable("the server is shutting down; retry with the same ids")
        self.shed_total += n
        retry_ms = max(SHED_RETRY_AFTER_MS_MIN, self.queue_ms)
        return shed(f"{self.ops} operations are in flight, about {self.queue_ms} ms of work "
                    f"at this server's speed (limit now {self.limit}, at most "
                    f"{self.ops_max}); retry in {retry_ms} ms", retry_ms)

    def admit(self, context: grpc.aio.ServicerContext, n: int = 1,
              rate: Bucket | None = None) -> None:
        """Count n operations of a call in, charging them to the caller's `rate`, or
        raise CallError: UNAVAILABLE while shutting down, DEADLINE_EXCEEDED if the
        caller's deadline already passed, RESOURCE_EXHAUSTED past the caller's rate or
        past the bound. Nothing is done for a refused call."""
        self.check_deadline(context)
        if rate is not None:
            refusal = rate.take(n)
            if refusal is not None:
                raise refusal
        refusal = self.refusal(n)
        if refusal is not None:
            if rate is not None:
                rate.give_back(n)
            raise refusal

    @staticmethod
    def check_deadline(context: grpc.aio.ServicerContext) -> None:
        """Raise DEADLINE_EXCEEDED if the caller's deadline passed (nothing is done)."""
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise deadline_exceeded("the deadline passed before the call started; "
                                    "nothing was done")

    def leave(self, n: int = 1) -> None:
        """n operations are answered: count them out."""
        self.ops -= n
        assert self.ops >= 0, "more operations answered than admitted"
        self._answered += n
        now = self._clock()
        if now - self._window_start >= RATE_WINDOW_S:
            self._measure(now)

    def _measure(self, now: float) -> None:
        """Close a rate window: the best rate fades by its age, a faster window replaces
        it, and the bound becomes what that rate answers in queue_ms, squeezed while the
        loop is saturated and shedding (a flood: reading the flood must keep up)."""
        elapsed = now - self._window_start
        span = self._span
        span.append((self._answered, elapsed))
        rate = sum(a for a, _ in span) / sum(t for _, t in span)
        fade = 0.5 ** (elapsed / RATE_HALF_LIFE_S)
        self.rate_best = max(rate, self.rate_best * fade)
        cpu = self._cpu_clock()
        busy = (cpu - self._cpu_start) / elapsed
        shed = self.shed_total - self._shed_start
        flood = shed >= SHED_SHARE_MIN * (shed + self._answered)
        if not shed:
            self.squeeze = 1.0  # the flood is over (or never was)
        elif flood and busy > LOOP_BUSY_SHARE_MAX:
            self.squeeze = max(SQUEEZE_MIN, self.squeeze * SQUEEZE_DOWN)
        else:  # the loop has time, or only a few were refused: let more in
            self.squeeze = min(1.0, self.squeeze * SQUEEZE_UP)
        self._set_limit()
        self._answered = 0
        self._window_start = now
        self._cpu_start = cpu
        self._shed_start = self.shed_total

    def _set_limit(self) -> None:
        by_rate = max(INFLIGHT_OPS_FLOOR, int(self.rate_best * self.queue_ms / 1000))
        self.limit = max(1, min(self.ops_max, int(by_rate * self.squeeze)))

    def _unsqueeze(self) -> None:
        self.squeeze = 1.0
        self._set_limit()

    async def resumed(self) -> None:
        """Return when no consistency check holds new work back."""
        while self.paused:
            if self._resumed is None:
                self._resumed = asyncio.Event()
            await self._resumed.wait()

    @contextlib.asynccontextmanager
    async def pause(self) -> AsyncIterator[None]:
        """Hold new engine work back (it waits, it is not refused) while the body runs:
        the engine's check() blocks every caller, and a blocked event loop would stall
        health checks and answers too."""
        while self.paused:  # one check at a time
            await self.resumed()
        self.paused = True
        try:
            # Let decisions already scheduled on the loop (coalesced reserves) run first.
            await asyncio.sleep(0)
            yield
        finally:
            self.paused = False
            if self._resumed is not None:
                self._resumed.set()
                self._resumed = None
