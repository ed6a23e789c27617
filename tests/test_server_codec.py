"""The Session wire codec in C (server/_codec.pyx) against the protobuf runtime.

Reading: a message of reserves is read to exactly what protobuf parsing plus
wire.reserve_request() gives; anything else is left (None) to protobuf, which accepts or
explains it as before. Writing: what the codec writes parses to the SessionResponse the
protobuf runtime builds from the same answers, cut at the same places.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stockgate.engine import (
    Allocation,
    InvalidArgument,
    LineResult,
    Outcome,
    Reservation,
    Result,
    State,
    limits,
)
from stockgate.server import _codec, session, wire
from stockgate.server.status import CallError, fill_error, shed
from stockgate.v1 import reservations_pb2 as R
from stockgate.v1 import types_pb2 as T

TEXT = st.text(max_size=20)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)


@st.composite
def reserve_ops(draw) -> R.Operation:
    op = R.Operation(id=draw(UINT64), timeout_ms=draw(INT64))
    r = op.reserve
    r.reservation_id, r.channel = draw(TEXT), draw(TEXT)
    for sku, qty in draw(st.lists(st.tuples(TEXT, INT64), max_size=4)):
        r.lines.add(sku=sku, qty=qty)
    r.customer, r.campaign = draw(TEXT), draw(TEXT)
    r.ttl_ms, r.partial = draw(INT64), draw(st.booleans())
    r.prefer_locations.extend(draw(st.lists(TEXT, max_size=3)))
    return op


def by_protobuf(raw: bytes) -> list[tuple]:
    return [(op.id, "reserve", wire.reserve_request(op.reserve), op.timeout_ms)
            for op in R.SessionRequest.FromString(raw).ops]


@given(st.lists(reserve_ops(), min_size=1, max_size=8))
def test_a_message_of_reserves_reads_as_protobuf_reads_it(ops) -> None:
    raw = R.SessionRequest(ops=ops).SerializeToString()
    assert session.read_message(raw) == by_protobuf(raw)


def test_what_the_codec_leaves_to_protobuf() -> None:
    good = R.SessionRequest()
    op = good.ops.add(id=1)
    op.reserve.reservation_id, op.reserve.channel = "R-1", "tmall"
    op.reserve.lines.add(sku="SKU-1", qty=1)
    raw = good.SerializeToString()
    assert session.read_message(raw) is not None
    commit = R.SessionRequest()
    commit.ops.add(id=2).commit.reservation_id = "R-1"
    no_op = R.SessionRequest()
    no_op.ops.add(id=3)
    not_utf8 = raw.replace(b"R-1", b"R\xff1")
    unknown_field = raw + b"\x10\x01"  # SessionRequest field 2, a varint
    twice = R.SessionRequest()
    op = twice.ops.add(id=4)
    op.reserve.reservation_id = "x"
    twice_raw = twice.SerializeToString()
    op_bytes = twice_raw[2:]  # the Operation, after its tag and length
    id_twice = b"\x0a" + bytes([len(op_bytes) + 2]) + op_bytes + b"\x08\x05"
    for left in (b"", commit.SerializeToString(), no_op.SerializeToString(), not_utf8,
                 raw[:-1], unknown_field, id_twice):
        assert session.read_message(left) is None, left
    too_many = R.SessionRequest(ops=[good.ops[0]] * (session.OPS_PER_MESSAGE_MAX + 1))
    assert session.read_message(too_many.SerializeToString()) is None


def test_defaults_as_reserve_request_gives_them() -> None:
    m = R.SessionRequest()
    op = m.ops.add(id=1)
    op.reserve.reservation_id, op.reserve.channel = "R-1", "tmall"
    (_, _, req, timeout), = session.read_message(m.SerializeToString())
    assert (req.customer, req.campaign, req.ttl_ms, req.partial, req.prefer_locations,
            timeout) == (None, None, limits.TTL_MS_DEFAULT, False, (), 0)


# ------------------------------------------------------------------------- writing

ALLOC = st.builds(Allocation, TEXT, TEXT, st.integers(0, 2**40))
LINE = st.builds(LineResult, TEXT, st.integers(0, 2**40), st.integers(0, 2**40),
                 st.sampled_from(list(Outcome)), st.lists(ALLOC, max_size=3).map(tuple))
RESERVATION = st.builds(
    Reservation, TEXT, TEXT, st.sampled_from(list(State)),
    st.lists(LINE, max_size=3).map(tuple), st.none() | TEXT, st.none() | TEXT,
    st.integers(0, 2**50), st.integers(0, 2**50), st.none() | st.integers(0, 2**50),
    st.lists(st.tuples(TEXT, st.integers(0, 2**40)), max_size=2).map(tuple))
RESULT = st.builds(Result, st.sampled_from(list(Outcome)), st.none() | RESERVATION,
                   st.booleans(), st.lists(LINE, max_size=2).map(tuple))
ERRORS = [InvalidArgument("lines[0].qty", "is 0; it must be 1 or more"),
          shed("the server is at its bound", 30)]


def reference(chunk: list[tuple[int, object]]) -> R.SessionResponse:
    """The SessionResponse as the protobuf runtime builds it, by the rules the codec
    keeps: a result or an error per answer; the first shed refusal, and every answer that
    is that same refusal, in refused_ids with one refused_error."""
    resp = R.SessionResponse()
    refused = None
    for op_id, answer in chunk:
        if isinstance(answer, BaseException):
            if answer is refused or (refused is None and type(answer) is CallError
                                     and session._is_shed(answer)):
                refused = answer
                resp.refused_ids.append(op_id)
                continue
            fill_error(resp.results.add(id=op_id).error, answer)
        else:
            wire.fill_result(resp.results.add(id=op_id).result, answer)
    if refused is not None:
        fill_error(resp.refused_error, refused)
    return resp


def encode(chunk, target=1 << 20):
    return _codec.encode_session_response(chunk, Result, session._is_shed,
                                          session._error_bytes, target)


@given(st.lists(st.tuples(UINT64, RESULT | st.sampled_from(ERRORS)), min_size=1, max_size=12))
def test_answers_write_what_protobuf_writes(chunk) -> None:
    (raw, n), = encode(chunk)
    assert n == len(chunk)
    assert R.SessionResponse.FromString(raw) == reference(chunk)
    assert raw == reference(chunk).SerializeToString()


@given(st.lists(st.tuples(UINT64, RESULT), min_size=1, max_size=30), st.integers(1, 400))
def test_a_long_answer_is_cut_after_the_answer_that_passes_the_target(chunk, target) -> None:
    parts = encode(chunk, target)
    assert sum(n for _, n in parts) == len(chunk)
    got = [r for raw, _ in parts for r in R.SessionResponse.FromString(raw).results]
    assert got == list(reference(chunk).results)
    for raw, _ in parts[:-1]:
        # over the target only by its last answer
        last = R.SessionResponse.FromString(raw).results[-1]
        assert len(raw) > target >= len(raw) - last.ByteSize() - 6


def test_the_shed_refusal_rides_in_the_first_message() -> None:
    refusal = ERRORS[1]
    ok = Result(Outcome.OK, None, False, ())
    chunk = [(1, ok), (2, refusal), (3, ok), (4, refusal), (5, ERRORS[0])]
    parts = encode(chunk, 1)
    first = R.SessionResponse.FromString(parts[0][0])
    assert list(first.refused_ids) == [2, 4] and first.refused_error.code == refusal.code.value[0]
    assert sum(n for _, n in parts) == 5
    assert [T.Error.FromString(e.SerializeToString()).field for r in parts
            for e in [x.error for x in R.SessionResponse.FromString(r[0]).results
                      if x.HasField("error")]] == ["lines[0].qty"]


def test_fields_protobuf_would_not_read_as_given_are_left_to_it() -> None:
    m = R.SessionRequest()
    op = m.ops.add(id=1)
    op.reserve.reservation_id, op.reserve.channel = "R-1", "tmall"
    reserve = op.reserve.SerializeToString()

    def message(reserve_bytes: bytes) -> bytes:
        op_bytes = b"\x08\x01" + b"\x1a" + bytes([len(reserve_bytes)]) + reserve_bytes
        return b"\x0a" + bytes([len(op_bytes)]) + op_bytes

    assert session.read_message(message(reserve)) is not None
    lines_as_varint = reserve + b"\x18\x01"  # field 3 (lines) with wire type 0
    huge_field = reserve + b"\xb8\x80\x80\x80\x80\x01\x01"  # field 2**32 + 7, a varint
    for raw in (message(lines_as_varint), message(huge_field)):
        assert session.read_message(raw) is None


def test_a_record_too_short_or_not_a_tuple_is_refused_not_read_past_its_end() -> None:
    from typing import NamedTuple

    class Short(NamedTuple):
        sku: str
        qty: int

    ok = Result(Outcome.OK, None, False, ())
    for bad, named in ((Result(Outcome.OK, None, False, (Short("s", 1),)), "LineResult"),
                       (ok._replace(lines=[LineResult("s", 1, 1, Outcome.OK, ())]),
                        "Result.lines"),
                       (ok._replace(reservation=("r", "web")), "Reservation")):
        with pytest.raises(TypeError, match=f"^{named} must"):
            encode([(1, bad)])
