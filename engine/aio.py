"""The engine's calls as coroutines: decide at once, then await the group commit.

A reservation is decided on the loop thread, with no await between deciding and staging
it for the commit. A caller cancelled before the decision is not decided at all; one
cancelled after it (while the commit is under way) may still hold its units: retry with the
same reservation id to learn the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from . import limits
from .errors import InvalidArgument, StockgateError
from .limits import check_count
from .reservations import ReserveRequest, Result

if TYPE_CHECKING:
    from .engine import Engine
    from .group_commit import Batch


class AsyncEngine:
    """`engine.aio`: the mutations of Engine as coroutines, for asyncio servers.

    Concurrent reserve() calls of one event loop are coalesced: the first schedules a
    flush on the loop, the others join it, and the flush decides them all in one
    reserve_many() and wakes each caller when their shared batch is durable. So a
    thousand concurrent reserves cost one decision pass and one fsync, not a thousand.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[ReserveRequest,
                                                                  asyncio.Future[Result]]]] = {}

    async def _durable(self, tickets: Sequence[Batch | None]) -> None:
        if self._engine.durability != "fsync":
            return
        for t in {id(t): t for t in tickets if t is not None}.values():
            if t.done:
                if t.error is not None:  # a replay of a decision whose write failed
                    raise t.error
                continue
            # Shared by every waiter of the batch: shield it from one waiter's cancel.
            await asyncio.shield(t.wait_async())

    async def reserve(self, reservation_id: str, channel: str,
                      lines: Sequence[tuple[str, int]], *, customer: str | None = None,
                      campaign: str | None = None, ttl_ms: int = limits.TTL_MS_DEFAULT,
                      partial: bool = False, prefer_locations: Sequence[str] = ()) -> Result:
        """See Engine.reserve(). Decided together with the other reserves pending on this
        loop; if the caller is cancelled after that, the hold may stand: retry the id."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Result] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append((ReserveRequest(reservation_id, channel, lines, customer, campaign,
                                       ttl_ms, partial, prefer_locations), fut))
        return await fut

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        # A caller cancelled before its turn came is not decided at all.
        pending = [p for p in self._pending.pop(loop, []) if not p[1].done()]
        step = limits.BATCH_OPS_MAX
        for start in range(0, len(pending), step):
            chunk = pending[start:start + step]
            try:
                slots, tickets = self._engine._reserve_many([r for r, _ in chunk], isolate=True)
            except BaseException as exc:  # noqa: BLE001 - closed, overloaded: tell them all
                for _, fut in chunk:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            waits = [t.wait_async() for t in tickets if not t.done or t.error is not None]
            if self._engine.durability != "fsync" or not waits:
                _answer(chunk, slots, None)
            elif len(waits) == 1:
                waits[0].add_done_callback(lambda f, c=chunk, s=slots: _answer(c, s, f))
            else:
                gathered = asyncio.gather(*waits)
                gathered.add_done_callback(lambda f, c=chunk, s=slots: _answer(c, s, f))

    async def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Result]:
        """See Engine.reserve_many()."""
        results, tickets = self._engine._reserve_many(requests)
        await self._durable(tickets)
        return results

    async def apply(self, ops: Sequence[Op]) -> list[Result | StockgateError]:
        """Do many operations of any kind, in order, and return when all are durable.

        Each op is ("reserve", ReserveRequest), ("commit", id, lines or None),
        ("release", id), ("extend", id, ttl_ms) or ("amend", id, lines). Runs of
        consecutive reserves are decided together in one pass of the core. Each op
        stands alone: a malformed or refused one gets its exception in its slot (the
        field named as for a single call) and the others go on. The store's failure, or
        the engine's closing, fails the whole call.
        """
        engine = self._engine
        if not isinstance(ops, (list, tuple)):
            raise InvalidArgument("ops", "must be a list of operations")
        check_count("ops", len(ops), 1, limits.BATCH_OPS_MAX)
        out: list[Result | StockgateError] = []
        tickets: list[Batch | None] = []
        i, n = 0, len(ops)
        while i < n:
            if ops[i][0] == "reserve":
                j = i
                while j < n and ops[j][0] == "reserve":
                    j += 1
                try:
                    slots, ts = engine._reserve_many([op[1] for op in ops[i:j]], isolate=True)
                except StockgateError as exc:  # overloaded or closed: none of the run done
                    slots, ts = [exc] * (j - i), []
                out.extend(slots)
                tickets.extend(ts)
                i = j
                continue
            kind, *args = ops[i]
            call = _SINGLE.get(kind)
            try:
                if call is None:
                    raise InvalidArgument("op", f"is {kind!r}; use one of {sorted(_KINDS)}")
                result, ticket = getattr(engine, call)(*args)
            except StockgateError as exc:
                out.append(exc)
            else:
                out.append(result)
                tickets.append(ticket)
            i += 1
        await self._durable(tickets)
        return out

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


Op = tuple  # ("reserve", ReserveRequest) | ("commit", id, lines | None) | ("release", id) ...
_SINGLE = {"commit": "_commit", "release": "_release", "extend": "_extend", "amend": "_amend"}
_KINDS = {"reserve", *_SINGLE}


def _answer(chunk, slots, durable: asyncio.Future | None) -> None:
    """Wake the callers of a coalesced chunk with their results, or the store's error."""
    error = None
    if durable is not None:
        error = durable.exception() if not durable.cancelled() else asyncio.CancelledError()
    for (_, fut), slot in zip(chunk, slots):
        if fut.done():  # the caller was cancelled; its decision stands
            continue
        if error is not None:
            fut.set_exception(error)
        elif isinstance(slot, BaseException):
            fut.set_exception(slot)
        else:
            fut.set_result(slot)
