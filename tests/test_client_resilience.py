"""What the clients promise when the connection or the server goes away, against a real
server (restarted on the same data dir and port) and a proxy that drops answers or cuts
connections: retries reuse the reservation ids and are answered `replayed`; nothing is
held twice; calls wait out a restart within their deadlines; concurrent calls are
coalesced into a few Session messages, counted on the wire."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import client_harness
import pytest
from client_harness import (
    WireProxy,
    connect,
    run,
    running_server,
    stock_book,
)

from stockgate.clients import AsyncClient, Client, Outcome, State

kind = client_harness.kind  # fixture


def held(engine, sku: str) -> int:
    return sum(b.held for b in engine.stock(sku))


async def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def test_a_retry_after_a_restart_is_answered_replayed(tmp_path, kind):
    data = tmp_path / "data"
    with running_server(data) as first:
        stock_book(first.engine)
        port = first.port

        async def before():
            async with connect(kind, first.address) as c:
                assert (await c.reserve("r-1", "tmall", [("SKU-1", 4)])).ok
                done = await c.commit("r-1")
                assert done.ok and not done.replayed
                return done.reservation

        committed = run(before())
    with running_server(data, port) as second:
        async def after():
            async with connect(kind, second.address) as c:
                again = await c.commit("r-1")
                assert again.ok and again.replayed
                assert again.reservation == committed
                assert (await c.reserve("r-1", "tmall", [("SKU-1", 4)])).replayed
        run(after())
        stock = {(b.location, b.pool): b for b in second.engine.stock("SKU-1")}
        assert stock["WH-EAST", "online"].on_hand == 76  # committed once
        assert stock["WH-EAST", "online"].held == 0


def test_one_client_lives_through_a_server_restart(tmp_path, kind):
    """The same client object: its stream breaks when the server stops, and the next calls
    reconnect, including calls made while the server is down (they wait, within their
    deadlines, and go through once it is back)."""
    data = tmp_path / "data"
    first = running_server(data)
    server = first.__enter__()
    stock_book(server.engine)
    port = server.port
    address = server.address

    async def scenario():
        nonlocal server
        async with connect(kind, address) as c:
            assert (await c.reserve("r-1", "tmall", [("SKU-1", 1)])).ok
            await asyncio.to_thread(first.__exit__, None, None, None)
            waiting = asyncio.ensure_future(
                c.reserve("r-2", "tmall", [("SKU-1", 2)], timeout=20))
            reading = asyncio.ensure_future(c.stock("SKU-1", timeout=20))
            await asyncio.sleep(0.3)  # both are retrying against a closed port
            assert not waiting.done() and not reading.done()
            second = running_server(data, port)
            server = await asyncio.to_thread(second.__enter__)
            try:
                assert (await waiting).ok
                assert sum(b.held for b in await reading) in (1, 3)
                assert (await c.reserve("r-1", "tmall", [("SKU-1", 1)])).replayed
            finally:
                await asyncio.to_thread(second.__exit__, None, None, None)
    run(scenario())


def test_answers_lost_on_the_wire_are_resent_with_the_same_ids_and_replayed(tmp_path, kind):
    """The server does 40 reservations but every answer is lost and the connection cut:
    the client sends the same 40 operations again, with the same ids, on a new stream,
    and each comes back `replayed`. Nothing is held twice."""
    with running_server(tmp_path / "data") as server, WireProxy(server.address) as proxy:
        stock_book(server.engine)

        async def scenario():
            async with connect(kind, proxy.address) as c:
                assert (await c.reserve("warm", "tmall", [("SKU-1", 1)])).ok
                proxy.swallow_answers = True
                calls = [asyncio.ensure_future(
                    c.reserve(f"r-{i}", "tmall", [("SKU-1", 1)], timeout=20))
                    for i in range(40)]
                await wait_until(lambda: held(server.engine, "SKU-1") == 41)
                await asyncio.sleep(0.1)
                assert not any(f.done() for f in calls)  # no answer got through
                await asyncio.to_thread(proxy.cut)
                results = await asyncio.gather(*calls)
                assert all(r.ok and r.replayed for r in results)
                assert {r.reservation.reservation_id for r in results} == {
                    f"r-{i}" for i in range(40)}
        run(scenario())
        assert held(server.engine, "SKU-1") == 41


def test_a_thousand_concurrent_reserves_ride_in_a_few_session_messages(tmp_path):
    with running_server(tmp_path / "data") as server, WireProxy(server.address) as proxy:
        stock_book(server.engine)
        server.engine.receive("SKU-9", "WH-EAST", 1_000)  # 800 online

        async def scenario():
            async with AsyncClient(proxy.address, client_harness.ADMIN) as c:
                one = await c.reserve("first", "tmall", [("SKU-9", 1)])
                assert one.ok and proxy.client_messages == 1  # at once, one message
                results = await asyncio.gather(*(
                    c.reserve(f"r-{i}", "tmall", [("SKU-9", 1)]) for i in range(1_000)))
                return results, c.session_messages

        results, client_count = run(scenario())
        outcomes = [r.outcome for r in results]
        assert outcomes.count(Outcome.OK) == 799
        assert outcomes.count(Outcome.INSUFFICIENT_STOCK) == 201
        wire_count = proxy.client_messages - 1
        assert wire_count == client_count - 1
        assert server.server.reservations.session_messages == proxy.client_messages
        assert wire_count <= 5, f"1,000 reserves took {wire_count} Session messages"
        assert held(server.engine, "SKU-9") == 800


def test_the_sync_client_from_many_threads(tmp_path):
    with running_server(tmp_path / "data") as server, WireProxy(server.address) as proxy:
        stock_book(server.engine)
        barrier = threading.Barrier(16)

        with Client(proxy.address, client_harness.ADMIN) as c:
            def shopper(n: int) -> tuple[int, int, int]:
                barrier.wait()
                granted = released = refused = 0
                for i in range(10):
                    rid = f"t{n}-{i}"
                    res = c.reserve(rid, "tmall", [("SKU-1", 1)])
                    if not res.ok:
                        assert res.outcome is Outcome.INSUFFICIENT_STOCK
                        refused += 1
                        continue
                    granted += 1
                    if i % 2:
                        assert c.release(rid).reservation.state is State.RELEASED
                        released += 1
                return granted, released, refused

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                counts = list(pool.map(shopper, range(16)))
            sent = c.session_messages
        granted = sum(g for g, _, _ in counts)
        released = sum(r for _, r, _ in counts)
        assert granted + sum(x for _, _, x in counts) == 160
        assert held(server.engine, "SKU-1") == granted - released <= 80
        assert sent == proxy.client_messages
        assert sent < 160 + released  # threads' calls shared messages


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_close_fails_waiting_calls_and_refuses_new_ones(tmp_path, flavour):
    from stockgate.clients import ClientClosed

    with running_server(tmp_path / "data") as server:
        stock_book(server.engine)
        if flavour == "async":
            async def scenario():
                c = AsyncClient(server.address, client_harness.ADMIN)
                assert (await c.reserve("r-1", "tmall", [("SKU-1", 1)])).ok
                await c.close()
                with pytest.raises(ClientClosed):
                    await c.reserve("r-2", "tmall", [("SKU-1", 1)])
                with pytest.raises(ClientClosed):
                    await c.stock("SKU-1")
            run(scenario())
        else:
            c = Client(server.address, client_harness.ADMIN)
            assert c.reserve("r-1", "tmall", [("SKU-1", 1)]).ok
            c.close()
            with pytest.raises(ClientClosed):
                c.reserve("r-2", "tmall", [("SKU-1", 1)])
            with pytest.raises(ClientClosed):
                c.stock("SKU-1")


def test_calls_in_flight_during_a_graceful_stop_all_end_exactly(tmp_path, kind):
    """A stop while 300 reserves are on their way: the server answers what it read, says
    UNAVAILABLE for the rest, and the client sends those again once a server is back on the
    port. Every caller gets one answer, and exactly the stock there was is held."""
    data = tmp_path / "data"
    first = running_server(data)
    server = first.__enter__()
    stock_book(server.engine)
    port, address = server.port, server.address

    async def scenario():
        async with connect(kind, address) as c:
            assert (await c.reserve("warm", "tmall", [("SKU-1", 1)])).ok
            calls = [asyncio.ensure_future(
                c.reserve(f"g-{i}", "tmall", [("SKU-1", 1)], timeout=30)) for i in range(300)]
            await asyncio.sleep(0)
            await asyncio.to_thread(first.__exit__, None, None, None)
            second = running_server(data, port)
            back = await asyncio.to_thread(second.__enter__)
            try:
                results = await asyncio.gather(*calls)
            finally:
                engine_held = held(back.engine, "SKU-1")
                await asyncio.to_thread(second.__exit__, None, None, None)
            return results, engine_held

    results, engine_held = run(scenario())
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.OK) == 79
    assert outcomes.count(Outcome.INSUFFICIENT_STOCK) == 221
    assert engine_held == 80


# gRPC's own reconnection backoff grows to 2 minutes by default: after a server that was
# away this long, an uncapped client would wait about 3 more seconds (and after a crash
# loop, minutes) before it even tried to connect again.
SERVER_AWAY_S = 6.0
BACK_WITHIN_S = 2.5  # capped: one reconnect backoff (1 s) and one resend backoff (1 s)


def test_a_client_comes_back_soon_after_a_long_outage(tmp_path):
    # The sync client only: both take their channel options from Transport.options().
    from stockgate.clients import StockgateError

    kind = "sync"

    data = tmp_path / "data"
    with running_server(data) as first:
        stock_book(first.engine)
        port, address = first.port, first.address

    async def scenario():
        async with connect(kind, address) as c:
            away = time.monotonic()
            n = 0
            while time.monotonic() - away < SERVER_AWAY_S:  # calls fail meanwhile
                with pytest.raises(StockgateError):
                    await c.reserve(f"away-{n}", "tmall", [("SKU-1", 1)], timeout=0.5)
                n += 1
            with running_server(data, port):
                back = time.monotonic()
                result = await c.reserve("back", "tmall", [("SKU-1", 1)], timeout=10)
                return result, time.monotonic() - back

    result, waited = run(scenario())
    assert result.ok
    assert waited < BACK_WITHIN_S, f"the client took {waited:.1f} s to reach the server"


def test_a_receipt_is_never_sent_twice_but_a_setting_is(tmp_path):
    # receive adds units: sent again after a lost answer it could add them twice, so
    # the clients never resend it; a setting that overwrites is safe to resend.
    from stockgate.clients import Unavailable
    from stockgate.engine import StoreError

    with running_server(tmp_path / "data") as s:
        stock_book(s.engine)
        attempts = []

        def failing(puts, journal):
            attempts.append(puts)
            raise StoreError("simulated EIO")

        s.engine._store.write = failing
        with Client(s.address, client_harness.ADMIN) as client:
            with pytest.raises(Unavailable):
                client.receive("SKU-1", "WH-EAST", 5, timeout=1.0)
            receipts = len(attempts)
            with pytest.raises(Unavailable):
                client.add_location("WH-NORTH", timeout=1.0)
            settings = len(attempts) - receipts
    assert receipts == 1
    assert settings > 1


def test_answered_calls_leave_no_deadline_behind(tmp_path):
    # Deadlines share a timer per slot of the async client's session; an answered call
    # leaves its slot at once, and a slot goes when its timer fires.
    from stockgate.clients import aio_session

    async def scenario(address):
        async with AsyncClient(address, client_harness.ADMIN) as c:
            timeout = 0.2
            results = await asyncio.gather(*(
                c.reserve(f"dl-{i}", "tmall", [("SKU-1", 1)], timeout=timeout)
                for i in range(50)))
            assert all(r.ok for r in results)
            slots = c._session._deadlines
            assert slots and all(not due for due in slots.values())
            await asyncio.sleep(timeout + 2 * aio_session.DEADLINE_SLOT_S)
            assert slots == {}

    with running_server(tmp_path / "data") as s:
        stock_book(s.engine)
        run(scenario(s.address))
