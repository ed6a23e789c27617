"""Group commit for unary calls: calls that arrive while a group is on its way to disk go
together, in one step of the loop, when it is done and the first of them has waited the
group window."""

from __future__ import annotations

import asyncio


class Turns:
    """Group commit for unary calls. While one group of calls is on its way to disk, the
    calls that arrive wait, and go together, in one step of the loop: engine.aio.reserve()
    then decides them in one pass and the writer makes them durable in one transaction.

    The waiting group goes once the group in flight is answered and its own first call
    has waited `wait_s`. Without that window a group holds only the calls that arrived
    during one fsync, and under heavy unary load the cost of a commit (the fsync, the
    page writes, the writer's wake-ups: hundreds of µs of CPU on a virtual disk) is
    shared by a handful of calls; with it, groups grow with the window and the CPU per
    call falls towards the bare cost of a gRPC call. The price is up to `wait_s` more
    latency, and only under load: with nothing in flight a call goes at once, so an idle
    server adds no latency.
    """

    def __init__(self, wait_s: float = 0.0) -> None:
        self.wait_s = wait_s
        self.running = 0  # calls of the current group not answered yet
        self._open = False  # the current group still takes calls (this loop step)
        self._next: asyncio.Future[None] | None = None  # the waiting group's go
        self._first_wait = 0.0  # loop time the waiting group's first call arrived
        self._timer: asyncio.TimerHandle | None = None  # the waiting group's window

    async def enter(self) -> None:
        """Join the open group, or wait for the group in flight to be answered (and the
        window of the waiting group to pass)."""
        loop = asyncio.get_running_loop()
        if (self.running and not self._open) or self._timer is not None:
            if self._next is None:
                self._next = loop.create_future()
                self._first_wait = loop.time()
            # Shared by every waiter: one waiter's cancel must not cancel the others.
            await asyncio.shield(self._next)
        self.running += 1
        if not self._open:
            self._open = True
            loop.call_soon(self._close)

    def _close(self) -> None:
        self._open = False

    def leave(self) -> None:
        """A call of the group is answered; the last one lets the next group go, at once
        or when its window ends."""
        self.running -= 1
        if self.running or self._next is None or self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        at = self._first_wait + self.wait_s
        if at > loop.time():
            self._timer = loop.call_at(at, self._go)
        else:
            self._go()

    def flush(self) -> None:
        """Shutting down: a group waiting out its window goes now, and one still waiting
        for the group in flight goes as soon as that is answered, while the grace lasts."""
        self.wait_s = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._go()

    def _go(self) -> None:
        self._timer = None
        nxt, self._next = self._next, None
        if nxt is not None:
            nxt.set_result(None)
