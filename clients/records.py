"""What the inventory calls give back: stock, channels, campaigns, journal events and
the consistency check's report. Immutable, safe to keep after the call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = ["BucketStock", "Campaign", "Channel", "CheckReport", "JournalEvent", "JournalPage"]


class BucketStock(NamedTuple):
    """The counters of one (sku, location, pool)."""

    sku: str
    location: str
    pool: str
    on_hand: int  # units assigned to the bucket
    held: int  # units held by live reservations
    available: int  # on_hand - held; below 0 only within a presale allowance
    presale_units: int = 0  # how far presale channels may sell below zero
    safety_stock: int = 0  # alert threshold in units; 0: none


class Channel(NamedTuple):
    """A sales channel and the (location, pool) sources it draws from, in order."""

    channel: str
    sources: tuple[tuple[str, str], ...]
    allow_presale: bool = False


@dataclass(frozen=True, slots=True)
class Campaign:
    """A flash sale: quota carved into its own pool for a window, a per-customer limit."""

    campaign_id: str
    channels: tuple[str, ...]
    start_ms: int  # ms since the Unix epoch; the window is [start_ms, end_ms)
    end_ms: int
    location: str
    source_pool: str
    quotas: dict[str, int]  # sku -> units
    customer_limit: int  # units per customer and SKU, held + committed; 0: none
    state: str  # "scheduled", "active" or "ended"
    carved: dict[str, int] = field(default_factory=dict)  # sku -> units carved at start
    returned: dict[str, int] = field(default_factory=dict)  # sku -> unsold units returned
    pool: str = ""  # "campaign:<id>"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the consistency check found: `drifts` is empty when the books agree."""

    drifts: tuple[str, ...]
    buckets: int  # buckets checked
    live_reservations: int  # reservations held now
    events: int  # journal events read
    totals: dict[str, int]  # conservation totals: received, committed, ...

    @property
    def ok(self) -> bool:
        return not self.drifts


class JournalEvent(NamedTuple):
    """One journal event: what changed, when, and its sequence number."""

    seq: int
    kind: str  # "reserved", "committed", "sold_out", ... (docs/engine.md)
    t_ms: int  # ms since the Unix epoch
    fields: dict[str, Any]  # the event's other fields (bucket ids as journalled)


class JournalPage(NamedTuple):
    """A page of the journal and the newest sequence number decided so far."""

    events: tuple[JournalEvent, ...]
    last_seq: int
