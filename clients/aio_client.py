"""AsyncClient: the asyncio client of a stockgate server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio

from stockgate.v1 import inventory_pb2_grpc, reservations_pb2_grpc, watch_pb2_grpc

from . import calls, limits, wire
from .aio_session import AsyncSession
from .backoff import Backoff
from .batch import ReserveRequest
from .errors import (
    ClientClosed,
    DeadlineExceeded,
    NotFound,
    Unavailable,
    after_retries,
    error_from_rpc,
)
from .records import BucketStock, Campaign, Channel, CheckReport, JournalPage
from .results import Reservation, Result
from .transport import PemSource, Transport
from .updates import Update
from .watching import Cursor
from .wire import Lines, Sources

__all__ = ["AsyncClient"]


def check_timeout(timeout: float | None, default: float, minimum: float = 0.0) -> float:
    """The seconds a call may take: its own timeout, else the client's default (raised to
    `minimum` for calls that take long by nature)."""
    if timeout is None:
        return max(default, minimum)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 0 < timeout <= limits.TIMEOUT_S_MAX:
        raise ValueError(f"timeout is {timeout!r}; it must be a number of seconds above 0 "
                         f"and at most {limits.TIMEOUT_S_MAX:,.0f} (the longest hold)")
    return float(timeout)


class AsyncClient:
    """The asyncio client: every method is a coroutine (watch is an async iterator).

    ::

        async with AsyncClient("127.0.0.1:50051", token="...") as client:
            result = await client.reserve(new_reservation_id(), "tmall", [("SKU-1", 2)])

    Concurrent reserve, commit, release, extend and amend calls are coalesced into one
    Session stream: a single call costs one round trip, a thousand concurrent ones a few
    messages. If the stream breaks, unanswered calls are sent again, with the same
    reservation ids, until their deadlines (safe: the server answers a repeat with its
    first answer, `replayed=True`).

    Parameters: `address` 'host:port'; `token` sent as 'authorization: Bearer <token>';
    TLS with `tls=True` or any of `root_cert` (to verify the server; PEM bytes or a file
    path), `client_cert` and `client_key` (mTLS); `server_name` to check the server's
    certificate against another name; `timeout` the default deadline of every call in
    seconds (each method takes `timeout=` to override it).

    Errors are the exceptions of stockgate.clients.errors; business refusals are
    outcomes in the Result. The client belongs to the event loop that first uses it.
    """

    def __init__(self, address: str = "127.0.0.1:50051", token: str | None = None, *,
                 tls: bool | None = None, root_cert: PemSource = None,
                 client_cert: PemSource = None, client_key: PemSource = None,
                 server_name: str | None = None,
                 timeout: float = limits.TIMEOUT_S_DEFAULT) -> None:
        self.transport = Transport.make(address, token, tls=tls, root_cert=root_cert,
                                        client_cert=client_cert, client_key=client_key,
                                        server_name=server_name)
        self.timeout = check_timeout(timeout, limits.TIMEOUT_S_DEFAULT)
        self._channel: grpc.aio.Channel | None = None
        self._session: AsyncSession | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self.transport.address!r})"

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> AsyncSession:
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._session is None:
            self._channel = self.transport.aio_channel()
            self._reservations = reservations_pb2_grpc.ReservationsStub(self._channel)
            self._inventory = inventory_pb2_grpc.InventoryStub(self._channel)
            self._watch = watch_pb2_grpc.WatchStub(self._channel)
            self._session = AsyncSession(self._channel, self.transport.metadata)
        return self._session

    async def close(self) -> None:
        """Close the stream and the connection; calls still waiting raise ClientClosed."""
        if self._closed:
            return
        self._closed = True
        if self._session is not None:
            await self._session.close()
        if self._channel is not None:
            await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session_messages(self) -> int:
        """Session messages sent so far (each carries every call queued at that moment)."""
        return self._session.messages_sent if self._session is not None else 0

    # ------------------------------------------------------------------ reservations

    async def reserve(self, reservation_id: str, channel: str, lines: Lines, *,
                      customer: str | None = None, campaign: str | None = None,
                      ttl_ms: int = 0, partial: bool = False,
                      prefer_locations: Iterable[str] = (),
                      timeout: float | None = None) -> Result:
        """Hold `lines` ([(sku, qty), ...] or {sku: qty}) for `channel` under
        `reservation_id` (yours: an order id, or new_reservation_id(); reuse it to retry).

        `customer` and `campaign` draw from a flash sale within its per-customer limit;
        `ttl_ms` 1,000..604,800,000 (0: 15 minutes); `partial` grants what is there
        (PARTIAL) instead of all or nothing; `prefer_locations` are tried first.
        Returns a Result: check `.ok`, then `.reservation`; a refusal names its reason in
        `.outcome` and per line in `.lines`. Raises InvalidArgument (the field named),
        PermissionDenied, Overloaded, Unavailable, DeadlineExceeded."""
        op = wire.reserve_operation(reservation_id, channel, lines, customer=customer,
                                    campaign=campaign, ttl_ms=ttl_ms, partial=partial,
                                    prefer_locations=prefer_locations)
        return await self._op(op, timeout)

    async def commit(self, reservation_id: str, lines: Lines | None = None, *,
                     timeout: float | None = None) -> Result:
        """Commit a held reservation (paid, shipped); `lines` commits part of it (units per
        SKU, each at most what it holds) and releases the rest."""
        op = wire.operation("commit", wire.commit_request(reservation_id, lines))
        return await self._op(op, timeout)

    async def release(self, reservation_id: str, *, timeout: float | None = None) -> Result:
        """Release a held reservation: its units return to the buckets they came from."""
        op = wire.operation("release", wire.release_request(reservation_id))
        return await self._op(op, timeout)

    async def extend(self, reservation_id: str, ttl_ms: int, *,
                     timeout: float | None = None) -> Result:
        """Hold a reservation until now + ttl_ms (1,000..604,800,000 ms)."""
        op = wire.operation("extend", wire.extend_request(reservation_id, ttl_ms))
        return await self._op(op, timeout)

    async def amend(self, reservation_id: str, lines: Lines, *,
                    timeout: float | None = None) -> Result:
        """Replace the lines of a held reservation atomically (its own hold never blocks
        it); on a refusal the reservation keeps its old lines."""
        op = wire.operation("amend", wire.amend_request(reservation_id, lines))
        return await self._op(op, timeout)

    async def _op(self, op: Any, timeout: float | None) -> Result:
        session = self._open()
        return await session.call(op, check_timeout(timeout, self.timeout))

    async def reserve_many(self, requests: Iterable[ReserveRequest], *,
                           timeout: float | None = None) -> list[Result]:
        """Decide many reservations together (ReserveBatch, up to 10,000 per message;
        more are sent in several). Results come in request order. A malformed request
        fails its whole message with InvalidArgument naming requests[i]."""
        results: list[Result] = []
        deadline = asyncio.get_running_loop().time() + check_timeout(timeout, self.timeout)
        for call in calls.reserve_batches(requests):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise DeadlineExceeded(f"the deadline passed after {len(results)} results; "
                                       "send the rest again, with the same ids")
            results.extend(await self._unary(call, left))
        return results

    # ------------------------------------------------------------------ catalogue

    async def add_location(self, location: str, kind: str = "warehouse", *,
                           timeout: float | None = None) -> None:
        """Declare a warehouse or a store ("warehouse" or "store")."""
        await self._unary(calls.add_location(location, kind), timeout)

    async def locations(self, *, timeout: float | None = None) -> dict[str, str]:
        """Every location and its kind."""
        return await self._unary(calls.locations(), timeout)

    async def set_channel(self, channel: str, sources: Sources, *, allow_presale: bool = False,
                          timeout: float | None = None) -> None:
        """Declare (or redefine) a channel and the (location, pool) sources it draws from,
        in order (1..32)."""
        await self._unary(calls.set_channel(channel, sources, allow_presale), timeout)

    async def channels(self, *, timeout: float | None = None) -> list[Channel]:
        return await self._unary(calls.channels(), timeout)

    async def set_allocation_rule(self, location: str, shares: Mapping[str, int], *,
                                  sku: str | None = None,
                                  timeout: float | None = None) -> None:
        """How a location's receipts split into pools, in percent summing to 100, e.g.
        {"online": 80, "offline": 20}; with `sku`, an override for that SKU."""
        await self._unary(calls.set_allocation_rule(location, shares, sku), timeout)

    async def set_safety_stock(self, sku: str, units: int, *, location: str | None = None,
                               pool: str | None = None, channel: str | None = None,
                               timeout: float | None = None) -> None:
        """Alert when available drops below `units` (0 turns it off), for one bucket
        (location and pool) or for what a channel can sell."""
        await self._unary(calls.set_safety_stock(sku, units, location, pool, channel), timeout)

    async def set_presale_allowance(self, sku: str, location: str, pool: str, units: int, *,
                                    timeout: float | None = None) -> None:
        """Let presale channels sell this bucket down to -units."""
        await self._unary(calls.set_presale_allowance(sku, location, pool, units), timeout)

    # ------------------------------------------------------------------ movements

    async def receive(self, sku: str, location: str, qty: int, *, pool: str | None = None,
                      ref: str | None = None, timeout: float | None = None) -> dict[str, int]:
        """Add received units (split by the allocation rule unless `pool` is given); returns
        the units added per pool. Not retried by the client: after Unavailable, read the
        stock before receiving again."""
        return await self._unary(calls.receive(sku, location, qty, pool, ref), timeout)

    async def adjust(self, sku: str, location: str, pool: str, on_hand: int, *,
                     ref: str | None = None, timeout: float | None = None) -> int:
        """Set a bucket's on_hand to a counted value; returns the variance."""
        return await self._unary(calls.adjust(sku, location, pool, on_hand, ref), timeout)

    async def move(self, sku: str, location: str, from_pool: str, to_pool: str, qty: int, *,
                   timeout: float | None = None) -> None:
        """Move available units between two pools of one location."""
        await self._unary(calls.move(sku, location, from_pool, to_pool, qty), timeout)

    async def transfer_out(self, transfer_id: str, sku: str, from_location: str,
                           from_pool: str, to_location: str, to_pool: str, qty: int, *,
                           timeout: float | None = None) -> str:
        """Ship units to another location (in transit until transfer_in); returns the
        transfer's state. Repeating a transfer_id returns its state."""
        return await self._unary(calls.transfer_out(transfer_id, sku, from_location, from_pool,
                                                    to_location, to_pool, qty), timeout)

    async def transfer_in(self, transfer_id: str, *, timeout: float | None = None) -> str:
        """Receive a transfer at its destination; returns its state ("arrived")."""
        return await self._unary(calls.transfer_in(transfer_id), timeout)

    async def import_rows(self, rows: Iterable[Any] | AsyncIterable[Any], *,
                          timeout: float | None = None) -> int:
        """Set many buckets' on_hand, as a stocktake would: rows of (sku, location, pool,
        on_hand) or mappings with those keys, from any iterable or async iterable, streamed
        in chunks of 10,000 as they are read. Applied only if every row is valid; returns
        the rows applied. The default deadline is at least 600 s."""
        self._open()
        t = check_timeout(timeout, self.timeout, limits.IMPORT_TIMEOUT_S_MIN)
        call = self._inventory.Import(timeout=t, metadata=self.transport.metadata)
        try:
            async for chunk in _chunks(rows):
                await call.write(chunk)
            await call.done_writing()
            response = await call
        except grpc.aio.AioRpcError as e:
            raise error_from_rpc(e) from None
        except BaseException:
            call.cancel()  # nothing is applied unless the stream ends whole
            raise
        return response.rows

    # ------------------------------------------------------------------ campaigns

    async def create_campaign(self, campaign_id: str, *, channels: Iterable[str],
                              start_ms: int, end_ms: int, location: str, source_pool: str,
                              quotas: Mapping[str, int], customer_limit: int = 0,
                              timeout: float | None = None) -> Campaign:
        """Declare a flash sale: `quotas` {sku: units} carved from (location, source_pool)
        into its own pool at start_ms, sold by `channels` until end_ms, at most
        `customer_limit` units per customer and SKU (0: no limit)."""
        return await self._unary(calls.create_campaign(
            campaign_id, channels, start_ms, end_ms, location, source_pool, quotas,
            customer_limit), timeout)

    async def start_campaign(self, campaign_id: str, *,
                             timeout: float | None = None) -> Campaign:
        """Start a campaign now (carve its quota) instead of at its start_ms."""
        return await self._unary(calls.start_campaign(campaign_id), timeout)

    async def stop_campaign(self, campaign_id: str, *, timeout: float | None = None) -> Campaign:
        """End a campaign now: unsold quota returns to its source."""
        return await self._unary(calls.stop_campaign(campaign_id), timeout)

    async def campaign(self, campaign_id: str, *,
                       timeout: float | None = None) -> Campaign | None:
        """A campaign by id, or None."""
        return await self._unary(calls.campaign(campaign_id), timeout)

    async def campaigns(self, *, timeout: float | None = None) -> list[Campaign]:
        """Every campaign, ended ones included."""
        return await self._unary(calls.campaigns(), timeout)

    # ------------------------------------------------------------------ reads

    async def stock(self, sku: str, *, timeout: float | None = None) -> list[BucketStock]:
        """Every bucket of a SKU."""
        return await self._unary(calls.stock(sku), timeout)

    async def availability(self, channel: str, skus: Iterable[str], *,
                           campaign: str | None = None, prefer_locations: Iterable[str] = (),
                           timeout: float | None = None) -> dict[str, int]:
        """What `channel` could reserve now of each SKU (1..1,000 SKUs)."""
        return await self._unary(calls.availability(channel, skus, campaign, prefer_locations),
                                 timeout)

    async def reservation(self, reservation_id: str, *,
                          timeout: float | None = None) -> Reservation | None:
        """A reservation by id, or None."""
        return await self._unary(calls.reservation(reservation_id), timeout)

    async def journal(self, from_seq: int = 1, limit: int = 0, *,
                      timeout: float | None = None) -> JournalPage:
        """Up to `limit` journal events from `from_seq` (0: up to 10,000)."""
        return await self._unary(calls.journal(from_seq, limit), timeout)

    async def check(self, *, timeout: float | None = None) -> CheckReport:
        """The consistency check; `.ok` is False when the books drift. New calls wait
        while it runs. The default deadline is at least 120 s."""
        return await self._unary(calls.check(), timeout)

    async def watch(self, channel: str, skus: Iterable[str] = (), from_seq: int = 0, *,
                    coalesce_ms: int = 0,
                    reconnect_for_s: float | None = 60.0) -> AsyncIterator[Update]:
        """Availability updates and alerts for `channel` (and only `skus`, if given), as
        they happen; from journal sequence number `from_seq` (0: from now on).

        If the stream breaks it reconnects and resumes after the last update seen, so no
        alert is lost or repeated. Raises Unavailable when no stream could be opened for
        `reconnect_for_s` seconds (None: keep trying)."""
        self._open()
        cursor = Cursor(channel, skus, from_seq, coalesce_ms)
        backoff = Backoff()
        while True:
            call = self._watch.Subscribe(cursor.request(), metadata=self.transport.metadata)
            try:
                async for pb in call:
                    backoff.reset()
                    yield cursor.advance(pb)
                error = None
            except grpc.aio.AioRpcError as e:
                error = e
            finally:
                call.cancel()
            if self._closed:
                return
            cursor.broke(error, asyncio.get_running_loop().time(), reconnect_for_s)
            await asyncio.sleep(backoff.next_delay_s())

    # ------------------------------------------------------------------ unary calls

    async def _unary(self, call: calls.Call, timeout: float | None) -> Any:
        self._open()
        stub = self._inventory if call.service == calls.INVENTORY else self._reservations
        method = getattr(stub, call.method)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + check_timeout(timeout, self.timeout, call.timeout_s_min)
        backoff = Backoff()
        unavailable: Unavailable | None = None  # the last one, while retrying
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise after_retries(DeadlineExceeded("the deadline passed before the call "
                                                     "was sent"), unavailable)
            try:
                answer = await method(call.request, timeout=left,
                                      metadata=self.transport.metadata)
            except grpc.aio.AioRpcError as e:
                err = error_from_rpc(e)
                if call.none_if_not_found and isinstance(err, NotFound):
                    return None
                if call.idempotent and isinstance(err, Unavailable):
                    unavailable = err
                    delay = backoff.next_delay_s()
                    if loop.time() + delay < deadline:
                        await asyncio.sleep(delay)
                        continue
                raise after_retries(err, unavailable) from None
            return call.read(answer)


async def _chunks(rows: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(rows, AsyncIterable):
        batch: list[Any] = []
        done = 0
        async for row in rows:
            batch.append(row)
            if len(batch) == limits.IMPORT_CHUNK_ROWS:
                for chunk in calls.import_chunks(batch, done):
                    yield chunk
                done += len(batch)
                batch = []
        if batch:
            for chunk in calls.import_chunks(batch, done):
                yield chunk
        return
    for chunk in calls.import_chunks(rows):
        yield chunk
