"""The Engine: one book of stock per SKU, split into pools, reserved through the core and
made durable by group commit. Usable embedded, with no server.

Threading: every decision runs under one lock and is staged into the open batch before
the lock is released, so the order of decisions is the order of the journal. The only
waiting happens after the lock is released: for the batch's commit (durability "fsync")
or not at all (durability "async").
"""

from __future__ import annotations

import gc
import heapq
import os
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from . import _core, limits, records
from .clock import Clock, SystemClock
from .errors import (
    Conflict,
    EngineClosed,
    InvalidArgument,
    NotFound,
    Overloaded,
    StockgateError,
)
from .group_commit import Batch, Writer
from .limits import check_count, check_id, check_int, check_qty
from .outcomes import Outcome
from .reservations import (
    Allocation,
    LineResult,
    Reservation,
    Result,
    State,
    transition,
)
from .store import Store

# Presale floors live in the core as int32.
assert limits.PRESALE_UNITS_MAX <= -_core.FLOOR_MIN

Durability = Literal["fsync", "async"]
CAMPAIGN_POOL_PREFIX = "campaign:"
LOCATION_KINDS = ("warehouse", "store")
_EMPTY = array("q")

def _check_pool(field: str, pool: object) -> str:
    """A pool a caller may name for stock movements and channel sources: campaign pools
    are filled and emptied by their campaign alone, or its quota would not add up."""
    check_id(field, pool, limits.POOL_BYTES_MAX)
    if pool.startswith(CAMPAIGN_POOL_PREFIX):
        raise InvalidArgument(field, f"is a campaign pool ({CAMPAIGN_POOL_PREFIX}...); "
                                     "its campaign moves its stock")
    return pool


# Which reason a refusal names when several lines are short: the most fundamental.
_RANK = {Outcome.UNKNOWN_SKU: 0, Outcome.CUSTOMER_LIMIT: 1, Outcome.INSUFFICIENT_STOCK: 2}

# Campaign states.
SCHEDULED, ACTIVE, ENDED = "scheduled", "active", "ended"


@dataclass(frozen=True, slots=True)
class BucketStock:
    """The counters of one (sku, location, pool) as a query sees them."""

    sku: str
    location: str
    pool: str
    on_hand: int
    held: int
    available: int
    presale_units: int = 0
    safety_stock: int = 0


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """One reservation to make, for Engine.reserve_many()."""

    reservation_id: str
    channel: str
    lines: Sequence[tuple[str, int]]
    customer: str | None = None
    campaign: str | None = None
    ttl_ms: int = limits.TTL_MS_DEFAULT
    partial: bool = False
    prefer_locations: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Campaign:
    """A flash sale as a query sees it."""

    campaign_id: str
    channels: tuple[str, ...]
    start_ms: int
    end_ms: int
    location: str
    source_pool: str
    quotas: dict[str, int]
    customer_limit: int
    state: str
    carved: dict[str, int]
    returned: dict[str, int]

    @property
    def pool(self) -> str:
        return CAMPAIGN_POOL_PREFIX + self.campaign_id


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What Engine.check() found: `drifts` is empty when the books agree."""

    drifts: tuple[str, ...]
    buckets: int
    live_reservations: int
    events: int
    totals: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.drifts


class _Res:
    """A reservation as the engine keeps it in memory (mutable, compact)."""

    __slots__ = (
        "rid", "channel", "customer", "campaign", "state", "partial", "created_ms",
        "expires_ms", "resolved_ms", "lines", "committed", "commit_req", "req", "outcome",
        "amend_outcome",
        "ticket",
    )

    def __init__(self, rid, channel, customer, campaign, partial, created_ms, expires_ms,
                 lines, req, outcome):
        self.rid = rid
        self.channel = channel
        self.customer = customer
        self.campaign = campaign
        self.state = State.HELD
        self.partial = partial
        self.created_ms = created_ms
        self.expires_ms = expires_ms
        self.resolved_ms = None
        # (sku, qty asked, granted, (bucket, units, bucket, units, ...), line outcome)
        self.lines: list[list[Any]] = lines
        self.committed: list[list[Any]] | None = None
        self.commit_req: tuple | None = None
        self.req = req  # the reserve request's content, to tell a replay from a conflict
        self.outcome = outcome  # the reserve's first answer, which its replays repeat
        self.amend_outcome: Outcome | None = None  # the last amend's, for its replays
        self.ticket: Batch | None = None

    def encode(self) -> bytes:
        return records.pack([
            self.rid, self.channel, self.customer, self.campaign, int(self.state),
            self.partial, self.created_ms, self.expires_ms, self.resolved_ms, self.lines,
            self.committed, self.commit_req, int(self.outcome), self.req[4],
            None if self.amend_outcome is None else int(self.amend_outcome),
        ])

    @classmethod
    def decode(cls, value: bytes) -> _Res:
        (rid, channel, customer, campaign, state, partial, created, expires, resolved, lines,
         committed, commit_req, outcome, req_lines, amend_outcome) = records.unpack(
            value, "reservation")
        req_lines = tuple((s, q) for s, q in req_lines)
        lines = [(s, q, g, tuple(alloc), lo) for s, q, g, alloc, lo in lines]
        r = cls(rid, channel, customer, campaign, partial, created, expires, lines,
                (channel, customer, campaign, partial, req_lines), Outcome(outcome))
        r.state = State(state)
        r.resolved_ms = resolved
        r.committed = committed
        r.commit_req = None if commit_req is None else tuple(tuple(x) for x in commit_req)
        r.amend_outcome = None if amend_outcome is None else Outcome(amend_outcome)
        return r


class _Campaign:
    __slots__ = ("cid", "channels", "start_ms", "end_ms", "location", "source_pool", "quotas",
                 "customer_limit", "state", "carved", "returned")

    def encode(self) -> bytes:
        return records.pack([
            self.cid, sorted(self.channels), self.start_ms, self.end_ms, self.location,
            self.source_pool, self.quotas, self.customer_limit, self.state, self.carved,
            self.returned,
        ])

    @classmethod
    def decode(cls, value: bytes) -> _Campaign:
        c = cls()
        (c.cid, channels, c.start_ms, c.end_ms, c.location, c.source_pool, c.quotas,
         c.customer_limit, c.state, c.carved, c.returned) = records.unpack(value, "campaign")
        c.channels = frozenset(channels)
        return c

    @property
    def pool(self) -> str:
        return CAMPAIGN_POOL_PREFIX + self.cid

    def public(self) -> Campaign:
        return Campaign(self.cid, tuple(sorted(self.channels)), self.start_ms, self.end_ms,
                        self.location, self.source_pool, dict(self.quotas),
                        self.customer_limit, self.state, dict(self.carved),
                        dict(self.returned))


class Engine:
    """The reservation engine over one LMDB directory.

    Open with Engine(path); close with close() or a `with` block. Every method is
    thread-safe. Mutations return after their transaction is durable (durability
    "fsync", the default) or right after the decision (durability "async": a crash may
    lose what was acknowledged but not yet committed, the batch being written and the one
    collecting behind it, and never leaves a half-applied decision). `engine.aio` offers the same calls as coroutines.

    Raises InvalidArgument for malformed input (nothing changes), NotFound for unknown
    locations/channels/campaigns in admin calls, Overloaded when too much waits for the
    disk, StoreError/StoreFullError when the disk fails (nothing acknowledged is lost).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        durability: Durability = "fsync",
        map_size_bytes: int = limits.MAP_SIZE_BYTES_DEFAULT,
        map_size_bytes_max: int = limits.MAP_SIZE_BYTES_MAX,
    ) -> None:
        if durability not in ("fsync", "async"):
            raise InvalidArgument("durability", f"is {durability!r}; use 'fsync' or 'async'")
        check_int("map_size_bytes", map_size_bytes, 1 << 20, limits.MAP_SIZE_BYTES_MAX)
        self.path = os.fspath(path)
        self.durability: Durability = durability
        self._clock: Clock = clock or SystemClock()
        self._store = Store(path, map_size_bytes=map_size_bytes,
                            map_size_bytes_max=map_size_bytes_max)
        self._lock = threading.Lock()
        self._closed = False
        self._load()
        self._writer = Writer(self._store, self._lock, self._cut, self._tick, self._on_failure)
        from .aio import AsyncEngine

        self.aio = AsyncEngine(self)

    # ------------------------------------------------------------------ lifecycle

    def _reset_memory(self) -> None:
        self._counters = _core.Counters()
        self._limits = _core.Counters()
        self._index = _core.BucketIndex()  # (sku, location, pool) <-> bucket id
        self._bsafety: dict[int, int] = {}
        self._csafety: dict[tuple[str, str], int] = {}
        self._locations: dict[str, str] = {}
        self._channels: dict[str, tuple[tuple[tuple[str, str], ...], bool]] = {}
        self._rules: dict[tuple[str, str | None], tuple[tuple[str, int], ...]] = {}
        self._campaigns: dict[str, _Campaign] = {}
        self._ended_pools: dict[int, int] = {}  # campaign bucket -> its source bucket
        self._transfers: dict[str, list[Any]] = {}
        self._res: dict[str, _Res] = {}
        self._limit_idx: dict[tuple[str, str, str], int] = {}
        self._expiry: list[tuple[int, str]] = []
        self._timers: list[tuple[int, str]] = []  # campaign starts and ends
        self._batch = Batch()
        self._touched: dict[int, int] = {}  # bucket -> available before the current op
        self._seq = 0

    def _load(self) -> None:
        """Rebuild memory from the store alone."""
        # Millions of small objects are born here and none is garbage: a cyclic GC pass
        # in the middle would only walk them (it doubled the time to open, measured).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._load_all()
        finally:
            if gc_was_on:
                gc.enable()

    def _load_all(self) -> None:
        self._reset_memory()
        st = self._store
        for key, value in st.items("bucket_keys"):
            b = records.BUCKET_ID.unpack(key)[0]
            sku, loc, pool = records.unpack(value, "bucket key")
            if b != len(self._index):
                raise records.CorruptRecord(f"bucket ids are not dense: found {b}")
            self._index.add(sku, loc, pool)
        self._counters.reserve_capacity(len(self._index))
        n = 0
        for key, value in st.items("buckets"):
            b = records.BUCKET_ID.unpack(key)[0]
            on_hand, held, floor = records.decode_bucket(value)
            while n < b:  # a bucket whose counters were never written is empty
                self._counters.add()
                n += 1
            self._counters.add(on_hand, held, floor)
            n += 1
        while n < len(self._index):
            self._counters.add()
            n += 1
        for key, value in st.items("catalog"):
            kind, *parts = records.split_key(key)
            (rec,) = records.unpack(value, "catalog/" + kind)
            if kind == "location":
                self._locations[parts[0]] = rec
            elif kind == "channel":
                self._channels[parts[0]] = (tuple((lo, po) for lo, po in rec[0]), rec[1])
            elif kind == "rule":
                self._rules[(parts[0], parts[1] or None)] = tuple((p, s) for p, s in rec)
            elif kind == "bsafety":
                self._bsafety[int(parts[0])] = rec
            elif kind == "csafety":
                self._csafety[(parts[0], parts[1])] = rec
        for _, value in st.items("campaigns"):
            c = _Campaign.decode(value)
            self._campaigns[c.cid] = c
            if c.state == SCHEDULED:
                heapq.heappush(self._timers, (c.start_ms, c.cid))
            elif c.state == ACTIVE:
                heapq.heappush(self._timers, (c.end_ms, c.cid))
            else:
                self._mark_ended(c)
        for key, value in st.items("transfers"):
            self._transfers[key.decode()] = records.unpack(value, "transfer")
        for _, value in st.items("reservations"):
            r = _Res.decode(value)
            self._res[r.rid] = r
            if r.state == State.HELD:
                heapq.heappush(self._expiry, (r.expires_ms, r.rid))
            self._count_limit(r, +1)
        self._seq = st.last_seq()

    def close(self) -> None:
        """Write what is staged, stop the writer and close the store. Idempotent."""
        if self._closed:
            return
        self._writer.close()
        with self._lock:
            self._closed = True
        self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until every decision made so far is durable (or has failed: its callers
        got the error, and memory was rebuilt from the store)."""
        with self._lock:
            tickets = [t for t in (self._writer.current, self._batch) if t]
            if self._batch:
                self._writer.wake()
        for t in tickets:
            t.wait(raise_error=False)

    @property
    def clock(self) -> Clock:
        return self._clock

    # ------------------------------------------------------------------ writer hooks

    def _cut(self) -> tuple[Batch, list[int], bytes] | None:
        # Runs under the lock (the writer holds the condition).
        batch = self._batch
        if not batch:
            return None
        dirty = sorted(batch.dirty)
        snap = self._counters.snapshot(dirty)
        self._batch = Batch()
        return batch, dirty, snap

    def _tick(self) -> float:
        """Expire due holds and move campaign windows; return seconds to the next timer."""
        with self._lock:
            if self._closed:
                return 0.0
            now = self._clock.now_ms()
            self._sweep_due(now)
            nxt = min(
                self._expiry[0][0] if self._expiry else now + limits.SWEEP_INTERVAL_MS_MAX,
                self._timers[0][0] if self._timers else now + limits.SWEEP_INTERVAL_MS_MAX,
                now + limits.SWEEP_INTERVAL_MS_MAX,
            )
        return max(nxt - now, 1) / 1000.0

    def _on_failure(self, error: BaseException) -> None:
        # Memory ran ahead of the store with decisions that were never acknowledged:
        # fail everything staged on top of them and rebuild memory from what is durable.
        with self._lock:
            pending = self._batch
            try:
                self._load()
            except Exception as exc:  # noqa: BLE001 - cannot trust memory any more
                self._closed = True
                error = exc
        pending.finish(error)

    # ------------------------------------------------------------------ plumbing

    def _begin(self) -> int:
        """Under the lock: refuse when closed or overloaded, run due timers, return now."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        pending = self._batch.ops + self._writer.in_flight
        if pending >= limits.PENDING_OPS_MAX:
            raise Overloaded(pending, limits.PENDING_OPS_MAX)
        now = self._clock.now_ms()
        self._sweep_due(now)
        return now

    def _staged(self) -> Batch | None:
        """Count the op into the open batch and return it as the caller's ticket."""
        batch = self._batch
        if not batch:
            return None
        batch.ops += 1
        if batch.ops == 1:
            self._writer.wake()
        return batch

    def _wait(self, ticket: Batch | None) -> None:
        if ticket is not None and self.durability == "fsync":
            ticket.wait()

    def _emit(self, now: int, kind: str, **fields: Any) -> None:
        self._seq += 1
        fields["seq"] = self._seq
        fields["kind"] = kind
        fields["t"] = now
        self._batch.events.append(fields)

    def _touch(self, b: int) -> None:
        if b not in self._touched:
            self._touched[b] = self._counters.available(b)
        self._batch.dirty.add(b)

    def _bucket(self, sku: str, loc: str, pool: str) -> int:
        """The bucket of (sku, loc, pool), created empty if new."""
        b = self._index.get(sku, loc, pool)
        if b < 0:
            b = self._index.add(sku, loc, pool)
            self._counters.add()
            self._batch.put("bucket_keys", records.bucket_id_key(b), records.pack([sku, loc, pool]))
            self._batch.dirty.add(b)
        return b

    def _require_location(self, field: str, loc: str) -> None:
        if loc not in self._locations:
            raise NotFound(field, loc)

    # ------------------------------------------------------------------ alerts

    def _chan_avail(self, channel: str, sku: str) -> int:
        sources, presale = self._channels[channel]
        total = 0
        for loc, pool in sources:
            b = self._index.get(sku, loc, pool)
            if b >= 0:
                total += self._room(b, presale)
        return total

    def _room(self, b: int, presale: bool) -> int:
        floor = self._counters.floor_of(b) if presale else 0
        return max(0, self._counters.available(b) - floor)

    def _alerts(self, now: int) -> None:
        """Journal the threshold crossings of the buckets the op touched."""
        touched = self._touched
        if not touched:
            return
        skus: dict[str, dict[int, int]] = {}
        for b, before in touched.items():
            after = self._counters.available(b)
            if after == before:
                continue
            sku, loc, pool = self._index.key(b)
            if self._csafety:
                skus.setdefault(sku, {})[b] = after - before
            safety = self._bsafety.get(b)
            if not (before > 0 >= after or before <= 0 < after
                    or (safety and before >= safety > after)):
                continue
            where = {"sku": sku, "location": loc, "pool": pool, "available": after}
            if before > 0 >= after:
                if pool.startswith(CAMPAIGN_POOL_PREFIX):
                    cid = pool[len(CAMPAIGN_POOL_PREFIX):]
                    # An ended campaign's pool empties because its rest went home.
                    if self._campaigns[cid].state != ENDED:
                        self._emit(now, "campaign_sold_out", campaign=cid, **where)
                else:
                    self._emit(now, "sold_out", **where)
            elif before <= 0 < after:
                self._emit(now, "back_in_stock", **where)
            if safety and before >= safety > after:
                self._emit(now, "below_safety_stock", threshold=safety, **where)
        if self._csafety:
            for (channel, sku), safety in self._csafety.items():
                deltas = skus.get(sku)
                if not deltas or channel not in self._channels:
                    continue
                after = self._chan_avail(channel, sku)
                sources, presale = self._channels[channel]
                srcs = {self._index.get(sku, lo, po) for lo, po in sources}
                moved = sum(d for b, d in deltas.items() if b in srcs)
                before = after - moved  # exact unless a floor clipped; good enough for alerts
                if before >= safety > after:
                    self._emit(now, "below_safety_stock", channel=channel, sku=sku,
                               threshold=safety, available=after)
        touched.clear()

    # ------------------------------------------------------------------ timers

    def _sweep_due(self, now: int) -> None:
        """Expire holds whose TTL passed and move campaign windows: before any decision
        or read, so nobody ever sees an expired hold counted."""
        # In time order across both queues (an expiry first on a tie), so waking late,
        # after a restart, gives the same book as waking on time.
        exp, timers = self._expiry, self._timers
        while True:
            due_exp = bool(exp) and exp[0][0] <= now
            due_timer = bool(timers) and timers[0][0] <= now
            if due_exp and (not due_timer or exp[0][0] <= timers[0][0]):
                t, rid = heapq.heappop(exp)
                r = self._res.get(rid)
                if r is not None and r.state == State.HELD and r.expires_ms == t:
                    self._resolve(r, State.EXPIRED, now, "expired")
            elif due_timer:
                t, cid = heapq.heappop(timers)
                c = self._campaigns.get(cid)
                if c is None:
                    continue
                if c.state == SCHEDULED and t == c.start_ms:
                    self._start_campaign(c, now)
                elif c.state == ACTIVE and t == c.end_ms:
                    self._end_campaign(c, now, "ended")
            else:
                return

    # ------------------------------------------------------------------ catalogue

    def add_location(self, location: str, kind: str = "warehouse") -> None:
        """Declare a warehouse or a store. Re-adding with the same kind is a no-op."""
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        if kind not in LOCATION_KINDS:
            raise InvalidArgument("kind", f"is {kind!r}; use one of {LOCATION_KINDS}")
        with self._lock:
            now = self._begin()
            if self._locations.get(location) == kind:
                return
            self._locations[location] = kind
            self._batch.put("catalog", records.text_key("location", location), records.pack([kind]))
            self._emit(now, "location_set", location=location, location_kind=kind)
            ticket = self._staged()
        self._wait(ticket)

    def locations(self) -> dict[str, str]:
        """Every location and its kind."""
        with self._lock:
            return dict(self._locations)

    def set_channel(self, channel: str, sources: Sequence[tuple[str, str]], *,
                    allow_presale: bool = False) -> None:
        """Declare a channel and the ordered (location, pool) sources it may draw from.

        A reservation walks the sources in this order, splitting a line when one is
        short. allow_presale lets it sell into buckets' presale allowances.
        """
        check_id("channel", channel, limits.CHANNEL_BYTES_MAX)
        if not isinstance(sources, (list, tuple)):
            raise InvalidArgument("sources", "must be a list of (location, pool) pairs")
        check_count("sources", len(sources), 1, limits.SOURCES_PER_CHANNEL_MAX)
        clean = []
        for i, pair in enumerate(sources):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InvalidArgument(f"sources[{i}]", "must be a (location, pool) pair")
            loc = check_id(f"sources[{i}].location", pair[0], limits.LOCATION_BYTES_MAX)
            pool = _check_pool(f"sources[{i}].pool", pair[1])
            if (loc, pool) in clean:
                raise InvalidArgument(f"sources[{i}]", f"repeats ({loc}, {pool})")
            clean.append((loc, pool))
        with self._lock:
            now = self._begin()
            for i, (loc, _) in enumerate(clean):
                self._require_location(f"sources[{i}].location", loc)
            self._channels[channel] = (tuple(clean), bool(allow_presale))
            self._batch.put("catalog", records.text_key("channel", channel),
                            records.pack([[clean, bool(allow_presale)]]))
            self._emit(now, "channel_set", channel=channel, sources=clean,
                       allow_presale=bool(allow_presale))
            ticket = self._staged()
        self._wait(ticket)

    def channels(self) -> dict[str, tuple[tuple[tuple[str, str], ...], bool]]:
        """Every channel: (sources, allow_presale)."""
        with self._lock:
            return dict(self._channels)

    def set_allocation_rule(self, location: str, shares: dict[str, int], *,
                            sku: str | None = None) -> None:
        """How received stock of a location splits into pools, in percent (summing to 100).

        Without `sku` it is the location's default; with it, an override for that SKU.
        Rounding: each pool gets the floor of its share; the units left over go one each
        to the pools with the largest fractional remainders, ties in the rule's order.
        """
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        if sku is not None:
            check_id("sku", sku, limits.SKU_BYTES_MAX)
        if not isinstance(shares, dict):
            raise InvalidArgument("shares", "must be a mapping of pool to percent")
        check_count("shares", len(shares), 1, limits.POOLS_PER_RULE_MAX)
        rule = []
        for pool, pct in shares.items():
            check_id("shares.pool", pool, limits.POOL_BYTES_MAX)
            check_int(f"shares[{pool}]", pct, 0, limits.PERCENT_TOTAL)
            if pool.startswith(CAMPAIGN_POOL_PREFIX):
                raise InvalidArgument("shares.pool", "must not be a campaign pool")
            rule.append((pool, pct))
        total = sum(p for _, p in rule)
        if total != limits.PERCENT_TOTAL:
            raise InvalidArgument("shares", f"sum to {total}; they must sum to 100")
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            self._rules[(location, sku)] = tuple(rule)
            self._batch.put("catalog", records.text_key("rule", location, sku or ""),
                            records.pack([rule]))
            self._emit(now, "rule_set", location=location, sku=sku, shares=rule)
            ticket = self._staged()
        self._wait(ticket)

    def set_safety_stock(self, units: int, *, sku: str, location: str | None = None,
                         pool: str | None = None, channel: str | None = None) -> None:
        """Alert (journal event below_safety_stock) when available drops below `units`:
        for one bucket (sku, location, pool) or for what a channel can sell of a SKU."""
        check_int("units", units, 0, limits.ON_HAND_MAX)
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        if channel is not None:
            check_id("channel", channel, limits.CHANNEL_BYTES_MAX)
            if location is not None or pool is not None:
                raise InvalidArgument("channel", "excludes location and pool")
        else:
            check_id("location", location, limits.LOCATION_BYTES_MAX)
            check_id("pool", pool, limits.POOL_BYTES_MAX)
        with self._lock:
            now = self._begin()
            if channel is not None:
                if channel not in self._channels:
                    raise NotFound("channel", channel)
                self._csafety[(channel, sku)] = units
                key = records.text_key("csafety", channel, sku)
            else:
                self._require_location("location", location)
                b = self._bucket(sku, location, pool)
                self._bsafety[b] = units
                key = records.text_key("bsafety", str(b))
            self._batch.put("catalog", key, records.pack([units]))
            self._emit(now, "safety_set", sku=sku, location=location, pool=pool,
                       channel=channel, units=units)
            ticket = self._staged()
        self._wait(ticket)

    def set_presale_allowance(self, sku: str, location: str, pool: str, units: int) -> None:
        """Let presale channels sell this bucket down to -units."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        _check_pool("pool", pool)
        check_int("units", units, 0, limits.PRESALE_UNITS_MAX)
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            b = self._bucket(sku, location, pool)
            self._touch(b)
            self._counters.set_floor(b, -units)
            self._emit(now, "presale_set", sku=sku, location=location, pool=pool, units=units)
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)

    # ------------------------------------------------------------------ movements

    def _split(self, location: str, sku: str, qty: int) -> list[tuple[str, int]]:
        rule = self._rules.get((location, sku)) or self._rules.get((location, None))
        if rule is None:
            raise InvalidArgument(
                "pool", f"is required: location {location!r} has no allocation rule"
            )
        shares = [(pool, qty * pct // 100, (qty * pct) % 100, i)
                  for i, (pool, pct) in enumerate(rule)]
        left = qty - sum(s[1] for s in shares)
        order = sorted(range(len(shares)), key=lambda i: (-shares[i][2], shares[i][3]))
        out = [[pool, units] for pool, units, _, _ in shares]
        for i in order[:left]:
            out[i][1] += 1
        return [(p, u) for p, u in out if u > 0]

    def _add_on_hand(self, b: int, delta: int, field: str = "qty") -> None:
        after = self._counters.on_hand_of(b) + delta
        if after > limits.ON_HAND_MAX:
            raise InvalidArgument(
                field, f"would bring on_hand to {after}; the limit is {limits.ON_HAND_MAX}"
            )
        self._touch(b)
        self._counters.add_on_hand(b, delta)

    def receive(self, sku: str, location: str, qty: int, *, pool: str | None = None,
                ref: str | None = None) -> dict[str, int]:
        """Stock arrives (purchase receipt, customer return). Without `pool` it splits by
        the location's allocation rule. Returns units added per pool."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        check_qty("qty", qty)
        if pool is not None:
            _check_pool("pool", pool)
        if ref is not None:
            check_id("ref", ref, limits.RESERVATION_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            split = [(pool, qty)] if pool is not None else self._split(location, sku, qty)
            for p, u in split:  # validate all before changing any
                b = self._index.get(sku, location, p)
                if b >= 0 and self._counters.on_hand_of(b) + u > limits.ON_HAND_MAX:
                    raise InvalidArgument("qty", f"would bring on_hand over {limits.ON_HAND_MAX}")
            deltas = []
            for p, u in split:
                b = self._bucket(sku, location, p)
                self._add_on_hand(b, u)
                deltas.append([b, u])
            self._emit(now, "received", sku=sku, location=location, ref=ref, on_hand=deltas)
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)
        return dict(split)

    def adjust(self, sku: str, location: str, pool: str, on_hand: int,
               *, ref: str | None = None) -> int:
        """Stocktake: set a bucket's on_hand and journal the variance, which is returned.
        Existing holds stay; if on_hand falls below them, new reservations are blocked."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        _check_pool("pool", pool)
        check_int("on_hand", on_hand, 0, limits.ON_HAND_MAX)
        if ref is not None:
            check_id("ref", ref, limits.RESERVATION_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            b = self._bucket(sku, location, pool)
            variance = on_hand - self._counters.on_hand_of(b)
            if variance:
                self._add_on_hand(b, variance, "on_hand")
            self._emit(now, "adjusted", sku=sku, location=location, pool=pool, ref=ref,
                       variance=variance, on_hand=[[b, variance]])
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)
        return variance

    def _movable(self, sku: str, loc: str, pool: str, qty: int) -> int:
        b = self._index.get(sku, loc, pool)
        avail = 0 if b < 0 else self._counters.available(b)
        if avail < qty:
            raise Conflict("qty", f"is {qty}; only {max(avail, 0)} available in "
                                  f"({sku}, {loc}, {pool})")
        return b

    def move(self, sku: str, location: str, from_pool: str, to_pool: str, qty: int) -> None:
        """Rebalance available (never held) units between two pools of one location."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        _check_pool("from_pool", from_pool)
        _check_pool("to_pool", to_pool)
        check_qty("qty", qty)
        if from_pool == to_pool:
            raise InvalidArgument("to_pool", "must differ from from_pool")
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            src = self._movable(sku, location, from_pool, qty)
            dst = self._bucket(sku, location, to_pool)
            self._add_on_hand(src, -qty)
            self._add_on_hand(dst, qty)
            self._emit(now, "moved", sku=sku, location=location, from_pool=from_pool,
                       to_pool=to_pool, on_hand=[[src, -qty], [dst, qty]])
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)

    def transfer_out(self, transfer_id: str, sku: str, from_location: str, from_pool: str,
                     to_location: str, to_pool: str, qty: int) -> str:
        """Ship available units to another location: they leave on_hand and are in transit
        until transfer_in(). Repeating the same transfer_id returns its state."""
        check_id("transfer_id", transfer_id, limits.TRANSFER_ID_BYTES_MAX)
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("from_location", from_location, limits.LOCATION_BYTES_MAX)
        _check_pool("from_pool", from_pool)
        check_id("to_location", to_location, limits.LOCATION_BYTES_MAX)
        _check_pool("to_pool", to_pool)
        check_qty("qty", qty)
        body = [sku, from_location, from_pool, to_location, to_pool, qty]
        with self._lock:
            now = self._begin()
            old = self._transfers.get(transfer_id)
            if old is not None:
                if old[:6] != body:
                    raise Conflict("transfer_id", f"{transfer_id!r} was used for another transfer")
                ticket = None
            else:
                self._require_location("from_location", from_location)
                self._require_location("to_location", to_location)
                src = self._movable(sku, from_location, from_pool, qty)
                self._add_on_hand(src, -qty)
                rec = body + ["in_transit", now, None]
                self._transfers[transfer_id] = rec
                self._batch.put("transfers", transfer_id.encode(), records.pack(rec))
                self._emit(now, "transfer_out", transfer_id=transfer_id, sku=sku,
                           qty=qty, on_hand=[[src, -qty]])
                self._alerts(now)
                ticket = self._staged()
            state = self._transfers[transfer_id][6]
        self._wait(ticket)
        return state

    def transfer_in(self, transfer_id: str) -> str:
        """The transfer arrived: its units join the destination bucket. Idempotent."""
        check_id("transfer_id", transfer_id, limits.TRANSFER_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            rec = self._transfers.get(transfer_id)
            if rec is None:
                raise NotFound("transfer_id", transfer_id)
            ticket = None
            if rec[6] == "in_transit":
                sku, _, _, to_loc, to_pool, qty = rec[:6]
                dst = self._bucket(sku, to_loc, to_pool)
                self._add_on_hand(dst, qty)
                rec[6], rec[8] = "received", now
                self._batch.put("transfers", transfer_id.encode(), records.pack(rec))
                self._emit(now, "transfer_in", transfer_id=transfer_id, sku=sku, qty=qty,
                           on_hand=[[dst, qty]])
                self._alerts(now)
                ticket = self._staged()
        self._wait(ticket)
        return "received"

    def in_transit(self) -> dict[str, int]:
        """Units in transit per SKU."""
        with self._lock:
            out: dict[str, int] = {}
            for rec in self._transfers.values():
                if rec[6] == "in_transit":
                    out[rec[0]] = out.get(rec[0], 0) + rec[5]
            return out

    def import_rows(self, rows: Iterable[Sequence[Any]],
                    chunk_rows: int = limits.IMPORT_CHUNK_ROWS) -> int:
        """Bulk-load (sku, location, pool, on_hand) rows: each sets a bucket's on_hand, as a
        stocktake would. Every row is checked before anything changes; then the rows are
        written in transactions of chunk_rows. Returns the number of rows."""
        check_int("chunk_rows", chunk_rows, 1, limits.IMPORT_CHUNK_ROWS)
        clean: list[tuple[str, str, str, int]] = []
        for i, row in enumerate(rows):
            if len(clean) >= limits.IMPORT_ROWS_MAX:
                raise InvalidArgument("rows", f"exceed the limit of {limits.IMPORT_ROWS_MAX}")
            if not isinstance(row, (list, tuple)) or len(row) != 4:
                raise InvalidArgument(f"rows[{i}]", "must be (sku, location, pool, on_hand)")
            sku, loc, pool, on_hand = row
            if isinstance(on_hand, str) and on_hand.strip().lstrip("-").isdigit():
                on_hand = int(on_hand)
            clean.append((
                check_id(f"rows[{i}].sku", sku, limits.SKU_BYTES_MAX),
                check_id(f"rows[{i}].location", loc, limits.LOCATION_BYTES_MAX),
                _check_pool(f"rows[{i}].pool", pool),
                check_int(f"rows[{i}].on_hand", on_hand, 0, limits.ON_HAND_MAX),
            ))
        with self._lock:
            for i, (_, loc, _, _) in enumerate(clean):
                self._require_location(f"rows[{i}].location", loc)
        for start in range(0, len(clean), chunk_rows):
            chunk = clean[start:start + chunk_rows]
            with self._lock:
                now = self._begin()
                deltas = []
                for sku, loc, pool, on_hand in chunk:
                    b = self._bucket(sku, loc, pool)
                    variance = on_hand - self._counters.on_hand_of(b)
                    if variance:
                        self._add_on_hand(b, variance)
                        deltas.append([b, variance])
                self._emit(now, "imported", rows=len(chunk), on_hand=deltas)
                # A bulk load would raise an alert per bucket; its deltas say it all.
                self._touched.clear()
                ticket = self._staged()
            if ticket is not None:  # one transaction per chunk, even in async mode
                ticket.wait()
        return len(clean)

    # ------------------------------------------------------------------ reservations

    def _check_lines(self, lines: object, field: str = "lines") -> tuple[tuple[str, int], ...]:
        if not isinstance(lines, (list, tuple)):
            raise InvalidArgument(field, "must be a list of (sku, qty) pairs")
        check_count(field, len(lines), 1, limits.LINES_PER_RESERVATION_MAX)
        out = []
        for i, line in enumerate(lines):
            if not isinstance(line, (list, tuple)) or len(line) != 2:
                raise InvalidArgument(f"{field}[{i}]", "must be a (sku, qty) pair")
            out.append((check_id(f"{field}[{i}].sku", line[0], limits.SKU_BYTES_MAX),
                        check_qty(f"{field}[{i}].qty", line[1])))
        return tuple(out)

    def _check_request(self, req: ReserveRequest) -> tuple:
        rid = check_id("reservation_id", req.reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        channel = check_id("channel", req.channel, limits.CHANNEL_BYTES_MAX)
        lines = self._check_lines(req.lines)
        if req.customer is not None:
            check_id("customer", req.customer, limits.CUSTOMER_BYTES_MAX)
        if req.campaign is not None:
            check_id("campaign", req.campaign, limits.CAMPAIGN_BYTES_MAX)
        check_int("ttl_ms", req.ttl_ms, limits.TTL_MS_MIN, limits.TTL_MS_MAX)
        if not isinstance(req.partial, bool):
            raise InvalidArgument("partial", "must be a boolean")
        prefer = req.prefer_locations
        if not isinstance(prefer, (list, tuple)):
            raise InvalidArgument("prefer_locations", "must be a list of locations")
        check_count("prefer_locations", len(prefer), 0, limits.SOURCES_PER_CHANNEL_MAX)
        for i, loc in enumerate(prefer):
            check_id(f"prefer_locations[{i}]", loc, limits.LOCATION_BYTES_MAX)
        key = (channel, req.customer, req.campaign, req.partial, lines)
        return rid, key, req.ttl_ms, tuple(prefer)

    def reserve(
        self,
        reservation_id: str,
        channel: str,
        lines: Sequence[tuple[str, int]],
        *,
        customer: str | None = None,
        campaign: str | None = None,
        ttl_ms: int = limits.TTL_MS_DEFAULT,
        partial: bool = False,
        prefer_locations: Sequence[str] = (),
    ) -> Result:
        """Hold stock of `lines` ((sku, qty) pairs) for `channel`.

        Walks the channel's sources in order (locations named in prefer_locations first)
        and splits a line across sources when one is short. All lines or none, unless
        `partial`. With `campaign`, draws only from the campaign's pool, within its window
        and the customer's per-SKU limit. The hold expires after ttl_ms unless committed,
        released or extended. Repeating the call with the same reservation_id and content
        returns the first outcome (replayed=True); other content gives ID_CONFLICT.
        A rejection changes nothing and is not remembered.
        """
        return self.reserve_many([ReserveRequest(
            reservation_id, channel, lines, customer, campaign, ttl_ms, partial,
            prefer_locations)])[0]

    def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Result]:
        """Decide up to BATCH_OPS_MAX reservations in one call into the core and one
        durable batch. Results come in request order; see reserve() for each."""
        results, tickets = self._reserve_many(requests)
        for t in tickets:
            self._wait(t)
        return results

    def _reserve_many(self, requests: Sequence[ReserveRequest], *, isolate: bool = False
                      ) -> tuple[list[Result | StockgateError], list[Batch]]:
        """Decide requests; return their results and the batches to wait for.

        A malformed request raises before anything is decided, naming requests[i] and the
        field; with `isolate` its slot holds the exception instead and the others go on.
        """
        if not isinstance(requests, (list, tuple)):
            raise InvalidArgument("requests", "must be a list of ReserveRequest")
        check_count("requests", len(requests), 1, limits.BATCH_OPS_MAX)
        single = len(requests) == 1 or isolate  # isolated errors name the caller's field
        slots: list[Any] = [None] * len(requests)
        checked: list[tuple | None] = []
        for i, req in enumerate(requests):
            try:
                if not isinstance(req, ReserveRequest):
                    raise InvalidArgument("", "must be a ReserveRequest")
                checked.append(self._check_request(req))
            except InvalidArgument as exc:
                if not single or not exc.field:
                    field = f"requests[{i}]" + (f".{exc.field}" if exc.field else "")
                    exc = InvalidArgument(field, exc.problem)
                if not isolate:
                    raise exc from None
                slots[i] = exc
                checked.append(None)
        with self._lock:
            now = self._begin()
            for i, c in enumerate(checked):
                if c is None:
                    continue
                exc = self._request_error(c[1], "" if single else f"requests[{i}].")
                if exc is not None:
                    if not isolate:
                        raise exc
                    slots[i] = exc
                    checked[i] = None
            live = [c for c in checked if c is not None]
            results = self._decide_reserves(live, now) if live else []
            batch = self._batch
            if batch:
                batch.ops += len(results)
                if batch.ops == len(results):
                    self._writer.wake()
        # A replay of a reservation still on its way to disk waits for that batch too.
        tickets = {id(t): t for _, t in results if t is not None and not t.done}
        if batch:
            tickets[id(batch)] = batch
        it = iter(results)
        for i, c in enumerate(checked):
            if c is not None:
                slots[i] = next(it)[0]
        return slots, list(tickets.values())

    def _request_error(self, key: tuple, prefix: str) -> StockgateError | None:
        """What makes a well-formed request unusable against the current catalogue."""
        channel, customer, campaign, _, _ = key
        if channel not in self._channels:
            return NotFound(prefix + "channel", channel)
        if campaign is not None and customer is None:
            c = self._campaigns.get(campaign)
            if c is not None and c.customer_limit:
                return InvalidArgument(prefix + "customer", f"is required: campaign "
                                       f"{campaign!r} has a per-customer limit")
        return None

    def _sources(self, key: tuple, prefer: tuple[str, ...], sku: str):
        """(bucket ids to walk for one line, or an Outcome refusing it)."""
        channel, _, campaign, _, _ = key
        if campaign is not None:
            c = self._campaigns[campaign]
            if sku not in c.quotas:
                return Outcome.UNKNOWN_SKU
            b = self._index.get(sku, c.location, c.pool)
            return [] if b < 0 else [b]
        if not self._index.has_sku(sku):
            return Outcome.UNKNOWN_SKU
        sources = self._channels[channel][0]
        if prefer:
            rank = {loc: i for i, loc in enumerate(prefer)}
            sources = sorted(sources, key=lambda s: rank.get(s[0], len(rank)))
        out = []
        for loc, pool in sources:
            b = self._index.get(sku, loc, pool)
            if b >= 0:
                out.append(b)
        return out

    def _campaign_refusal(self, key: tuple, now: int) -> Outcome | None:
        channel, customer, campaign, _, _ = key
        if campaign is None:
            return None
        c = self._campaigns.get(campaign)
        if c is None:
            return Outcome.UNKNOWN_CAMPAIGN
        if c.state != ACTIVE or not (c.start_ms <= now < c.end_ms):
            return Outcome.CAMPAIGN_NOT_ACTIVE
        if channel not in c.channels:
            return Outcome.CHANNEL_NOT_IN_CAMPAIGN
        return None

    def _limit_counter(self, campaign: str, customer: str, sku: str) -> int:
        k = (campaign, customer, sku)
        idx = self._limit_idx.get(k)
        if idx is None:
            c = self._campaigns[campaign]
            idx = self._limits.add(c.customer_limit, 0, 0)
            self._limit_idx[k] = idx
        return idx

    def _count_limit(self, r: _Res, sign: int) -> None:
        """Recovery: charge a loaded reservation's units to its customer's allowance."""
        if r.campaign is None or r.customer is None:
            return
        c = self._campaigns.get(r.campaign)
        if c is None or not c.customer_limit:
            return
        if r.state == State.HELD:
            per_sku = [(ln[0], ln[2]) for ln in r.lines]
        elif r.state == State.COMMITTED:
            per_sku = [(s, q) for s, q in (r.committed or [])]
        else:
            return
        for sku, units in per_sku:
            if units:
                self._limits.force_take(self._limit_counter(r.campaign, r.customer, sku),
                                        sign * units)

    def _decide_reserves(self, checked: list[tuple], now: int) -> list[tuple[Result, Any]]:
        """Decide the checked requests: refusals in Python, stock in one core call."""
        out: list[Any] = [None] * len(checked)
        todo: list[tuple[int, list, tuple]] = []  # (request index, per-line sources, key)
        seen: dict[str, int] = {}
        later: list[int] = []
        for i, (rid, key, ttl, prefer) in enumerate(checked):
            if rid in seen:
                later.append(i)  # the same id twice in one call: answer it after the first
                continue
            seen[rid] = i
            r = self._res.get(rid)
            if r is not None:
                out[i] = self._replay(r, key)
                continue
            refusal = self._campaign_refusal(key, now)
            if refusal is not None:
                out[i] = (self._refused(key, refusal), None)
                continue
            per_line = [self._sources(key, prefer, sku) for sku, _ in key[4]]
            unknown = [isinstance(s, Outcome) for s in per_line]
            if any(unknown) and not key[3]:
                out[i] = (self._refused(key, Outcome.UNKNOWN_SKU, unknown), None)
                continue
            todo.append((i, per_line, key))
        if todo:
            decided = self._hold([(per_line, key) for _, per_line, key in todo])
            for (i, _, key), (outcome, lines_out, line_results) in zip(todo, decided):
                if lines_out is None:
                    out[i] = (Result(outcome, None, False, line_results), None)
                    continue
                rid, _, ttl, _ = checked[i]
                r = _Res(rid, key[0], key[1], key[2], key[3], now, now + ttl, lines_out, key,
                         outcome)
                self._res[rid] = r
                heapq.heappush(self._expiry, (r.expires_ms, rid))
                self._put_res(r)
                self._emit(now, "reserved", id=rid, channel=key[0], customer=key[1],
                           campaign=key[2], held=[[b, u] for b, u in self._pairs(lines_out)],
                           expires_ms=r.expires_ms)
                out[i] = (Result(outcome, self._public(r, line_results), False, line_results),
                          None)
            self._alerts(now)
        for i in later:
            rid, key, _, _ = checked[i]
            r = self._res.get(rid)
            out[i] = self._replay(r, key) if r is not None else out[seen[rid]]
        return out

    def _refused(self, key: tuple, outcome: Outcome, unknown: list[bool] | None = None) -> Result:
        lines = tuple(
            LineResult(sku, qty, 0, Outcome.UNKNOWN_SKU if unknown and unknown[j] else outcome)
            for j, (sku, qty) in enumerate(key[4])
        )
        return Result(outcome, None, False, lines)

    def _replay(self, r: _Res, key: tuple) -> tuple[Result, Batch | None]:
        if r.req != key:
            return Result(Outcome.ID_CONFLICT, self._public(r), False), None
        pub = self._public(r)
        return Result(r.outcome, pub, True, pub.lines), r.ticket

    def _hold(self, ops: list[tuple[list, tuple]]) -> list[tuple[Outcome, Any, tuple]]:
        """Take stock for many operations in one core call.

        Each op is (per-line sources, request key). Returns per op (outcome, lines to
        store or None when refused, line results). Granted units are taken from the
        counters and the buckets marked for the next write; nothing else is staged.
        """
        op_end, flags, qty, lim, src_end, srcs = (array("q") for _ in range(6))
        for per_line, key in ops:
            channel, customer, campaign, partial, lines = key
            presale = self._channels[channel][1] and campaign is None
            flags.append((_core.FLAG_PARTIAL if partial else 0) |
                         (_core.FLAG_PRESALE if presale else 0))
            c = self._campaigns.get(campaign) if campaign is not None else None
            for (sku, q), sources in zip(lines, per_line):
                qty.append(q)
                known = not isinstance(sources, Outcome)
                if c is not None and c.customer_limit and known:
                    lim.append(self._limit_counter(campaign, customer, sku))
                else:
                    lim.append(-1)
                if known:
                    srcs.extend(sources)
                src_end.append(len(srcs))
            op_end.append(len(qty))
        touched = self._touched
        for b in srcs:
            if b not in touched:
                touched[b] = self._counters.available(b)
        taken = array("q", bytes(8 * len(srcs)))
        granted = array("q", bytes(8 * len(qty)))
        status = array("q", bytes(8 * len(qty)))
        self._counters.decide(self._limits, op_end, flags, qty, lim, src_end, srcs,
                              taken, granted, status)
        dirty = self._batch.dirty
        # Lists of Python ints are faster to walk than arrays (no boxing per read).
        taken, granted, status = taken.tolist(), granted.tolist(), status.tolist()
        src_end, srcs = src_end.tolist(), srcs.tolist()
        out = []
        j = k = 0
        for per_line, key in ops:
            lines_out, line_results = [], []
            total = 0
            worst = None  # the most fundamental reason a line is short
            for (sku, q), sources in zip(key[4], per_line):
                k0, k = k, src_end[j]
                g = granted[j]
                total += g
                alloc: list[int] = []
                for kk in range(k0, k):
                    if taken[kk]:
                        alloc += (srcs[kk], taken[kk])
                        dirty.add(srcs[kk])
                # From the core's status, not from `granted`: after an all-or-nothing
                # rollback every line has 0, but only the short one is to blame.
                if isinstance(sources, Outcome):
                    lo = sources
                elif status[j] == _core.LINE_SHORT_LIMIT:
                    lo = Outcome.CUSTOMER_LIMIT
                elif status[j] == _core.LINE_SHORT_STOCK:
                    lo = Outcome.INSUFFICIENT_STOCK
                else:
                    lo = Outcome.OK
                if lo != Outcome.OK and (worst is None or _RANK[lo] < _RANK[worst]):
                    worst = lo
                # Tuples of atomics: the cyclic GC stops tracking them.
                lines_out.append((sku, q, g, tuple(alloc), int(lo)))
                line_results.append(LineResult(sku, q, g, lo, self._allocs(alloc)))
                j += 1
            if total == 0 or (worst is not None and not key[3]):
                # Refused: the core took nothing (all-or-nothing) or nothing was there.
                assert total == 0 or not key[3] or worst is None
                out.append((worst or Outcome.INSUFFICIENT_STOCK, None, tuple(
                    LineResult(x.sku, x.qty, 0, x.outcome) for x in line_results)))
                continue
            out.append((Outcome.OK if worst is None else Outcome.PARTIAL, lines_out,
                        tuple(line_results)))
        return out

    def _put_res(self, r: _Res) -> None:
        self._batch.put("reservations", r.rid.encode(), r.encode())
        r.ticket = self._batch

    def _allocs(self, alloc: list[int]) -> tuple[Allocation, ...]:
        out = []
        for x in range(0, len(alloc), 2):
            loc, pool = self._index.place(alloc[x])
            out.append(Allocation(loc, pool, alloc[x + 1]))
        return tuple(out)

    def _public(self, r: _Res, lines: tuple[LineResult, ...] | None = None) -> Reservation:
        if lines is None:
            lines = tuple(
                LineResult(sku, q, g, Outcome(lo), self._allocs(alloc))
                for sku, q, g, alloc, lo in r.lines
            )
        return Reservation(
            r.rid, r.channel, r.state, lines, r.customer, r.campaign, r.created_ms,
            r.expires_ms, r.resolved_ms,
            tuple((s, u) for s, u in (r.committed or ())),
        )

    def _give_back(self, r: _Res, keep: dict[int, int] | None = None) -> list[list[int]]:
        """Return a reservation's held units to their buckets (and customer allowance),
        except `keep` units per line index, which are committed. Returns held deltas."""
        held = []
        lim = None
        if r.campaign is not None and r.customer is not None:
            c = self._campaigns.get(r.campaign)
            if c is not None and c.customer_limit:
                lim = c
        for li, (sku, _, g, alloc, _) in enumerate(r.lines):
            commit_left = keep.get(li, 0) if keep else 0
            released_line = 0
            for x in range(0, len(alloc), 2):
                b, units = alloc[x], alloc[x + 1]
                c_units = min(units, commit_left)
                commit_left -= c_units
                self._touch(b)
                if c_units:
                    self._counters.settle(b, c_units)
                if units - c_units:
                    self._counters.credit(b, units - c_units)
                    released_line += units - c_units
                held.append([b, -units])
                if b in self._ended_pools:
                    self._return_to_source(b)
            if lim is not None and released_line:
                self._limits.credit(self._limit_counter(r.campaign, r.customer, sku),
                                    released_line)
        return held

    def _resolve(self, r: _Res, to: State, now: int, kind: str,
                 keep: dict[int, int] | None = None) -> None:
        r.state = transition(r.state, to)
        held = self._give_back(r, keep)
        on_hand = []
        if keep:
            commit_left = dict(keep)
            for li, (_, _, _, alloc, _) in enumerate(r.lines):
                left = commit_left.get(li, 0)
                for x in range(0, len(alloc), 2):
                    c_units = min(alloc[x + 1], left)
                    left -= c_units
                    if c_units:
                        on_hand.append([alloc[x], -c_units])
        r.resolved_ms = now
        self._put_res(r)
        self._emit(now, kind, id=r.rid, channel=r.channel, held=held, on_hand=on_hand)
        self._alerts(now)

    def _lookup(self, rid: str) -> _Res | None:
        return self._res.get(rid)

    def commit(self, reservation_id: str, lines: Sequence[tuple[str, int]] | None = None) -> Result:
        """The order is paid: held units leave on_hand. With `lines` ((sku, qty) pairs),
        commit only those units and release the rest (partial shipment). Repeating the
        same commit returns its first outcome; a different commit of a resolved
        reservation gets NOT_HELD with the reservation's state."""
        result, ticket = self._commit(reservation_id, lines)
        self._wait(ticket)
        return result

    def _commit(self, reservation_id, lines):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        want = None
        if lines is not None:
            merged: dict[str, int] = {}
            for sku, q in self._check_lines(lines):
                merged[sku] = merged.get(sku, 0) + q
            want = tuple(sorted(merged.items()))
        with self._lock:
            now = self._begin()
            r = self._lookup(reservation_id)
            if r is None:
                return Result(Outcome.NOT_FOUND), None
            if r.state == State.COMMITTED and r.commit_req == want:
                return Result(Outcome.OK, self._public(r), True), r.ticket
            if r.state != State.HELD:
                return Result(Outcome.NOT_HELD, self._public(r)), None
            keep: dict[int, int] = {}
            if want is None:
                keep = {li: ln[2] for li, ln in enumerate(r.lines)}
            else:
                held_per_sku: dict[str, int] = {}
                for ln in r.lines:
                    held_per_sku[ln[0]] = held_per_sku.get(ln[0], 0) + ln[2]
                for sku, q in want:
                    if q > held_per_sku.get(sku, 0):
                        raise InvalidArgument(
                            "lines.qty", f"commits {q} of {sku!r}; the reservation holds "
                                         f"{held_per_sku.get(sku, 0)}")
                left = dict(want)
                for li, ln in enumerate(r.lines):
                    take = min(ln[2], left.get(ln[0], 0))
                    if take:
                        keep[li] = take
                        left[ln[0]] -= take
            committed: dict[str, int] = {}
            for li, units in keep.items():
                sku = r.lines[li][0]
                committed[sku] = committed.get(sku, 0) + units
            r.committed = [[s, u] for s, u in committed.items()]
            r.commit_req = want
            self._resolve(r, State.COMMITTED, now, "committed", keep)
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def release(self, reservation_id: str) -> Result:
        """Cancel a hold: its units return to the buckets they came from. Releasing a
        released reservation again is OK (replayed); a committed or expired one gives
        NOT_HELD with its state."""
        result, ticket = self._release(reservation_id)
        self._wait(ticket)
        return result

    def _release(self, reservation_id):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            r = self._lookup(reservation_id)
            if r is None:
                return Result(Outcome.NOT_FOUND), None
            if r.state == State.RELEASED:
                return Result(Outcome.OK, self._public(r), True), r.ticket
            if r.state != State.HELD:
                return Result(Outcome.NOT_HELD, self._public(r)), None
            self._resolve(r, State.RELEASED, now, "released")
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def extend(self, reservation_id: str, ttl_ms: int) -> Result:
        """Keep a hold for ttl_ms from now (checkout needs more time)."""
        result, ticket = self._extend(reservation_id, ttl_ms)
        self._wait(ticket)
        return result

    def _extend(self, reservation_id, ttl_ms):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        check_int("ttl_ms", ttl_ms, limits.TTL_MS_MIN, limits.TTL_MS_MAX)
        with self._lock:
            now = self._begin()
            r = self._lookup(reservation_id)
            if r is None:
                return Result(Outcome.NOT_FOUND), None
            if r.state != State.HELD:
                return Result(Outcome.NOT_HELD, self._public(r)), None
            r.state = transition(r.state, State.HELD)
            r.expires_ms = now + ttl_ms
            heapq.heappush(self._expiry, (r.expires_ms, r.rid))
            self._put_res(r)
            self._emit(now, "extended", id=r.rid, expires_ms=r.expires_ms)
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def amend(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Result:
        """Replace the lines of a held reservation in one step. The old hold is counted as
        free for the new lines, so the holder never blocks itself; if the new lines cannot
        be held, the old hold stays exactly as it was and the outcome says why."""
        result, ticket = self._amend(reservation_id, lines)
        self._wait(ticket)
        return result

    def _amend(self, reservation_id, lines):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        new_lines = self._check_lines(lines)
        with self._lock:
            now = self._begin()
            r = self._lookup(reservation_id)
            if r is None:
                return Result(Outcome.NOT_FOUND), None
            if r.state != State.HELD:
                return Result(Outcome.NOT_HELD, self._public(r)), None
            if tuple((ln[0], ln[1]) for ln in r.lines) == new_lines:
                pub = self._public(r)
                return Result(r.amend_outcome or r.outcome, pub, True, pub.lines), r.ticket
            key = (r.channel, r.customer, r.campaign, r.partial, new_lines)
            refusal = self._campaign_refusal(key, now)
            if refusal is not None:
                return self._refused(key, refusal), None
            per_line = [self._sources(key, (), sku) for sku, _ in new_lines]
            unknown = [isinstance(s, Outcome) for s in per_line]
            if any(unknown) and not r.partial:
                return self._refused(key, Outcome.UNKNOWN_SKU, unknown), None
            old_lines = r.lines
            # The old hold counts as free for the new lines; if they cannot be held, the
            # old hold is taken again exactly (nobody else decides while we hold the lock).
            self._credit_lines(r, old_lines, +1)
            (outcome, lines_out, line_results), = self._hold([(per_line, key)])
            if lines_out is None:
                self._credit_lines(r, old_lines, -1)
                self._touched.clear()
                return Result(outcome, None, False, line_results), None
            r.state = transition(r.state, State.HELD)
            r.lines, r.amend_outcome = lines_out, outcome
            self._put_res(r)
            self._emit(now, "amended", id=r.rid, channel=r.channel,
                       held=[[b, -u] for b, u in self._pairs(old_lines)]
                       + [[b, u] for b, u in self._pairs(lines_out)])
            self._alerts(now)
            ticket = self._staged()
            return Result(outcome, self._public(r), False, line_results), ticket

    @staticmethod
    def _pairs(lines: list) -> list[tuple[int, int]]:
        out = []
        for _, _, _, alloc, _ in lines:
            for x in range(0, len(alloc), 2):
                out.append((alloc[x], alloc[x + 1]))
        return out

    def _credit_lines(self, r: _Res, lines: list, sign: int) -> None:
        """sign +1: give a hold's units back (buckets and allowance); -1: take them again."""
        lim = None
        if r.campaign is not None and r.customer is not None:
            c = self._campaigns.get(r.campaign)
            if c is not None and c.customer_limit:
                lim = c
        for sku, _, g, alloc, _ in lines:
            for x in range(0, len(alloc), 2):
                b = alloc[x]
                self._touch(b)
                if sign > 0:
                    self._counters.credit(b, alloc[x + 1])
                else:
                    self._counters.force_take(b, alloc[x + 1])
            if lim is not None and g:
                idx = self._limit_counter(r.campaign, r.customer, sku)
                if sign > 0:
                    self._limits.credit(idx, g)
                else:
                    self._limits.force_take(idx, g)

    # ------------------------------------------------------------------ campaigns

    def create_campaign(
        self,
        campaign_id: str,
        *,
        channels: Sequence[str],
        start_ms: int,
        end_ms: int,
        location: str,
        source_pool: str,
        quotas: dict[str, int],
        customer_limit: int = 0,
    ) -> Campaign:
        """Schedule a flash sale. At start_ms (or start_campaign()) each SKU's quota is
        carved from (location, source_pool) into the pool "campaign:<id>"; reservations
        naming the campaign draw only from it, from its channels, within [start_ms,
        end_ms), at most customer_limit units per customer and SKU (0: no limit; held and
        committed units count). At the end the unsold rest returns to the source."""
        check_id("campaign_id", campaign_id, limits.CAMPAIGN_BYTES_MAX)
        if not isinstance(channels, (list, tuple)):
            raise InvalidArgument("channels", "must be a list of channel ids")
        check_count("channels", len(channels), 1, limits.CHANNELS_PER_CAMPAIGN_MAX)
        for i, ch in enumerate(channels):
            check_id(f"channels[{i}]", ch, limits.CHANNEL_BYTES_MAX)
        check_int("start_ms", start_ms, 0, 1 << 62)
        check_int("end_ms", end_ms, start_ms + 1, start_ms + limits.CAMPAIGN_WINDOW_MS_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        check_id("source_pool", source_pool, limits.POOL_BYTES_MAX)
        if source_pool.startswith(CAMPAIGN_POOL_PREFIX):
            raise InvalidArgument("source_pool", "must not be a campaign pool")
        if not isinstance(quotas, dict):
            raise InvalidArgument("quotas", "must be a mapping of sku to units")
        check_count("quotas", len(quotas), 1, limits.SKUS_PER_CAMPAIGN_MAX)
        for sku, q in quotas.items():
            check_id("quotas.sku", sku, limits.SKU_BYTES_MAX)
            check_qty(f"quotas[{sku}]", q)
        check_int("customer_limit", customer_limit, 0, limits.QTY_MAX)
        with self._lock:
            now = self._begin()
            if campaign_id in self._campaigns:
                raise Conflict("campaign_id", f"{campaign_id!r} exists already")
            self._require_location("location", location)
            for i, ch in enumerate(channels):
                if ch not in self._channels:
                    raise NotFound(f"channels[{i}]", ch)
            c = _Campaign()
            c.cid, c.channels, c.start_ms, c.end_ms = campaign_id, frozenset(channels), start_ms, end_ms
            c.location, c.source_pool, c.quotas = location, source_pool, dict(quotas)
            c.customer_limit, c.state, c.carved, c.returned = customer_limit, SCHEDULED, {}, {}
            self._campaigns[campaign_id] = c
            self._put_campaign(c)
            self._emit(now, "campaign_created", campaign=campaign_id, start_ms=start_ms,
                       end_ms=end_ms, quotas=dict(quotas))
            heapq.heappush(self._timers, (start_ms, campaign_id))
            self._sweep_due(now)  # a window that is open already starts now
            ticket = self._staged()
            pub = c.public()
        self._wait(ticket)
        return pub

    def _put_campaign(self, c: _Campaign) -> None:
        self._batch.put("campaigns", c.cid.encode(), c.encode())

    def _start_campaign(self, c: _Campaign, now: int) -> None:
        c.state = ACTIVE
        deltas = []
        for sku, quota in c.quotas.items():
            src = self._index.get(sku, c.location, c.source_pool)
            room = 0 if src < 0 else max(0, self._counters.available(src))
            carve = min(quota, room)
            dst = self._bucket(sku, c.location, c.pool)
            if carve:
                self._add_on_hand(src, -carve)
                self._add_on_hand(dst, carve)
                deltas += [[src, -carve], [dst, carve]]
            else:
                self._touch(dst)
            c.carved[sku] = carve
        self._put_campaign(c)
        self._emit(now, "campaign_started", campaign=c.cid, carved=dict(c.carved),
                   on_hand=deltas)
        heapq.heappush(self._timers, (c.end_ms, c.cid))
        self._alerts(now)

    def _end_campaign(self, c: _Campaign, now: int, kind: str) -> None:
        c.state = ENDED
        self._mark_ended(c)
        deltas = []
        for sku in c.quotas:
            b = self._index.get(sku, c.location, c.pool)
            if b >= 0:
                deltas += self._return_to_source(b, log=False)
        self._put_campaign(c)
        self._emit(now, "campaign_ended", campaign=c.cid, reason=kind,
                   returned=dict(c.returned), on_hand=deltas)
        self._alerts(now)

    def _mark_ended(self, c: _Campaign) -> None:
        for sku in c.quotas:
            b = self._index.get(sku, c.location, c.pool)
            if b >= 0:
                src = self._bucket(sku, c.location, c.source_pool)
                self._ended_pools[b] = src

    def _return_to_source(self, b: int, log: bool = True) -> list[list[int]]:
        """Move an ended campaign bucket's available units back to its source."""
        back = self._counters.available(b)
        if back <= 0:
            return []
        src = self._ended_pools[b]
        self._add_on_hand(b, -back)
        self._add_on_hand(src, back)
        sku, _, pool = self._index.key(b)
        c = self._campaigns[pool[len(CAMPAIGN_POOL_PREFIX):]]
        c.returned[sku] = c.returned.get(sku, 0) + back
        self._put_campaign(c)
        deltas = [[b, -back], [src, back]]
        if log:
            self._emit(self._clock.now_ms(), "campaign_returned", campaign=c.cid, sku=sku,
                       units=back, on_hand=deltas)
        return deltas

    def start_campaign(self, campaign_id: str) -> Campaign:
        """Start a scheduled campaign now instead of at its start_ms."""
        check_id("campaign_id", campaign_id, limits.CAMPAIGN_BYTES_MAX)
        with self._lock:
            now = self._begin()
            c = self._campaigns.get(campaign_id)
            if c is None:
                raise NotFound("campaign_id", campaign_id)
            if c.state == SCHEDULED:
                if now >= c.end_ms:
                    raise Conflict("campaign_id", f"{campaign_id!r} window ended already")
                c.start_ms = min(c.start_ms, now)
                self._start_campaign(c, now)
            ticket = self._staged()
            pub = c.public()
        self._wait(ticket)
        return pub

    def stop_campaign(self, campaign_id: str) -> Campaign:
        """End a campaign now: its unsold quota returns to the source; units still held
        return when they are released or expire."""
        check_id("campaign_id", campaign_id, limits.CAMPAIGN_BYTES_MAX)
        with self._lock:
            now = self._begin()
            c = self._campaigns.get(campaign_id)
            if c is None:
                raise NotFound("campaign_id", campaign_id)
            if c.state == SCHEDULED:
                c.state = ENDED
                self._put_campaign(c)
                self._emit(now, "campaign_ended", campaign=c.cid, reason="stopped",
                           returned={}, on_hand=[])
            elif c.state == ACTIVE:
                c.end_ms = min(c.end_ms, now)
                self._end_campaign(c, now, "stopped")
            ticket = self._staged()
            pub = c.public()
        self._wait(ticket)
        return pub

    def campaign(self, campaign_id: str) -> Campaign | None:
        """A campaign by id, or None."""
        with self._lock:
            self._sweep_due(self._clock.now_ms()) if not self._closed else None
            c = self._campaigns.get(campaign_id)
            return None if c is None else c.public()

    def campaigns(self) -> list[Campaign]:
        with self._lock:
            return [c.public() for c in self._campaigns.values()]

    # ------------------------------------------------------------------ queries

    def availability(self, channel: str, skus: Sequence[str], *,
                     campaign: str | None = None,
                     prefer_locations: Sequence[str] = ()) -> dict[str, int]:
        """Units of each SKU that `channel` could reserve now (in `campaign`, if named)."""
        check_id("channel", channel, limits.CHANNEL_BYTES_MAX)
        if isinstance(skus, str) or not isinstance(skus, (list, tuple)):
            raise InvalidArgument("skus", "must be a list of SKU ids")
        check_count("skus", len(skus), 1, limits.SKUS_PER_QUERY_MAX)
        for i, sku in enumerate(skus):
            check_id(f"skus[{i}]", sku, limits.SKU_BYTES_MAX)
        if campaign is not None:
            check_id("campaign", campaign, limits.CAMPAIGN_BYTES_MAX)
        with self._lock:
            now = self._begin()
            if channel not in self._channels:
                raise NotFound("channel", channel)
            presale = self._channels[channel][1] and campaign is None
            key = (channel, None, campaign, False, ())
            if campaign is not None:
                c = self._campaigns.get(campaign)
                blocked = (c is None or c.state != ACTIVE or not c.start_ms <= now < c.end_ms
                           or channel not in c.channels)
                if blocked:
                    return {sku: 0 for sku in skus}
            out = {}
            for sku in skus:
                sources = self._sources(key, tuple(prefer_locations), sku)
                if isinstance(sources, Outcome):
                    out[sku] = 0
                else:
                    out[sku] = sum(self._room(b, presale) for b in sources)
            return out

    def stock(self, sku: str) -> list[BucketStock]:
        """Every bucket of a SKU with on_hand, held and available (empty if unknown)."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        with self._lock:
            self._begin()
            out = []
            for b in self._index.of_sku(sku):
                loc, pool = self._index.place(b)
                cn = self._counters
                out.append(BucketStock(sku, loc, pool, cn.on_hand_of(b), cn.held(b),
                                       cn.available(b), -cn.floor_of(b),
                                       self._bsafety.get(b, 0)))
            return out

    def reservation(self, reservation_id: str) -> Reservation | None:
        """A reservation by id (any state), or None."""
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        with self._lock:
            self._begin()
            r = self._res.get(reservation_id)
            return None if r is None else self._public(r)

    def journal(self, from_seq: int = 1, limit: int = limits.JOURNAL_READ_EVENTS_MAX
                ) -> list[dict[str, Any]]:
        """Durable journal events with seq >= from_seq, oldest first, at most `limit`.
        Bucket references in events are bucket ids; bucket_key() names them."""
        check_int("from_seq", from_seq, 1, 1 << 62)
        check_int("limit", limit, 1, limits.JOURNAL_READ_EVENTS_MAX)
        return self._store.read_journal(from_seq, limit)

    def bucket_key(self, bucket: int) -> tuple[str, str, str]:
        """(sku, location, pool) of a bucket id seen in the journal."""
        with self._lock:
            return self._index.key(bucket)

    @property
    def last_seq(self) -> int:
        """The sequence number of the last decided event (durable or not)."""
        return self._seq

    def live_reservations(self) -> int:
        with self._lock:
            return sum(1 for r in self._res.values() if r.state == State.HELD)

    def memory_bytes(self) -> dict[str, int]:
        """C memory of the counter tables (the Python index comes on top)."""
        return {"buckets": len(self._index), "counters_bytes": self._counters.memory_bytes(),
                "index_bytes": self._index.memory_bytes()}

    # ------------------------------------------------------------------ consistency

    def check(self) -> CheckReport:
        """Recompute every bucket's held from the live reservations and its on_hand from
        the journal, compare with memory and with the stored counters, and report every
        drift. Waits for pending writes first."""
        self.flush()
        from .check import run_check

        with self._lock:
            return run_check(self)
