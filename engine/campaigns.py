"""Campaigns (flash sales): quota carved into a campaign pool for a window, per-customer
limits, the unsold rest returned. Methods of Engine, kept here by concept."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import limits, records
from .errors import Conflict, InvalidArgument, NotFound
from .lifecycle import State
from .limits import check_count, check_id, check_int, check_qty
from .outcomes import Outcome

CAMPAIGN_POOL_PREFIX = "campaign:"


# Campaign states.
SCHEDULED, ACTIVE, ENDED = "scheduled", "active", "ended"


def _check_pool(field: str, pool: object) -> str:
    """A pool a caller may name for stock movements and channel sources: campaign pools
    are filled and emptied by their campaign alone, or its quota would not add up."""
    check_id(field, pool, limits.POOL_BYTES_MAX)
    if pool.startswith(CAMPAIGN_POOL_PREFIX):
        raise InvalidArgument(field, f"is a campaign pool ({CAMPAIGN_POOL_PREFIX}...); "
                                     "its campaign moves its stock")
    return pool


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


class Campaigns:
    """Flash sales and their quotas, windows and per-customer limits."""

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

    def _count_limit(self, r: Any) -> None:
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
                self._limits.force_take(self._limit_counter(r.campaign, r.customer, sku), units)

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
        check_int("start_ms", start_ms, 0, limits.TIME_MS_MAX)
        check_int("end_ms", end_ms, start_ms + 1, limits.TIME_MS_MAX)
        if end_ms - start_ms > limits.CAMPAIGN_WINDOW_MS_MAX:
            raise InvalidArgument("end_ms", f"makes a window of {end_ms - start_ms} ms; the "
                                            f"limit is {limits.CAMPAIGN_WINDOW_MS_MAX} ms")
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        check_id("source_pool", source_pool, limits.POOL_BYTES_MAX)
        if source_pool.startswith(CAMPAIGN_POOL_PREFIX):
            raise InvalidArgument("source_pool", "must not be a campaign pool")
        if not isinstance(quotas, dict):
            raise InvalidArgument("quotas", "must be a mapping of sku to units")
        check_count("quotas", len(quotas), 1, limits.SKUS_PER_CAMPAIGN_MAX)
        for i, (sku, q) in enumerate(quotas.items()):
            check_id(f"quotas key #{i}", sku, limits.SKU_BYTES_MAX)
            check_qty(f"quotas[{sku}]", q)
        check_int("customer_limit", customer_limit, 0, limits.QTY_MAX)
        with self._lock:
            now = self._begin()
            if self._index.names_count >= limits.LOCATION_AND_POOL_NAMES_MAX:
                raise Conflict("campaign_id", f"no room for another campaign pool: "
                               f"{limits.LOCATION_AND_POOL_NAMES_MAX} location and pool names "
                               "exist")
            if campaign_id in self._campaigns:
                raise Conflict("campaign_id", f"{campaign_id!r} exists already")
            self._require_location("location", location)
            for i, ch in enumerate(channels):
                if ch not in self._channels:
                    raise NotFound(f"channels[{i}]", ch)
            if end_ms <= now:
                raise Conflict("end_ms", f"is {end_ms}, already past (now {now}): a campaign "
                                         "needs a window that is still open")
            c = _Campaign()
            c.cid, c.channels = campaign_id, frozenset(channels)
            c.start_ms, c.end_ms = start_ms, end_ms
            c.location, c.source_pool, c.quotas = location, source_pool, dict(quotas)
            c.customer_limit, c.state, c.carved, c.returned = customer_limit, SCHEDULED, {}, {}
            self._campaigns[campaign_id] = c
            self._put_campaign(c)
            self._emit(now, "campaign_created", campaign=campaign_id, start_ms=start_ms,
                       end_ms=end_ms, quotas=dict(quotas))
            heapq.heappush(self._timers, (start_ms, campaign_id))
            self._sweep_due(now, self._steady_now)  # a window open already starts now
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
                deltas += self._shift(src, dst, carve)
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
                deltas += self._return_to_source(b, within_end=True)
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

    def _return_to_source(self, b: int, within_end: bool = False) -> list[list[int]]:
        """Move an ended campaign bucket's available units back to its source. Within
        _end_campaign, which writes the campaign and journals once for all its SKUs, this
        does neither."""
        back = self._counters.available(b)
        if back <= 0:
            return []
        deltas = self._shift(b, self._ended_pools[b], back)
        sku, _, pool = self._index.key(b)
        c = self._campaigns[pool[len(CAMPAIGN_POOL_PREFIX):]]
        c.returned[sku] = c.returned.get(sku, 0) + back
        if not within_end:
            self._put_campaign(c)
            self._emit(self._clock.now_ms(), "campaign_returned", campaign=c.cid, sku=sku,
                       units=back, on_hand=deltas)
        return deltas

    def _campaign_named(self, campaign_id: str) -> _Campaign:
        c = self._campaigns.get(campaign_id)
        if c is None:
            raise NotFound("campaign_id", campaign_id)
        return c

    def start_campaign(self, campaign_id: str) -> Campaign:
        """Start a scheduled campaign now instead of at its start_ms."""
        check_id("campaign_id", campaign_id, limits.CAMPAIGN_BYTES_MAX)
        with self._lock:
            now = self._begin()
            c = self._campaign_named(campaign_id)
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
            c = self._campaign_named(campaign_id)
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
        check_id("campaign_id", campaign_id, limits.CAMPAIGN_BYTES_MAX)
        with self._lock:
            self._begin()
            c = self._campaigns.get(campaign_id)
            return None if c is None else c.public()

    def campaigns(self) -> list[Campaign]:
        """Every campaign, as of now."""
        with self._lock:
            self._begin()
            return [c.public() for c in self._campaigns.values()]
