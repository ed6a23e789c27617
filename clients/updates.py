"""What a watch stream delivers: availability levels and alerts, each with its journal
sequence number so a subscription can resume where it stopped."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Alert", "Update"]


class Alert(NamedTuple):
    """A threshold crossing, as journalled: delivered once per subscription, in order."""

    seq: int  # the alert's journal sequence number
    kind: str  # sold_out, back_in_stock, below_safety_stock, campaign_sold_out, campaign_ended
    t_ms: int  # when it was journalled, ms since the Unix epoch
    sku: str
    location: str | None = None  # None for a channel-wide alert
    pool: str | None = None
    campaign: str | None = None  # campaign alerts
    channel: str | None = None  # a channel's safety-stock alert
    available: int = 0  # available units of the bucket (or channel) after the change
    threshold: int = 0  # below_safety_stock: the threshold crossed


class Update(NamedTuple):
    """What changed for the watched channel up to journal sequence number `seq`.

    `available` maps each SKU whose availability changed to its current level (a level,
    not a delta: bursts coalesce); `alerts` are in sequence order."""

    seq: int
    available: dict[str, int]
    alerts: tuple[Alert, ...] = ()
