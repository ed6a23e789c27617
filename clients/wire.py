"""The one place protobuf messages are built and read: requests from the callers' plain
values, and the clients' own records from the answers. No protobuf type leaves this
module's callers (the two clients)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from stockgate.v1 import inventory_pb2, reservations_pb2, types_pb2, watch_pb2

from . import _codec, limits
from .errors import InvalidArgument, StockgateError
from .outcomes import Outcome, State
from .records import BucketStock, Campaign, Channel, CheckReport, JournalEvent, JournalPage
from .results import Allocation, LineResult, Reservation, Result
from .updates import Alert, Update

# What a caller may pass as the lines of a reservation: [("SKU-1", 2), ...] or {"SKU-1": 2}.
Lines = Iterable[tuple[str, int]] | Mapping[str, int]
Sources = Iterable[tuple[str, str]]

# ---------------------------------------------------------------------- requests


def _str(field: str, value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {type(value).__name__}")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidArgument(field, "is not UTF-8 text: it holds a lone surrogate "
                                  "code point") from None
    return value


def _int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"must be an integer, got {type(value).__name__}")
    if not limits.INT64_MIN <= value <= limits.INT64_MAX:
        raise InvalidArgument(field, f"is {value}; it must be {limits.INT64_MIN:,} to "
                                     f"{limits.INT64_MAX:,} (a 64-bit integer)")
    return value


def lines(lines: Lines | None, field: str = "lines") -> list[types_pb2.Line]:
    if lines is None:
        return []
    items = lines.items() if isinstance(lines, Mapping) else lines
    if isinstance(items, str | bytes):
        raise InvalidArgument(field, "must be (sku, qty) pairs or a {sku: qty} mapping")
    out = []
    for i, item in enumerate(items):
        try:
            sku, qty = item
        except (TypeError, ValueError):
            raise InvalidArgument(f"{field}[{i}]", "must be a (sku, qty) pair") from None
        out.append(types_pb2.Line(sku=_str(f"{field}[{i}].sku", sku),
                                  qty=_int(f"{field}[{i}].qty", qty)))
    return out


def _strings(field: str, values: Iterable[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        raise InvalidArgument(field, "must be a list of strings, not one string")
    return [_str(f"{field}[{i}]", v) for i, v in enumerate(values)]


def fill_reserve(m: reservations_pb2.ReserveRequest, reservation_id: str, channel: str,
                 lines_: Lines, *, customer: str | None, campaign: str | None, ttl_ms: int,
                 partial: bool, prefer_locations: Iterable[str] | None,
                 ) -> reservations_pb2.ReserveRequest:
    """Fill a ReserveRequest in place, checking each value (the field at fault named)."""
    m.reservation_id = _str("reservation_id", reservation_id)
    m.channel = _str("channel", channel)
    if isinstance(lines_, list) and all(type(x) is tuple and len(x) == 2 for x in lines_):
        add = m.lines.add  # the common shape, [(sku, qty), ...]: checked as it is set
        for i, (sku, qty) in enumerate(lines_):
            add(sku=_str(f"lines[{i}].sku", sku), qty=_int(f"lines[{i}].qty", qty))
    else:
        m.lines.extend(lines(lines_))
    if customer is not None:
        m.customer = _str("customer", customer)
    if campaign is not None:
        m.campaign = _str("campaign", campaign)
    if ttl_ms:
        m.ttl_ms = _int("ttl_ms", ttl_ms)
    if partial:
        m.partial = True
    if prefer_locations:
        m.prefer_locations.extend(_strings("prefer_locations", prefer_locations))
    return m


def reserve_request(reservation_id: str, channel: str, lines_: Lines, *, customer: str | None,
                    campaign: str | None, ttl_ms: int, partial: bool,
                    prefer_locations: Iterable[str] | None,
                    ) -> reservations_pb2.ReserveRequest:
    return fill_reserve(reservations_pb2.ReserveRequest(), reservation_id, channel, lines_,
                        customer=customer, campaign=campaign, ttl_ms=ttl_ms, partial=partial,
                        prefer_locations=prefer_locations)


# A Session operation as the Outbox keeps it: the number of its `op` field in Operation
# (which kind of request) and the request's bytes; its id and timeout are added when sent.
Op = tuple[int, bytes]
SESSION_METHOD = (f"/{reservations_pb2.DESCRIPTOR.services_by_name['Reservations'].full_name}"
                  "/Session")  # spoken in bytes: clients/_codec.pyx
_OP_FIELDS = {f.name: f.number for f in reservations_pb2.Operation.DESCRIPTOR.oneofs_by_name[
    "op"].fields}
# An op field's tag is one byte while its number is below 16 (protobuf's varint of
# number << 3 | wire type): operation_bytes() counts it so.
OP_TAG_BYTES = 1
assert max(_OP_FIELDS.values()) < 16, "an op field's tag no longer fits OP_TAG_BYTES"


def operation(kind: str, request: Any) -> Op:
    """A Session operation around one request message."""
    return _OP_FIELDS[kind], request.SerializeToString()


def reserve_operation(reservation_id: str, channel: str, lines_: Lines, *,
                      customer: str | None, campaign: str | None, ttl_ms: int,
                      partial: bool, prefer_locations: Iterable[str] | None) -> Op:
    """A Session reserve operation: written in C when its values are in the common shape,
    else through protobuf (which names the field at fault)."""
    body = _codec.reserve_body(reservation_id, channel, lines_, customer, campaign, ttl_ms,
                               partial, prefer_locations)
    if body is None:
        body = reserve_request(reservation_id, channel, lines_, customer=customer,
                               campaign=campaign, ttl_ms=ttl_ms, partial=partial,
                               prefer_locations=prefer_locations).SerializeToString()
    return _OP_FIELDS["reserve"], body


def operation_bytes(op: Op) -> int:
    """An operation's size as protobuf counts it before its id and timeout are set: the
    request, its length and the op field's tag."""
    n = len(op[1])
    return OP_TAG_BYTES + _varint_bytes(n) + n  # tag, length, request


def _varint_bytes(n: int) -> int:
    """Bytes of n as a protobuf varint: 7 bits each."""
    return max(1, (n.bit_length() + 6) // 7)


def session_request(ops: list[tuple[int, int, int, bytes]]) -> bytes:
    """A SessionRequest's bytes from [(id, timeout_ms, op field, request bytes)]."""
    return _codec.session_request(ops)


def commit_request(reservation_id: str, lines_: Lines | None) -> reservations_pb2.CommitRequest:
    return reservations_pb2.CommitRequest(
        reservation_id=_str("reservation_id", reservation_id), lines=lines(lines_))


def release_request(reservation_id: str) -> reservations_pb2.ReleaseRequest:
    return reservations_pb2.ReleaseRequest(reservation_id=_str("reservation_id", reservation_id))


def extend_request(reservation_id: str, ttl_ms: int) -> reservations_pb2.ExtendRequest:
    return reservations_pb2.ExtendRequest(
        reservation_id=_str("reservation_id", reservation_id), ttl_ms=_int("ttl_ms", ttl_ms))


def amend_request(reservation_id: str, lines_: Lines) -> reservations_pb2.AmendRequest:
    return reservations_pb2.AmendRequest(
        reservation_id=_str("reservation_id", reservation_id), lines=lines(lines_))


def sources(field: str, values: Sources) -> list[inventory_pb2.Source]:
    out = []
    for i, item in enumerate(values):
        try:
            location, pool = item
        except (TypeError, ValueError):
            raise InvalidArgument(f"{field}[{i}]", "must be a (location, pool) pair") from None
        out.append(inventory_pb2.Source(location=_str(f"{field}[{i}].location", location),
                                        pool=_str(f"{field}[{i}].pool", pool)))
    return out


def int_map(field: str, values: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(values, Mapping):
        raise InvalidArgument(field, "must be a mapping of names to integers")
    return {_str(f"{field} key", k): _int(f"{field}[{k!r}]", v) for k, v in values.items()}


def stock_row(i: int, row: Any) -> inventory_pb2.StockRow:
    """One import row from a (sku, location, pool, on_hand) tuple or a mapping."""
    field = f"rows[{i}]"
    try:
        if isinstance(row, Mapping):
            sku, location, pool, on_hand = (row["sku"], row["location"], row["pool"],
                                            row["on_hand"])
        else:
            sku, location, pool, on_hand = row
    except (TypeError, ValueError, KeyError):
        raise InvalidArgument(field, "must be (sku, location, pool, on_hand)") from None
    return inventory_pb2.StockRow(
        sku=_str(f"{field}.sku", sku), location=_str(f"{field}.location", location),
        pool=_str(f"{field}.pool", pool), on_hand=_int(f"{field}.on_hand", on_hand))


# ---------------------------------------------------------------------- answers


# The answers of the hot path are read for every reservation: tuples are built with
# tuple.__new__ and enums found by index, which halves the cost of the plain calls.
_new = tuple.__new__
_OUTCOMES = tuple(Outcome(i) for i in range(len(Outcome)))
_STATES = {int(s): s for s in State}


def _outcome(value: int) -> Outcome:
    try:
        return _OUTCOMES[value]
    except IndexError:
        return Outcome(value)  # raises ValueError naming the unknown code


def line_result(pb: types_pb2.LineResult) -> LineResult:
    return _new(LineResult, (
        pb.sku, pb.qty, pb.granted, _outcome(pb.outcome),
        tuple([_new(Allocation, (a.location, a.pool, a.qty)) for a in pb.allocations])))


def reservation(pb: types_pb2.Reservation) -> Reservation:
    state = _STATES.get(pb.state) or State(pb.state)
    committed = pb.committed
    return _new(Reservation, (
        pb.reservation_id, pb.channel, state, tuple([line_result(li) for li in pb.lines]),
        pb.customer or None, pb.campaign or None, pb.created_ms, pb.expires_ms,
        pb.resolved_ms or None,
        tuple([(li.sku, li.qty) for li in committed]) if committed else ()))


def result(pb: types_pb2.Result) -> Result:
    lines = pb.lines
    return _new(Result, (
        _outcome(pb.outcome),
        reservation(pb.reservation) if pb.HasField("reservation") else None,
        pb.replayed, tuple([line_result(li) for li in lines]) if lines else ()))


class ErrorAnswer(NamedTuple):
    """An operation's Error answer (types.proto Error), as the Outbox reads it."""

    code: int  # a google.rpc.Code
    message: str
    field: str
    retry_after_ms: int


NO_ERROR = ErrorAnswer(0, "", "", 0)  # what protobuf reads for an Error not given
_TYPES = _codec._Types(Result, Reservation, LineResult, Allocation, ErrorAnswer, _OUTCOMES,
                       tuple(_STATES.get(i) for i in range(max(_STATES) + 1)))
# One Session answer: (op id, Result, None), (op id, None, ErrorAnswer), (op id, None,
# None) when neither is set, or, for a result this client cannot read, (op id, None,
# StockgateError) for its caller.
Answer = tuple[int, Result | None, ErrorAnswer | StockgateError | None]


class UnreadableResponse(Exception):
    """A SessionResponse that is not protobuf at all: no answer in it can be routed."""


def session_answers(raw: bytes) -> tuple[list[Answer], list[int], ErrorAnswer | None]:
    """A SessionResponse's answers, refused ids and their shared error: read in C, or
    through protobuf when anything in it is out of the common shape."""
    got = _codec.read_session_response(raw, _TYPES)
    if got is not None:
        return got
    try:
        pb = reservations_pb2.SessionResponse.FromString(raw)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError, or worse
        raise UnreadableResponse(f"unreadable Session answer: {e!r}") from None
    answers: list[Answer] = []
    for r in pb.results:
        if r.HasField("result"):
            try:
                answers.append((r.id, result(r.result), None))
            except Exception as e:  # noqa: BLE001 - an answer we cannot read: say so
                answers.append((r.id, None, StockgateError(f"unreadable answer: {e!r}")))
        else:
            answers.append((r.id, None,
                            error_answer(r.error) if r.HasField("error") else None))
    refused = error_answer(pb.refused_error) if pb.HasField("refused_error") else None
    return answers, list(pb.refused_ids), refused


def error_answer(pb: types_pb2.Error) -> ErrorAnswer:
    return ErrorAnswer(pb.code, pb.message, pb.field, pb.retry_after_ms)


def bucket_stock(pb: inventory_pb2.BucketStock) -> BucketStock:
    return BucketStock(pb.sku, pb.location, pb.pool, pb.on_hand, pb.held, pb.available,
                       pb.presale_units, pb.safety_stock)


def channel(pb: inventory_pb2.Channel) -> Channel:
    return Channel(pb.channel, tuple((s.location, s.pool) for s in pb.sources),
                   pb.allow_presale)


def campaign(pb: inventory_pb2.Campaign) -> Campaign:
    return Campaign(
        campaign_id=pb.campaign_id, channels=tuple(pb.channels), start_ms=pb.start_ms,
        end_ms=pb.end_ms, location=pb.location, source_pool=pb.source_pool,
        quotas=dict(pb.quotas), customer_limit=pb.customer_limit, state=pb.state,
        carved=dict(pb.carved), returned=dict(pb.returned), pool=pb.pool)


def check_report(pb: inventory_pb2.CheckResponse) -> CheckReport:
    return CheckReport(drifts=tuple(pb.drifts), buckets=pb.buckets,
                       live_reservations=pb.live_reservations, events=pb.events,
                       totals=dict(pb.totals))


def _fields(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    import msgpack  # only the journal needs it

    value = msgpack.unpackb(body, raw=False, strict_map_key=False)
    return value if isinstance(value, dict) else {"value": value}


def journal_page(pb: inventory_pb2.ReadJournalResponse) -> JournalPage:
    return JournalPage(tuple(JournalEvent(e.seq, e.kind, e.t_ms, _fields(e.body))
                             for e in pb.events), pb.last_seq)


def alert(pb: watch_pb2.Alert) -> Alert:
    return Alert(seq=pb.seq, kind=pb.kind, t_ms=pb.t_ms, sku=pb.sku,
                 location=pb.location or None, pool=pb.pool or None,
                 campaign=pb.campaign or None, channel=pb.channel or None,
                 available=pb.available, threshold=pb.threshold)


def update(pb: watch_pb2.WatchUpdate, alerts: Iterable[watch_pb2.Alert]) -> Update:
    return Update(pb.seq, {c.sku: c.available for c in pb.changes},
                  tuple(alert(a) for a in alerts))
