"""The engine's calls as coroutines: decide at once, then await the group commit.

The decision is made synchronously when the coroutine starts (no await between deciding
and staging), so a cancelled caller may still have been granted its hold: retry with the
same reservation id to learn the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import limits
from .reservations import Result

if TYPE_CHECKING:
    from .engine import Engine, ReserveRequest
    from .group_commit import Batch


class AsyncEngine:
    """`engine.aio`: the mutations of Engine as coroutines, for asyncio servers."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def _durable(self, tickets: Sequence[Batch | None]) -> None:
        if self._engine.durability != "fsync":
            return
        for t in tickets:
            if t is not None and not t.done:
                # Shared by every waiter of the batch: shield it from one waiter's cancel.
                await asyncio.shield(t.wait_async())

    async def reserve(self, reservation_id: str, channel: str,
                      lines: Sequence[tuple[str, int]], *, customer: str | None = None,
                      campaign: str | None = None, ttl_ms: int = limits.TTL_MS_DEFAULT,
                      partial: bool = False, prefer_locations: Sequence[str] = ()) -> Result:
        """See Engine.reserve()."""
        from .engine import ReserveRequest

        results, tickets = self._engine._reserve_many([ReserveRequest(
            reservation_id, channel, lines, customer, campaign, ttl_ms, partial,
            prefer_locations)])
        await self._durable(tickets)
        return results[0]

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Result]:
        """See Engine.reserve_many()."""
        results, tickets = self._engine._reserve_many(requests)
        await self._durable(tickets)
        return results

    async def commit(self, reservation_id: str,
                     lines: Sequence[tuple[str, int]] | None = None) -> Result:
        """See Engine.commit()."""
        result, ticket = self._engine._commit(reservation_id, lines)
        await self._durable([ticket])
        return result

    async def release(self, reservation_id: str) -> Result:
        """See Engine.release()."""
        result, ticket = self._engine._release(reservation_id)
        await self._durable([ticket])
        return result

    async def extend(self, reservation_id: str, ttl_ms: int) -> Result:
        """See Engine.extend()."""
        result, ticket = self._engine._extend(reservation_id, ttl_ms)
        await self._durable([ticket])
        return result

    async def amend(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Result:
        """See Engine.amend()."""
        result, ticket = self._engine._amend(reservation_id, lines)
        await self._durable([ticket])
        return result
