"""The clients' own types: outcome numbers match the contract, requests are checked before
they are sent, answers become plain records, and error trailers become typed exceptions."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from stockgate.clients import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Outcome,
    Overloaded,
    PermissionDenied,
    ReserveRequest,
    State,
    StockgateError,
    Unauthenticated,
    Unavailable,
    errors,
    wire,
)
from stockgate.clients.calls import reserve_batches
from stockgate.v1 import types_pb2


def test_outcome_and_state_numbers_are_the_contracts():
    for o in Outcome:
        assert types_pb2.Outcome.Value(f"OUTCOME_{o.name}") == int(o)
    for s in State:
        assert types_pb2.State.Value(f"STATE_{s.name}") == int(s)
    assert len(types_pb2.Outcome.keys()) == len(Outcome)
    assert {o for o in Outcome if o.granted} == {Outcome.OK, Outcome.PARTIAL}


def test_the_clients_do_not_import_the_engine_or_the_server():
    import subprocess
    import sys

    code = ("import sys, stockgate.clients; "
            "bad = [m for m in sys.modules if m.startswith(('stockgate.engine', "
            "'stockgate.server'))]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.parametrize("lines, field", [
    ([("SKU-1", "2")], "lines[0].qty"),
    ([("SKU-1", 1), (7, 1)], "lines[1].sku"),
    ([("SKU-1", 1, 2)], "lines[0]"),
    ([("SKU-1", 1 << 64)], "lines[0].qty"),
    ("SKU-1", "lines"),
    ([("SKU-1", True)], "lines[0].qty"),
])
def test_malformed_lines_are_refused_before_sending_naming_the_field(lines, field):
    with pytest.raises(InvalidArgument) as e:
        wire.reserve_request("r-1", "tmall", lines, customer=None, campaign=None, ttl_ms=0,
                             partial=False, prefer_locations=())
    assert e.value.field == field


def test_lines_may_be_pairs_or_a_mapping():
    as_pairs = wire.lines([("SKU-1", 2), ("SKU-2", 1)])
    as_map = wire.lines({"SKU-1": 2, "SKU-2": 1})
    assert as_pairs == as_map


def test_a_batch_names_the_request_at_fault():
    good = ReserveRequest("r-1", "tmall", [("SKU-1", 1)])
    with pytest.raises(InvalidArgument) as e:
        reserve_batches([good, ("r-2", "tmall", [("SKU-1", "x")])])
    assert e.value.field == "requests[1].lines[0].qty"


def test_batches_are_cut_at_the_message_limits():
    reqs = [ReserveRequest(f"r-{i}", "tmall", [("SKU-1", 1)]) for i in range(25_001)]
    cut = reserve_batches(reqs)
    assert [len(c.request.requests) for c in cut] == [10_000, 10_000, 5_001]


def test_an_answer_becomes_plain_records():
    pb = types_pb2.Result(outcome=types_pb2.OUTCOME_OK, replayed=True)
    pb.reservation.reservation_id = "r-1"
    pb.reservation.channel = "tmall"
    pb.reservation.state = types_pb2.STATE_HELD
    line = pb.reservation.lines.add(sku="SKU-1", qty=3, granted=3)
    line.allocations.add(location="WH-EAST", pool="online", qty=3)
    res = wire.result(pb)
    assert res.ok and res.replayed
    assert res.reservation.state is State.HELD
    assert res.reservation.customer is None and res.reservation.resolved_ms is None
    assert res.reservation.lines[0].allocations[0] == ("WH-EAST", "online", 3)
    assert res.reservation.units == 3
    refused = wire.result(types_pb2.Result(outcome=types_pb2.OUTCOME_INSUFFICIENT_STOCK))
    assert not refused.ok and refused.reservation is None


class _FailedCall(Exception):
    """What a failed gRPC call offers an error handler (code, details, trailers)."""

    def __init__(self, code, details, *details_msgs):
        import grpc

        self._code = getattr(grpc.StatusCode, code)
        self._details = details
        st = status_pb2.Status(code=self._code.value[0], message=details)
        for msg in details_msgs:
            a = any_pb2.Any()
            a.Pack(msg)
            st.details.append(a)
        self._trailers = (("grpc-status-details-bin", st.SerializeToString()),)

    def code(self):
        return self._code

    def details(self):
        return self._details

    def trailing_metadata(self):
        return self._trailers


def test_status_trailers_become_typed_exceptions():
    bad = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field="lines[2].qty",
                                                    description="is 0; it must be 1..")])
    e = errors.error_from_rpc(_FailedCall("INVALID_ARGUMENT", "lines[2].qty is 0", bad))
    assert isinstance(e, InvalidArgument) and isinstance(e, ValueError)
    assert (e.field, e.problem) == ("lines[2].qty", "is 0; it must be 1..")
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000))
    e = errors.error_from_rpc(_FailedCall("RESOURCE_EXHAUSTED", "busy", retry))
    assert isinstance(e, Overloaded) and e.retry_after_ms == 50
    e = errors.error_from_rpc(_FailedCall("RESOURCE_EXHAUSTED",
                                          "Received message larger than max (5 vs. 4)"))
    assert isinstance(e, InvalidArgument)  # gRPC's own size limit is the caller's input
    for code, cls in [("NOT_FOUND", NotFound), ("FAILED_PRECONDITION", FailedPrecondition),
                      ("UNAUTHENTICATED", Unauthenticated),
                      ("PERMISSION_DENIED", PermissionDenied), ("UNAVAILABLE", Unavailable),
                      ("DEADLINE_EXCEEDED", DeadlineExceeded)]:
        e = errors.error_from_rpc(_FailedCall(code, "x"))
        assert type(e) is cls and e.code == code and e.hint
    e = errors.error_from_rpc(_FailedCall("INTERNAL", "boom"))
    assert type(e) is StockgateError and e.code == "INTERNAL"
