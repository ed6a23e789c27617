"""Engine records <-> protobuf messages.

This runs once per reservation on the hot path, so results are written into messages in
place (`fill_*` into a field of the response being built: no intermediate message is made
and copied), and requests are read field by field without validation the engine repeats.
"""

from __future__ import annotations

from typing import Any

from stockgate.engine import Campaign, Reservation, ReserveRequest, Result, limits
from stockgate.engine.queries import BucketStock
from stockgate.v1 import inventory_pb2, types_pb2

from .config import MESSAGE_BYTES_MIN

TTL_MS_DEFAULT = limits.TTL_MS_DEFAULT

# Serialized sizes at every limit, in bytes (tests build these messages and check them).
RESULT_BYTES_MAX = 470_000  # one Result: 100 lines x 32 allocations, committed, longest ids
CHANGE_BYTES_MAX = 80  # one Availability of a WatchUpdate (64-byte SKU, negative level)
ALERT_BYTES_MAX = 400  # one Alert of a WatchUpdate (every string at its limit)
# Bounds of one reserve's answer beyond what its request already spells (ids, SKUs, qty),
# for refusing a batch whose answer could not fit before doing any of it.
RESULT_FIXED_BYTES = 64  # outcome, replayed, state, times, tags and lengths of one Result
LINE_FIXED_BYTES = 32  # granted, outcome, tags and lengths of a line's result and commit
ALLOCATION_FIXED_BYTES = 13  # qty, tags and lengths of one Allocation (plus its names)
CAMPAIGN_ALLOCATION_BYTES_MAX = (ALLOCATION_FIXED_BYTES + limits.LOCATION_BYTES_MAX
                                 + len("campaign:") + limits.CAMPAIGN_BYTES_MAX)
# A Session or Watch message is cut once it passes this many bytes (or half of
# message_bytes_max, if smaller); the clients receive messages of up to 4 MiB.
ANSWER_BYTES_TARGET_MAX = 1 << 20

assert RESULT_BYTES_MAX <= MESSAGE_BYTES_MIN // 2


def allocation_bytes(sources: Any) -> int:
    """Bytes of the allocations of one line drawing from every one of these (location,
    pool) sources: the most a line of a reservation of that channel can carry."""
    return sum(ALLOCATION_FIXED_BYTES + len(loc.encode()) + len(pool.encode())
               for loc, pool in sources)


def answer_bytes_target(message_bytes_max: int) -> int:
    """Bytes past which a Session response or Watch update is cut into another message:
    cut there, a message stays within message_bytes_max even when its last answer is as
    large as an answer can be."""
    return min(message_bytes_max // 2, ANSWER_BYTES_TARGET_MAX)


# ---------------------------------------------------------------- requests -> engine

def reserve_request(m: Any) -> ReserveRequest:
    """A ReserveRequest message as the engine's ReserveRequest. Empty strings mean "not
    given"; ttl_ms 0 means the default."""
    prefer = m.prefer_locations
    return ReserveRequest(
        m.reservation_id, m.channel, [(ln.sku, ln.qty) for ln in m.lines],
        m.customer or None, m.campaign or None, m.ttl_ms or TTL_MS_DEFAULT, m.partial,
        tuple(prefer) if prefer else ())  # tuple() of an empty repeated field costs 0.3 us


def lines(m_lines: Any) -> list[tuple[str, int]]:
    """Line messages as (sku, qty) pairs."""
    return [(ln.sku, ln.qty) for ln in m_lines]


def commit_lines(m_lines: Any) -> list[tuple[str, int]] | None:
    """Commit's lines: an empty list commits everything (None to the engine)."""
    return [(ln.sku, ln.qty) for ln in m_lines] or None


def op_of(kind: str, m: Any) -> tuple:
    """An operation of engine.aio.apply() from one request of that kind: a reserve as
    the engine's ReserveRequest already (session.take()), the others as their message."""
    if kind == "reserve":
        return ("reserve", m)
    if kind == "commit":
        return ("commit", m.reservation_id, commit_lines(m.lines))
    if kind == "release":
        return ("release", m.reservation_id)
    if kind == "extend":
        return ("extend", m.reservation_id, m.ttl_ms)
    return ("amend", m.reservation_id, lines(m.lines))


# ---------------------------------------------------------------- engine -> responses

def _fill_lines(repeated: Any, line_results: Any) -> None:
    for ln in line_results:
        lm = repeated.add(sku=ln.sku, qty=ln.qty, granted=ln.granted, outcome=ln.outcome)
        allocs = lm.allocations
        for a in ln.allocations:
            allocs.add(location=a.location, pool=a.pool, qty=a.qty)


def fill_reservation(m: types_pb2.Reservation, r: Reservation) -> None:
    """Write an engine Reservation into a Reservation message."""
    m.reservation_id = r.reservation_id
    m.channel = r.channel
    m.state = r.state
    _fill_lines(m.lines, r.lines)
    if r.customer is not None:
        m.customer = r.customer
    if r.campaign is not None:
        m.campaign = r.campaign
    m.created_ms = r.created_ms
    m.expires_ms = r.expires_ms
    if r.resolved_ms is not None:
        m.resolved_ms = r.resolved_ms
    if r.committed:
        committed = m.committed
        for sku, qty in r.committed:
            committed.add(sku=sku, qty=qty)


def fill_result(m: types_pb2.Result, r: Result) -> None:
    """Write an engine Result into a Result message. Per-line outcomes go in `lines` only
    when there is no reservation to carry them (a refused reserve or amend)."""
    m.outcome = r.outcome
    if r.replayed:
        m.replayed = True
    if r.reservation is not None:
        fill_reservation(m.reservation, r.reservation)
    elif r.lines:
        _fill_lines(m.lines, r.lines)


def result(r: Result) -> types_pb2.Result:
    """An engine Result as a new Result message."""
    m = types_pb2.Result()
    fill_result(m, r)
    return m


def reservation(r: Reservation) -> types_pb2.Reservation:
    """An engine Reservation as a new Reservation message."""
    m = types_pb2.Reservation()
    fill_reservation(m, r)
    return m


def campaign(c: Campaign) -> inventory_pb2.Campaign:
    """An engine Campaign as a Campaign message."""
    return inventory_pb2.Campaign(
        campaign_id=c.campaign_id, channels=c.channels, start_ms=c.start_ms, end_ms=c.end_ms,
        location=c.location, source_pool=c.source_pool, quotas=c.quotas,
        customer_limit=c.customer_limit, state=c.state, carved=c.carved,
        returned=c.returned, pool=c.pool)


def bucket_stock(b: BucketStock) -> inventory_pb2.BucketStock:
    """The counters of one bucket as a BucketStock message."""
    return inventory_pb2.BucketStock(
        sku=b.sku, location=b.location, pool=b.pool, on_hand=b.on_hand, held=b.held,
        available=b.available, presale_units=b.presale_units, safety_stock=b.safety_stock)
