"""The event loop never waits for the engine: a consistency check holds new work back
(it waits, on the loop, without blocking it), also after its caller gave up, and Watch
streams do not call the engine on the loop meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from server_calls import ADMIN, T, connect, reserve, run

CHECK_S = 0.6  # how long the slowed check holds the engine


@pytest.fixture
def slow_check(server):
    """The server's engine.check() holds the engine's lock for CHECK_S first, as a check
    of a big book does; `running` is set while it does."""
    eng = server.engine
    real = eng.check
    running = threading.Event()

    def check():
        with eng._lock:
            running.set()
            time.sleep(CHECK_S)
        try:
            return real()
        finally:
            running.clear()

    eng.check = check
    return running


async def _health_latency(s) -> float:
    t = time.perf_counter()
    await s.health.Check(health_pb2.HealthCheckRequest(), timeout=30)
    return time.perf_counter() - t


async def _worst_health_latency_while(s, running: threading.Event) -> float:
    worst = 0.0
    while running.is_set():
        worst = max(worst, await _health_latency(s))
        await asyncio.sleep(0.01)
    return worst


def test_a_check_whose_caller_gave_up_still_holds_new_work_back(server, slow_check):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    adm = server.server._admission

    async def main():
        async with connect(server.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.inventory.Check(T.Empty(), metadata=ADMIN, timeout=0.1)
            assert slow_check.is_set() and adm.paused  # the check goes on, so does the pause
            r = asyncio.ensure_future(s.reservations.Reserve(
                reserve("x", "tmall", ("SKU-1", 1)), metadata=ADMIN, timeout=30))
            worst = await _worst_health_latency_while(s, slow_check)
            return e.value, worst, await r

    err, worst, r = run(main())
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert worst < CHECK_S / 2  # the loop kept serving while the check ran
    assert r.outcome == T.OUTCOME_OK  # and the reserve went once the check was over
    assert not adm.paused and adm.ops == 0
