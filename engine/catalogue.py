"""The catalogue: locations, channels and their sources, allocation rules, safety stock
and presale allowances. Methods of Engine, kept here by concept."""

from __future__ import annotations

from collections.abc import Sequence

from . import limits, records
from .campaigns import CAMPAIGN_POOL_PREFIX, _check_pool
from .errors import InvalidArgument, NotFound
from .limits import check_count, check_id, check_int

LOCATION_KINDS = ("warehouse", "store")


class Catalogue:
    """Engine's catalogue: who sells what, from where."""

    def add_location(self, location: str, kind: str = "warehouse") -> None:
        """Declare a warehouse or a store. Re-adding with the same kind is a no-op."""
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        if kind not in LOCATION_KINDS:
            raise InvalidArgument("kind", f"is {kind!r}; use one of {LOCATION_KINDS}")
        with self._lock:
            now = self._begin()
            if self._locations.get(location) != kind:
                self._locations[location] = kind
                self._batch.put("catalog", records.text_key("location", location),
                                records.pack([kind]))
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
        if not isinstance(allow_presale, bool):
            raise InvalidArgument("allow_presale", "must be a boolean")
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
            self._channels[channel] = (tuple(clean), allow_presale)
            self._codes.clear()
            self._batch.put("catalog", records.text_key("channel", channel),
                            records.pack([[clean, allow_presale]]))
            self._emit(now, "channel_set", channel=channel, sources=clean,
                       allow_presale=allow_presale)
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
                self._csafety.setdefault(sku, {})[channel] = units
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
