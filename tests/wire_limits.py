"""The table of every bounded field of every request, as the wire carries it: the limit
(a named constant), a request with the field at a given value, what the BadRequest names
past the limit, and what makes the request at the limit succeed.

test_server_bad_input.py sweeps it (at N, and at N+1 or N-1), and proves it complete
against the .proto files: a request field with no row needs a reason in NO_LIMIT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from server_calls import I, R, T, reserve

from stockgate.engine import Engine, limits
from stockgate.server.config import WATCH_COALESCE_MS_MAX
from stockgate.server.session import OPS_PER_MESSAGE_MAX
from stockgate.v1 import watch_pb2

L = limits
LATER_MS = 2_000_000_000_000  # a campaign window still to come on the real clock
STOCK_UNITS = 1_000_000  # SKU-1 in WH-EAST online: enough for every row's reserve


def text(n: int, tag: str, unit: str = "a") -> str:
    """A string of exactly n UTF-8 bytes, starting with tag (unique per row), then `unit`
    as often as it fits, then ASCII padding."""
    room = n - len(tag.encode())
    k = room // len(unit.encode())
    out = tag + unit * k + "a" * (room - k * len(unit.encode()))
    assert len(out.encode()) == n
    return out


@dataclass(frozen=True)
class Row:
    """One limit of one field. `build(v, tag)` is the request with the field at v (a
    string's length in bytes, a list's length, or a number); `names` is the field the
    BadRequest (or a Session op's Error) names; `setup(engine, v, tag)` makes the
    request at the limit succeed (the channel it names exists, the stock is there)."""

    field: str  # "Message.field" of the .proto
    rpc: str  # "Service.Method"
    limit: int | Callable[[Engine], int]  # N, accepted
    build: Callable[[int, str], Any]
    names: str
    setup: Callable[[Engine, int, str], Any] | None = None
    lower: bool = False  # the limit is a minimum: N-1 is refused
    unit: str = "bytes"  # "bytes" (v is a string length), "items" or a number's unit
    ok: Callable[[Any], bool] | None = None  # what the answer at N must satisfy
    # The status the call at N gets when the state refuses it once the field passed its
    # check (a window already past); None: it succeeds.
    at_code: str | None = None

    def key(self) -> str:
        return f"{self.rpc}:{self.names}" + (":min" if self.lower else "")


def _ok(r) -> bool:
    return r.outcome == T.OUTCOME_OK


def _rsv(engine: Engine, rid: str, lines=(("SKU-1", 1),)) -> None:
    engine.reserve(rid, "tmall", list(lines))


def _sku_stock(engine: Engine, sku: str, units: int = 1) -> None:
    engine.receive(sku, "WH-EAST", units, pool="online")


def _campaign(cid: str = "C", **kw) -> I.CreateCampaignRequest:
    args = dict(campaign_id=cid, channels=["tmall"], start_ms=LATER_MS, end_ms=LATER_MS + 10,
                location="WH-EAST", source_pool="online", quotas={"SKU-1": 1})
    args.update(kw)
    return I.CreateCampaignRequest(**args)


def _create(engine: Engine, cid: str) -> None:
    engine.create_campaign(cid, channels=["tmall"], start_ms=LATER_MS, end_ms=LATER_MS + 10,
                           location="WH-EAST", source_pool="online", quotas={"SKU-1": 1})


def _channel(engine: Engine, name: str) -> None:
    engine.set_channel(name, [("WH-EAST", "online")])


def _s(n: int, tag: str) -> str:
    return text(n, tag)


def _ids(n: int, tag: str) -> list[str]:
    return [f"{tag}-{i}" for i in range(n)]


RESERVE_IDS = [
    Row("ReserveRequest.reservation_id", "Reservations.Reserve", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: reserve(_s(v, t), "tmall", ("SKU-1", 1)), "reservation_id", ok=_ok),
    Row("ReserveRequest.channel", "Reservations.Reserve", L.CHANNEL_BYTES_MAX,
        lambda v, t: reserve(t, _s(v, t), ("SKU-1", 1)), "channel",
        setup=lambda e, v, t: _channel(e, _s(v, t)), ok=_ok),
    Row("ReserveRequest.lines", "Reservations.Reserve", L.LINES_PER_RESERVATION_MAX,
        lambda v, t: reserve(t, "tmall", *[("SKU-1", 1)] * v), "lines", unit="items",
        ok=_ok),
    Row("ReserveRequest.customer", "Reservations.Reserve", L.CUSTOMER_BYTES_MAX,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), customer=_s(v, t)), "customer", ok=_ok),
    # A campaign nobody created is an outcome, not an error.
    Row("ReserveRequest.campaign", "Reservations.Reserve", L.CAMPAIGN_BYTES_MAX,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), campaign=_s(v, t)), "campaign",
        ok=lambda r: r.outcome == T.OUTCOME_UNKNOWN_CAMPAIGN),
    Row("ReserveRequest.ttl_ms", "Reservations.Reserve", L.TTL_MS_MAX,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), ttl_ms=v), "ttl_ms", unit="ms", ok=_ok),
    Row("ReserveRequest.ttl_ms", "Reservations.Reserve", L.TTL_MS_MIN,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), ttl_ms=v), "ttl_ms", unit="ms",
        lower=True, ok=_ok),
    Row("ReserveRequest.prefer_locations", "Reservations.Reserve", L.SOURCES_PER_CHANNEL_MAX,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), prefer_locations=["WH-WEST"] * v),
        "prefer_locations", unit="items", ok=_ok),
    # An unknown preferred location only ranks nothing first.
    Row("ReserveRequest.prefer_locations", "Reservations.Reserve", L.LOCATION_BYTES_MAX,
        lambda v, t: reserve(t, "tmall", ("SKU-1", 1), prefer_locations=[_s(v, t)]),
        "prefer_locations[0]", ok=_ok),
    Row("Line.sku", "Reservations.Reserve", L.SKU_BYTES_MAX,
        lambda v, t: reserve(t, "tmall", (_s(v, t), 1)), "lines[0].sku",
        setup=lambda e, v, t: _sku_stock(e, _s(v, t)), ok=_ok),
    Row("Line.qty", "Reservations.Reserve", L.QTY_MAX,
        lambda v, t: reserve(t, "tmall", (t, v)), "lines[0].qty", unit="units",
        setup=lambda e, v, t: _sku_stock(e, t, v), ok=_ok),
    Row("Line.qty", "Reservations.Reserve", 1,
        lambda v, t: reserve(t, "tmall", ("SKU-1", v)), "lines[0].qty", unit="units",
        lower=True, ok=_ok),
]

MUTATIONS = [
    Row("CommitRequest.reservation_id", "Reservations.Commit", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: R.CommitRequest(reservation_id=_s(v, t)), "reservation_id",
        setup=lambda e, v, t: _rsv(e, _s(v, t)), ok=_ok),
    Row("CommitRequest.lines", "Reservations.Commit", L.LINES_PER_RESERVATION_MAX,
        lambda v, t: R.CommitRequest(reservation_id=t, lines=[T.Line(sku="SKU-1", qty=1)] * v),
        "lines", unit="items",
        setup=lambda e, v, t: _rsv(e, t, [("SKU-1", 1)] * v), ok=_ok),
    Row("Line.qty", "Reservations.Commit", L.QTY_MAX,
        lambda v, t: R.CommitRequest(reservation_id=t, lines=[T.Line(sku=t, qty=v)]),
        "lines[0].qty", unit="units",
        setup=lambda e, v, t: (_sku_stock(e, t, v), _rsv(e, t, [(t, v)])), ok=_ok),
    Row("ReleaseRequest.reservation_id", "Reservations.Release", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: R.ReleaseRequest(reservation_id=_s(v, t)), "reservation_id",
        setup=lambda e, v, t: _rsv(e, _s(v, t)), ok=_ok),
    Row("ExtendRequest.reservation_id", "Reservations.Extend", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: R.ExtendRequest(reservation_id=_s(v, t), ttl_ms=L.TTL_MS_MAX),
        "reservation_id", setup=lambda e, v, t: _rsv(e, _s(v, t)), ok=_ok),
    Row("ExtendRequest.ttl_ms", "Reservations.Extend", L.TTL_MS_MAX,
        lambda v, t: R.ExtendRequest(reservation_id=t, ttl_ms=v), "ttl_ms", unit="ms",
        setup=lambda e, v, t: _rsv(e, t), ok=_ok),
    Row("ExtendRequest.ttl_ms", "Reservations.Extend", L.TTL_MS_MIN,
        lambda v, t: R.ExtendRequest(reservation_id=t, ttl_ms=v), "ttl_ms", unit="ms",
        lower=True, setup=lambda e, v, t: _rsv(e, t), ok=_ok),
    Row("AmendRequest.reservation_id", "Reservations.Amend", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: R.AmendRequest(reservation_id=_s(v, t), lines=[T.Line(sku="SKU-1", qty=2)]),
        "reservation_id", setup=lambda e, v, t: _rsv(e, _s(v, t)), ok=_ok),
    Row("AmendRequest.lines", "Reservations.Amend", L.LINES_PER_RESERVATION_MAX,
        lambda v, t: R.AmendRequest(reservation_id=t, lines=[T.Line(sku="SKU-1", qty=1)] * v),
        "lines", unit="items", setup=lambda e, v, t: _rsv(e, t), ok=_ok),
]


def _n_results(n: int) -> Callable[[Any], bool]:
    return lambda resp: len(resp.results) == n


# Unknown ids and an unstocked SKU: each answer is an outcome, and nothing is held, so a
# batch at its limit costs little and leaves the other rows' stock alone.
BATCHES = [
    Row("ReserveBatchRequest.requests", "Reservations.ReserveBatch", L.BATCH_OPS_MAX,
        lambda v, t: R.ReserveBatchRequest(requests=[
            reserve(i, "tmall", ("SKU-NONE", 1)) for i in _ids(v, t)]),
        "requests", unit="items", ok=_n_results(L.BATCH_OPS_MAX)),
    Row("CommitBatchRequest.requests", "Reservations.CommitBatch", L.BATCH_OPS_MAX,
        lambda v, t: R.CommitBatchRequest(requests=[
            R.CommitRequest(reservation_id=i) for i in _ids(v, t)]),
        "requests", unit="items", ok=_n_results(L.BATCH_OPS_MAX)),
    Row("ReleaseBatchRequest.requests", "Reservations.ReleaseBatch", L.BATCH_OPS_MAX,
        lambda v, t: R.ReleaseBatchRequest(requests=[
            R.ReleaseRequest(reservation_id=i) for i in _ids(v, t)]),
        "requests", unit="items", ok=_n_results(L.BATCH_OPS_MAX)),
    Row("ExtendBatchRequest.requests", "Reservations.ExtendBatch", L.BATCH_OPS_MAX,
        lambda v, t: R.ExtendBatchRequest(requests=[
            R.ExtendRequest(reservation_id=i, ttl_ms=L.TTL_MS_MIN) for i in _ids(v, t)]),
        "requests", unit="items", ok=_n_results(L.BATCH_OPS_MAX)),
    Row("AmendBatchRequest.requests", "Reservations.AmendBatch", L.BATCH_OPS_MAX,
        lambda v, t: R.AmendBatchRequest(requests=[
            R.AmendRequest(reservation_id=i, lines=[T.Line(sku="SKU-1", qty=1)])
            for i in _ids(v, t)]),
        "requests", unit="items", ok=_n_results(L.BATCH_OPS_MAX)),
]


def _release_ops(n: int, tag: str, **kw) -> R.SessionRequest:
    return R.SessionRequest(ops=[R.Operation(id=k, release=R.ReleaseRequest(reservation_id=i),
                                             **kw) for k, i in enumerate(_ids(n, tag))])


def _one_op(**kw) -> R.SessionRequest:
    return R.SessionRequest(ops=[R.Operation(id=7, **kw)])


# A Session answers a refused op with an Error of its own (the field it names is the
# op's), and the stream goes on.
SESSION = [
    Row("SessionRequest.ops", "Reservations.Session", OPS_PER_MESSAGE_MAX,
        _release_ops, "ops", unit="items"),
    Row("Operation.timeout_ms", "Reservations.Session", 0,
        lambda v, t: _release_ops(1, t, timeout_ms=v), "timeout_ms", unit="ms", lower=True),
    Row("ReserveRequest.reservation_id", "Reservations.Session", L.RESERVATION_ID_BYTES_MAX,
        lambda v, t: _one_op(reserve=reserve(_s(v, t), "tmall", ("SKU-1", 1))),
        "reservation_id"),
    Row("ReserveRequest.lines", "Reservations.Session", L.LINES_PER_RESERVATION_MAX,
        lambda v, t: _one_op(reserve=reserve(t, "tmall", *[("SKU-1", 1)] * v)), "lines",
        unit="items"),
    Row("CommitRequest.lines", "Reservations.Session", L.LINES_PER_RESERVATION_MAX,
        lambda v, t: _one_op(commit=R.CommitRequest(
            reservation_id=t, lines=[T.Line(sku="SKU-1", qty=1)] * v)), "lines", unit="items",
        setup=lambda e, v, t: _rsv(e, t, [("SKU-1", 1)] * v)),
    Row("ExtendRequest.ttl_ms", "Reservations.Session", L.TTL_MS_MAX,
        lambda v, t: _one_op(extend=R.ExtendRequest(reservation_id=t, ttl_ms=v)), "ttl_ms",
        unit="ms", setup=lambda e, v, t: _rsv(e, t)),
]


def _loc(e: Engine, v: int, t: str) -> None:
    e.add_location(_s(v, t))


CATALOGUE = [
    Row("AddLocationRequest.location", "Inventory.AddLocation", L.LOCATION_BYTES_MAX,
        lambda v, t: I.AddLocationRequest(location=_s(v, t)), "location"),
    Row("SetChannelRequest.channel", "Inventory.SetChannel", L.CHANNEL_BYTES_MAX,
        lambda v, t: I.SetChannelRequest(channel=_s(v, t), sources=[
            I.Source(location="WH-EAST", pool="online")]), "channel"),
    Row("SetChannelRequest.sources", "Inventory.SetChannel", L.SOURCES_PER_CHANNEL_MAX,
        lambda v, t: I.SetChannelRequest(channel=t, sources=[
            I.Source(location="WH-EAST", pool=f"p{i}") for i in range(v)]), "sources",
        unit="items"),
    Row("Source.location", "Inventory.SetChannel", L.LOCATION_BYTES_MAX,
        lambda v, t: I.SetChannelRequest(channel=t, sources=[
            I.Source(location=_s(v, t), pool="online")]), "sources[0].location", setup=_loc),
    Row("Source.pool", "Inventory.SetChannel", L.POOL_BYTES_MAX,
        lambda v, t: I.SetChannelRequest(channel=t, sources=[
            I.Source(location="WH-EAST", pool=_s(v, t))]), "sources[0].pool"),
    Row("SetAllocationRuleRequest.location", "Inventory.SetAllocationRule",
        L.LOCATION_BYTES_MAX, lambda v, t: I.SetAllocationRuleRequest(
            location=_s(v, t), shares={"online": 100}), "location", setup=_loc),
    Row("SetAllocationRuleRequest.shares", "Inventory.SetAllocationRule", L.POOLS_PER_RULE_MAX,
        lambda v, t: I.SetAllocationRuleRequest(location="WH-WEST", shares={
            f"p{i}": L.PERCENT_TOTAL // v + (i < L.PERCENT_TOTAL % v) for i in range(v)}),
        "shares", unit="items"),
    Row("SetAllocationRuleRequest.shares", "Inventory.SetAllocationRule", L.POOL_BYTES_MAX,
        lambda v, t: I.SetAllocationRuleRequest(location="WH-WEST", shares={_s(v, t): 100}),
        "shares.pool"),
    Row("SetAllocationRuleRequest.shares", "Inventory.SetAllocationRule", L.PERCENT_TOTAL,
        lambda v, t: I.SetAllocationRuleRequest(location="WH-WEST", shares={"online": v}),
        "shares[online]", unit="percent"),
    Row("SetAllocationRuleRequest.shares", "Inventory.SetAllocationRule", 0,
        lambda v, t: I.SetAllocationRuleRequest(location="WH-WEST", shares={
            "online": L.PERCENT_TOTAL, "p": v}), "shares[p]", unit="percent", lower=True),
    Row("SetAllocationRuleRequest.sku", "Inventory.SetAllocationRule", L.SKU_BYTES_MAX,
        lambda v, t: I.SetAllocationRuleRequest(location="WH-WEST", shares={"online": 100},
                                                sku=_s(v, t)), "sku"),
    Row("SetSafetyStockRequest.sku", "Inventory.SetSafetyStock", L.SKU_BYTES_MAX,
        lambda v, t: I.SetSafetyStockRequest(sku=_s(v, t), units=1, channel="tmall"), "sku"),
    Row("SetSafetyStockRequest.units", "Inventory.SetSafetyStock", L.ON_HAND_MAX,
        lambda v, t: I.SetSafetyStockRequest(sku="SKU-1", units=v, channel="tmall"), "units",
        unit="units"),
    Row("SetSafetyStockRequest.location", "Inventory.SetSafetyStock", L.LOCATION_BYTES_MAX,
        lambda v, t: I.SetSafetyStockRequest(sku="SKU-1", units=1, location=_s(v, t),
                                             pool="online"), "location", setup=_loc),
    Row("SetSafetyStockRequest.pool", "Inventory.SetSafetyStock", L.POOL_BYTES_MAX,
        lambda v, t: I.SetSafetyStockRequest(sku="SKU-1", units=1, location="WH-EAST",
                                             pool=_s(v, t)), "pool"),
    Row("SetSafetyStockRequest.channel", "Inventory.SetSafetyStock", L.CHANNEL_BYTES_MAX,
        lambda v, t: I.SetSafetyStockRequest(sku="SKU-1", units=1, channel=_s(v, t)),
        "channel", setup=lambda e, v, t: _channel(e, _s(v, t))),
    Row("SetPresaleAllowanceRequest.sku", "Inventory.SetPresaleAllowance", L.SKU_BYTES_MAX,
        lambda v, t: I.SetPresaleAllowanceRequest(sku=_s(v, t), location="WH-EAST",
                                                  pool="online", units=1), "sku"),
    Row("SetPresaleAllowanceRequest.location", "Inventory.SetPresaleAllowance",
        L.LOCATION_BYTES_MAX, lambda v, t: I.SetPresaleAllowanceRequest(
            sku="SKU-P", location=_s(v, t), pool="online", units=1), "location", setup=_loc),
    Row("SetPresaleAllowanceRequest.pool", "Inventory.SetPresaleAllowance", L.POOL_BYTES_MAX,
        lambda v, t: I.SetPresaleAllowanceRequest(sku="SKU-P", location="WH-EAST",
                                                  pool=_s(v, t), units=1), "pool"),
    Row("SetPresaleAllowanceRequest.units", "Inventory.SetPresaleAllowance",
        L.PRESALE_UNITS_MAX, lambda v, t: I.SetPresaleAllowanceRequest(
            sku="SKU-P", location="WH-EAST", pool="online", units=v), "units", unit="units"),
]


def _receive(**kw) -> I.ReceiveRequest:
    args = dict(sku="SKU-R", location="WH-WEST", qty=1, pool="online")
    args.update(kw)
    return I.ReceiveRequest(**args)


def _adjust(**kw) -> I.AdjustRequest:
    args = dict(sku="SKU-R", location="WH-WEST", pool="offline", on_hand=1)
    args.update(kw)
    return I.AdjustRequest(**args)


def _move(**kw) -> I.MoveRequest:
    args = dict(sku="SKU-1", location="WH-EAST", from_pool="online", to_pool="offline", qty=1)
    args.update(kw)
    return I.MoveRequest(**args)


def _transfer(t: str, **kw) -> I.TransferOutRequest:
    args = dict(transfer_id=t, sku="SKU-1", from_location="WH-EAST", from_pool="online",
                to_location="STORE-12", to_pool="offline", qty=1)
    args.update(kw)
    return I.TransferOutRequest(**args)


MOVEMENTS = [
    Row("ReceiveRequest.sku", "Inventory.Receive", L.SKU_BYTES_MAX,
        lambda v, t: _receive(sku=_s(v, t)), "sku"),
    Row("ReceiveRequest.location", "Inventory.Receive", L.LOCATION_BYTES_MAX,
        lambda v, t: _receive(location=_s(v, t)), "location", setup=_loc),
    Row("ReceiveRequest.qty", "Inventory.Receive", L.QTY_MAX,
        lambda v, t: _receive(sku=t, qty=v), "qty", unit="units"),
    Row("ReceiveRequest.qty", "Inventory.Receive", 1,
        lambda v, t: _receive(qty=v), "qty", unit="units", lower=True),
    Row("ReceiveRequest.pool", "Inventory.Receive", L.POOL_BYTES_MAX,
        lambda v, t: _receive(pool=_s(v, t)), "pool"),
    Row("ReceiveRequest.ref", "Inventory.Receive", L.REF_BYTES_MAX,
        lambda v, t: _receive(ref=_s(v, t)), "ref"),
    Row("AdjustRequest.sku", "Inventory.Adjust", L.SKU_BYTES_MAX,
        lambda v, t: _adjust(sku=_s(v, t)), "sku"),
    Row("AdjustRequest.location", "Inventory.Adjust", L.LOCATION_BYTES_MAX,
        lambda v, t: _adjust(location=_s(v, t)), "location", setup=_loc),
    Row("AdjustRequest.pool", "Inventory.Adjust", L.POOL_BYTES_MAX,
        lambda v, t: _adjust(pool=_s(v, t)), "pool"),
    Row("AdjustRequest.on_hand", "Inventory.Adjust", L.ON_HAND_MAX,
        lambda v, t: _adjust(sku=t, on_hand=v), "on_hand", unit="units"),
    Row("AdjustRequest.ref", "Inventory.Adjust", L.REF_BYTES_MAX,
        lambda v, t: _adjust(ref=_s(v, t)), "ref"),
    Row("MoveRequest.sku", "Inventory.Move", L.SKU_BYTES_MAX,
        lambda v, t: _move(sku=_s(v, t)), "sku", setup=lambda e, v, t: _sku_stock(e, _s(v, t))),
    Row("MoveRequest.location", "Inventory.Move", L.LOCATION_BYTES_MAX,
        lambda v, t: _move(location=_s(v, t)), "location",
        setup=lambda e, v, t: (_loc(e, v, t), e.adjust("SKU-1", _s(v, t), "online", 1))),
    Row("MoveRequest.from_pool", "Inventory.Move", L.POOL_BYTES_MAX,
        lambda v, t: _move(from_pool=_s(v, t)), "from_pool",
        setup=lambda e, v, t: e.adjust("SKU-1", "WH-EAST", _s(v, t), 1)),
    Row("MoveRequest.to_pool", "Inventory.Move", L.POOL_BYTES_MAX,
        lambda v, t: _move(to_pool=_s(v, t)), "to_pool"),
    Row("MoveRequest.qty", "Inventory.Move", L.QTY_MAX,
        lambda v, t: _move(sku=t, qty=v), "qty", unit="units",
        setup=lambda e, v, t: _sku_stock(e, t, v)),
    Row("TransferOutRequest.transfer_id", "Inventory.TransferOut", L.TRANSFER_ID_BYTES_MAX,
        lambda v, t: _transfer(_s(v, t)), "transfer_id"),
    Row("TransferOutRequest.sku", "Inventory.TransferOut", L.SKU_BYTES_MAX,
        lambda v, t: _transfer(t, sku=_s(v, t)), "sku",
        setup=lambda e, v, t: _sku_stock(e, _s(v, t))),
    Row("TransferOutRequest.from_location", "Inventory.TransferOut", L.LOCATION_BYTES_MAX,
        lambda v, t: _transfer(t, from_location=_s(v, t)), "from_location",
        setup=lambda e, v, t: (_loc(e, v, t), e.adjust("SKU-1", _s(v, t), "online", 1))),
    Row("TransferOutRequest.from_pool", "Inventory.TransferOut", L.POOL_BYTES_MAX,
        lambda v, t: _transfer(t, from_pool=_s(v, t)), "from_pool",
        setup=lambda e, v, t: e.adjust("SKU-1", "WH-EAST", _s(v, t), 1)),
    Row("TransferOutRequest.to_location", "Inventory.TransferOut", L.LOCATION_BYTES_MAX,
        lambda v, t: _transfer(t, to_location=_s(v, t)), "to_location", setup=_loc),
    Row("TransferOutRequest.to_pool", "Inventory.TransferOut", L.POOL_BYTES_MAX,
        lambda v, t: _transfer(t, to_pool=_s(v, t)), "to_pool"),
    Row("TransferOutRequest.qty", "Inventory.TransferOut", L.QTY_MAX,
        lambda v, t: _transfer(t, sku=t, qty=v), "qty", unit="units",
        setup=lambda e, v, t: _sku_stock(e, t, v)),
    Row("TransferInRequest.transfer_id", "Inventory.TransferIn", L.TRANSFER_ID_BYTES_MAX,
        lambda v, t: I.TransferInRequest(transfer_id=_s(v, t)), "transfer_id",
        setup=lambda e, v, t: e.transfer_out(_s(v, t), "SKU-1", "WH-EAST", "online",
                                             "STORE-12", "offline", 1)),
]


def _rows(**kw) -> list[I.ImportChunk]:
    args = dict(sku="SKU-I", location="WH-WEST", pool="online", on_hand=1)
    args.update(kw)
    return [I.ImportChunk(rows=[I.StockRow(**args)])]


# Import is a client stream: its rows are named rows[i] across the stream.
IMPORT = [
    Row("StockRow.sku", "Inventory.Import", L.SKU_BYTES_MAX,
        lambda v, t: _rows(sku=_s(v, t)), "rows[0].sku"),
    Row("StockRow.location", "Inventory.Import", L.LOCATION_BYTES_MAX,
        lambda v, t: _rows(location=_s(v, t)), "rows[0].location", setup=_loc),
    Row("StockRow.pool", "Inventory.Import", L.POOL_BYTES_MAX,
        lambda v, t: _rows(pool=_s(v, t)), "rows[0].pool"),
    Row("StockRow.on_hand", "Inventory.Import", L.ON_HAND_MAX,
        lambda v, t: _rows(sku=t, on_hand=v), "rows[0].on_hand", unit="units"),
    Row("ImportChunk.rows", "Inventory.Import", L.IMPORT_CHUNK_ROWS,
        lambda v, t: [I.ImportChunk(rows=[I.StockRow(sku=i, location="WH-WEST", pool="online",
                                                     on_hand=1) for i in _ids(v, t)])],
        "chunks[0].rows", unit="items"),
]


CAMPAIGNS = [
    Row("CreateCampaignRequest.campaign_id", "Inventory.CreateCampaign", L.CAMPAIGN_BYTES_MAX,
        lambda v, t: _campaign(_s(v, t)), "campaign_id"),
    Row("CreateCampaignRequest.channels", "Inventory.CreateCampaign",
        L.CHANNELS_PER_CAMPAIGN_MAX,
        lambda v, t: _campaign(t, channels=_ids(v, "ch")), "channels", unit="items",
        setup=lambda e, v, t: [_channel(e, c) for c in _ids(v + 1, "ch")]),
    # start_ms at TIME_MS_MAX leaves no room for an end after it: its upper bound is
    # swept through end_ms.
    Row("CreateCampaignRequest.start_ms", "Inventory.CreateCampaign", 0,
        lambda v, t: _campaign(t, start_ms=v, end_ms=1), "start_ms", unit="ms", lower=True,
        at_code="FAILED_PRECONDITION"),
    Row("CreateCampaignRequest.end_ms", "Inventory.CreateCampaign", L.CAMPAIGN_WINDOW_MS_MAX,
        lambda v, t: _campaign(t, end_ms=LATER_MS + v), "end_ms", unit="ms"),
    Row("CreateCampaignRequest.end_ms", "Inventory.CreateCampaign", L.TIME_MS_MAX,
        lambda v, t: _campaign(t, start_ms=L.TIME_MS_MAX - 10, end_ms=v), "end_ms", unit="ms"),
    Row("CreateCampaignRequest.location", "Inventory.CreateCampaign", L.LOCATION_BYTES_MAX,
        lambda v, t: _campaign(t, location=_s(v, t)), "location", setup=_loc),
    Row("CreateCampaignRequest.source_pool", "Inventory.CreateCampaign", L.POOL_BYTES_MAX,
        lambda v, t: _campaign(t, source_pool=_s(v, t)), "source_pool"),
    Row("CreateCampaignRequest.quotas", "Inventory.CreateCampaign", L.SKUS_PER_CAMPAIGN_MAX,
        lambda v, t: _campaign(t, quotas={i: 1 for i in _ids(v, t)}), "quotas", unit="items"),
    Row("CreateCampaignRequest.quotas", "Inventory.CreateCampaign", L.QTY_MAX,
        lambda v, t: _campaign(t, quotas={"SKU-1": v}), "quotas[SKU-1]", unit="units"),
    Row("CreateCampaignRequest.quotas", "Inventory.CreateCampaign", L.SKU_BYTES_MAX,
        lambda v, t: _campaign(t, quotas={_s(v, t): 1}), "quotas key #0"),
    Row("CreateCampaignRequest.customer_limit", "Inventory.CreateCampaign", L.QTY_MAX,
        lambda v, t: _campaign(t, customer_limit=v), "customer_limit", unit="units"),
    Row("CampaignRequest.campaign_id", "Inventory.GetCampaign", L.CAMPAIGN_BYTES_MAX,
        lambda v, t: I.CampaignRequest(campaign_id=_s(v, t)), "campaign_id",
        setup=lambda e, v, t: _create(e, _s(v, t))),
]


def _avail(**kw) -> I.GetAvailabilityRequest:
    args = dict(channel="tmall", skus=["SKU-1"])
    args.update(kw)
    return I.GetAvailabilityRequest(**args)


def _watch(**kw) -> watch_pb2.WatchRequest:
    args = dict(channel="tmall", skus=["SKU-1"])
    args.update(kw)
    return watch_pb2.WatchRequest(**args)


READS = [
    Row("GetStockRequest.sku", "Inventory.GetStock", L.SKU_BYTES_MAX,
        lambda v, t: I.GetStockRequest(sku=_s(v, t)), "sku",
        setup=lambda e, v, t: _sku_stock(e, _s(v, t)), ok=lambda r: len(r.buckets) == 1),
    Row("GetAvailabilityRequest.channel", "Inventory.GetAvailability", L.CHANNEL_BYTES_MAX,
        lambda v, t: _avail(channel=_s(v, t)), "channel",
        setup=lambda e, v, t: _channel(e, _s(v, t))),
    Row("GetAvailabilityRequest.skus", "Inventory.GetAvailability", L.SKUS_PER_QUERY_MAX,
        lambda v, t: _avail(skus=["SKU-1", *_ids(v - 1, t)]), "skus", unit="items",
        ok=lambda r: len(r.available) == L.SKUS_PER_QUERY_MAX),
    Row("GetAvailabilityRequest.skus", "Inventory.GetAvailability", L.SKU_BYTES_MAX,
        lambda v, t: _avail(skus=[_s(v, t)]), "skus[0]"),
    Row("GetAvailabilityRequest.campaign", "Inventory.GetAvailability", L.CAMPAIGN_BYTES_MAX,
        lambda v, t: _avail(campaign=_s(v, t)), "campaign",
        setup=lambda e, v, t: _create(e, _s(v, t))),
    Row("GetAvailabilityRequest.prefer_locations", "Inventory.GetAvailability",
        L.SOURCES_PER_CHANNEL_MAX, lambda v, t: _avail(prefer_locations=["WH-WEST"] * v),
        "prefer_locations", unit="items"),
    Row("GetAvailabilityRequest.prefer_locations", "Inventory.GetAvailability",
        L.LOCATION_BYTES_MAX, lambda v, t: _avail(prefer_locations=[_s(v, t)]),
        "prefer_locations[0]"),
    Row("GetReservationRequest.reservation_id", "Inventory.GetReservation",
        L.RESERVATION_ID_BYTES_MAX, lambda v, t: I.GetReservationRequest(reservation_id=_s(v, t)),
        "reservation_id", setup=lambda e, v, t: _rsv(e, _s(v, t))),
    Row("ReadJournalRequest.from_seq", "Inventory.ReadJournal", L.SEQ_MAX,
        lambda v, t: I.ReadJournalRequest(from_seq=v, limit=1), "from_seq", unit="seq",
        ok=lambda r: not r.events),
    Row("ReadJournalRequest.limit", "Inventory.ReadJournal", L.JOURNAL_READ_EVENTS_MAX,
        lambda v, t: I.ReadJournalRequest(limit=v), "limit", unit="events",
        ok=lambda r: len(r.events) == min(r.last_seq, L.JOURNAL_READ_EVENTS_MAX)),
    Row("ReadJournalRequest.limit", "Inventory.ReadJournal", 0,
        lambda v, t: I.ReadJournalRequest(limit=v), "limit", unit="events", lower=True),
    Row("WatchRequest.channel", "Watch.Subscribe", L.CHANNEL_BYTES_MAX,
        lambda v, t: _watch(channel=_s(v, t)), "channel",
        setup=lambda e, v, t: _channel(e, _s(v, t))),
    Row("WatchRequest.skus", "Watch.Subscribe", L.SKUS_PER_QUERY_MAX,
        lambda v, t: _watch(skus=_ids(v, t)), "skus", unit="items"),
    Row("WatchRequest.skus", "Watch.Subscribe", L.SKU_BYTES_MAX,
        lambda v, t: _watch(skus=[_s(v, t)]), "skus[0]"),
    # The bound of from_seq is where the journal ends: one past its last event.
    Row("WatchRequest.from_seq", "Watch.Subscribe", lambda e: e.last_seq + 1,
        lambda v, t: _watch(from_seq=v), "from_seq", unit="seq"),
    Row("WatchRequest.coalesce_ms", "Watch.Subscribe", WATCH_COALESCE_MS_MAX,
        lambda v, t: _watch(coalesce_ms=v), "coalesce_ms", unit="ms"),
    Row("WatchRequest.coalesce_ms", "Watch.Subscribe", 0,
        lambda v, t: _watch(coalesce_ms=v), "coalesce_ms", unit="ms", lower=True),
]

ROWS: list[Row] = (RESERVE_IDS + MUTATIONS + BATCHES + SESSION + CATALOGUE + MOVEMENTS
                   + IMPORT + CAMPAIGNS + READS)

# Request fields with no limit of their own, and why (the sweep's completeness test
# requires a row or a reason for every scalar, list and map field of every request).
NO_LIMIT = {
    "ReserveRequest.partial": "a bool: both values are valid",
    "SetChannelRequest.allow_presale": "a bool: both values are valid",
    "Operation.id": "the caller's correlation id: every uint64 is one",
    "AddLocationRequest.kind": "a choice of words, not a size: an unknown word is "
                               "INVALID_ARGUMENT (test_server_bad_input.py)",
}

__all__ = ["LATER_MS", "NO_LIMIT", "ROWS", "STOCK_UNITS", "Row", "text"]
