"""Reservations through both clients against a real server: outcomes per line, replay and
conflict, commit in part, release, extend, amend, expiry, batches, campaigns."""

from __future__ import annotations

import asyncio
import time

import client_harness
import pytest
from client_harness import connect, run

from stockgate.clients import Outcome, ReserveRequest, State

stocked, kind = client_harness.stocked, client_harness.kind  # fixtures


def held(server, sku: str) -> int:
    return sum(b.held for b in server.engine.stock(sku))


def test_outcomes_per_line_replay_and_conflict(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            ok = await c.reserve("r-1", "tmall", [("SKU-1", 3), ("SKU-2", 2)], ttl_ms=60_000)
            assert ok.ok and ok.outcome is Outcome.OK and not ok.replayed
            r = ok.reservation
            assert r.state is State.HELD and r.channel == "tmall" and r.units == 5
            assert [(li.sku, li.granted, li.outcome) for li in r.lines] == [
                ("SKU-1", 3, Outcome.OK), ("SKU-2", 2, Outcome.OK)]
            assert r.lines[0].allocations == (("WH-EAST", "online", 3),)
            assert r.expires_ms - r.created_ms == 60_000

            again = await c.reserve("r-1", "tmall", [("SKU-1", 3), ("SKU-2", 2)],
                                    ttl_ms=60_000)
            assert again.ok and again.replayed and again.reservation == r

            other = await c.reserve("r-1", "tmall", [("SKU-1", 4)])
            assert other.outcome is Outcome.ID_CONFLICT and not other.ok

            short = await c.reserve("r-2", "tmall", [("SKU-1", 1), ("SKU-2", 50)])
            assert short.outcome is Outcome.INSUFFICIENT_STOCK and short.reservation is None
            by_sku = {li.sku: li for li in short.lines}
            assert by_sku["SKU-2"].outcome is Outcome.INSUFFICIENT_STOCK
            assert by_sku["SKU-2"].granted == 0

            unknown = await c.reserve("r-3", "tmall", [("NO-SUCH-SKU", 1)])
            assert unknown.outcome is Outcome.UNKNOWN_SKU

            part = await c.reserve("r-4", "tmall", [("SKU-2", 50)], partial=True)
            assert part.outcome is Outcome.PARTIAL and part.ok
            assert part.reservation.lines[0].granted == 6  # 8 online at WH-WEST, 2 held

            assert (await c.commit("nope")).outcome is Outcome.NOT_FOUND
            assert (await c.release("nope")).outcome is Outcome.NOT_FOUND
            assert await c.reservation("nope") is None
            assert (await c.reservation("r-1")) == r
    run(scenario())
    assert held(stocked, "SKU-1") == 3
    assert held(stocked, "SKU-2") == 8


def test_commit_in_part_release_and_the_lifecycle(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            await c.reserve("r-1", "tmall", [("SKU-1", 5)])
            done = await c.commit("r-1", [("SKU-1", 2)])
            assert done.ok and done.reservation.state is State.COMMITTED
            assert done.reservation.committed == (("SKU-1", 2),)
            assert done.reservation.resolved_ms is not None
            assert (await c.commit("r-1", [("SKU-1", 2)])).replayed
            assert (await c.release("r-1")).outcome is Outcome.NOT_HELD

            await c.reserve("r-2", "tmall", {"SKU-1": 4})
            gone = await c.release("r-2")
            assert gone.ok and gone.reservation.state is State.RELEASED
            assert (await c.commit("r-2")).outcome is Outcome.NOT_HELD
            stock = {(b.location, b.pool): b for b in await c.stock("SKU-1")}
            assert stock["WH-EAST", "online"].on_hand == 78
            assert stock["WH-EAST", "online"].held == 0
            assert stock["WH-EAST", "online"].available == 78
    run(scenario())


def test_extend_and_amend(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            first = (await c.reserve("r-1", "tmall", [("SKU-1", 2)], ttl_ms=5_000)).reservation
            longer = await c.extend("r-1", 600_000)
            assert longer.ok and longer.reservation.expires_ms > first.expires_ms + 500_000

            bigger = await c.amend("r-1", [("SKU-1", 70), ("SKU-2", 1)])
            assert bigger.ok
            assert [(li.sku, li.granted) for li in bigger.reservation.lines] == [
                ("SKU-1", 70), ("SKU-2", 1)]
            too_big = await c.amend("r-1", [("SKU-1", 81)])
            assert too_big.outcome is Outcome.INSUFFICIENT_STOCK
            kept = await c.reservation("r-1")
            assert [(li.sku, li.granted) for li in kept.lines] == [("SKU-1", 70), ("SKU-2", 1)]
            assert (await c.amend("nope", [("SKU-1", 1)])).outcome is Outcome.NOT_FOUND
    run(scenario())
    assert held(stocked, "SKU-1") == 70


def test_a_hold_expires_after_its_ttl(tmp_path, kind):
    from stockgate.engine import ManualClock

    clock = ManualClock()
    with client_harness.running_server(tmp_path / "data", clock=clock) as server:
        client_harness.stock_book(server.engine)

        async def scenario():
            async with connect(kind, server.address) as c:
                hold = await c.reserve("r-short", "tmall", [("SKU-1", 10)], ttl_ms=1_000)
                assert hold.ok and hold.reservation.expires_ms == clock.now_ms() + 1_000
                assert (await c.availability("tmall", ["SKU-1"])) == {"SKU-1": 70}
                clock.advance(999)
                await asyncio.sleep(0.2)  # the engine looks for due holds every 50 ms
                assert (await c.reservation("r-short")).state is State.HELD
                clock.advance(1)
                deadline = time.monotonic() + 10
                while (r := await c.reservation("r-short")).state is State.HELD:
                    assert time.monotonic() < deadline, "the hold never expired"
                    await asyncio.sleep(0.02)
                assert r.state is State.EXPIRED
                assert (await c.availability("tmall", ["SKU-1"])) == {"SKU-1": 80}
                assert (await c.commit("r-short")).outcome is Outcome.NOT_HELD
                assert (await c.extend("r-short", 60_000)).outcome is Outcome.NOT_HELD
        run(scenario())


def test_reserve_many_answers_in_order(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            results = await c.reserve_many([
                ReserveRequest("b-1", "tmall", [("SKU-2", 5)]),
                ("b-2", "tmall", [("SKU-2", 5)]),  # a plain tuple works too
                ReserveRequest("b-3", "tmall", {"SKU-2": 3}),
                ReserveRequest("b-4", "pos-12", [("SKU-3", 5)]),
            ])
            assert [r.outcome for r in results] == [
                Outcome.OK, Outcome.INSUFFICIENT_STOCK, Outcome.OK, Outcome.OK]
            assert [r.reservation.reservation_id for r in results if r.ok] == [
                "b-1", "b-3", "b-4"]
            again = await c.reserve_many([ReserveRequest("b-1", "tmall", [("SKU-2", 5)])])
            assert again[0].replayed
    run(scenario())


def test_campaign_window_and_per_customer_limit(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            now = int(time.time() * 1000)
            created = await c.create_campaign(
                "d11", channels=["tmall"], start_ms=now + 3_600_000, end_ms=now + 7_200_000,
                location="WH-EAST", source_pool="online", quotas={"SKU-1": 10},
                customer_limit=2)
            assert created.state == "scheduled" and created.quotas == {"SKU-1": 10}

            early = await c.reserve("c-0", "tmall", [("SKU-1", 1)], customer="ann",
                                    campaign="d11")
            assert early.outcome is Outcome.CAMPAIGN_NOT_ACTIVE

            started = await c.start_campaign("d11")
            assert started.state == "active" and started.carved == {"SKU-1": 10}
            assert (await c.availability("tmall", ["SKU-1"], campaign="d11")) == {"SKU-1": 10}

            assert (await c.reserve("c-1", "tmall", [("SKU-1", 2)], customer="ann",
                                    campaign="d11")).ok
            over = await c.reserve("c-2", "tmall", [("SKU-1", 1)], customer="ann",
                                   campaign="d11")
            assert over.outcome is Outcome.CUSTOMER_LIMIT
            assert (await c.reserve("c-3", "tmall", [("SKU-1", 2)], customer="bob",
                                    campaign="d11")).ok
            wrong = await c.reserve("c-4", "pos-12", [("SKU-1", 1)], customer="cy",
                                    campaign="d11")
            assert wrong.outcome is Outcome.CHANNEL_NOT_IN_CAMPAIGN
            assert (await c.reserve("c-5", "tmall", [("SKU-1", 1)], customer="cy",
                                    campaign="nope")).outcome is Outcome.UNKNOWN_CAMPAIGN

            stopped = await c.stop_campaign("d11")
            assert stopped.state == "ended" and stopped.returned == {"SKU-1": 6}
            late = await c.reserve("c-6", "tmall", [("SKU-1", 1)], customer="dee",
                                   campaign="d11")
            assert late.outcome is Outcome.CAMPAIGN_NOT_ACTIVE
            assert (await c.campaign("d11")).state == "ended"
            assert await c.campaign("nope") is None
            assert [x.campaign_id for x in await c.campaigns()] == ["d11"]
    run(scenario())


@pytest.mark.parametrize("kind", ["async"])
def test_one_client_serves_many_concurrent_reserves_exactly(stocked, kind):
    # 500 buyers of 1 unit each for 80 units: exactly 80 get one.
    async def scenario():
        async with connect(kind, stocked.address) as c:
            results = await asyncio.gather(*(
                c.reserve(f"hot-{i}", "tmall", [("SKU-1", 1)]) for i in range(500)))
            return [r.outcome for r in results]
    outcomes = run(scenario())
    assert outcomes.count(Outcome.OK) == 80
    assert outcomes.count(Outcome.INSUFFICIENT_STOCK) == 420
    assert held(stocked, "SKU-1") == 80

