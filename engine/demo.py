"""A small demo book and a walk through it: `python -m stockgate.engine.demo [DIR]`.

The catalogue (2 warehouses, 2 stores, online/offline/shared pools, 3 channels, 1,000
SKUs and one flash sale) is loaded once into DIR (default ./stockgate-data); each run then
reserves, commits and sells out a little of it, and prints what it did.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid

from . import limits
from .engine import Engine

WAREHOUSE_RULE = {"online": 70, "offline": 20, "shared": 10}
STORE_RULE = {"offline": 80, "shared": 20}
DEMO_LOCATIONS = {  # location -> (kind, allocation rule in percent)
    "WH-EAST": ("warehouse", WAREHOUSE_RULE),
    "WH-WEST": ("warehouse", WAREHOUSE_RULE),
    "STORE-12": ("store", STORE_RULE),
    "STORE-31": ("store", STORE_RULE),
}
DEMO_SKUS = 1_000
DEMO_UNITS_PER_SKU = 100  # per location, before the allocation rule splits it
DEMO_CAMPAIGN = "double-11"
DEMO_CAMPAIGN_QUOTA = 50
DEMO_CAMPAIGN_WINDOW_MS = 24 * 3_600 * 1_000


def demo_sku(i: int) -> str:
    return f"SKU-{1000 + i}"


def load_demo(engine: Engine) -> bool:
    """Load the demo catalogue unless the engine has one already; True if it loaded."""
    if engine.locations():
        return False
    for loc, (kind, rule) in DEMO_LOCATIONS.items():
        engine.add_location(loc, kind)
        engine.set_allocation_rule(loc, rule)
    engine.set_channel("tmall", [("WH-EAST", "online"), ("WH-WEST", "online"),
                                 ("WH-EAST", "shared"), ("WH-WEST", "shared")])
    engine.set_channel("douyin", [("WH-WEST", "online"), ("WH-EAST", "online"),
                                  ("WH-WEST", "shared")])
    engine.set_channel("pos-12", [("STORE-12", "offline"), ("STORE-12", "shared")])
    rows = []
    for i in range(DEMO_SKUS):
        for loc, (_, rule) in DEMO_LOCATIONS.items():
            for pool, pct in rule.items():
                rows.append((demo_sku(i), loc, pool,
                             DEMO_UNITS_PER_SKU * pct // limits.PERCENT_TOTAL))
    engine.import_rows(rows)
    now = engine.clock.now_ms()
    engine.create_campaign(
        DEMO_CAMPAIGN, channels=["tmall", "douyin"], start_ms=now,
        end_ms=now + DEMO_CAMPAIGN_WINDOW_MS, location="WH-EAST", source_pool="online",
        quotas={demo_sku(0): DEMO_CAMPAIGN_QUOTA}, customer_limit=1)
    return True


def walk(engine: Engine, out=None) -> None:
    """Reserve, commit and sell a little, printing each step (to stdout by default)."""
    out = out or sys.stdout
    run = uuid.uuid4().hex[:8]
    sku = demo_sku(7)
    print(f"{sku} for tmall: {engine.availability('tmall', [sku])[sku]} units", file=out)
    r = engine.reserve(f"order-{run}-1", "tmall", [(sku, 2), (demo_sku(8), 1)],
                       customer="alice")
    print(f"reserve order-{run}-1 -> {r.outcome.name}, expires in "
          f"{(r.reservation.expires_ms - engine.clock.now_ms()) // 1000} s", file=out)
    c = engine.commit(f"order-{run}-1")
    print(f"commit  order-{run}-1 -> {c.outcome.name} {c.reservation.committed}", file=out)
    p = engine.reserve(f"pos-{run}", "pos-12", [(sku, 1)])
    print(f"reserve pos-{run} at STORE-12 -> {p.outcome.name} from "
          f"{p.lines[0].allocations[0].location}/{p.lines[0].allocations[0].pool}", file=out)
    engine.release(f"pos-{run}")
    flash = demo_sku(0)
    sold = refused = 0
    for n in range(80):
        f = engine.reserve(f"flash-{run}-{n}", "douyin", [(flash, 1)], campaign=DEMO_CAMPAIGN,
                           customer=f"buyer-{run}-{n}")
        sold += f.ok
        refused += not f.ok
    print(f"flash sale {DEMO_CAMPAIGN} on {flash}: {sold} held, {refused} refused "
          f"(quota {DEMO_CAMPAIGN_QUOTA})", file=out)
    for b in engine.stock(sku):
        print(f"  {b.location:9} {b.pool:8} on_hand={b.on_hand:4} held={b.held:3} "
              f"available={b.available:4}", file=out)
    report = engine.check()
    print(f"consistency check: {'clean' if report.ok else report.drifts} "
          f"({report.buckets} buckets, {report.events} journal events)", file=out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stockgate.engine.demo", description=__doc__)
    ap.add_argument("dir", nargs="?", default="./stockgate-data", help="the store directory")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with Engine(args.dir) as engine:
        if load_demo(engine):
            print(f"loaded the demo book into {args.dir} in {time.perf_counter() - t0:.1f} s")
        walk(engine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
