"""Admission: a bound on the work in flight across the server, the pause while a
consistency check runs, and the refusal of new work while shutting down; the caller's
rate (server/rates.py) is charged here too, so every call counts it the same way.

Past the bound a call is shed at once with RESOURCE_EXHAUSTED and a retry hint instead of
queueing: a queue would only turn overload into timeouts, and a shed caller knows to back
off. A call whose deadline passed before its work started is dropped unstarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from .rates import Bucket
from .status import CallError, deadline_exceeded, shed, unavailable

SHED_RETRY_AFTER_MS = 50  # the retry hint sent with a shed call


class Admission:
    """Counts operations in flight (a unary call is one; a batch or a Session message
    counts its operations) and refuses what would pass `ops_max`."""

    def __init__(self, ops_max: int) -> None:
        self.ops_max = ops_max
        self.ops = 0  # started and not answered yet
        self.shed_total = 0  # operations refused for the bound, since start
        self.closing = False
        self.paused = False
        self._resumed: asyncio.Event | None = None

    def refusal(self, n: int) -> CallError | None:
        """Why n more operations may not start now, or None (then count them in)."""
        if self.closing:
            return unavailable("the server is shutting down; retry with the same ids")
        if self.ops + n > self.ops_max:
            self.shed_total += n
            return shed(f"{self.ops} operations are in flight (limit {self.ops_max}); "
                        f"retry in {SHED_RETRY_AFTER_MS} ms", SHED_RETRY_AFTER_MS)
        self.ops += n
        return None

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
