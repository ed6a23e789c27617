"""Reads: availability for a channel, the stock of a SKU, a reservation, the journal, the
consistency check. Methods of Engine, kept here by concept."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import limits
from .check import CheckReport, run_check
from .errors import InvalidArgument, NotFound
from .lifecycle import State
from .limits import check_count, check_id, check_int
from .outcomes import Outcome
from .reservations import _check_prefer
from .results import Reservation


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


class Queries:
    """What the book says now: every read first expires what is due."""

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
        prefer = _check_prefer(prefer_locations)
        with self._lock:
            now = self._begin()
            if channel not in self._channels:
                raise NotFound("channel", channel)
            if campaign is not None and campaign not in self._campaigns:
                raise NotFound("campaign", campaign)
            presale = self._channels[channel][1] and campaign is None
            key = (channel, None, campaign, False, ())
            if self._campaign_refusal(key, now) is not None:
                return {sku: 0 for sku in skus}  # closed, or not for this channel
            out = {}
            for sku in skus:
                sources = self._sources(key, prefer, sku)
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

    def reservation_channel(self, reservation_id: str) -> str | None:
        """The channel of a reservation (any state), or None: what an authorization check
        needs, without building the reservation's snapshot."""
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        return self._res.channel_of(reservation_id)  # one dict read: atomic under the GIL

    @property
    def bucket_count(self) -> int:
        """Buckets so far; ids run 0..bucket_count - 1 (see bucket_key)."""
        return len(self._index)

    def journal(self, from_seq: int = 1, limit: int = limits.JOURNAL_READ_EVENTS_MAX
                ) -> list[dict[str, Any]]:
        """Journal events with seq >= from_seq, oldest first, at most `limit`: everything
        decided before the call, once durable (the call waits for that). Bucket references
        in events are bucket ids; bucket_key() names them."""
        check_int("from_seq", from_seq, 1, limits.SEQ_MAX)
        check_int("limit", limit, 1, limits.JOURNAL_READ_EVENTS_MAX)
        self.flush()
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
        """Reservations held now."""
        with self._lock:
            self._begin()
            return sum(1 for r in self._res.values() if r.state == State.HELD)

    def memory_bytes(self) -> dict[str, int]:
        """C memory of the counter tables (the Python index comes on top)."""
        return {"buckets": len(self._index), "counters_bytes": self._counters.memory_bytes(),
                "index_bytes": self._index.memory_bytes()}

    def check(self) -> CheckReport:
        """Recompute every bucket's held from the live reservations and its on_hand from
        the journal, compare with memory and with the stored counters, and report every
        drift. It needs every decision durable, so it pauses new calls (they wait, they are
        not refused), lets the writer finish, checks, and resumes them."""
        with self._check_lock:
            with self._lock:
                self._paused = True
            try:
                while True:
                    self.flush()
                    with self._lock:
                        if not self._batch and self._writer.current is None:
                            return run_check(self)
            finally:
                with self._lock:
                    self._paused = False
                    self._resume.notify_all()
