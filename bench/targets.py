"""What the load driver calls: one reservation attempt on one system, the same interface
for stockgate's paths and for the peers, so every system gets the same offered load.

A target's `reserve(rid, sku)` makes one attempt of one unit and returns
(outcome, units newly granted, ops in the call). Outcomes are short names: "ok",
"sold_out", "customer_limit", "replayed", or the system's own word for anything else.
Exceptions are the driver's to count.

    echo        the bare grpc.aio floor (bench/echo_server.py), unary
    unary       stockgate's unary Reserve
    session     stockgate's Session stream driven raw, OPS_PER_MESSAGE reserves a message
    coalesced   AsyncClient: concurrent calls coalesced onto one Session stream
    flash       AsyncClient in a flash sale: a campaign, a new customer per attempt, some
                customers trying a second unit and some answers lost and retried
    redis, postgres   the peers (redis_peer.py, postgres_peer.py)
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from book import CHANNEL, FLASH_SKU_PREFIX

TTL_MS = 7 * 24 * 3_600 * 1_000  # the driver's holds never expire during a run
FLASH_TTL_MS = 15 * 60 * 1_000  # a flash-sale buyer has 15 minutes to pay
CALL_TIMEOUT_S = 30
OPS_PER_MESSAGE = 100  # the raw Session target's reserves per message
REPEAT_CUSTOMER_SHARE = 0.05  # flash: attempts by a customer who already bought that SKU
RETRY_SAME_ID_SHARE = 0.05  # flash: granted answers "lost" and the call sent again
SHED_CODE = 8  # google.rpc.Code RESOURCE_EXHAUSTED: the server shed the operation
SYSTEMS = ("echo", "unary", "session", "coalesced", "flash", "redis", "postgres")


def outcome_name(name: str) -> str:
    """A stockgate outcome's name as the driver counts it (sold out as the peers say)."""
    n = name.lower().removeprefix("outcome_")
    return "sold_out" if n == "insufficient_stock" else n


class Target:
    """The interface: one reservation attempt, and closing."""

    name = "?"

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Unary(Target):
    """stockgate's (or the echo floor's) unary Reserve, one reservation per call."""

    name = "unary"

    def __init__(self, address: str) -> None:
        import grpc

        from stockgate.v1 import reservations_pb2, reservations_pb2_grpc, types_pb2

        self._grpc, self._pb, self._types = grpc, reservations_pb2, types_pb2
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = reservations_pb2_grpc.ReservationsStub(self._channel)

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        req = self._pb.ReserveRequest(reservation_id=rid, channel=CHANNEL, ttl_ms=TTL_MS,
                                      lines=[self._types.Line(sku=sku, qty=1)])
        try:
            res = await self._stub.Reserve(req, timeout=CALL_TIMEOUT_S)
        except self._grpc.aio.AioRpcError as exc:
            if exc.code() == self._grpc.StatusCode.RESOURCE_EXHAUSTED:
                return "shed", 0, 1
            raise
        ok = res.outcome == self._types.OUTCOME_OK
        return ("ok", 1, 1) if ok else (outcome_name(self._types.Outcome.Name(res.outcome)), 0, 1)

    async def close(self) -> None:
        await self._channel.close()


class Session(Target):
    """stockgate's Session stream driven raw: each call is one message of OPS_PER_MESSAGE
    reserves (ids rid/0 .. rid/99), answered when all are: the server's best case,
    without the client's coalescing cost."""

    name = "session"

    def __init__(self, address: str) -> None:
        import grpc

        from stockgate.v1 import reservations_pb2, reservations_pb2_grpc, types_pb2

        self._pb, self._types = reservations_pb2, types_pb2
        self._channel = grpc.aio.insecure_channel(address)
        stub = reservations_pb2_grpc.ReservationsStub(self._channel)
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._waiting: dict[int, tuple[asyncio.Future, list[bool]]] = {}
        self._next = 0
        self._call = stub.Session(self._requests())
        self._reader = asyncio.ensure_future(self._answers())

    async def _requests(self):
        while True:
            yield await self._outbox.get()

    async def _answers(self) -> None:
        ok_code = self._types.OUTCOME_OK
        async for resp in self._call:
            for res in resp.results:
                if res.HasField("result"):
                    self._answered(res.id, res.result.outcome == ok_code, False)
                else:
                    self._answered(res.id, False, res.error.code == SHED_CODE)
            shed = resp.refused_error.code == SHED_CODE
            for op_id in resp.refused_ids:
                self._answered(op_id, False, shed)

    def _answered(self, op_id: int, granted: bool, shed: bool) -> None:
        """One operation's answer; its message's caller wakes once all are in."""
        fut, got = self._waiting[op_id // OPS_PER_MESSAGE]
        got.append(granted)
        got.shed = got.shed or shed
        if len(got) == OPS_PER_MESSAGE:
            del self._waiting[op_id // OPS_PER_MESSAGE]
            fut.set_result(got)

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        self._next += 1
        msg = self._next
        fut = asyncio.get_running_loop().create_future()
        self._waiting[msg] = (fut, _Answers())
        pb, line = self._pb, self._types.Line(sku=sku, qty=1)
        ops = [pb.Operation(id=msg * OPS_PER_MESSAGE + k, reserve=pb.ReserveRequest(
            reservation_id=f"{rid}/{k}", channel=CHANNEL, ttl_ms=TTL_MS, lines=[line]))
            for k in range(OPS_PER_MESSAGE)]
        await self._outbox.put(pb.SessionRequest(ops=ops))
        got = await asyncio.wait_for(fut, CALL_TIMEOUT_S)
        granted = sum(got)
        if granted == OPS_PER_MESSAGE:
            return "ok", granted, OPS_PER_MESSAGE
        return ("shed" if got.shed else "refused"), granted, OPS_PER_MESSAGE

    async def close(self) -> None:
        self._reader.cancel()
        self._call.cancel()
        await self._channel.close()


class _Answers(list):
    """A Session message's answers so far: True per granted reserve; `shed` when the
    server refused any of them for overload (RESOURCE_EXHAUSTED)."""

    shed = False


class Coalesced(Target):
    """AsyncClient: what an application does, its concurrent calls coalesced."""

    name = "coalesced"

    def __init__(self, address: str) -> None:
        from stockgate.clients import AsyncClient, Overloaded

        self.client = AsyncClient(address, timeout=CALL_TIMEOUT_S)
        self._overloaded = Overloaded

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        try:
            res = await self.client.reserve(rid, CHANNEL, [(sku, 1)], ttl_ms=TTL_MS)
        except self._overloaded:
            return "shed", 0, 1
        return ("ok", 1, 1) if res.ok else (outcome_name(res.outcome.name), 0, 1)

    async def close(self) -> None:
        await self.client.close()


class Flash(Coalesced):
    """A flash sale through AsyncClient. Each attempt on a campaign SKU is a new customer;
    REPEAT_CUSTOMER_SHARE of attempts are instead by an earlier buyer on the same SKU
    (the per-customer limit must refuse them: "customer_limit", or "limit_broken" if
    granted), and RETRY_SAME_ID_SHARE of granted answers are treated as lost and sent
    again with the same id (the server must replay them: "replayed", or "retry_broken"
    if it grants anew). SKUs outside the campaign (the warm-up) are plain reserves."""

    name = "flash"

    def __init__(self, address: str, campaign: str, seed: int) -> None:
        super().__init__(address)
        self.campaign = campaign
        self.rng = random.Random(seed)
        self.buyers: list[tuple[str, str]] = []  # (customer, sku) granted so far
        self.retries: list[tuple[str, str, str]] = []  # (rid, customer, sku) to send again
        self._customers = 0
        self._prefix = f"{campaign}-{seed}-c"

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        if not sku.startswith(FLASH_SKU_PREFIX):
            return await super().reserve(rid, sku)
        rng = self.rng
        if self.retries:
            rid, customer, sku = self.retries.pop()
            res = await self._reserve(rid, sku, customer)
            return ("replayed", 0, 1) if res.replayed and res.ok else ("retry_broken", 1, 1)
        if self.buyers and rng.random() < REPEAT_CUSTOMER_SHARE:
            customer, sku = rng.choice(self.buyers)
            res = await self._reserve(rid, sku, customer)
            return ("limit_broken", 1, 1) if res.ok else (outcome_name(res.outcome.name), 0, 1)
        self._customers += 1
        customer = f"{self._prefix}{self._customers}"
        res = await self._reserve(rid, sku, customer)
        if not res.ok:
            return outcome_name(res.outcome.name), 0, 1
        self.buyers.append((customer, sku))
        if rng.random() < RETRY_SAME_ID_SHARE:
            self.retries.append((rid, customer, sku))
        return "ok", 1, 1

    async def _reserve(self, rid: str, sku: str, customer: str) -> Any:
        return await self.client.reserve(rid, CHANNEL, [(sku, 1)], customer=customer,
                                         campaign=self.campaign, ttl_ms=FLASH_TTL_MS)


async def open_target(system: str, address: str, options: dict[str, Any]) -> Target:
    """The target of `system` at `address` (host:port, or a DSN for postgres)."""
    if system in ("echo", "unary"):
        return Unary(address)
    if system == "session":
        return Session(address)
    if system == "coalesced":
        return Coalesced(address)
    if system == "flash":
        return Flash(address, options["campaign"], options.get("seed", 0))
    if system == "redis":
        import redis_peer

        return await redis_peer.RedisTarget.open(address, options)
    if system == "postgres":
        import postgres_peer

        return await postgres_peer.PostgresTarget.open(address, options)
    raise ValueError(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")
