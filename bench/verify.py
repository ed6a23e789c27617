"""Correctness after a run, for every system: oversold units and acknowledged
reservations missing, and for stockgate the engine's consistency check.

stockgate is checked from its store, with the server stopped: each granted reservation
id the driver wrote down must be there; no bucket may have more units held and committed
than it has (available below its presale floor); a sell-out SKU and a campaign may not
have sold more than their stock or quota; no customer may hold more than the campaign's
limit of a SKU, counted from the journal's reservation events (not from the engine's own
allowance counters, which are what is being checked); and Engine.check() must find no
drift.

The peers keep no record per reservation, so they are checked in units: what the
counters lost over a phase against what the driver was told it got. Acknowledged units
the counters do not show as taken are missing; a counter below zero, or more units
granted on a sell-out SKU than it had, is oversold. (Units taken but never acknowledged,
calls whose answer was lost, are allowed, and reported.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

JOURNAL_PAGE_EVENTS = 10_000  # the engine's JOURNAL_READ_EVENTS_MAX
LIVE_STATES = ("HELD", "COMMITTED")
RELEASING_EVENTS = ("released", "expired")


def read_ids(files: list[str]) -> list[str]:
    out: list[str] = []
    for f in files:
        out.extend(line for line in Path(f).read_text().splitlines() if line)
    return out


def stockgate_store(store: Path, acked: dict[str, list[str]], *,
                    sellout_units: int | None = None,
                    campaigns: dict[str, int] | None = None) -> dict[str, Any]:
    """Check a stopped server's store. `acked` maps a case to the files of the ids it was
    granted; `sellout_units` is what the sell-out SKU was stocked with; `campaigns` maps
    campaign ids to their per-customer limit."""
    from book import SELLOUT_SKU

    from stockgate.engine import Engine

    out: dict[str, Any] = {"cases": {}}
    with Engine(store, map_size_bytes=1 << 32) as eng:
        for case, files in acked.items():
            ids = read_ids(files)
            missing = 0
            for rid in ids:
                r = eng.reservation(rid)
                if r is None or r.state.name not in LIVE_STATES:
                    missing += 1
            out["cases"][case] = {"acked": len(ids), "acked_missing": missing}
        out["oversold_units"] = oversold_units(eng)
        if sellout_units is not None:
            taken = sum(b.held + max(0, -b.on_hand) for b in eng.stock(SELLOUT_SKU))
            out["sellout"] = {"stock": sellout_units, "held": taken,
                              "oversold": max(0, taken - sellout_units)}
        if campaigns:
            out["campaigns"] = {cid: campaign_figures(eng, cid, limit)
                                for cid, limit in campaigns.items()}
        report = eng.check()
        out["check_ok"] = report.ok
        out["drifts"] = list(report.drifts[:10])
        out["live_reservations"] = report.live_reservations
        out["journal_events"] = report.events
    return out


def oversold_units(eng: Any) -> int:
    """Units held or committed beyond what the buckets have, over every bucket."""
    skus = {eng.bucket_key(b)[0] for b in range(eng.bucket_count)}
    over = 0
    for sku in skus:
        for b in eng.stock(sku):
            floor = -b.presale_units
            if b.available < floor:
                over += floor - b.available
    return over


def campaign_figures(eng: Any, campaign: str, customer_limit: int) -> dict[str, Any]:
    """Quota, units sold and customers over the limit, from the store and the journal."""
    c = eng.campaign(campaign)
    pool = c.pool
    left = sum(b.available for sku in c.quotas for b in eng.stock(sku) if b.pool == pool)
    carved = sum(c.carved.values())
    quota = sum(c.quotas.values())
    per_customer: dict[tuple[str, str], int] = {}
    holds: dict[str, tuple[tuple[str, str], int]] = {}
    key_of = eng.bucket_key
    seq = 1
    while True:
        page = eng.journal(seq, JOURNAL_PAGE_EVENTS)
        for ev in page:
            kind = ev["kind"]
            if kind == "reserved" and ev.get("campaign") == campaign:
                for b, q in ev["held"]:
                    k = (ev.get("customer") or "", key_of(b)[0])
                    per_customer[k] = per_customer.get(k, 0) + q
                    holds[ev["id"]] = (k, q)
            elif kind in RELEASING_EVENTS and ev.get("id") in holds:
                k, q = holds.pop(ev["id"])
                per_customer[k] -= q
        if len(page) < JOURNAL_PAGE_EVENTS:
            break
        seq = page[-1]["seq"] + 1
    over = sum(1 for n in per_customer.values() if customer_limit and n > customer_limit)
    sold = carved - left
    return {"quota": quota, "carved": carved, "sold": sold, "left": left,
            "oversold": max(0, sold - quota), "sold_exactly_quota": sold == quota,
            "customers": len(per_customer), "customers_over_limit": over,
            "max_units_per_customer": max(per_customer.values(), default=0)}


def units(before: int, after: int, acked_units: int, *, stock: int | None = None,
          level_min: int = 0) -> dict[str, Any]:
    """A peer's phase in units: counters summed before and after, units acknowledged.
    `stock` for a sell-out phase (what the SKU had); `level_min` the lowest counter after."""
    taken = before - after
    oversold = max(0, -level_min)
    if stock is not None:
        oversold = max(oversold, acked_units - stock)
    return {"taken": taken, "acked_units": acked_units,
            "acked_missing": max(0, acked_units - taken),
            "taken_unacked": max(0, taken - acked_units), "oversold": oversold}
