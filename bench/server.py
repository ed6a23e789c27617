"""`python bench/run.py server --out DIR`: stockgate over gRPC against the bare grpc.aio floor.

Every figure comes from one run on this machine, side by side:

  echo        a grpc.aio server that parses a ReserveRequest and answers a Result of the
              same shape without any engine: the floor of a unary call in Python gRPC
  echo session  the same server driven as the coalesced case drives stockgate: it reads
              each Session message and writes its answers with stockgate's own codecs
              and does nothing else: the floor of a coalesced reservation
  unary       stockgate's Reserve, one reservation per call, from concurrent callers
  session     stockgate's Session stream driven raw: messages of 100 reserves, 8 in
              flight (the server's best case, without the client's coalescing cost)
  coalesced   stockgate through AsyncClient: concurrent reserve() calls of one process
              ride together on the client's Session stream
  latency     p50/p99 of coalesced reserves offered open-loop at half the peak rate
  engine      the engine alone, in one process without any server (engine_alone.py),
              given as many reserves as the coalesced case granted, in the client's
              Session batches: with the echo session floor, it splits a coalesced
              reservation's server CPU into gRPC's, the engine's and the rest

Uniform cases spread reservations over --skus SKUs; hot cases put every one on one SKU.
Durability is fsync: every answer is on disk. Each server runs in its own process and its
CPU is read from /proc (every thread, in ns), so the load driver's CPU never counts.
Each stockgate case gets a fresh server on a fresh copy of the seeded store: the holds a
case leaves (the raw Session case alone leaves over a million, live for a week) would
otherwise make every later case slower, and the figures would depend on their order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import driver  # noqa: E402
from book import CHANNEL, HOT_SKU, HOT_UNITS, sku_name  # noqa: E402
from processes import CpuMeter, Served  # noqa: E402

UNITS_PER_SKU = 10**9  # the bench never sells out
TARGETS = {
    "unary_cpu_over_echo": ("<=", 1.25),
    "coalesced_reservations_per_s": (">=", 100_000),
    "coalesced_cpu_us": ("<=", 10.0),
    "hot_over_uniform": (">=", 0.8),
}
SESSION_MESSAGES_IN_FLIGHT = 8  # raw Session case: messages of targets.OPS_PER_MESSAGE
# The engine case builds its requests ahead (about 470 B each) and keeps its holds (about
# 460 B each): about 1.4 GB at this many, more than a full run's coalesced case grants.
ENGINE_RESERVATIONS_MAX = 1_500_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- store

def seed_store(path: Path, skus: int) -> None:
    """A book of --skus SKUs plus the hot one, written by the engine before serving."""
    from stockgate.engine import Engine

    with Engine(path, map_size_bytes=1 << 32) as eng:
        eng.add_location("WH")
        eng.set_allocation_rule("WH", {"online": 100})
        eng.set_channel(CHANNEL, [("WH", "online")])
        rows = [(sku_name(i), "WH", "online", UNITS_PER_SKU) for i in range(skus)]
        rows.append((HOT_SKU, "WH", "online", HOT_UNITS))
        eng.import_rows(rows)


def run_case(served: Served, mode: str, *, hot: bool, skus: int, duration: float,
             concurrency: int, rate: float = 0.0) -> dict[str, Any]:
    """One phase of the load driver (bench/driver.py) against a server: its figures and
    the server's CPU."""
    ph = driver.phase(mode, workload="hot" if hot else "uniform",
                      concurrency=0 if rate else concurrency, rate=rate, duration_s=duration)
    r = driver.run_phases(mode, served.address, [ph], CpuMeter(served.pid), skus=skus)[0]
    r["refused"] = r["calls"] - r["outcomes"].get("ok", 0)
    return r


def engine_case(store: Path, skus: int, hot: bool, n: int,
                env: dict[str, str]) -> dict[str, Any]:
    """The engine alone (engine_alone.py) over `store`: n reserves, its CPU per each."""
    argv = [sys.executable, str(HERE / "engine_alone.py"), "--data-dir", str(store),
            "--skus", str(skus), "--reservations", str(n)] + (["--hot"] if hot else [])
    # Its stderr is ours: a failure shows its traceback where the bench's log is.
    out = subprocess.run(argv, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    if r["granted"] != n:  # the book never runs out: every reserve must be granted
        raise RuntimeError(f"the engine alone granted {r['granted']} of {n} reserves")
    return {**r, "per_s": n / r["wall_s"], "server_cpu_us_per_op": r["cpu_s"] / n * 1e6}


# ---------------------------------------------------------------------------- command

def cmd_server(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = 3.0 if args.quick else args.duration
    skus = 10_000 if args.quick else args.skus
    results: dict[str, Any] = {"duration_s": duration, "skus": skus,
                               "unary_concurrency": args.unary_concurrency,
                               "coalesced_concurrency": args.concurrency}
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    log("echo floor")
    echo = Served([sys.executable, str(HERE / "echo_server.py"), "--listen", "127.0.0.1:0"],
                  env)
    try:
        results["echo_unary"] = run_case(echo, "echo", hot=False, skus=skus,
                                         duration=duration,
                                         concurrency=args.unary_concurrency)
        log("echo floor, coalesced Session")
        results["echo_session"] = run_case(echo, "coalesced", hot=False, skus=skus,
                                           duration=duration, concurrency=args.concurrency)
    finally:
        echo.stop()

    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp:
        seeded = Path(tmp) / "seeded"
        log(f"seeding {skus:,} SKUs")
        seed_store(seeded, skus)
        exit_codes = []

        @contextlib.contextmanager
        def fresh_store(name: str) -> Iterator[Path]:
            """A copy of the seeded store for one case, removed after it."""
            store = Path(tmp) / name
            shutil.copytree(seeded, store)
            try:
                yield store
            finally:
                shutil.rmtree(store, ignore_errors=True)

        def fresh_case(name: str, mode: str, hot: bool, conc: int, rate: float = 0.0) -> None:
            with fresh_store(name) as store:
                sg = Served([sys.executable, "-m", "stockgate.server", "--data-dir",
                             str(store), "--listen", "127.0.0.1:0", "--durability", "fsync"],
                            env)
                try:
                    results[name] = run_case(sg, mode, hot=hot, skus=skus,
                                             duration=duration, concurrency=conc, rate=rate)
                finally:
                    exit_codes.append(sg.stop())

        for name, mode, hot, conc in (
            ("unary_uniform", "unary", False, args.unary_concurrency),
            ("session_uniform", "session", False, SESSION_MESSAGES_IN_FLIGHT),
            ("coalesced_uniform", "coalesced", False, args.concurrency),
            ("coalesced_hot", "coalesced", True, args.concurrency),
        ):
            log(name)
            fresh_case(name, mode, hot, conc)
        peak = results["coalesced_uniform"]["per_s"]
        log(f"latency at half the peak ({peak / 2:,.0f}/s offered)")
        fresh_case("latency_at_half_peak", "coalesced", False, args.concurrency, peak / 2)
        # 0 when every server stopped cleanly, else the first other exit code
        results["server_exit_code"] = next((c for c in exit_codes if c), 0)
        # What the servers gave stands even if the engine cases fail.
        (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        for name, hot in (("engine_uniform", False), ("engine_hot", True)):
            log(name)
            granted = results["coalesced_hot" if hot else "coalesced_uniform"]["outcomes"]
            n = max(1, min(ENGINE_RESERVATIONS_MAX, granted.get("ok", 0)))
            with fresh_store(name) as store:
                results[name] = engine_case(store, skus, hot, n, env)

    e, u = results["echo_unary"], results["unary_uniform"]
    cu, ch = results["coalesced_uniform"], results["coalesced_hot"]
    results["summary"] = {
        "unary_cpu_over_echo": u["server_cpu_us_per_op"] / e["server_cpu_us_per_op"],
        "coalesced_reservations_per_s": cu["per_s"],
        "coalesced_cpu_us": cu["server_cpu_us_per_op"],
        "hot_over_uniform": ch["per_s"] / cu["per_s"],
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    log(f"wrote {out_dir / 'results.json'}")
    return 0


def print_table(r: dict[str, Any]) -> None:
    rows = [("case", "ops/s", "server CPU µs/op", "p50 ms", "p99 ms")]
    for k in ("echo_unary", "unary_uniform", "echo_session", "session_uniform",
              "coalesced_uniform", "coalesced_hot", "latency_at_half_peak",
              "engine_uniform", "engine_hot"):
        x = r[k]
        latency = [f"{x[q]:.2f}" if q in x else "–" for q in ("p50_ms", "p99_ms")]
        rows.append((k, f"{x['per_s']:,.0f}", f"{x['server_cpu_us_per_op']:.1f}", *latency))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    print()
    for key, (op, target) in TARGETS.items():
        got = r["summary"][key]
        ok = got <= target if op == "<=" else got >= target
        print(f"{key:32s} {got:12,.2f}  target {op} {target:,}  {'PASS' if ok else 'MISS'}")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="directory for results.json")
    ap.add_argument("--quick", action="store_true", help="3 s per case, 10k SKUs")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per case")
    ap.add_argument("--skus", type=int, default=100_000, help="SKUs of the uniform cases")
    ap.add_argument("--concurrency", type=int, default=2_000,
                    help="concurrent reserve() callers of the coalesced cases")
    ap.add_argument("--unary-concurrency", type=int, default=64,
                    help="concurrent unary callers (echo and unary cases)")
    ap.add_argument("--store-dir", default=None, help="where the store is built (a disk)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return cmd_server(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
