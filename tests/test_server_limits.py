"""Answers within message_bytes_max: Session responses cut to size, batch calls whose
answer could not fit refused before anything is done, the worst-case sizes the server
counts on."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from server_calls import ADMIN, R, T, W, connect, details, reserve, run, seed_book

from stockgate.engine import limits
from stockgate.server import wire

MIB = 1 << 20


def _longest(n: int) -> str:
    return "x" * n


def test_the_worst_case_sizes_hold_at_every_limit():
    s = _longest
    res = T.Reservation(reservation_id=s(limits.RESERVATION_ID_BYTES_MAX),
                        channel=s(limits.CHANNEL_BYTES_MAX), state=T.STATE_EXPIRED,
                        customer=s(limits.CUSTOMER_BYTES_MAX),
                        campaign=s(limits.CAMPAIGN_BYTES_MAX),
                        created_ms=limits.TIME_MS_MAX, expires_ms=limits.TIME_MS_MAX,
                        resolved_ms=limits.TIME_MS_MAX)
    for _ in range(limits.LINES_PER_RESERVATION_MAX):
        ln = res.lines.add(sku=s(limits.SKU_BYTES_MAX), qty=limits.QTY_MAX,
                           granted=limits.QTY_MAX, outcome=T.OUTCOME_NOT_HELD)
        for _ in range(limits.SOURCES_PER_CHANNEL_MAX):
            ln.allocations.add(location=s(limits.LOCATION_BYTES_MAX),
                               pool=s(limits.POOL_BYTES_MAX), qty=limits.QTY_MAX)
        res.committed.add(sku=s(limits.SKU_BYTES_MAX), qty=limits.QTY_MAX)
    one = R.SessionResponse()
    one.results.add(id=(1 << 64) - 1, result=T.Result(outcome=T.OUTCOME_NOT_HELD,
                                                      reservation=res, replayed=True))
    assert one.ByteSize() <= wire.RESULT_BYTES_MAX
    from stockgate.server.config import MESSAGE_BYTES_MIN

    assert wire.RESULT_BYTES_MAX <= wire.answer_bytes_target(MESSAGE_BYTES_MIN)

    upd = W.WatchUpdate()
    upd.changes.add(sku=s(limits.SKU_BYTES_MAX), available=-(1 << 63))
    assert upd.ByteSize() <= wire.CHANGE_BYTES_MAX
    upd = W.WatchUpdate()
    upd.alerts.add(seq=limits.SEQ_MAX, kind="below_safety_stock", t_ms=-(1 << 63),
                   sku=s(limits.SKU_BYTES_MAX), location=s(limits.LOCATION_BYTES_MAX),
                   pool=s(limits.POOL_BYTES_MAX), campaign=s(limits.CAMPAIGN_BYTES_MAX),
                   channel=s(limits.CHANNEL_BYTES_MAX), available=-(1 << 63),
                   threshold=-(1 << 63))
    assert upd.ByteSize() <= wire.ALERT_BYTES_MAX

    # What one line's allocations add, counted from the channel's sources.
    sources = [("WH-EAST", "online"), (s(limits.LOCATION_BYTES_MAX), s(limits.POOL_BYTES_MAX))]
    line = T.LineResult()
    for loc, pool in sources:
        line.allocations.add(location=loc, pool=pool, qty=limits.QTY_MAX)
    assert line.ByteSize() <= wire.allocation_bytes(sources)
    line = T.LineResult()
    line.allocations.add(location=s(limits.LOCATION_BYTES_MAX), qty=limits.QTY_MAX,
                         pool="campaign:" + s(limits.CAMPAIGN_BYTES_MAX))
    assert line.ByteSize() <= wire.CAMPAIGN_ALLOCATION_BYTES_MAX


@pytest.fixture
def small(server_config, start_server):
    """A server at the smallest message size, with SKU-0..SKU-19 in stock for tmall
    (durability async: what is measured here is sizes, not disks)."""
    st = start_server(dataclasses.replace(server_config, message_bytes_max=MIB,
                                          durability="async"))
    eng = seed_book(st.engine)
    eng.import_rows([(f"SKU-{k}", "WH-EAST", "online", 100_000) for k in range(20)])
    return st


def _many_lines(n: int, prefix: str = "o") -> list[R.ReserveRequest]:
    # 20 lines each: the answer is about 4 times the request.
    return [reserve(f"{prefix}-{i}", "tmall", *[(f"SKU-{k}", 1) for k in range(20)])
            for i in range(n)]


def test_session_answers_past_the_message_size_come_in_several_messages(small):
    reqs = _many_lines(1_600)
    msg = R.SessionRequest(ops=[R.Operation(id=i, reserve=r) for i, r in enumerate(reqs)])
    assert msg.ByteSize() < MIB

    async def main():
        async with connect(small.address, options=[
                ("grpc.max_receive_message_length", 64 * MIB)]) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=30)
            await call.write(msg)
            await call.done_writing()
            return [resp async for resp in call]

    responses = run(main())
    assert sum(r.ByteSize() for r in responses) > MIB  # more than one message could hold
    assert len(responses) > 2 and all(r.ByteSize() <= MIB for r in responses)
    answers = {a.id: a for r in responses for a in r.results}
    assert len(answers) == 1_600
    assert {a.result.outcome for a in answers.values()} == {T.OUTCOME_OK}


def test_a_batch_whose_answer_could_not_fit_is_refused_before_anything_is_done(small):
    eng = small.engine

    async def main():
        async with connect(small.address) as s:
            big = R.ReserveBatchRequest(requests=_many_lines(2_000))
            assert big.ByteSize() < MIB
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.reservations.ReserveBatch(big, metadata=ADMIN, timeout=30)
            fits = await s.reservations.ReserveBatch(
                R.ReserveBatchRequest(requests=_many_lines(200, "p")), metadata=ADMIN,
                timeout=30)
            return e.value, fits

    err, fits = run(main())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    ((field, problem),) = details(err)["bad_request"]
    assert field == "requests" and f"message_bytes_max) is {MIB} bytes" in problem
    assert eng.reservation("o-0") is None and eng.reservation("o-1999") is None
    assert [r.outcome for r in fits.results] == [T.OUTCOME_OK] * 200


def test_a_batch_answer_grown_past_the_limit_is_refused_and_replays_in_smaller_batches(
        small):
    # Releasing reservations of many lines: the answer's size comes from the state, not
    # the request, so it can only be told once done.
    eng = small.engine
    for r in _many_lines(300):
        eng.reserve(r.reservation_id, "tmall", [(ln.sku, ln.qty) for ln in r.lines])
    small.server.reservations._message_bytes_max = 50_000  # stands for a larger load
    release = [R.ReleaseRequest(reservation_id=f"o-{i}") for i in range(300)]

    async def main():
        async with connect(small.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.reservations.ReleaseBatch(R.ReleaseBatchRequest(requests=release),
                                                  metadata=ADMIN, timeout=30)
            again = [await s.reservations.ReleaseBatch(R.ReleaseBatchRequest(
                requests=release[i:i + 50]), metadata=ADMIN, timeout=30)
                for i in range(0, 300, 50)]
            return e.value, again

    err, again = run(main())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "were done" in err.details() and "smaller batches" in err.details()
    assert all(r.replayed and r.reservation.state == T.STATE_RELEASED
               for b in again for r in b.results)
    assert sum(b.held for b in eng.stock("SKU-0")) == 0
