"""The Reservations service over the wire: unary calls, batch forms and Session, against a
real server and engine."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from server_calls import ADMIN, HeldDisk, R, T, connect, details, reserve, run

OK = T.OUTCOME_OK
SHORT = T.OUTCOME_INSUFFICIENT_STOCK


async def _call(server, method: str, request, metadata=ADMIN):
    async with connect(server.address) as s:
        return await getattr(s.reservations, method)(request, metadata=metadata, timeout=10)


def call(server, method: str, request, metadata=ADMIN):
    return run(_call(server, method, request, metadata))


def refused(server, method: str, request, metadata=ADMIN) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        call(server, method, request, metadata)
    return e.value


# ---------------------------------------------------------------------- unary


def test_reserve_holds_stock_and_answers_where_from(server):
    server.engine.receive("SKU-1", "WH-EAST", 5, pool="online")
    server.engine.receive("SKU-1", "WH-WEST", 5, pool="online")
    r = call(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 7), customer="alice"))
    assert r.outcome == OK and not r.replayed
    res = r.reservation
    assert (res.reservation_id, res.channel, res.state, res.customer) == (
        "o-1", "tmall", T.STATE_HELD, "alice")
    assert res.campaign == "" and res.resolved_ms == 0
    assert res.expires_ms - res.created_ms == 900_000  # ttl_ms 0 means the default
    (line,) = res.lines
    assert (line.sku, line.qty, line.granted, line.outcome) == ("SKU-1", 7, 7, OK)
    assert [(a.location, a.pool, a.qty) for a in line.allocations] == [
        ("WH-EAST", "online", 5), ("WH-WEST", "online", 2)]
    assert not r.lines  # per-line outcomes ride in the reservation
    assert server.engine.availability("tmall", ["SKU-1"]) == {"SKU-1": 3}


@pytest.mark.parametrize("lines, partial, outcome, per_line", [
    # SKU-A has 3 units, SKU-B 10, SKU-Z none ever.
    ([("SKU-A", 5), ("SKU-B", 1)], False, SHORT, [SHORT, OK]),
    ([("SKU-Z", 1)], False, T.OUTCOME_UNKNOWN_SKU, [T.OUTCOME_UNKNOWN_SKU]),
    ([("SKU-A", 5), ("SKU-B", 1)], True, T.OUTCOME_PARTIAL, [SHORT, OK]),
])
def test_per_line_outcomes(server, lines, partial, outcome, per_line):
    server.engine.receive("SKU-A", "WH-EAST", 3, pool="online")
    server.engine.receive("SKU-B", "WH-EAST", 10, pool="online")
    r = call(server, "Reserve", reserve("o-1", "tmall", *lines, partial=partial))
    assert r.outcome == outcome
    got = r.reservation.lines if r.HasField("reservation") else r.lines
    assert [ln.outcome for ln in got] == per_line


def test_same_id_twice_is_replayed_and_other_content_conflicts(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    first = call(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 2)))
    again = call(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 2)))
    assert first.outcome == again.outcome == OK
    assert again.replayed and again.reservation == first.reservation
    other = call(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 3)))
    assert other.outcome == T.OUTCOME_ID_CONFLICT
    assert server.engine.stock("SKU-1")[0].held == 2


def test_malformed_reserve_is_invalid_argument_naming_the_field_and_limit(server):
    err = refused(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 0)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    (field, problem), = details(err)["bad_request"]
    assert field == "lines[0].qty" and "1000000000" in problem
    err = refused(server, "Reserve", reserve("o-1", "tmall", ("SKU-1", 1), ttl_ms=999))
    assert details(err)["bad_request"][0][0] == "ttl_ms"
    err = refused(server, "Reserve", reserve("", "tmall", ("SKU-1", 1)))
    assert details(err)["bad_request"][0][0] == "reservation_id"
    err = refused(server, "Reserve", reserve("o-1", "nowhere", ("SKU-1", 1)))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert details(err)["bad_request"][0][0] == "channel"


def test_commit_release_extend_amend(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    for rid in ("a", "b", "c", "d"):
        assert call(server, "Reserve", reserve(rid, "tmall", ("SKU-1", 2))).outcome == OK

    c = call(server, "Commit", R.CommitRequest(reservation_id="a"))
    assert c.outcome == OK and c.reservation.state == T.STATE_COMMITTED
    assert [(ln.sku, ln.qty) for ln in c.reservation.committed] == [("SKU-1", 2)]
    assert c.reservation.resolved_ms > 0
    part = call(server, "Commit", R.CommitRequest(reservation_id="b",
                                                  lines=[T.Line(sku="SKU-1", qty=1)]))
    assert [(ln.sku, ln.qty) for ln in part.reservation.committed] == [("SKU-1", 1)]

    rel = call(server, "Release", R.ReleaseRequest(reservation_id="c"))
    assert rel.outcome == OK and rel.reservation.state == T.STATE_RELEASED
    assert call(server, "Release", R.ReleaseRequest(reservation_id="c")).replayed
    assert call(server, "Commit", R.CommitRequest(reservation_id="c")).outcome == \
        T.OUTCOME_NOT_HELD

    ext = call(server, "Extend", R.ExtendRequest(reservation_id="d", ttl_ms=3_600_000))
    assert ext.outcome == OK
    assert ext.reservation.expires_ms - ext.reservation.created_ms >= 3_600_000
    am = call(server, "Amend", R.AmendRequest(reservation_id="d",
                                              lines=[T.Line(sku="SKU-1", qty=5)]))
    assert am.outcome == OK and am.reservation.lines[0].granted == 5
    too_much = call(server, "Amend", R.AmendRequest(reservation_id="d",
                                                    lines=[T.Line(sku="SKU-1", qty=50)]))
    assert too_much.outcome == SHORT and not too_much.HasField("reservation")
    assert [ln.outcome for ln in too_much.lines] == [SHORT]

    assert call(server, "Release", R.ReleaseRequest(reservation_id="nope")).outcome == \
        T.OUTCOME_NOT_FOUND
    err = refused(server, "Extend", R.ExtendRequest(reservation_id="d", ttl_ms=0))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    err = refused(server, "Commit", R.CommitRequest(reservation_id="d",
                                                    lines=[T.Line(sku="SKU-1", qty=6)]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert eng.check().ok


# ---------------------------------------------------------------------- batches


def test_reserve_batch_answers_in_order(server):
    server.engine.receive("SKU-1", "WH-EAST", 3, pool="online")
    batch = R.ReserveBatchRequest(requests=[
        reserve(f"o-{i}", "tmall", ("SKU-1", 1)) for i in range(5)])
    resp = call(server, "ReserveBatch", batch)
    assert [r.outcome for r in resp.results] == [OK, OK, OK, SHORT, SHORT]
    assert [r.reservation.reservation_id for r in resp.results[:3]] == ["o-0", "o-1", "o-2"]


@pytest.mark.parametrize("n", [1, 3])
def test_a_malformed_batch_item_fails_the_call_and_nothing_is_done(server, n):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    reqs = [reserve(f"o-{i}", "tmall", ("SKU-1", 1)) for i in range(n)]
    reqs[-1].lines[0].qty = -1
    err = refused(server, "ReserveBatch", R.ReserveBatchRequest(requests=reqs))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)["bad_request"][0][0] == f"requests[{n - 1}].lines[0].qty"
    assert server.engine.stock("SKU-1")[0].held == 0

    err = refused(server, "CommitBatch", R.CommitBatchRequest(requests=[
        R.CommitRequest(reservation_id="x"), R.CommitRequest(reservation_id="")]))
    assert details(err)["bad_request"][0][0] == "requests[1].reservation_id"
    err = refused(server, "ReleaseBatch", R.ReleaseBatchRequest())
    assert details(err)["bad_request"][0][0] == "requests"


def test_commit_release_extend_amend_batches(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    call(server, "ReserveBatch", R.ReserveBatchRequest(requests=[
        reserve(f"o-{i}", "tmall", ("SKU-1", 1)) for i in range(4)]))
    ext = call(server, "ExtendBatch", R.ExtendBatchRequest(requests=[
        R.ExtendRequest(reservation_id=f"o-{i}", ttl_ms=60_000) for i in range(4)]))
    assert [r.outcome for r in ext.results] == [OK] * 4
    am = call(server, "AmendBatch", R.AmendBatchRequest(requests=[
        R.AmendRequest(reservation_id="o-0", lines=[T.Line(sku="SKU-1", qty=2)]),
        R.AmendRequest(reservation_id="zzz", lines=[T.Line(sku="SKU-1", qty=2)])]))
    assert [r.outcome for r in am.results] == [OK, T.OUTCOME_NOT_FOUND]
    com = call(server, "CommitBatch", R.CommitBatchRequest(requests=[
        R.CommitRequest(reservation_id="o-0"), R.CommitRequest(reservation_id="o-1")]))
    assert [r.reservation.state for r in com.results] == [T.STATE_COMMITTED] * 2
    rel = call(server, "ReleaseBatch", R.ReleaseBatchRequest(requests=[
        R.ReleaseRequest(reservation_id="o-2"), R.ReleaseRequest(reservation_id="o-0")]))
    assert [r.outcome for r in rel.results] == [OK, T.OUTCOME_NOT_HELD]
    assert server.engine.check().ok


# ---------------------------------------------------------------------- Session


def _op(i: int, **kw) -> R.Operation:
    return R.Operation(id=i, **kw)


async def _session(server, messages, metadata=ADMIN):
    """Send each message, then half-close; return every OperationResult by id and the
    number of response messages."""
    async with connect(server.address) as s:
        call = s.reservations.Session(metadata=metadata, timeout=20)
        for m in messages:
            await call.write(m)
        await call.done_writing()
        answers, responses = {}, 0
        async for resp in call:
            responses += 1
            for r in resp.results:
                assert r.id not in answers
                answers[r.id] = r
        return answers, responses


def test_session_many_ops_per_message_few_responses(server):
    server.engine.receive("SKU-1", "WH-EAST", 1_000, pool="online")
    ops = [_op(1000 + i, reserve=reserve(f"s-{i}", "tmall", ("SKU-1", 1)))
           for i in range(2_000)]
    answers, responses = run(_session(server, [R.SessionRequest(ops=ops)]))
    assert set(answers) == {1000 + i for i in range(2_000)}
    outcomes = [answers[1000 + i].result.outcome for i in range(2_000)]
    assert outcomes.count(OK) == 1_000 and outcomes.count(SHORT) == 1_000
    assert responses <= 3  # one per durable batch, never one per op
    assert server.server.reservations.session_messages == 1
    assert answers[1000].result.reservation.reservation_id == "s-0"


def test_session_mixed_ops_and_an_invalid_one_answered_alone(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    first = R.SessionRequest(ops=[
        _op(1, reserve=reserve("a", "tmall", ("SKU-1", 2))),
        _op(2, reserve=reserve("b", "tmall", ("SKU-1", 0))),  # malformed
        _op(3),  # no operation at all
        _op(4, reserve=reserve("c", "nowhere", ("SKU-1", 1))),
        _op(5, reserve=reserve("d", "tmall", ("SKU-1", 3))),
    ])
    second = R.SessionRequest(ops=[
        _op(6, commit=R.CommitRequest(reservation_id="a")),
        _op(7, release=R.ReleaseRequest(reservation_id="d")),
        _op(8, extend=R.ExtendRequest(reservation_id="a", ttl_ms=5_000)),
        _op(9, amend=R.AmendRequest(reservation_id="zz", lines=[T.Line(sku="SKU-1", qty=1)])),
        _op(10, reserve=reserve("a", "tmall", ("SKU-1", 2))),
    ])
    answers, _ = run(_session(server, [first, second]))
    assert answers[1].result.outcome == OK
    assert (answers[2].error.code, answers[2].error.field) == (3, "lines[0].qty")
    assert (answers[3].error.code, answers[3].error.field) == (3, "op")
    assert (answers[4].error.code, answers[4].error.field) == (5, "channel")
    assert answers[5].result.outcome == OK
    assert answers[6].result.reservation.state == T.STATE_COMMITTED
    assert answers[7].result.reservation.state == T.STATE_RELEASED
    assert answers[8].result.outcome == T.OUTCOME_NOT_HELD
    assert answers[9].result.outcome == T.OUTCOME_NOT_FOUND
    assert answers[10].result.replayed
    assert server.engine.check().ok


def test_session_ops_past_their_timeout_are_dropped_unstarted(server, server_config,
                                                              start_server):
    import dataclasses

    tight = start_server(dataclasses.replace(server_config, data_dir=server_config.data_dir
                                             + "-tight", session_inflight_ops_max=1))
    eng = tight.engine
    eng.add_location("WH-EAST")
    eng.set_channel("tmall", [("WH-EAST", "online")])
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    # Hold the disk: the first op is decided but cannot become durable, so the second
    # waits behind the stream's bound of one op in flight, past its timeout.
    disk = HeldDisk(eng)

    async def main():
        async with connect(tight.address) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=20)
            disk.hold()
            await call.write(R.SessionRequest(ops=[
                _op(1, reserve=reserve("a", "tmall", ("SKU-1", 1)))]))
            await call.write(R.SessionRequest(ops=[
                _op(2, timeout_ms=20, reserve=reserve("b", "tmall", ("SKU-1", 1))),
                _op(3, reserve=reserve("c", "tmall", ("SKU-1", 1)))]))
            first = await call.read()  # the timed-out op, answered while the disk waits
            disk.release()
            await call.done_writing()
            got = list(first.results)
            while len(got) < 3:
                resp = await call.read()
                assert resp is not grpc.aio.EOF
                got += resp.results
            return got

    answers = {r.id: r for r in run(main())}
    assert answers[2].error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert answers[1].result.outcome == OK and answers[3].result.outcome == OK
    assert eng.reservation("b") is None and eng.reservation("c") is not None


def test_turns_group_unary_calls_behind_the_one_in_flight():
    from stockgate.server.reservations import Turns

    async def main():
        turns = Turns()
        log = []

        async def call(name, hold):
            await turns.enter()
            log.append(("in", name))
            await hold.wait()
            turns.leave()

        first_done, later_done = asyncio.Event(), asyncio.Event()
        a = asyncio.ensure_future(call("a", first_done))
        b = asyncio.ensure_future(call("b", first_done))  # same loop step: same group
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        c = asyncio.ensure_future(call("c", later_done))  # a later step: waits its turn
        d = asyncio.ensure_future(call("d", later_done))
        for _ in range(3):
            await asyncio.sleep(0)
        assert log == [("in", "a"), ("in", "b")]
        first_done.set()
        await asyncio.gather(a, b)
        for _ in range(3):
            await asyncio.sleep(0)
        assert log[2:] == [("in", "c"), ("in", "d")]  # released together
        later_done.set()
        await asyncio.gather(c, d)
        assert turns.running == 0
        await asyncio.wait_for(call("e", later_done), 1)  # idle: goes at once

    run(main())
