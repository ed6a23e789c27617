"""What the server tests share on the client side: tokens, the seeded book, stubs over a
grpc.aio channel, request builders, and the google.rpc details of a failed call."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_status import rpc_status

from stockgate.engine import Engine
from stockgate.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    reservations_pb2,
    reservations_pb2_grpc,
    types_pb2,
    watch_pb2,
    watch_pb2_grpc,
)

ADMIN_SECRET = "admin-secret-for-tests-0001"
TMALL_SECRET = "tmall-secret-for-tests-0001"
POS_SECRET = "pos12-secret-for-tests-0001"

I = inventory_pb2  # noqa: E741 - short names keep the scenario tables readable
R = reservations_pb2
T = types_pb2
W = watch_pb2


def bearer(secret: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a token."""
    return (("authorization", f"Bearer {secret}"),)


ADMIN = bearer(ADMIN_SECRET)
TMALL = bearer(TMALL_SECRET)
POS = bearer(POS_SECRET)
CALL_TIMEOUT_S = 10


def run(coro, timeout: float = 60):
    """Run a coroutine on a fresh loop of the test's thread, with a timeout."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def seed_book(engine: Engine) -> Engine:
    """The `book` fixture's catalogue, through any engine (a server's, for instance)."""
    engine.add_location("WH-EAST")
    engine.add_location("WH-WEST")
    engine.add_location("STORE-12", "store")
    engine.set_allocation_rule("WH-EAST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("WH-WEST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("STORE-12", {"offline": 100})
    engine.set_channel("tmall", [("WH-EAST", "online"), ("WH-WEST", "online")])
    engine.set_channel("pos-12", [("STORE-12", "offline"), ("WH-EAST", "offline")])
    engine.set_channel("presale-shop", [("WH-EAST", "online")], allow_presale=True)
    return engine


class Stubs:
    """The generated stubs of every service over one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.reservations = reservations_pb2_grpc.ReservationsStub(channel)
        self.inventory = inventory_pb2_grpc.InventoryStub(channel)
        self.watch = watch_pb2_grpc.WatchStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)


@contextlib.asynccontextmanager
async def connect(address: str, credentials: grpc.ChannelCredentials | None = None,
                  options=None) -> AsyncIterator[Stubs]:
    if credentials is None:
        channel = grpc.aio.insecure_channel(address, options=options)
    else:
        channel = grpc.aio.secure_channel(address, credentials, options=options)
    async with channel:
        yield Stubs(channel)


def reserve(rid: str, channel: str = "tmall", *lines: tuple[str, int], **kw):
    """ReserveRequest(rid, channel, lines, ...)."""
    return R.ReserveRequest(reservation_id=rid, channel=channel,
                            lines=[T.Line(sku=s, qty=q) for s, q in lines], **kw)


def details(err: grpc.aio.AioRpcError) -> dict:
    """{"bad_request": [(field, description)], "retry_after_ms": int} of a failed call."""
    out: dict = {"bad_request": [], "retry_after_ms": None}
    md = err.trailing_metadata() or ()
    for key, value in md:
        if key != "grpc-status-details-bin":
            continue
        import google.rpc.status_pb2 as status_pb2

        st = status_pb2.Status.FromString(value)
        assert st.code == err.code().value[0]
        for d in st.details:
            if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                d.Unpack(br)
                out["bad_request"] += [(v.field, v.description) for v in br.field_violations]
            elif d.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                ri = error_details_pb2.RetryInfo()
                d.Unpack(ri)
                out["retry_after_ms"] = ri.retry_delay.seconds * 1000 + ri.retry_delay.nanos \
                    // 1_000_000
    return out


__all__ = ["ADMIN", "I", "POS", "R", "T", "TMALL", "W", "Stubs", "bearer", "connect",
           "details", "reserve", "rpc_status", "run", "seed_book"]


DISK_HOLD_S_MAX = 10  # a held disk lets writes through after this, so a failing test ends


class HeldDisk:
    """Fault injection at the store: once hold() is called, the engine's writes wait until
    release(), so decided operations stay in flight (a slow disk), as long as a test
    needs them there."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._write = engine._store.write
        self._gate = threading.Event()

    def _slow_write(self, *args, **kwargs):
        self._gate.wait(DISK_HOLD_S_MAX)
        return self._write(*args, **kwargs)

    def hold(self) -> None:
        self._engine._store.write = self._slow_write

    def release(self) -> None:
        self._gate.set()


def op_results(resp: R.SessionResponse) -> list[R.OperationResult]:
    """Every answer of a SessionResponse as an OperationResult, the refused ids too."""
    return [*resp.results, *(R.OperationResult(id=i, error=resp.refused_error)
                             for i in resp.refused_ids)]
