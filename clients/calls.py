"""The unary calls both clients make: the request, how to read the answer, and whether a
retry after UNAVAILABLE is safe. AsyncClient and Client differ only in how they wait.

A call is safe to repeat when doing it twice is the same as doing it once: reads,
anything keyed by a caller's id (reservations, transfers), and settings that overwrite
(a channel's sources, an allocation rule). Receive, adjust, move and import are not
repeated by the clients: a lost answer there is the caller's to resolve (read the stock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from stockgate.v1 import inventory_pb2, reservations_pb2, types_pb2

from . import limits, wire
from .batch import ReserveRequest
from .errors import InvalidArgument
from .wire import Sources, _int, _str, _strings

INVENTORY, RESERVATIONS = "inventory", "reservations"


class Call(NamedTuple):
    """One unary call, ready to send."""

    service: str  # INVENTORY or RESERVATIONS
    method: str  # the stub's method name
    request: Any
    read: Callable[[Any], Any]  # answer message -> what the caller gets
    idempotent: bool  # retried on UNAVAILABLE, within the call's deadline
    none_if_not_found: bool = False  # a getter: NOT_FOUND answers None
    timeout_s_min: float = 0.0  # calls that take long by nature get at least this


def _nothing(_: Any) -> None:
    return None


# ---------------------------------------------------------------------- catalogue


def add_location(location: str, kind: str) -> Call:
    req = inventory_pb2.AddLocationRequest(location=_str("location", location),
                                           kind=_str("kind", kind))
    return Call(INVENTORY, "AddLocation", req, _nothing, True)


def locations() -> Call:
    return Call(INVENTORY, "ListLocations", types_pb2.Empty(),
                lambda pb: dict(pb.locations), True)


def set_channel(channel: str, sources: Sources, allow_presale: bool) -> Call:
    req = inventory_pb2.SetChannelRequest(channel=_str("channel", channel),
                                          sources=wire.sources("sources", sources),
                                          allow_presale=bool(allow_presale))
    return Call(INVENTORY, "SetChannel", req, _nothing, True)


def channels() -> Call:
    return Call(INVENTORY, "ListChannels", types_pb2.Empty(),
                lambda pb: [wire.channel(c) for c in pb.channels], True)


def set_allocation_rule(location: str, shares: Mapping[str, int], sku: str | None) -> Call:
    req = inventory_pb2.SetAllocationRuleRequest(location=_str("location", location),
                                                 shares=wire.int_map("shares", shares),
                                                 sku=_str("sku", sku))
    return Call(INVENTORY, "SetAllocationRule", req, _nothing, True)


def set_safety_stock(sku: str, units: int, location: str | None, pool: str | None,
                     channel: str | None) -> Call:
    req = inventory_pb2.SetSafetyStockRequest(
        sku=_str("sku", sku), units=_int("units", units), location=_str("location", location),
        pool=_str("pool", pool), channel=_str("channel", channel))
    return Call(INVENTORY, "SetSafetyStock", req, _nothing, True)


def set_presale_allowance(sku: str, location: str, pool: str, units: int) -> Call:
    req = inventory_pb2.SetPresaleAllowanceRequest(
        sku=_str("sku", sku), location=_str("location", location), pool=_str("pool", pool),
        units=_int("units", units))
    return Call(INVENTORY, "SetPresaleAllowance", req, _nothing, True)


# ---------------------------------------------------------------------- movements


def receive(sku: str, location: str, qty: int, pool: str | None, ref: str | None) -> Call:
    req = inventory_pb2.ReceiveRequest(sku=_str("sku", sku), location=_str("location", location),
                                       qty=_int("qty", qty), pool=_str("pool", pool),
                                       ref=_str("ref", ref))
    return Call(INVENTORY, "Receive", req, lambda pb: dict(pb.added), False)


def adjust(sku: str, location: str, pool: str, on_hand: int, ref: str | None) -> Call:
    req = inventory_pb2.AdjustRequest(sku=_str("sku", sku), location=_str("location", location),
                                      pool=_str("pool", pool), on_hand=_int("on_hand", on_hand),
                                      ref=_str("ref", ref))
    return Call(INVENTORY, "Adjust", req, lambda pb: pb.variance, False)


def move(sku: str, location: str, from_pool: str, to_pool: str, qty: int) -> Call:
    req = inventory_pb2.MoveRequest(sku=_str("sku", sku), location=_str("location", location),
                                    from_pool=_str("from_pool", from_pool),
                                    to_pool=_str("to_pool", to_pool), qty=_int("qty", qty))
    return Call(INVENTORY, "Move", req, _nothing, False)


def transfer_out(transfer_id: str, sku: str, from_location: str, from_pool: str,
                 to_location: str, to_pool: str, qty: int) -> Call:
    req = inventory_pb2.TransferOutRequest(
        transfer_id=_str("transfer_id", transfer_id), sku=_str("sku", sku),
        from_location=_str("from_location", from_location),
        from_pool=_str("from_pool", from_pool), to_location=_str("to_location", to_location),
        to_pool=_str("to_pool", to_pool), qty=_int("qty", qty))
    return Call(INVENTORY, "TransferOut", req, lambda pb: pb.state, True)


def transfer_in(transfer_id: str) -> Call:
    req = inventory_pb2.TransferInRequest(transfer_id=_str("transfer_id", transfer_id))
    return Call(INVENTORY, "TransferIn", req, lambda pb: pb.state, True)


def import_chunks(rows: Iterable[Any], first_index: int = 0,
                  ) -> Iterable[inventory_pb2.ImportChunk]:
    """The rows as Import messages of IMPORT_CHUNK_ROWS rows, built as they are read;
    a malformed row raises InvalidArgument naming rows[i] counted from first_index."""
    chunk: list[inventory_pb2.StockRow] = []
    for i, row in enumerate(rows, first_index):
        chunk.append(wire.stock_row(i, row))
        if len(chunk) == limits.IMPORT_CHUNK_ROWS:
            yield inventory_pb2.ImportChunk(rows=chunk)
            chunk = []
    if chunk:
        yield inventory_pb2.ImportChunk(rows=chunk)


# ---------------------------------------------------------------------- campaigns


def create_campaign(campaign_id: str, channels: Iterable[str], start_ms: int, end_ms: int,
                    location: str, source_pool: str, quotas: Mapping[str, int],
                    customer_limit: int) -> Call:
    req = inventory_pb2.CreateCampaignRequest(
        campaign_id=_str("campaign_id", campaign_id),
        channels=_strings("channels", channels), start_ms=_int("start_ms", start_ms),
        end_ms=_int("end_ms", end_ms), location=_str("location", location),
        source_pool=_str("source_pool", source_pool), quotas=wire.int_map("quotas", quotas),
        customer_limit=_int("customer_limit", customer_limit))
    return Call(INVENTORY, "CreateCampaign", req, wire.campaign, False)


def _campaign_request(campaign_id: str) -> inventory_pb2.CampaignRequest:
    return inventory_pb2.CampaignRequest(campaign_id=_str("campaign_id", campaign_id))


def start_campaign(campaign_id: str) -> Call:
    return Call(INVENTORY, "StartCampaign", _campaign_request(campaign_id), wire.campaign, True)


def stop_campaign(campaign_id: str) -> Call:
    return Call(INVENTORY, "StopCampaign", _campaign_request(campaign_id), wire.campaign, True)


def campaign(campaign_id: str) -> Call:
    return Call(INVENTORY, "GetCampaign", _campaign_request(campaign_id), wire.campaign, True,
                none_if_not_found=True)


def campaigns() -> Call:
    return Call(INVENTORY, "ListCampaigns", types_pb2.Empty(),
                lambda pb: [wire.campaign(c) for c in pb.campaigns], True)


# ---------------------------------------------------------------------- reads


def stock(sku: str) -> Call:
    return Call(INVENTORY, "GetStock", inventory_pb2.GetStockRequest(sku=_str("sku", sku)),
                lambda pb: [wire.bucket_stock(b) for b in pb.buckets], True)


def availability(channel: str, skus: Iterable[str], campaign: str | None,
                 prefer_locations: Iterable[str] | None) -> Call:
    req = inventory_pb2.GetAvailabilityRequest(
        channel=_str("channel", channel), skus=_strings("skus", skus),
        campaign=_str("campaign", campaign),
        prefer_locations=_strings("prefer_locations", prefer_locations))
    return Call(INVENTORY, "GetAvailability", req, lambda pb: dict(pb.available), True)


def reservation(reservation_id: str) -> Call:
    req = inventory_pb2.GetReservationRequest(reservation_id=_str("reservation_id",
                                                                  reservation_id))
    return Call(INVENTORY, "GetReservation", req, wire.reservation, True,
                none_if_not_found=True)


def journal(from_seq: int, limit: int) -> Call:
    if isinstance(from_seq, int) and from_seq < 0:
        raise InvalidArgument("from_seq", f"is {from_seq}; it must be 0 or more")
    if isinstance(limit, int) and not 0 <= limit < (1 << 31):
        raise InvalidArgument("limit", f"is {limit}; it must be between 0 and 10000")
    req = inventory_pb2.ReadJournalRequest(from_seq=_int("from_seq", from_seq),
                                           limit=_int("limit", limit))
    return Call(INVENTORY, "ReadJournal", req, wire.journal_page, True)


def check() -> Call:
    return Call(INVENTORY, "Check", types_pb2.Empty(), wire.check_report, True,
                timeout_s_min=limits.CHECK_TIMEOUT_S_MIN)


# ---------------------------------------------------------------------- batches


def reserve_batches(requests: Iterable[ReserveRequest]) -> list[Call]:
    """ReserveBatch calls of at most BATCH_OPS_MAX requests and about
    SESSION_MESSAGE_BYTES_MAX bytes each, in order."""
    batches: list[Call] = []
    chunk: list[reservations_pb2.ReserveRequest] = []
    size = 0

    def flush() -> None:
        batches.append(Call(RESERVATIONS, "ReserveBatch",
                            reservations_pb2.ReserveBatchRequest(requests=chunk),
                            lambda pb: [wire.result(r) for r in pb.results], True))

    for i, r in enumerate(requests):
        if not isinstance(r, ReserveRequest):
            try:
                r = ReserveRequest(*r) if not isinstance(r, Mapping) else ReserveRequest(**r)
            except TypeError as e:
                raise InvalidArgument(f"requests[{i}]", f"is not a reserve request: {e}") from None
        try:
            pb = r.to_message()
        except InvalidArgument as e:
            raise InvalidArgument(f"requests[{i}].{e.field}", e.problem) from None
        n = pb.ByteSize()
        if n > limits.OPERATION_BYTES_MAX:
            raise InvalidArgument(f"requests[{i}]", f"is {n} bytes; the limit of one request "
                                  f"is {limits.OPERATION_BYTES_MAX} bytes")
        if chunk and (len(chunk) == limits.BATCH_OPS_MAX
                      or size + n > limits.SESSION_MESSAGE_BYTES_MAX):
            flush()
            chunk, size = [], 0
        chunk.append(pb)
        size += n
    if chunk:
        flush()
    return batches
