"""Watch: availability levels and alerts pushed per channel, coalesced, resumable."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading

import grpc
import pytest
from server_calls import ADMIN, TMALL, I, R, W, connect, details, reserve, run, seed_book

import stockgate.server.watch as watch_mod


async def _next(stream, timeout: float = 5) -> W.WatchUpdate:
    msg = await asyncio.wait_for(stream.read(), timeout)
    assert msg is not grpc.aio.EOF
    return msg


async def _until(stream, done, timeout: float = 10) -> list[W.WatchUpdate]:
    """Read updates until done(updates) holds."""
    out: list[W.WatchUpdate] = []
    while not done(out):
        out.append(await _next(stream, timeout))
    return out


def _level(updates, sku: str) -> int | None:
    level = None
    for u in updates:
        for c in u.changes:
            if c.sku == sku:
                level = c.available
    return level


def test_first_update_then_changes_after_reservations(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    eng.receive("SKU-2", "WH-EAST", 5, pool="online")

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1", "SKU-9"]),
                                  metadata=TMALL, timeout=20)
            first = await _next(w)
            await s.reservations.Reserve(reserve("o-1", "tmall", ("SKU-1", 3)),
                                         metadata=TMALL, timeout=10)
            await s.reservations.Reserve(reserve("o-2", "tmall", ("SKU-2", 3)),
                                         metadata=TMALL, timeout=10)  # not followed
            later = await _until(w, lambda us: _level(us, "SKU-1") == 7)
            w.cancel()
            return first, later

    first, later = run(main())
    assert {c.sku: c.available for c in first.changes} == {"SKU-1": 10, "SKU-9": 0}
    assert first.seq == eng.last_seq - 2  # two reservations came after it
    assert all(c.sku == "SKU-1" for u in later for c in u.changes)
    assert later[-1].seq > first.seq


def test_a_burst_of_reservations_reaches_a_subscriber_as_few_updates(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 300, pool="online")

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"],
                                                 coalesce_ms=200), metadata=TMALL, timeout=20)
            await _next(w)
            await asyncio.gather(*[s.reservations.Reserve(
                reserve(f"o-{i}", "tmall", ("SKU-1", 1)), metadata=TMALL, timeout=10)
                for i in range(300)])
            updates = await _until(w, lambda us: _level(us, "SKU-1") == 0)
            w.cancel()
            return updates

    updates = run(main())
    assert len(updates) <= 5  # 300 changes and a sold-out alert, a few messages
    alerts = [a for u in updates for a in u.alerts]
    assert [(a.kind, a.sku, a.location, a.pool) for a in alerts] == [
        ("sold_out", "SKU-1", "WH-EAST", "online")]


def _channel_alerts(eng, channel_places: set[tuple[str, str]]) -> list[tuple[int, str]]:
    """Every alert the journal holds about the given (location, pool)s, as (seq, kind)."""
    return [(ev["seq"], ev["kind"]) for ev in eng.journal(1)
            if ev["kind"] in ("sold_out", "back_in_stock")
            and (ev["location"], ev["pool"]) in channel_places]


def test_resume_from_seq_loses_and_repeats_nothing(server):
    eng = server.engine
    tmall_places = {("WH-EAST", "online"), ("WH-WEST", "online")}

    async def churn(s, start: int, rounds: int):
        # Each round sells SKU-1 out and brings it back: two alerts per round.
        for i in range(start, start + rounds):
            await s.inventory.Receive(I.ReceiveRequest(sku="SKU-1", location="WH-EAST",
                                                       pool="online", qty=2), metadata=ADMIN,
                                      timeout=10)
            await s.reservations.Reserve(reserve(f"o-{i}", "tmall", ("SKU-1", 2)),
                                         metadata=ADMIN, timeout=10)

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=1, coalesce_ms=1),
                                  metadata=TMALL, timeout=30)
            await churn(s, 0, 5)
            first = await _until(w, lambda us: sum(len(u.alerts) for u in us) >= 10)
            w.cancel()
            resume_at = first[-1].seq + 1
            await churn(s, 5, 5)  # while nobody watches
            w2 = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=resume_at,
                                                  coalesce_ms=1), metadata=TMALL, timeout=30)
            # ... and while it catches up from the journal
            writer = asyncio.ensure_future(churn(s, 10, 5))
            second = await _until(w2, lambda us: sum(len(u.alerts) for u in us) >= 20)
            await writer
            await asyncio.sleep(0.1)
            w2.cancel()
            return first, second

    first, second = run(main())
    seen = [(a.seq, a.kind) for u in first + second for a in u.alerts]
    assert seen == _channel_alerts(eng, tmall_places)
    assert len(seen) == 30 and len(set(seen)) == 30
    assert [u.seq for u in second] == sorted(u.seq for u in second)
    assert _level(second, "SKU-1") == 0


def test_resume_during_a_stream_of_writes_has_no_gap(server):
    eng = server.engine
    stop = asyncio.Event()

    async def writer(s):
        i = 0
        while not stop.is_set():
            await s.inventory.Receive(I.ReceiveRequest(sku="SKU-2", location="WH-EAST",
                                                       pool="online", qty=1), metadata=ADMIN,
                                      timeout=10)
            await s.reservations.Reserve(reserve(f"w-{i}", "tmall", ("SKU-2", 1)),
                                         metadata=ADMIN, timeout=10)
            i += 1

    async def main():
        async with connect(server.address) as s:
            task = asyncio.ensure_future(writer(s))
            await asyncio.sleep(0.1)
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=1, coalesce_ms=1),
                                  metadata=TMALL, timeout=30)
            await asyncio.sleep(0.2)
            stop.set()
            await task
            target = eng.last_seq
            updates = await _until(w, lambda us: bool(us) and us[-1].seq >= target)
            w.cancel()
            return updates

    updates = run(main())
    seen = [(a.seq, a.kind) for u in updates for a in u.alerts]
    assert seen == _channel_alerts(eng, {("WH-EAST", "online"), ("WH-WEST", "online")})
    assert len(seen) >= 4


def test_alerts_follow_the_channel(server):
    eng = server.engine
    eng.receive("SKU-1", "STORE-12", 1)  # pos-12's, not tmall's
    eng.receive("SKU-1", "WH-WEST", 1, pool="online")
    eng.set_safety_stock(5, sku="SKU-3", channel="tmall")
    eng.receive("SKU-3", "WH-EAST", 6, pool="online")

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1),
                                  metadata=TMALL, timeout=20)
            await s.reservations.Reserve(reserve("p", "pos-12", ("SKU-1", 1)),
                                         metadata=ADMIN, timeout=10)
            await s.reservations.Reserve(reserve("t", "tmall", ("SKU-1", 1)),
                                         metadata=ADMIN, timeout=10)
            await s.reservations.Reserve(reserve("u", "tmall", ("SKU-3", 2)),
                                         metadata=ADMIN, timeout=10)
            ups = await _until(w, lambda us: sum(len(u.alerts) for u in us) >= 2)
            w.cancel()
            return ups

    alerts = [a for u in run(main()) for a in u.alerts]
    assert [(a.kind, a.location, a.channel, a.sku) for a in alerts] == [
        ("sold_out", "WH-WEST", "", "SKU-1"),
        ("below_safety_stock", "", "tmall", "SKU-3")]
    assert alerts[1].threshold == 5 and alerts[1].available == 4


def test_campaign_alerts_reach_its_channels(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    now = eng.clock.now_ms()
    eng.create_campaign("d11", channels=["tmall"], start_ms=now, end_ms=now + 60_000,
                        location="WH-EAST", source_pool="online", quotas={"SKU-1": 2})

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1),
                                  metadata=TMALL, timeout=20)
            p = s.watch.Subscribe(W.WatchRequest(channel="pos-12", coalesce_ms=1,
                                                 skus=["SKU-1"]), metadata=ADMIN, timeout=20)
            await _next(p)
            await s.reservations.Reserve(reserve("f", "tmall", ("SKU-1", 2), campaign="d11"),
                                         metadata=ADMIN, timeout=10)
            await s.inventory.StopCampaign(I.CampaignRequest(campaign_id="d11"),
                                           metadata=ADMIN, timeout=10)
            ups = await _until(w, lambda us: sum(len(u.alerts) for u in us) >= 2)
            w.cancel()
            # pos-12 is not in the campaign: its stream has nothing to say.
            with pytest.raises(asyncio.TimeoutError):
                await _next(p, timeout=0.2)
            p.cancel()
            return ups

    alerts = [a for u in run(main()) for a in u.alerts]
    assert [(a.kind, a.campaign) for a in alerts] == [("campaign_sold_out", "d11"),
                                                      ("campaign_ended", "d11")]


def test_watch_input_and_limits(server_config, start_server):
    st = start_server(dataclasses.replace(server_config, watch_streams_max=1))
    seed_book(st.engine)

    async def refused(s, req, md=TMALL):
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await s.watch.Subscribe(req, metadata=md, timeout=10).read()
        return e.value.code()

    async def main():
        async with connect(st.address) as s:
            codes = [await refused(s, W.WatchRequest(channel="tmall", coalesce_ms=1_001)),
                     await refused(s, W.WatchRequest(channel="nowhere"), ADMIN),
                     await refused(s, W.WatchRequest(channel="tmall", skus=[""]))]
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"]),
                                  metadata=TMALL, timeout=10)
            await _next(w)
            codes.append(await refused(s, W.WatchRequest(channel="tmall")))
            w.cancel()
            return codes

    assert run(main()) == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                           grpc.StatusCode.INVALID_ARGUMENT,
                           grpc.StatusCode.RESOURCE_EXHAUSTED]


def test_a_watch_ends_unavailable_on_shutdown_with_its_resume_point(server):
    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"]),
                                  metadata=TMALL, timeout=20)
            first = await _next(w)
            stopping = asyncio.get_running_loop().run_in_executor(None, server.stop)
            with pytest.raises(grpc.aio.AioRpcError) as e:
                while True:
                    await _next(w)
            await stopping
            return first, e.value

    first, err = run(main())
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert f"from_seq={first.seq + 1}" in err.details()



def test_the_first_update_comes_at_once_even_empty_and_tells_where_now_is(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall"), metadata=TMALL,
                                  timeout=20)
            first = await _next(w)
            w.cancel()
            # Resuming from there misses nothing decided after it.
            await s.reservations.Reserve(reserve("o-1", "tmall", ("SKU-1", 10)),
                                         metadata=TMALL, timeout=10)
            w2 = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=first.seq + 1),
                                   metadata=TMALL, timeout=20)
            again = await _next(w2)
            w2.cancel()
            return first, again

    first, again = run(main())
    assert first.seq == eng.last_seq - 2 and not first.changes and not first.alerts
    assert [(c.sku, c.available) for c in again.changes] == [("SKU-1", 0)]
    assert [a.kind for a in again.alerts] == ["sold_out"]
    assert again.seq == eng.last_seq


# ---------------------------------------------------------------------- resume points


async def _drain(stream) -> tuple[list[W.WatchUpdate], grpc.aio.AioRpcError | None]:
    """Every update until the stream ends, and how it ended."""
    got = []
    try:
        while True:
            m = await asyncio.wait_for(stream.read(), 10)
            if m is grpc.aio.EOF:
                return got, None
            got.append(m)
    except grpc.aio.AioRpcError as e:
        return got, e


def _told(err: grpc.aio.AioRpcError) -> int:
    return int(re.search(r"from_seq=(\d+)", err.details()).group(1))


def test_the_resume_point_of_an_ending_stream_follows_its_last_update(server_config,
                                                                     start_server):
    st = start_server(server_config)
    seed_book(st.engine).receive("SKU-1", "WH-EAST", 1, pool="online")

    async def main():
        async with connect(st.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"],
                                                 coalesce_ms=1_000), metadata=TMALL,
                                  timeout=20)
            first = await _next(w)
            await s.reservations.Reserve(reserve("o-1", "tmall", ("SKU-1", 1)),
                                         metadata=ADMIN, timeout=10)  # sold_out alert
            while not any(sub.alerts for sub in st.server.hub.subscribers):
                await asyncio.sleep(0.005)  # the subscriber holds it, gathering
            stopping = asyncio.get_running_loop().run_in_executor(None, st.stop)
            updates, err = await _drain(w)
            await stopping
            return first, updates, err

    first, updates, err = run(main())
    assert [a.kind for u in updates for a in u.alerts] == ["sold_out"]  # sent before the end
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert _told(err) == updates[-1].seq + 1  # not first.seq + 1: that would repeat it

    again = start_server(server_config)

    async def resume():
        async with connect(again.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", skus=["SKU-1"],
                                                 from_seq=_told(err)), metadata=TMALL,
                                  timeout=20)
            m = await _next(w)
            w.cancel()
            return m

    assert not run(resume()).alerts


def test_a_digest_past_the_alert_buffer_is_taken_whole_or_not_at_all(server, monkeypatch):
    monkeypatch.setattr(watch_mod, "WATCH_ALERTS_BUFFERED_MAX", 2)  # stands for 10,000
    eng = server.engine
    for sku in ("A", "B", "C"):
        eng.receive(sku, "WH-EAST", 1, pool="online")

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1_000),
                                  metadata=TMALL, timeout=20)
            first = await _next(w)
            # One durable batch, three sold_out alerts: more than the buffer takes.
            await s.reservations.ReserveBatch(R.ReserveBatchRequest(requests=[
                reserve(f"o-{k}", "tmall", (k, 1)) for k in "ABC"]), metadata=ADMIN,
                timeout=10)
            ups, err = await _drain(w)
            # Resuming where it says, the three alerts come, once each.
            w2 = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=_told(err)),
                                   metadata=TMALL, timeout=20)
            again = await _until(w2, lambda us: sum(len(u.alerts) for u in us) >= 3)
            w2.cancel()
            return first, ups, err, again

    first, ups, err, again = run(main())
    assert err.code() == grpc.StatusCode.UNAVAILABLE and "fell behind" in err.details()
    assert not [a for u in ups for a in u.alerts]  # none of the refused digest went out
    assert _told(err) == (ups[-1].seq if ups else first.seq) + 1
    assert sorted(a.sku for u in again for a in u.alerts) == ["A", "B", "C"]
    assert all(a.seq <= u.seq for u in again for a in u.alerts)


def test_a_resume_over_more_alerts_than_the_buffer_holds_makes_progress(server, monkeypatch):
    monkeypatch.setattr(watch_mod, "WATCH_ALERTS_BUFFERED_MAX", 2)  # stands for 10,000
    eng = server.engine
    for i in range(3):  # each round: sold_out, then back_in_stock
        eng.receive("SKU-1", "WH-EAST", 1, pool="online")
        eng.reserve(f"o-{i}", "tmall", [("SKU-1", 1)])

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=1),
                                  metadata=TMALL, timeout=20)
            ups = await _until(w, lambda us: sum(len(u.alerts) for u in us) >= 6)
            w.cancel()
            return ups

    ups = run(main())
    seen = [(a.seq, a.kind) for u in ups for a in u.alerts]
    assert seen == _channel_alerts(eng, {("WH-EAST", "online"), ("WH-WEST", "online")})
    assert len(seen) == 6 and all(len(u.alerts) <= 2 for u in ups)
    assert [u.seq for u in ups] == sorted(u.seq for u in ups)


def test_a_stream_from_now_starts_after_the_last_durable_event(server):
    # An event decided but never written (a failed write) gives its seq to the next
    # one: a stream that started "after" it must still get that next one.
    from stockgate.engine import StoreFullError

    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 1, pool="online")
    gate, failing = threading.Event(), {"on": True}
    store_write = eng._store.write

    def write(*a, **k):
        if failing["on"]:
            gate.wait(10)
            raise StoreFullError("disk full (test)")
        return store_write(*a, **k)

    async def main():
        async with connect(server.address) as s:
            eng._store.write = write
            doomed = asyncio.ensure_future(s.reservations.Reserve(
                reserve("lost", "tmall", ("SKU-1", 1)), metadata=ADMIN, timeout=10))
            while eng.reservation("lost") is None:  # decided, not durable
                await asyncio.sleep(0.005)
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", coalesce_ms=1),
                                  metadata=TMALL, timeout=20)
            first = await _next(w)
            failing["on"] = False
            gate.set()
            with pytest.raises(grpc.aio.AioRpcError):
                await doomed
            # The same sale again, durable this time: it reuses the failed batch's seqs.
            await s.reservations.Reserve(reserve("kept", "tmall", ("SKU-1", 1)),
                                         metadata=ADMIN, timeout=10)
            ups = await _until(w, lambda us: any(a.kind == "sold_out"
                                                 for u in us for a in u.alerts))
            w.cancel()
            return first, ups

    first, ups = run(main())
    sold_out = [ev["seq"] for ev in eng.journal(1) if ev["kind"] == "sold_out"]
    assert first.seq < sold_out[0]
    assert [a.seq for u in ups for a in u.alerts if a.kind == "sold_out"] == sold_out


def test_a_from_seq_past_the_journal_is_refused(server):
    async def main():
        async with connect(server.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.watch.Subscribe(W.WatchRequest(
                    channel="tmall", from_seq=server.engine.last_seq + 2), metadata=TMALL,
                    timeout=10).read()
            return e.value

    err = run(main())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)["bad_request"][0][0] == "from_seq"


def test_a_store_failure_while_resuming_is_unavailable(server):
    from stockgate.engine import CorruptRecord, StoreError

    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 1, pool="online")
    failure = {"exc": StoreError("read failed (test)")}

    def broken(*a, **k):
        raise failure["exc"]

    eng._store.read_journal = broken

    async def code():
        async with connect(server.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=1),
                                        metadata=TMALL, timeout=10).read()
            return e.value.code()

    assert run(code()) == grpc.StatusCode.UNAVAILABLE
    failure["exc"] = CorruptRecord("unreadable (test)")
    assert run(code()) == grpc.StatusCode.INTERNAL


# ---------------------------------------------------------------------- message size


def test_a_large_update_comes_in_messages_within_the_limit_only_the_last_advancing_seq(
        server):
    eng = server.engine
    n = 300
    eng.import_rows([(f"S-{i:03d}", "WH-EAST", "online", 1) for i in range(n)])
    first_seq = eng.last_seq
    for i in range(0, n, 3):  # 100 sold_out alerts, one batch each third SKU
        eng.reserve(f"o-{i}", "tmall", [(f"S-{i:03d}", 1)])
    service = server.server.watch
    service.update_bytes = 4_000  # stands for half of message_bytes_max: 50 changes or 10 alerts

    async def main():
        async with connect(server.address) as s:
            w = s.watch.Subscribe(W.WatchRequest(channel="tmall", from_seq=first_seq),
                                  metadata=TMALL, timeout=20)
            ups = await _until(w, lambda us: bool(us) and us[-1].seq == eng.last_seq)
            w.cancel()
            return ups

    ups = run(main())
    assert len(ups) > 10 and all(u.ByteSize() <= 4_000 for u in ups)
    assert {c.sku for u in ups for c in u.changes} >= {f"S-{i:03d}" for i in range(n)}
    alerts = [a.seq for u in ups for a in u.alerts]
    assert alerts == sorted(alerts) and len(alerts) == 100
    # A message before the last never claims more than what came before and with it,
    # so resuming after any of them repeats and loses no alert.
    for k, u in enumerate(ups[:-1]):
        assert u.seq <= ups[-1].seq
        assert all(a.seq <= u.seq for m in ups[:k + 1] for a in m.alerts)
        assert all(a.seq > u.seq for m in ups[k + 1:] for a in m.alerts)


def test_an_update_is_cut_by_the_largest_change_and_alert_sizes():
    from stockgate.server import wire
    from stockgate.server.watch import WatchService

    svc = WatchService.__new__(WatchService)
    svc.update_bytes = wire.answer_bytes_target(1 << 20)
    parts = svc._cut(100_000, 5_000)
    assert parts[0][:2] == (0, svc.update_bytes // wire.CHANGE_BYTES_MAX)
    assert all((ce - cb) * wire.CHANGE_BYTES_MAX + (ae - ab) * wire.ALERT_BYTES_MAX
               <= svc.update_bytes for cb, ce, ab, ae in parts)
    assert parts[-1][1] == 100_000 and parts[-1][3] == 5_000
    assert svc._cut(0, 0) == [(0, 0, 0, 0)]  # the first update of a stream goes, empty
