"""The bench's book of stock: one warehouse, four stores, the channels of every scenario,
the SKU names, their Zipf popularity and the flash-sale campaign.

`load_catalogue(target, skus)` works on an Engine (before a server starts: fast) and on a
Client (against a running server: what the locustfile does when the book is missing),
since both have add_location, set_allocation_rule, set_channel and import_rows.

    WH        pools online (70 %) and shared (30 %), every SKU, never sells out
    STORE-1..4  pools offline (80 %) and shared (20 %), the STORE_SKUS most popular SKUs
    web, app        online channels: the warehouse's online pool, then its shared pool
    marketplace     an online channel selling only from shared pools (stores first)
    pos-1..4        each store's till: its offline pool, then its shared pool
    HOT             one SKU with units for any run (the hot-SKU cases)
    SELLOUT         one SKU with few units (the sell-out cases)
    FLASH-1..10     the campaign SKUs, stocked with exactly their quota when a sale starts
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from typing import Any

WAREHOUSE = "WH"
WAREHOUSE_RULE = {"online": 70, "shared": 30}
STORES = ("STORE-1", "STORE-2", "STORE-3", "STORE-4")
STORE_RULE = {"offline": 80, "shared": 20}
POS_CHANNELS = tuple(f"pos-{i + 1}" for i in range(len(STORES)))
ONLINE_CHANNELS = ("web", "app")
MARKETPLACE = "marketplace"
CHANNEL = "web"  # the channel of the driver's cases and of the flash sale

SKUS_DEFAULT = 100_000
STORE_SKUS = 1_000  # stores carry the most popular SKUs only
WAREHOUSE_UNITS_PER_POOL = 10**9  # checkout never sells a warehouse out
STORE_UNITS_PER_SKU = 10_000  # split 80/20 into offline and shared
HOT_SKU = "HOT"
HOT_UNITS = 10**12  # ON_HAND_MAX: more than any run reserves
SELLOUT_SKU = "SELLOUT"
FLASH_SKUS_MAX = 10
FLASH_SKU_PREFIX = "FLASH-"
PROBE_SKU_PREFIX = "PROBE-"  # the Watch scenario's probes (one per subscriber)
PROBE_UNITS = 10**6
CAMPAIGN_PREFIX = "bench-flash-"
CAMPAIGN_WINDOW_MS = 3_600 * 1_000
ZIPF_EXPONENT = 1.0  # popularity of the i-th SKU ~ 1 / i**s: the classic web catalogue

PERCENT_TOTAL = 100


def sku_name(i: int) -> str:
    return f"SKU-{i:07d}"


def flash_sku(i: int) -> str:
    return f"{FLASH_SKU_PREFIX}{i + 1}"


def channels() -> dict[str, list[tuple[str, str]]]:
    chans: dict[str, list[tuple[str, str]]] = {
        ch: [(WAREHOUSE, "online"), (WAREHOUSE, "shared")] for ch in ONLINE_CHANNELS}
    chans[MARKETPLACE] = [(s, "shared") for s in STORES] + [(WAREHOUSE, "shared")]
    for store, pos in zip(STORES, POS_CHANNELS):
        chans[pos] = [(store, "offline"), (store, "shared")]
    return chans


def rows(skus: int) -> Iterator[tuple[str, str, str, int]]:
    """(sku, location, pool, on_hand) of the whole book but the campaign SKUs."""
    for i in range(skus):
        sku = sku_name(i)
        for pool in WAREHOUSE_RULE:
            yield sku, WAREHOUSE, pool, WAREHOUSE_UNITS_PER_POOL
        if i < STORE_SKUS:
            for store in STORES:
                for pool, share in STORE_RULE.items():
                    yield sku, store, pool, STORE_UNITS_PER_SKU * share // PERCENT_TOTAL
    yield HOT_SKU, WAREHOUSE, "online", HOT_UNITS
    yield SELLOUT_SKU, WAREHOUSE, "online", 0  # stocked by set_sellout_stock before a run
    for i in range(FLASH_SKUS_MAX):
        yield flash_sku(i), WAREHOUSE, "online", 0


def load_catalogue(target: Any, skus: int) -> None:
    """Locations, allocation rules, channels and stock, on an Engine or a Client."""
    target.add_location(WAREHOUSE, "warehouse")
    target.set_allocation_rule(WAREHOUSE, WAREHOUSE_RULE)
    for store in STORES:
        target.add_location(store, "store")
        target.set_allocation_rule(store, STORE_RULE)
    for ch, sources in channels().items():
        target.set_channel(ch, sources)
    target.import_rows(rows(skus))


def has_catalogue(target: Any) -> bool:
    """True when the book's channels exist (a Client or an Engine)."""
    found = target.channels()
    names = set(found) if isinstance(found, dict) else {c.channel for c in found}
    return set(channels()) <= names


def flash_quotas(quota_total: int, flash_skus: int) -> dict[str, int]:
    """The campaign's quota split evenly over its SKUs (the first ones get the rest)."""
    if not 1 <= flash_skus <= FLASH_SKUS_MAX:
        raise ValueError(f"flash SKUs: {flash_skus}; between 1 and {FLASH_SKUS_MAX}")
    base, extra = divmod(quota_total, flash_skus)
    return {flash_sku(i): base + (1 if i < extra else 0) for i in range(flash_skus)}


def start_flash_sale(target: Any, campaign_id: str, quotas: dict[str, int], now_ms: int,
                     customer_limit: int = 1) -> None:
    """Stock each campaign SKU's source with exactly its quota, then open the campaign
    (its window starts now, so it carves the quota at once)."""
    for sku, q in quotas.items():
        target.adjust(sku, WAREHOUSE, "online", q)
    target.create_campaign(campaign_id, channels=[CHANNEL], start_ms=now_ms,
                           end_ms=now_ms + CAMPAIGN_WINDOW_MS, location=WAREHOUSE,
                           source_pool="online", quotas=quotas,
                           customer_limit=customer_limit)


def set_sellout_stock(target: Any, units: int) -> None:
    target.adjust(SELLOUT_SKU, WAREHOUSE, "online", units)


class Zipf:
    """Indices 0..n-1 drawn with probability proportional to 1 / (i + 1) ** exponent."""

    def __init__(self, n: int, exponent: float = ZIPF_EXPONENT) -> None:
        self.n = n
        self._cum = list(itertools.accumulate(1.0 / (i + 1) ** exponent for i in range(n)))
        self._total = self._cum[-1]

    def index(self, rng: random.Random) -> int:
        return min(self.n - 1, bisect.bisect_left(self._cum, rng.random() * self._total))
