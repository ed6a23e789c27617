"""The consistency check: recompute the books from first principles and report drift.

held of every bucket is recomputed from the live reservations, on_hand from the journal's
deltas (on_hand may be negative: a committed presale, or a stocktake below the holds, is a
backorder the journal explains), and both are compared with memory and with the stored
counters. Customer allowances are recomputed from reservations, and units must be
conserved: received + adjusted - committed = on hand + in transit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import records
from .lifecycle import State

if TYPE_CHECKING:
    from .engine import Engine

DRIFTS_REPORTED_MAX = 100


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


# Journal kinds and the conservation total their on_hand deltas belong to.
_TOTAL_OF_KIND = {
    "received": "received",
    "transfer_in": "arrived",
    "adjusted": "adjusted",
    "imported": "adjusted",
    "committed": "committed",
    "transfer_out": "shipped",
    "moved": "moved",
    "campaign_started": "moved",
    "campaign_ended": "moved",
    "campaign_returned": "moved",
}


def run_check(engine: Engine) -> CheckReport:
    """Called by Engine.check() under the engine lock, after a flush."""
    drifts: list[str] = []

    def drift(msg: str) -> None:
        if len(drifts) < DRIFTS_REPORTED_MAX:
            drifts.append(msg)

    counters = engine._counters
    n = len(engine._index)
    key_of = engine._index.key

    # held from the live reservations, and customer allowances from reservations: one
    # pass, since a hold nothing has read is decoded from its stored bytes on the way
    held = [0] * n
    live = 0
    used: dict[tuple[str, str, str], int] = {}
    for r in engine._res.values():
        c = engine._campaigns.get(r.campaign) if r.campaign else None
        if c is not None and c.customer_limit and r.customer is not None:
            if r.state == State.HELD:
                pairs = [(ln[0], ln[2]) for ln in r.lines]
            elif r.state == State.COMMITTED:
                pairs = [(s, u) for s, u in r.committed or ()]
            else:
                pairs = []
            for sku, u in pairs:
                k = (r.campaign, r.customer, sku)
                used[k] = used.get(k, 0) + u
        if r.state != State.HELD:
            continue
        live += 1
        for _, _, g, alloc, _ in r.lines:
            if sum(alloc[1::2]) != g:
                drift(f"reservation {r.rid!r}: allocations do not add up to granted {g}")
            for x in range(0, len(alloc), 2):
                if not 0 <= alloc[x] < n:
                    drift(f"reservation {r.rid!r}: unknown bucket {alloc[x]}")
                    continue
                held[alloc[x]] += alloc[x + 1]

    # on_hand and held from the journal
    on_hand = [0] * n
    journal_held = [0] * n
    totals = {"received": 0, "adjusted": 0, "committed": 0, "shipped": 0, "arrived": 0,
              "moved": 0}
    events = 0
    expected_seq = 1
    for first, evs in engine._store.journal_chunks():
        if first != expected_seq:
            drift(f"journal: events {expected_seq}..{first - 1} are missing")
        expected_seq = first + len(evs)
        for i, ev in enumerate(evs):
            events += 1
            total = _TOTAL_OF_KIND.get(ev.get("kind"))
            for b, d in ev.get("on_hand") or ():
                if not 0 <= b < n:
                    drift(f"journal seq {first + i}: unknown bucket {b}")
                    continue
                on_hand[b] += d
                if total is not None:
                    totals[total] += d
            for b, d in ev.get("held") or ():
                if 0 <= b < n:
                    journal_held[b] += d
    if engine._store.last_seq() != engine._seq:
        drift(f"journal ends at seq {engine._store.last_seq()} but memory at {engine._seq}")
    transit = sum(rec[5] for rec in engine._transfers.values() if rec[6] == "in_transit")
    if -totals["shipped"] - totals["arrived"] != transit:
        drift(f"in transit: the journal says {-totals['shipped'] - totals['arrived']} units, "
              f"the open transfers {transit}")

    stored: dict[int, tuple[int, int]] = {}
    for key, value in engine._store.items("buckets"):
        stored[records.BUCKET_ID.unpack(key)[0]] = records.decode_bucket(value)

    for b in range(n):
        label = "/".join(key_of(b))
        mem_on_hand, mem_held = counters.on_hand_of(b), counters.held(b)
        if mem_held != held[b]:
            drift(f"bucket {label}: held is {mem_held}, live reservations hold {held[b]}")
        if journal_held[b] != held[b]:
            drift(f"bucket {label}: the journal says {journal_held[b]} held, live "
                  f"reservations hold {held[b]}")
        if mem_on_hand != on_hand[b]:
            drift(f"bucket {label}: on_hand is {mem_on_hand}, the journal says {on_hand[b]}")
        s_on_hand, s_floor = stored.get(b, (0, 0))
        if (s_on_hand, s_floor) != (mem_on_hand, counters.floor_of(b)):
            drift(f"bucket {label}: stored (on_hand, floor) {(s_on_hand, s_floor)} differ "
                  f"from memory {(mem_on_hand, counters.floor_of(b))}")

    # customer allowances against the reservations' use of them
    for k, idx in engine._limit_idx.items():
        limit = engine._campaigns[k[0]].customer_limit
        want = limit - used.get(k, 0)
        if engine._limits.available(idx) != want:
            drift(f"customer allowance {k}: {engine._limits.available(idx)} left, "
                  f"reservations say {want}")
        if want < 0:
            drift(f"customer allowance {k}: over the limit by {-want}")

    totals["on_hand"] = sum(on_hand)
    totals["in_transit"] = transit
    # Conservation: everything that came in, less what left, is on hand or on the road.
    inflow = totals["received"] + totals["adjusted"] + totals["committed"]
    if inflow != totals["on_hand"] + transit:
        drift(f"units not conserved: received + adjusted - committed = {inflow}, "
              f"on hand + in transit = {totals['on_hand'] + transit}")
    return CheckReport(tuple(drifts), n, live, events, totals)
