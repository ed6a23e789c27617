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
