"""The clients' Session wire codec in C (clients/_codec.pyx) against the protobuf runtime.

Writing: a reserve in the common shape becomes exactly the bytes protobuf serializes for
the ReserveRequest wire.fill_reserve() fills, anything else goes through protobuf (which
names the field at fault as before), and framed operations parse to the SessionRequest
protobuf would build. Reading: a SessionResponse reads to exactly the records the
protobuf path gives, and anything out of the common shape is left to that path.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockgate.clients import InvalidArgument, StockgateError, _codec, wire
from stockgate.clients.session import Outbox, Pending
from stockgate.v1 import reservations_pb2 as R
from stockgate.v1 import types_pb2 as T

TEXT = st.text(max_size=12)  # any code point but lone surrogates: unicode ids included
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
OUTCOMES = st.sampled_from(sorted(T.Outcome.values()))  # every outcome the wire has
STATES = st.sampled_from(sorted(v for v in T.State.values() if v))  # 0: no state


def by_protobuf(rid, channel, lines, customer, campaign, ttl_ms, partial, prefer) -> bytes:
    return wire.reserve_request(rid, channel, lines, customer=customer, campaign=campaign,
                                ttl_ms=ttl_ms, partial=partial,
                                prefer_locations=prefer).SerializeToString()


reserve_args = st.tuples(
    TEXT, TEXT, st.lists(st.tuples(TEXT, INT64), max_size=4), st.none() | TEXT,
    st.none() | TEXT, INT64, st.booleans(),
    st.lists(TEXT, max_size=3) | st.lists(TEXT, max_size=3).map(tuple))


@given(reserve_args)
def test_a_common_reserve_is_written_as_protobuf_writes_it(args) -> None:
    body = _codec.reserve_body(*args)
    assert body is not None and body == by_protobuf(*args)
    assert wire.reserve_operation(*args[:3], customer=args[3], campaign=args[4],
                                  ttl_ms=args[5], partial=args[6],
                                  prefer_locations=args[7]) == (3, body)


@pytest.mark.parametrize("change, field", [
    ({"lines": [("SKU-1", True)]}, "lines[0].qty"),
    ({"lines": [("SKU-1", 2**63)]}, "lines[0].qty"),
    ({"lines": [(7, 1)]}, "lines[0].sku"),
    ({"lines": [("SKU-1", 1, 2)]}, "lines[0]"),
    ({"reservation_id": b"r-1"}, "reservation_id"),
    ({"channel": 5}, "channel"),
    ({"customer": 5}, "customer"),
    ({"ttl_ms": 1.5}, "ttl_ms"),
    ({"ttl_ms": -(2**63) - 1}, "ttl_ms"),
    ({"prefer_locations": "WH"}, "prefer_locations"),
    ({"prefer_locations": ["WH", 5]}, "prefer_locations[1]"),
])
def test_a_reserve_out_of_shape_goes_through_protobuf_and_names_its_field(change, field):
    args = {"reservation_id": "r-1", "channel": "web", "lines": [("SKU-1", 1)],
            "customer": None, "campaign": None, "ttl_ms": 0, "partial": False,
            "prefer_locations": ()}
    args.update(change)
    assert _codec.reserve_body(*args.values()) is None
    with pytest.raises(InvalidArgument) as e:
        wire.reserve_operation(args.pop("reservation_id"), args.pop("channel"),
                               args.pop("lines"), **args)
    assert e.value.field == field


def test_other_shapes_of_lines_give_the_same_bytes():
    common = wire.reserve_operation("r-1", "web", [("A", 1), ("B", 2)], customer=None,
                                    campaign=None, ttl_ms=0, partial=False,
                                    prefer_locations=None)
    for lines in ({"A": 1, "B": 2}, [["A", 1], ["B", 2]], (("A", 1), ("B", 2))):
        assert wire.reserve_operation("r-1", "web", lines, customer=None, campaign=None,
                                      ttl_ms=0, partial=False,
                                      prefer_locations=None) == common


def test_a_lone_surrogate_is_refused_as_before():
    with pytest.raises(InvalidArgument) as e:
        wire.reserve_operation("r-\ud800", "web", [("A", 1)], customer=None, campaign=None,
                               ttl_ms=0, partial=False, prefer_locations=None)
    assert e.value.field == "reservation_id"


@given(st.lists(st.tuples(UINT64, INT64, st.sampled_from(["reserve", "commit", "release"]),
                          TEXT), max_size=6))
def test_framed_operations_parse_as_protobuf_builds_them(ops) -> None:
    expected = R.SessionRequest()
    framed = []
    for op_id, timeout_ms, kind, rid in ops:
        op = expected.ops.add(id=op_id, timeout_ms=timeout_ms)
        request = getattr(op, kind)
        request.reservation_id = rid
        framed.append((op_id, timeout_ms, *wire.operation(kind, request)))
    assert R.SessionRequest.FromString(wire.session_request(framed)) == expected


# --------------------------------------------------------------------------- reading

@st.composite
def line_results(draw) -> T.LineResult:
    ln = T.LineResult(sku=draw(TEXT), qty=draw(INT64), granted=draw(INT64),
                      outcome=draw(OUTCOMES))
    for loc, pool, qty in draw(st.lists(st.tuples(TEXT, TEXT, INT64), max_size=3)):
        ln.allocations.add(location=loc, pool=pool, qty=qty)
    return ln


@st.composite
def results(draw) -> T.Result:
    r = T.Result(outcome=draw(OUTCOMES), replayed=draw(st.booleans()))
    if draw(st.booleans()):
        res = r.reservation
        res.reservation_id, res.channel = draw(TEXT), draw(TEXT)
        res.state = draw(STATES)
        res.lines.extend(draw(st.lists(line_results(), max_size=3)))
        res.customer, res.campaign = draw(TEXT), draw(TEXT)
        res.created_ms, res.expires_ms, res.resolved_ms = draw(INT64), draw(INT64), draw(INT64)
        for sku, qty in draw(st.lists(st.tuples(TEXT, INT64), max_size=2)):
            res.committed.add(sku=sku, qty=qty)
    else:
        r.lines.extend(draw(st.lists(line_results(), max_size=3)))
    return r


errors = st.builds(T.Error, code=INT32, message=TEXT, field=TEXT, retry_after_ms=INT64)


@st.composite
def responses(draw) -> R.SessionResponse:
    m = R.SessionResponse()
    for op_id, answer in draw(st.lists(st.tuples(UINT64, results() | errors | st.none()),
                                       max_size=5)):
        r = m.results.add(id=op_id)
        if isinstance(answer, T.Result):
            r.result.CopyFrom(answer)
        elif answer is not None:
            r.error.CopyFrom(answer)
    m.refused_ids.extend(draw(st.lists(UINT64, max_size=4)))
    if m.refused_ids or draw(st.booleans()):
        m.refused_error.CopyFrom(draw(errors))
    return m


def protobuf_answers(m: R.SessionResponse):
    answers = [(r.id, wire.result(r.result), None) if r.HasField("result")
               else (r.id, None, wire.error_answer(r.error) if r.HasField("error") else None)
               for r in m.results]
    refused = wire.error_answer(m.refused_error) if m.HasField("refused_error") else None
    return answers, list(m.refused_ids), refused


@given(responses())
def test_an_answer_reads_as_protobuf_reads_it(m) -> None:
    raw = m.SerializeToString()
    got = _codec.read_session_response(raw, wire._TYPES)
    assert got is not None
    want = protobuf_answers(m)
    assert got == want
    # Same records, same types all the way down: tuples of the clients' classes (Result,
    # LineResult, Allocation, ErrorAnswer...), enums as members, not plain ints or tuples.
    assert_same_types(got, want)


def assert_same_types(got, want) -> None:
    assert type(got) is type(want), (got, want)
    if isinstance(want, (tuple, list)):
        for g, w in zip(got, want, strict=True):
            assert_same_types(g, w)


def frame(operation_result: bytes) -> bytes:
    """A SessionResponse of one OperationResult given as bytes."""
    return bytes([1 << 3 | 2, len(operation_result)]) + operation_result


def unknown_field(m: R.SessionResponse) -> bytes:
    return m.SerializeToString() + bytes([15 << 3 | 0, 1])  # field 15, varint 1


@pytest.mark.parametrize("build, then", [
    (lambda: R.SessionResponse(results=[R.OperationResult(id=1, result=T.Result(
        outcome=99))]).SerializeToString(), "unreadable"),
    (lambda: R.SessionResponse(results=[R.OperationResult(id=1, result=T.Result(
        reservation=T.Reservation(reservation_id="r")))]).SerializeToString(), "unreadable"),
    (lambda: unknown_field(R.SessionResponse(results=[R.OperationResult(
        id=1, result=T.Result())])), "ok"),
    (lambda: frame(b"\x08\x01\x12\x04" + b"\x08\x00" * 2), "ok"),  # outcome given twice
])
def test_an_answer_out_of_shape_is_read_by_protobuf(build, then):
    raw = build()
    assert _codec.read_session_response(raw, wire._TYPES) is None
    answers, _, _ = wire.session_answers(raw)
    op_id, res, err = answers[0]
    assert op_id == 1
    if then == "ok":
        assert res is not None and res.ok and err is None
    else:
        assert res is None and isinstance(err, StockgateError)
        assert "unreadable answer" in err.message


def test_garbage_is_an_unreadable_response_and_routes_nothing():
    box = Outbox()
    settled = []
    p = Pending(wire.operation("release", R.ReleaseRequest(reservation_id="r")), 100.0,
                lambda res, err: settled.append((res, err)))
    box.add(p)
    box.take_message(0.0)
    with pytest.raises(wire.UnreadableResponse):
        box.answer(b"\xff\xff\xff", 0.0)
    assert settled == [] and box.in_flight == {p.id: p}


def test_an_operation_counts_its_size_as_protobuf_does():
    for rid in ("", "r", "r" * 200, "r" * 20_000):
        request = R.ReleaseRequest(reservation_id=rid)
        p = Pending(wire.operation("release", request), 100.0, lambda res, err: None)
        assert p.size == R.Operation(release=request).ByteSize()


def test_a_message_that_cannot_be_written_leaves_nothing_in_flight(monkeypatch):
    box = Outbox()
    p = Pending(wire.operation("release", R.ReleaseRequest(reservation_id="r")), 100.0,
                lambda res, err: None)
    box.add(p)

    def broken(ops):
        raise OverflowError("a bug")
    monkeypatch.setattr(wire, "session_request", broken)
    with pytest.raises(OverflowError):
        box.take_message(0.0)
    assert box.in_flight == {} and list(box.queue) == [p] and p.attempts == 0


# --------------------------------------------------------------------------- a bad server

GARBAGE = b"\x0a\x05\x08"  # an OperationResult cut short: protobuf cannot read it
GARBAGE_RUN_S = 1.5  # long enough for several reconnects, with the backoff or without
STREAMS_WITH_BACKOFF_MAX = 10  # 50, 100, 200, 400, 800 ms...: without it, one per 50 ms


@pytest.mark.parametrize("flavour", ["async", "sync"])
def test_a_server_sending_garbage_is_reconnected_to_with_backoff(flavour):
    import asyncio
    import logging

    import grpc
    import grpc.aio

    from stockgate.clients import AsyncClient, Client, DeadlineExceeded, Unavailable

    async def session(request_iterator, context):
        async for _ in request_iterator:
            yield GARBAGE

    async def scenario():
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "stockgate.v1.Reservations",
            {"Session": grpc.stream_stream_rpc_method_handler(session)}),))
        address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        try:
            if flavour == "async":
                c = AsyncClient(address)
                with pytest.raises((Unavailable, DeadlineExceeded)) as e:
                    await c.reserve("r-1", "web", [("A", 1)], timeout=GARBAGE_RUN_S)
                opened = c._session.streams_opened
                await c.close()
            else:
                c = Client(address)
                with pytest.raises((Unavailable, DeadlineExceeded)) as e:
                    await asyncio.to_thread(c.reserve, "r-1", "web", [("A", 1)],
                                            timeout=GARBAGE_RUN_S)
                opened = c._session.streams_opened
                c.close()
        finally:
            await server.stop(0)
        return opened, e.value

    logging.disable(logging.WARNING)
    try:
        opened, error = asyncio.run(scenario())
    finally:
        logging.disable(logging.NOTSET)
    assert 2 <= opened <= STREAMS_WITH_BACKOFF_MAX, (opened, error)
    assert "could not be read" in error.message, error


@pytest.mark.parametrize("error_t", [None, list, object, int])
def test_record_types_must_be_tuple_types(error_t):
    from stockgate.clients.results import Allocation, LineResult, Reservation, Result

    with pytest.raises(TypeError):
        _codec._Types(Result, Reservation, LineResult, Allocation, error_t,
                      wire._OUTCOMES, (None, 1))
