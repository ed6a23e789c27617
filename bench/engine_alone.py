"""The engine alone under the coalesced case's load: what `bench/run.py server` measures
of stockgate's server with the server taken away.

    python bench/engine_alone.py --data-dir STORE --skus N [--hot] --reservations R

It opens the seeded store as the server does (durability fsync), builds every request
first (ids and SKUs as the load driver makes them), tunes the GC as the server does (so
the requests built ahead are frozen out of its sight, as a server's requests are gone
once answered), then keeps IN_FLIGHT batches of BATCH reserves in engine.aio.apply() at
once, each decided, recorded, group-committed and fsync'd before the next is taken. It
prints one JSON line: reservations, wall seconds, and the process's CPU seconds over the
run (every thread, building the requests excluded).

The coalesced case's server applies the client's Session messages, BATCH reserves each,
one to three at a time, and commits 260-320 reserves per fsync (measured). Here two at a
time make commits of about 500: the engine's share of a reservation comes out, if
anything, a little cheaper than in the server, never dearer. Beside the Session echo
floor and the coalesced case, it splits a coalesced reservation's server CPU into gRPC's
share, the engine's, and the rest: the server's own work and its smaller commits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from book import CHANNEL, HOT_SKU, sku_name  # noqa: E402
from driver import RESERVATION_ID_COUNTER_DIGITS, id_prefix  # noqa: E402
from targets import TTL_MS  # noqa: E402

from stockgate.clients.limits import SESSION_OPS_PER_MESSAGE_MAX  # noqa: E402

BATCH = SESSION_OPS_PER_MESSAGE_MAX  # reserves per apply(): a full client message
IN_FLIGHT = 2  # batches in apply() at once (see above)
RANDOM_SEED = 1


def build(prefix: str, skus: int, hot: bool, n: int) -> list[list[tuple]]:
    """n reserves of 1 unit, as the client sends them, in batches of apply() ops; their
    ids are `prefix` and a counter from 1."""
    import gc
    import random

    from stockgate.engine import ReserveRequest

    rnd = random.Random(RANDOM_SEED)
    gc.disable()  # a million young objects: passes that walk them would only cost time
    try:
        ops = [("reserve", ReserveRequest(
            f"{prefix}{i:0{RESERVATION_ID_COUNTER_DIGITS}d}", CHANNEL,
            [(HOT_SKU if hot else sku_name(rnd.randrange(skus)), 1)], ttl_ms=TTL_MS))
            for i in range(1, n + 1)]
    finally:
        gc.enable()
    return [ops[i:i + BATCH] for i in range(0, n, BATCH)]


async def drive(engine, batches: list[list[tuple]]) -> int:
    """Apply the batches, IN_FLIGHT at a time; the reservations granted."""
    pending = iter(batches)
    granted = 0

    async def worker() -> None:
        nonlocal granted
        for batch in pending:
            results = await engine.aio.apply(batch)  # before `granted` is read, not after
            granted += sum(1 for r in results if r.ok)

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return granted


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="a store seeded by bench/server.py")
    ap.add_argument("--skus", type=int, required=True)
    ap.add_argument("--hot", action="store_true", help="every reserve on the hot SKU")
    ap.add_argument("--reservations", type=int, required=True)
    args = ap.parse_args(argv)
    import uvloop

    from stockgate.engine import Engine, tune_gc

    with Engine(args.data_dir, durability="fsync") as engine:
        prefix = id_prefix("coalesced")  # ids as the driver gives the coalesced case's
        batches = build(prefix, args.skus, args.hot, args.reservations)
        tune_gc()
        cpu0, t0 = time.process_time(), time.perf_counter()
        granted = uvloop.run(drive(engine, batches))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    print(json.dumps({"reservations": args.reservations, "granted": granted,
                      "wall_s": wall, "cpu_s": cpu, "batch": BATCH, "in_flight": IN_FLIGHT,
                      "id_prefix": prefix}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
