"""engine.aio: concurrent reserves are coalesced into one decision pass and one commit."""

from __future__ import annotations

import asyncio

import pytest

from stockgate.engine import InvalidArgument, NotFound, Outcome


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_concurrent_reserves_share_one_commit(book):
    book.receive("SKU-1", "WH-EAST", 250, pool="online")
    before = book._writer.batches_written

    async def main():
        return await asyncio.gather(*[
            book.aio.reserve(f"R{i}", "tmall", [("SKU-1", 1)]) for i in range(500)])

    results = run(main())
    assert sum(r.ok for r in results) == 250
    assert {r.outcome for r in results if not r.ok} == {Outcome.INSUFFICIENT_STOCK}
    assert book._writer.batches_written - before <= 3
    assert book.stock("SKU-1")[0].held == 250
    assert book.check().ok


def test_a_bad_request_fails_alone(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        return await asyncio.gather(
            book.aio.reserve("good-1", "tmall", [("SKU-1", 1)]),
            book.aio.reserve("bad-qty", "tmall", [("SKU-1", 0)]),
            book.aio.reserve("bad-channel", "nowhere", [("SKU-1", 1)]),
            book.aio.reserve("good-2", "tmall", [("SKU-1", 2)]),
            return_exceptions=True)

    good1, bad_qty, bad_channel, good2 = run(main())
    assert good1.ok and good2.ok
    assert isinstance(bad_qty, InvalidArgument) and bad_qty.field == "lines[0].qty"
    assert isinstance(bad_channel, NotFound) and bad_channel.field == "channel"
    assert book.stock("SKU-1")[0].held == 3


def test_same_id_twice_in_one_flush_is_one_hold(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        return await asyncio.gather(
            book.aio.reserve("R1", "tmall", [("SKU-1", 4)]),
            book.aio.reserve("R1", "tmall", [("SKU-1", 4)]),
            book.aio.reserve("R1", "tmall", [("SKU-1", 5)]))

    first, replay, conflict = run(main())
    assert first.ok and not first.replayed
    assert replay.ok and replay.replayed
    assert conflict.outcome is Outcome.ID_CONFLICT
    assert book.stock("SKU-1")[0].held == 4


def test_a_cancelled_caller_keeps_its_decision(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        task = asyncio.ensure_future(book.aio.reserve("R1", "tmall", [("SKU-1", 2)]))
        await asyncio.sleep(0)  # the task has queued its request
        await asyncio.sleep(0)  # the flush has run: decided and staged
        assert book.reservation("R1") is not None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The retry with the same id learns the outcome.
        return await book.aio.reserve("R1", "tmall", [("SKU-1", 2)])

    again = run(main())
    assert again.ok and again.replayed
    assert book.stock("SKU-1")[0].held == 2


def test_mutations_as_coroutines(book, clock):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        assert (await book.aio.reserve("R1", "tmall", [("SKU-1", 3)])).ok
        assert (await book.aio.amend("R1", [("SKU-1", 5)])).ok
        assert (await book.aio.extend("R1", 60_000)).ok
        assert (await book.aio.commit("R1", [("SKU-1", 4)])).ok
        assert (await book.aio.reserve("R2", "tmall", [("SKU-1", 2)])).ok
        assert (await book.aio.release("R2")).ok
        return book.stock("SKU-1")[0]

    b = run(main())
    assert (b.on_hand, b.held, b.available) == (6, 0, 6)  # 10 received, 4 committed


def test_a_caller_cancelled_before_the_flush_is_not_decided(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        task = asyncio.ensure_future(book.aio.reserve("R1", "tmall", [("SKU-1", 2)]))
        await asyncio.sleep(0)  # queued, not yet decided
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.01)

    run(main())
    assert book.reservation("R1") is None
    assert book.stock("SKU-1")[0].held == 0


def test_apply_runs_mixed_operations_in_order_each_standing_alone(engine, book):
    import asyncio

    from stockgate.engine import InvalidArgument, Outcome, ReserveRequest, State

    engine.receive("SKU-A", "WH-EAST", 10)  # 8 online

    async def go():
        return await engine.aio.apply([
            ("reserve", ReserveRequest("A-1", "tmall", [("SKU-A", 3)])),
            ("reserve", ReserveRequest("A-2", "tmall", [("SKU-A", 0)])),  # malformed
            ("reserve", ReserveRequest("A-3", "tmall", [("SKU-A", 6)])),  # 5 left: short
            ("commit", "A-1", [("SKU-A", 2)]),
            ("release", "nope"),
            ("extend", "A-1", 5),  # malformed ttl
            ("reserve", ReserveRequest("A-4", "tmall", [("SKU-A", 6)])),  # 6 left now
        ])

    out = asyncio.run(go())
    assert out[0].outcome == Outcome.OK
    assert isinstance(out[1], InvalidArgument) and out[1].field == "lines[0].qty"
    assert out[2].outcome == Outcome.INSUFFICIENT_STOCK
    assert out[3].outcome == Outcome.OK and out[3].reservation.state == State.COMMITTED
    assert out[4].outcome == Outcome.NOT_FOUND
    assert isinstance(out[5], InvalidArgument) and out[5].field == "ttl_ms"
    assert out[6].outcome == Outcome.OK  # the commit returned one unit before it ran
    assert engine.availability("tmall", ["SKU-A"]) == {"SKU-A": 0}
    assert engine.check().ok


def test_apply_refuses_an_empty_or_unknown_operation(engine, book):
    import asyncio

    import pytest

    from stockgate.engine import InvalidArgument

    with pytest.raises(InvalidArgument, match="ops"):
        asyncio.run(engine.aio.apply([]))
    out = asyncio.run(engine.aio.apply([("explode", "X")]))
    assert isinstance(out[0], InvalidArgument) and out[0].field == "op"
