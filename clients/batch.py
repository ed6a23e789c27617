"""One reservation of a reserve_many() batch, as plain values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from stockgate.v1 import reservations_pb2

from . import wire

__all__ = ["ReserveRequest"]


class ReserveRequest(NamedTuple):
    """What reserve() takes, as one value: reserve_many() decides a list of these together
    and makes them durable with one commit (results in the same order)."""

    reservation_id: str
    channel: str
    lines: wire.Lines  # [(sku, qty), ...] or {sku: qty}
    customer: str | None = None
    campaign: str | None = None
    ttl_ms: int = 0  # 0: the server's default (15 minutes)
    partial: bool = False
    prefer_locations: Iterable[str] = ()

    def to_message(self) -> reservations_pb2.ReserveRequest:
        return wire.reserve_request(
            self.reservation_id, self.channel, self.lines, customer=self.customer,
            campaign=self.campaign, ttl_ms=self.ttl_ms, partial=self.partial,
            prefer_locations=self.prefer_locations)
