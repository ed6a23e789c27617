"""Watch through both clients: levels and alerts as they happen, and a resume across a
server restart that neither loses nor repeats an alert, checked against the journal."""

from __future__ import annotations

import asyncio
import contextlib
import time

import client_harness
import pytest
from client_harness import TMALL, connect, run, running_server, stock_book

from stockgate.clients import NotFound, PermissionDenied
from stockgate.engine import Engine

kind, stocked = client_harness.kind, client_harness.stocked  # fixtures

ALERT_KINDS = {"sold_out", "back_in_stock", "below_safety_stock", "campaign_sold_out",
               "campaign_ended"}


async def wait_until(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the watch"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("skus", [["SKU-2"], []], ids=["one-sku", "every-sku"])
def test_watch_resumes_after_a_restart_with_no_alert_lost_or_repeated(tmp_path, kind, skus):
    data = tmp_path / "data"
    first = running_server(data)
    server = first.__enter__()
    stock_book(server.engine)
    port, address = server.port, server.address
    stocked_seq = server.engine.last_seq
    updates = []

    async def scenario():
        async with connect(kind, address, token=TMALL) as c:
            async def follow():
                async for u in c.watch("tmall", skus=skus):
                    updates.append(u)

            watcher = asyncio.ensure_future(follow())
            try:
                await wait_until(lambda: updates)
                start = updates[0]
                # The first update comes at once: the levels asked for (none when every
                # SKU is watched) and the seq the stream stands at.
                assert start.available == ({"SKU-2": 8} if skus else {})
                assert start.alerts == () and start.seq == stocked_seq

                assert (await c.reserve("s-1", "tmall", [("SKU-2", 8)])).ok
                await wait_until(lambda: any(a.kind == "sold_out"
                                             for u in updates for a in u.alerts))
                assert updates[-1].available == {"SKU-2": 0}

                # The server goes away; the book changes while nobody serves it.
                await asyncio.to_thread(first.__exit__, None, None, None)
                seen_before = len(updates)
                with Engine(data) as engine:
                    engine.release("s-1")
                    engine.reserve("s-2", "tmall", [("SKU-2", 8)])
                    engine.release("s-2")
                second = running_server(data, port)
                back = await asyncio.to_thread(second.__enter__)
                try:
                    await wait_until(lambda: sum(len(u.alerts) for u in updates[seen_before:])
                                     >= 3)
                    assert updates[-1].available == {"SKU-2": 8}
                    assert (await c.reserve("s-3", "tmall", [("SKU-2", 8)])).ok  # live again
                    await wait_until(lambda: sum(len(u.alerts) for u in updates[seen_before:])
                                     >= 4)
                    journal = [e for e in back.engine.journal(start.seq + 1)
                               if e["kind"] in ALERT_KINDS]
                finally:
                    watcher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watcher
                    await asyncio.to_thread(second.__exit__, None, None, None)
            finally:
                watcher.cancel()
        return start, journal

    start, journal = run(scenario())
    alerts = [a for u in updates for a in u.alerts]
    seqs = [a.seq for a in alerts]
    assert seqs == sorted(set(seqs)), "an alert came twice or out of order"
    assert seqs == [e["seq"] for e in journal], "an alert was lost"
    assert [a.kind for a in alerts] == ["sold_out", "back_in_stock", "sold_out",
                                        "back_in_stock", "sold_out"]
    assert all(a.sku == "SKU-2" and a.location == "WH-WEST" and a.pool == "online"
               for a in alerts)
    assert [u.seq for u in updates] == sorted(u.seq for u in updates)


def test_watch_from_a_sequence_number_replays_the_alerts_since(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            before = (await c.journal(1, 1)).last_seq
            await c.reserve("s-1", "tmall", [("SKU-2", 8)])
            await c.release("s-1")
            got = []
            async for u in c.watch("tmall", from_seq=before + 1):
                got.extend(a.kind for a in u.alerts)
                if len(got) >= 2:
                    break
            assert got == ["sold_out", "back_in_stock"]
    run(scenario())


def test_watch_refusals_are_typed(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address, token=TMALL) as c:
            with pytest.raises(PermissionDenied):
                async for _ in c.watch("pos-12"):
                    pass
        async with connect(kind, stocked.address) as c:
            with pytest.raises(NotFound):
                async for _ in c.watch("no-such-channel"):
                    pass
    run(scenario())
