"""Client: the blocking client of a stockgate server, for threads and for gevent."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import grpc

from stockgate.v1 import inventory_pb2_grpc, reservations_pb2_grpc, watch_pb2_grpc

from . import calls, limits, wire
from .aio_client import check_timeout
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
from .thread_session import ThreadSession
from .transport import PemSource, Transport
from .updates import Update
from .watching import Cursor
from .wire import Lines, Sources

__all__ = ["Client"]

_END = object()  # ends an import's request stream


class Client:
    """The blocking client, with the same methods as AsyncClient. Thread-safe: share one
    Client between all the threads of a process.

    ::

        with Client("127.0.0.1:50051", token="...") as client:
            result = client.reserve(new_reservation_id(), "tmall", [("SKU-1", 2)])

    Calls made from many threads at once are coalesced into one Session stream by a
    background thread, exactly as AsyncClient does on its event loop; a broken stream is
    reopened and unanswered calls are sent again with the same reservation ids.

    Under gevent (locust), call ``grpc.experimental.gevent.init_gevent()`` (after
    gevent's monkey-patching) before making the Client: its background thread then runs
    as a greenlet and its waits yield to the other greenlets.

    Parameters and errors as AsyncClient.
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
        self._channel = self.transport.sync_channel()
        self._reservations = reservations_pb2_grpc.ReservationsStub(self._channel)
        self._inventory = inventory_pb2_grpc.InventoryStub(self._channel)
        self._watch = watch_pb2_grpc.WatchStub(self._channel)
        self._session = ThreadSession(self._channel, self.transport.metadata)
        self._closed = False

    def __repr__(self) -> str:
        return f"Client({self.transport.address!r})"

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the stream and the connection; calls still waiting raise ClientClosed."""
        if self._closed:
            return
        self._closed = True
        self._session.close()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def session_messages(self) -> int:
        """Session messages sent so far (each carries every call queued at that moment)."""
        return self._session.messages_sent

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosed("the client is closed")

    # ------------------------------------------------------------------ reservations

    def reserve(self, reservation_id: str, channel: str, lines: Lines, *,
                customer: str | None = None, campaign: str | None = None, ttl_ms: int = 0,
                partial: bool = False, prefer_locations: Iterable[str] = (),
                timeout: float | None = None) -> Result:
        """As AsyncClient.reserve."""
        op = wire.reserve_operation(reservation_id, channel, lines, customer=customer,
                                    campaign=campaign, ttl_ms=ttl_ms, partial=partial,
                                    prefer_locations=prefer_locations)
        return self._op(op, timeout)

    def commit(self, reservation_id: str, lines: Lines | None = None, *,
               timeout: float | None = None) -> Result:
        """As AsyncClient.commit."""
        op = wire.operation("commit", wire.commit_request(reservation_id, lines))
        return self._op(op, timeout)

    def release(self, reservation_id: str, *, timeout: float | None = None) -> Result:
        """As AsyncClient.release."""
        op = wire.operation("release", wire.release_request(reservation_id))
        return self._op(op, timeout)

    def extend(self, reservation_id: str, ttl_ms: int, *,
               timeout: float | None = None) -> Result:
        """As AsyncClient.extend."""
        op = wire.operation("extend", wire.extend_request(reservation_id, ttl_ms))
        return self._op(op, timeout)

    def amend(self, reservation_id: str, lines: Lines, *,
              timeout: float | None = None) -> Result:
        """As AsyncClient.amend."""
        op = wire.operation("amend", wire.amend_request(reservation_id, lines))
        return self._op(op, timeout)

    def _op(self, op: Any, timeout: float | None) -> Result:
        self._check_open()
        return self._session.call(op, check_timeout(timeout, self.timeout))

    def reserve_many(self, requests: Iterable[ReserveRequest], *,
                     timeout: float | None = None) -> list[Result]:
        """As AsyncClient.reserve_many."""
        results: list[Result] = []
        deadline = time.monotonic() + check_timeout(timeout, self.timeout)
        for call in calls.reserve_batches(requests):
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"the deadline passed after {len(results)} results; "
                                       "send the rest again, with the same ids")
            results.extend(self._unary(call, left))
        return results

    # ------------------------------------------------------------------ catalogue

    def add_location(self, location: str, kind: str = "warehouse", *,
                     timeout: float | None = None) -> None:
        self._unary(calls.add_location(location, kind), timeout)

    def locations(self, *, timeout: float | None = None) -> dict[str, str]:
        return self._unary(calls.locations(), timeout)

    def set_channel(self, channel: str, sources: Sources, *, allow_presale: bool = False,
                    timeout: float | None = None) -> None:
        self._unary(calls.set_channel(channel, sources, allow_presale), timeout)

    def channels(self, *, timeout: float | None = None) -> list[Channel]:
        return self._unary(calls.channels(), timeout)

    def set_allocation_rule(self, location: str, shares: Mapping[str, int], *,
                            sku: str | None = None, timeout: float | None = None) -> None:
        self._unary(calls.set_allocation_rule(location, shares, sku), timeout)

    def set_safety_stock(self, sku: str, units: int, *, location: str | None = None,
                         pool: str | None = None, channel: str | None = None,
                         timeout: float | None = None) -> None:
        self._unary(calls.set_safety_stock(sku, units, location, pool, channel), timeout)

    def set_presale_allowance(self, sku: str, location: str, pool: str, units: int, *,
                              timeout: float | None = None) -> None:
        self._unary(calls.set_presale_allowance(sku, location, pool, units), timeout)

    # ------------------------------------------------------------------ movements

    def receive(self, sku: str, location: str, qty: int, *, pool: str | None = None,
                ref: str | None = None, timeout: float | None = None) -> dict[str, int]:
        return self._unary(calls.receive(sku, location, qty, pool, ref), timeout)

    def adjust(self, sku: str, location: str, pool: str, on_hand: int, *,
               ref: str | None = None, timeout: float | None = None) -> int:
        return self._unary(calls.adjust(sku, location, pool, on_hand, ref), timeout)

    def move(self, sku: str, location: str, from_pool: str, to_pool: str, qty: int, *,
             timeout: float | None = None) -> None:
        self._unary(calls.move(sku, location, from_pool, to_pool, qty), timeout)

    def transfer_out(self, transfer_id: str, sku: str, from_location: str, from_pool: str,
                     to_location: str, to_pool: str, qty: int, *,
                     timeout: float | None = None) -> str:
        return self._unary(calls.transfer_out(transfer_id, sku, from_location, from_pool,
                                              to_location, to_pool, qty), timeout)

    def transfer_in(self, transfer_id: str, *, timeout: float | None = None) -> str:
        return self._unary(calls.transfer_in(transfer_id), timeout)

    def import_rows(self, rows: Iterable[Any], *, timeout: float | None = None) -> int:
        """As AsyncClient.import_rows (any iterable of rows, read as it streams)."""
        self._check_open()
        t = check_timeout(timeout, self.timeout, limits.IMPORT_TIMEOUT_S_MIN)
        deadline = time.monotonic() + t
        chunks: queue.Queue[Any] = queue.Queue(maxsize=2)

        def requests() -> Iterator[Any]:
            while (chunk := chunks.get()) is not _END:
                yield chunk

        future = self._inventory.Import.future(requests(), timeout=t,
                                               metadata=self.transport.metadata)

        def send(item: Any) -> bool:
            """Queue one message for gRPC; False when the call already ended."""
            while not future.done():
                try:
                    chunks.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    if time.monotonic() > deadline:
                        raise DeadlineExceeded("the import did not finish in time; "
                                               "nothing was applied") from None
            return False

        try:
            for chunk in calls.import_chunks(rows):
                if not send(chunk):
                    break  # the server ended the call early: its answer says why
            send(_END)
        except BaseException:
            future.cancel()  # nothing is applied unless the stream ends whole
            _drop_and_end(chunks)
            raise
        try:
            return future.result().rows
        except grpc.RpcError as e:
            raise error_from_rpc(e) from None

    # ------------------------------------------------------------------ campaigns

    def create_campaign(self, campaign_id: str, *, channels: Iterable[str], start_ms: int,
                        end_ms: int, location: str, source_pool: str,
                        quotas: Mapping[str, int], customer_limit: int = 0,
                        timeout: float | None = None) -> Campaign:
        """As AsyncClient.create_campaign."""
        return self._unary(calls.create_campaign(
            campaign_id, channels, start_ms, end_ms, location, source_pool, quotas,
            customer_limit), timeout)

    def start_campaign(self, campaign_id: str, *, timeout: float | None = None) -> Campaign:
        return self._unary(calls.start_campaign(campaign_id), timeout)

    def stop_campaign(self, campaign_id: str, *, timeout: float | None = None) -> Campaign:
        return self._unary(calls.stop_campaign(campaign_id), timeout)

    def campaign(self, campaign_id: str, *, timeout: float | None = None) -> Campaign | None:
        return self._unary(calls.campaign(campaign_id), timeout)

    def campaigns(self, *, timeout: float | None = None) -> list[Campaign]:
        return self._unary(calls.campaigns(), timeout)

    # ------------------------------------------------------------------ reads

    def stock(self, sku: str, *, timeout: float | None = None) -> list[BucketStock]:
        return self._unary(calls.stock(sku), timeout)

    def availability(self, channel: str, skus: Iterable[str], *, campaign: str | None = None,
                     prefer_locations: Iterable[str] = (),
                     timeout: float | None = None) -> dict[str, int]:
        return self._unary(calls.availability(channel, skus, campaign, prefer_locations),
                           timeout)

    def reservation(self, reservation_id: str, *,
                    timeout: float | None = None) -> Reservation | None:
        return self._unary(calls.reservation(reservation_id), timeout)

    def journal(self, from_seq: int = 1, limit: int = 0, *,
                timeout: float | None = None) -> JournalPage:
        return self._unary(calls.journal(from_seq, limit), timeout)

    def check(self, *, timeout: float | None = None) -> CheckReport:
        return self._unary(calls.check(), timeout)

    def watch(self, channel: str, skus: Iterable[str] = (), from_seq: int = 0, *,
              coalesce_ms: int = 0, reconnect_for_s: float | None = 60.0) -> Iterator[Update]:
        """As AsyncClient.watch, as a blocking iterator. Stop it with close() on the
        iterator (or by leaving a for loop over it)."""
        self._check_open()
        cursor = Cursor(channel, skus, from_seq, coalesce_ms)
        return self._watching(cursor, reconnect_for_s)

    def _watching(self, cursor: Cursor, reconnect_for_s: float | None) -> Iterator[Update]:
        backoff = Backoff()
        while True:
            call = self._watch.Subscribe(cursor.request(), metadata=self.transport.metadata)
            try:
                for pb in call:
                    backoff.reset()
                    yield cursor.advance(pb)
                error = None
            except grpc.RpcError as e:
                error = e
            finally:
                call.cancel()
            if self._closed:
                return
            cursor.broke(error, time.monotonic(), reconnect_for_s)
            time.sleep(backoff.next_delay_s())

    # ------------------------------------------------------------------ unary calls

    def _unary(self, call: calls.Call, timeout: float | None) -> Any:
        self._check_open()
        stub = self._inventory if call.service == calls.INVENTORY else self._reservations
        method = getattr(stub, call.method)
        deadline = time.monotonic() + check_timeout(timeout, self.timeout, call.timeout_s_min)
        backoff = Backoff()
        unavailable: Unavailable | None = None  # the last one, while retrying
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise after_retries(DeadlineExceeded("the deadline passed before the call "
                                                     "was sent"), unavailable)
            try:
                answer = method(call.request, timeout=left,
                                metadata=self.transport.metadata)
            except grpc.RpcError as e:
                err = error_from_rpc(e)
                if call.none_if_not_found and isinstance(err, NotFound):
                    return None
                if call.idempotent and isinstance(err, Unavailable):
                    unavailable = err
                    delay = backoff.next_delay_s()
                    if time.monotonic() + delay < deadline:
                        time.sleep(delay)
                        continue
                raise after_retries(err, unavailable) from None
            return call.read(answer)


def _drop_and_end(chunks: queue.Queue[Any]) -> None:
    """Free gRPC's reader of a cancelled import, whatever it was waiting for."""
    while True:
        try:
            chunks.put_nowait(_END)
            return
        except queue.Full:
            try:
                chunks.get_nowait()
            except queue.Empty:
                pass

