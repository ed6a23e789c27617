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
from server_calls import ADMIN, TMALL, HeldDisk, T, W, connect, reserve, run

CHECK_S = 0.5  # how long the slowed check holds the engine


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
    assert worst < CHECK_S * 0.6  # the loop kept serving while the check ran
    assert r.outcome == T.OUTCOME_OK  # and the reserve went once the check was over
    assert not adm.paused and adm.ops == 0


def test_a_watch_subscribing_during_a_check_waits_without_blocking_the_loop(server,
                                                                          slow_check):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        async with connect(server.address) as s:
            check = asyncio.ensure_future(s.inventory.Check(T.Empty(), metadata=ADMIN,
                                                            timeout=30))
            while not slow_check.is_set():
                await asyncio.sleep(0.005)
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"]),
                                  metadata=TMALL, timeout=30)
            first = asyncio.ensure_future(w.read())
            worst = await _worst_health_latency_while(s, slow_check)
            report, first = await check, await first
            w.cancel()
            return worst, report, first

    worst, report, first = run(main())
    assert worst < CHECK_S * 0.6
    assert report.ok and [(c.sku, c.available) for c in first.changes] == [("SKU-1", 10)]


def test_journal_events_reaching_watch_during_a_check_wait_for_it(server, slow_check):
    # A write made durable while a check holds the engine: the hub takes it in after
    # the check (learning its new bucket needs the engine), not on a blocked loop.
    eng = server.engine
    disk = HeldDisk(eng)

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1),
                                  metadata=TMALL, timeout=30)
            await w.read()
            disk.hold()
            loop = asyncio.get_running_loop()
            receiving = loop.run_in_executor(None, lambda: eng.receive(
                "NEW-1", "WH-EAST", 5, pool="online"))  # a new bucket, on its way to disk
            check = asyncio.ensure_future(s.inventory.Check(T.Empty(), metadata=ADMIN,
                                                            timeout=30))
            while not slow_check.is_set():
                await asyncio.sleep(0.005)
            disk.release()  # durable now, while the check holds the engine
            worst = await _worst_health_latency_while(s, slow_check)
            await check
            await receiving
            update = await asyncio.wait_for(w.read(), 10)
            w.cancel()
            return worst, update

    worst, update = run(main())
    assert worst < CHECK_S * 0.6
    assert [(c.sku, c.available) for c in update.changes] == [("NEW-1", 5)]


class LoopLag:
    """The longest the server's event loop went without running a due callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every_s: float = 0.002) -> None:
        self.loop, self.every_s = loop, every_s
        self.worst = 0.0
        self.on = True
        loop.call_soon_threadsafe(self._tick, None)

    def _tick(self, due: float | None) -> None:
        now = self.loop.time()
        if due is not None:
            self.worst = max(self.worst, now - due)
        if self.on:
            self.loop.call_later(self.every_s, self._tick, now + self.every_s)


def test_a_channel_change_does_not_stall_the_loop_with_every_subscriber_rescanning(
        server_config, start_server):
    import dataclasses

    from server_calls import I, seed_book

    from stockgate.server.watch import AVAILABILITY_SKUS_PER_READ

    skus, subscribers = 20_000, 10
    st = start_server(dataclasses.replace(server_config, durability="async"))
    eng = seed_book(st.engine)
    eng.import_rows([(f"S-{i}", "WH-EAST", "online", 10) for i in range(skus)])
    eng.flush()
    loop = st.server._loop
    # Levels read per turn of the server's loop: what runs in one turn delays every
    # other call by as much (a timing would tell the same, less reliably here).
    per_turn = {"now": 0, "most": 0, "on": True}
    availability = eng.availability

    def counted(channel, part, **kw):
        per_turn["now"] += len(part)
        per_turn["most"] = max(per_turn["most"], per_turn["now"])
        return availability(channel, part, **kw)

    def turn():
        per_turn["now"] = 0
        if per_turn["on"]:
            loop.call_soon(turn)

    async def main():
        async with connect(st.address, options=[("grpc.max_receive_message_length",
                                                 64 << 20)]) as s:
            ws = [s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1),
                                    metadata=TMALL, timeout=60) for _ in range(subscribers)]
            for w in ws:
                await w.read()
            reading = [asyncio.ensure_future(_read_changes(w, skus)) for w in ws]
            eng.availability = counted
            loop.call_soon_threadsafe(turn)
            await s.inventory.SetChannel(I.SetChannelRequest(
                channel="tmall", sources=[I.Source(location="WH-EAST", pool="online")]),
                metadata=ADMIN, timeout=60)
            await _health_latency(s)  # served meanwhile
            got = await asyncio.gather(*reading)
            per_turn["on"] = False
            for w in ws:
                w.cancel()
            return got

    got = run(main())
    assert got == [skus] * subscribers  # every SKU's level, to every subscriber
    # A turn reads at most one step of each subscriber; before, one subscriber's whole
    # channel (and the rescan of its SKUs) in one go.
    assert per_turn["most"] <= subscribers * AVAILABILITY_SKUS_PER_READ < skus


async def _read_changes(w, n: int) -> int:
    got = 0
    while got < n:
        got += len((await asyncio.wait_for(w.read(), 30)).changes)
    return got
