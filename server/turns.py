"""Group commit for unary calls: calls that arrive while a group is on its way to disk go
together, in one step of the loop, when it is done."""

from __future__ import annotations

import asyncio


class Turns:
    """Group commit for unary calls. While one group of calls is on its way to disk, the
    calls that arrive wait, and go together, in one step of the loop, when it is done:
    engine.aio.reserve() then decides them in one pass and the writer makes them
    durable in one transaction. With nothing in flight a call goes at once, so an idle
    server adds no latency; under load the groups grow with the fsync time instead of
    each call paying for its own decision pass and a share of a tiny transaction."""

    def __init__(self) -> None:
        self.running = 0  # calls of the current group not answered yet
        self._open = False  # the current group still takes calls (this loop step)
        self._next: asyncio.Future[None] | None = None

    async def enter(self) -> None:
        """Join the open group, or wait for the group in flight to be answered."""
        if self.running and not self._open:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            # Shared by every waiter: one waiter's cancel must not cancel the others.
            await asyncio.shield(self._next)
        self.running += 1
        if not self._open:
            self._open = True
            asyncio.get_running_loop().call_soon(self._close)

    def _close(self) -> None:
        self._open = False

    def leave(self) -> None:
        """A call of the group is answered; the last one lets the next group go."""
        self.running -= 1
        if not self.running and self._next is not None:
            nxt, self._next = self._next, None
            nxt.set_result(None)
