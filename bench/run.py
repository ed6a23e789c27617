"""stockgate benchmarks: `python bench/run.py COMMAND --out DIR [--quick]`.

  core     the engine without a server (below)
  server   the gRPC server against the bare grpc.aio floor (bench/server.py)
  drive    the lean load driver against one system it starts: stockgate, Redis, PostgreSQL
           (bench/driver.py, bench/systems.py)
  locust   one locust scenario, headless, against a server it starts or --address
           (bench/locustfile.py, bench/scenarios.py)
  overload stockgate at five times its capacity: admitted latency, refusals, memory,
           recovery (bench/overload.py)
  report   all of it side by side: DIR/REPORT.md, DIR/results.json, charts
           (bench/report.py); bench/README.md explains every figure

`core` measures the engine without any server, on this machine, in one run:

  fsync        latency of write(4 KiB) + fsync on the disk holding DIR (measured first:
               every durable figure depends on it)
  decisions    Counters.decide() (the core's batch entry point), one thread and two,
               uniform over --skus counters and on one hot counter
  durable      reservations acknowledged after their group commit (durability "fsync"):
               `await engine.aio.reserve()` from --concurrency submitter coroutines, and
               `await engine.aio.reserve_many()` with batches of --batch, each uniform over
               the SKUs and on one hot SKU; process CPU per reservation, p50/p99 latency
  memory       bytes per bucket of an Engine freshly opened over --skus buckets (in a
               fresh process: the C counters and the total anonymous RSS, separately)
  recovery     seconds to open an Engine over --skus buckets + --holds live holds, with
               the store in the page cache (warm) and evicted from it (cold)

It writes DIR/results.json and prints a table. The store is built in DIR/store and removed
afterwards unless --keep-store.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path
from typing import Any

TTL_MS = 7 * 24 * 3_600 * 1_000  # holds made by the bench never expire during a run
HOT_SKU = "HOT"
HOT_UNITS = 10**12
UNITS_PER_SKU = 1_000
TARGETS = {
    "decisions_per_s_uniform": (">=", 5_000_000),
    "decisions_hot_over_uniform": (">=", 0.8),
    "durable_reservations_per_s": (">=", 150_000),
    "bytes_per_bucket": ("<=", 64),
    "recovery_s": ("<=", 5.0),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sku_name(i: int) -> str:
    return f"SKU-{i:07d}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# ---------------------------------------------------------------------------- machine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import fsync_latency, machine_info  # noqa: E402,F401 - bench/machine.py
from processes import status_kb  # noqa: E402 - bench/processes.py

# ---------------------------------------------------------------------------- decisions


def decide_arrays(n_ops: int, srcs: list[int] | array) -> tuple[array, ...]:
    """Flat arrays for Counters.decide(): n_ops operations of 1 line x 1 unit, line i
    drawing from counter srcs[i]. Returns (op_end, flags, qty, lim, src_end, srcs,
    taken, granted, status)."""
    ends = array("q", range(1, n_ops + 1))
    zeros = bytes(8 * n_ops)
    return (ends, array("q", zeros), array("q", [1]) * n_ops, array("q", [-1]) * n_ops,
            array("q", ends), array("q", srcs), array("q", zeros), array("q", zeros),
            array("q", zeros))


def make_counters(n: int, on_hand: int):
    from stockgate.engine import _core

    c = _core.Counters(n)
    add = c.add
    for _ in range(n):
        add(on_hand)
    return c


def bench_decide(counters, limits, batches: list[tuple[array, ...]], calls: int,
                 threads: int = 1) -> dict[str, float]:
    """Call decide() `calls` times per thread, cycling over prepared batches."""
    n_ops = len(batches[0][0])
    for b in batches[:1]:  # warm-up
        counters.decide(limits, *b)

    def run(k: int, out: list[float]) -> None:
        # Each thread gets its own output arrays: taken/granted/status are written.
        mine = [b[:6] + tuple(array("q", bytes(8 * n_ops)) for _ in range(3)) for b in batches]
        barrier.wait()
        t0 = time.perf_counter()
        for i in range(calls):
            counters.decide(limits, *mine[(i + k) % len(mine)])
        out.append(time.perf_counter() - t0)

    barrier = threading.Barrier(threads + 1)
    times: list[float] = []
    ts = [threading.Thread(target=run, args=(k, times)) for k in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    c0 = time.process_time()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    ops = n_ops * calls * threads
    return {"ops": ops, "seconds": wall, "per_s": ops / wall, "ns_per_op": wall / ops * 1e9,
            "cpu_ns_per_op": cpu / ops * 1e9, "threads": threads, "batch_ops": n_ops}


def run_decisions(skus: int, batch_ops: int, total_ops: int) -> dict[str, Any]:
    from stockgate.engine import _core

    log(f"decisions: building {skus:,} counters")
    counters = make_counters(skus, 10**12)
    limits = _core.Counters()
    rng = random.Random(1)
    uniform = [decide_arrays(batch_ops, [rng.randrange(skus) for _ in range(batch_ops)])
               for _ in range(4)]
    hot = [decide_arrays(batch_ops, [0] * batch_ops)]
    calls = max(1, total_ops // batch_ops)
    out: dict[str, Any] = {"counters": skus, "batch_ops": batch_ops}
    for name, batches in (("uniform", uniform), ("hot", hot)):
        log(f"decisions: {name}, {calls} calls of {batch_ops:,} ops, 1 thread")
        out[name] = bench_decide(counters, limits, batches, calls)
        log(f"decisions: {name}, 2 threads")
        out[f"{name}_2threads"] = bench_decide(counters, limits, batches, calls // 2 or 1, 2)
    # Sanity: the hot counter lost exactly what was decided on it.
    taken = 10**12 - counters.available(0)
    out["hot_counter_taken_is_sum_of_decisions"] = taken >= out["hot"]["ops"]
    out["hot_over_uniform"] = out["hot"]["per_s"] / out["uniform"]["per_s"]
    return out


# ---------------------------------------------------------------------------- store


TUNE_GC = True  # --no-tune-gc clears it


def open_engine(path: Path, **kw):
    """Open the engine as a server would: map room for the whole run and, when the engine
    offers it, its GC tuning (stockgate.engine.tune_gc) right after the book is loaded."""
    from stockgate import engine as sg

    eng = sg.Engine(path, map_size_bytes=1 << 32, **kw)
    if TUNE_GC and hasattr(sg, "tune_gc"):
        sg.tune_gc()
    return eng


def build_store(path: Path, skus: int) -> dict[str, Any]:
    """1 location, 1 pool, `skus` SKUs of UNITS_PER_SKU units each, plus HOT."""
    if path.exists():
        shutil.rmtree(path)
    out: dict[str, Any] = {}
    eng = open_engine(path)
    try:
        eng.add_location("WH")
        eng.set_allocation_rule("WH", {"online": 100})
        eng.set_channel("web", [("WH", "online")])
        t0 = time.perf_counter()
        step = 100_000
        for start in range(0, skus, step):
            eng.import_rows([(sku_name(i), "WH", "online", UNITS_PER_SKU)
                             for i in range(start, min(skus, start + step))])
            log(f"store: imported {min(skus, start + step):,}/{skus:,} buckets "
                f"({time.perf_counter() - t0:.1f} s)")
        eng.import_rows([(HOT_SKU, "WH", "online", HOT_UNITS)])
        dt = time.perf_counter() - t0
        out["import_s"] = dt
        out["import_rows_per_s"] = (skus + 1) / dt
    finally:
        eng.close()
    out["bytes_on_disk_buckets_only"] = (path / "data.mdb").stat().st_size
    return out


def add_holds(path: Path, skus: int, holds: int) -> dict[str, Any]:
    """`holds` live holds, uniform over the SKUs, by reserve_many in batches of 1,000."""
    from stockgate.engine import ReserveRequest

    eng = open_engine(path)
    rng = random.Random(2)
    try:
        t0 = time.perf_counter()
        done = 0
        while done < holds:
            n = min(1_000, holds - done)
            reqs = [ReserveRequest(f"hold-{done + k}", "web", [(sku_name(rng.randrange(skus)), 1)],
                                   ttl_ms=TTL_MS) for k in range(n)]
            res = eng.reserve_many(reqs)
            assert all(r.ok for r in res), [r for r in res if not r.ok][:1]
            done += n
            if done % 20_000 == 0 or done == holds:
                log(f"store: {done:,}/{holds:,} holds ({time.perf_counter() - t0:.1f} s)")
        dt = time.perf_counter() - t0
        live = eng.live_reservations()
    finally:
        eng.close()
    return {"holds": holds, "live": live, "seconds": dt,
            "sync_reserve_many_1000_per_s": holds / dt,
            "bytes_on_disk": (path / "data.mdb").stat().st_size}


def probe_open(path: str, trace: bool) -> dict[str, Any]:
    """In a fresh process: open the engine, report time and memory. (Hidden command.)"""
    import tracemalloc

    from stockgate.engine import Engine  # imported before the baseline

    gc.collect()
    anon0, file0 = status_kb("self", "RssAnon"), status_kb("self", "RssFile")
    if trace:
        tracemalloc.start()
    t0 = time.perf_counter()
    eng = Engine(path, map_size_bytes=1 << 32)
    dt = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[0] if trace else None
    if trace:
        tracemalloc.stop()
    gc.collect()
    anon1, file1 = status_kb("self", "RssAnon"), status_kb("self", "RssFile")
    mem = eng.memory_bytes()
    live = eng.live_reservations()
    out = {"open_s": dt, "buckets": mem["buckets"], "counters_bytes": mem["counters_bytes"],
           "index_bytes": mem.get("index_bytes", 0),
           "live_holds": live, "rss_anon_bytes": (anon1 - anon0) * 1024,
           "rss_file_bytes": (file1 - file0) * 1024, "traced_bytes": traced}
    eng.close()
    return out


def evict_from_page_cache(path: Path) -> None:
    for f in path.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def run_probe(path: Path, *, trace: bool = False, cold: bool = False) -> dict[str, Any]:
    if cold:
        evict_from_page_cache(path)
    cmd = [sys.executable, __file__, "_probe-open", str(path)] + (["--trace"] if trace else [])
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------- durable


def new_loop(kind: str) -> tuple[asyncio.AbstractEventLoop, str]:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop

            return uvloop.new_event_loop(), "uvloop"
        except ImportError:
            if kind == "uvloop":
                raise
    return asyncio.new_event_loop(), "asyncio"


async def _singles(eng, ids: list[str], skus: list[str], concurrency: int) -> dict[str, Any]:
    """`concurrency` coroutines, each awaiting engine.aio.reserve() in a loop."""
    nxt = itertools.count()
    n = len(ids)
    lat: list[float] = []
    refused = 0
    perf = time.perf_counter
    reserve = eng.aio.reserve

    async def submitter() -> None:
        nonlocal refused
        while (i := next(nxt)) < n:
            t0 = perf()
            r = await reserve(ids[i], "web", [(skus[i], 1)], ttl_ms=TTL_MS)
            lat.append(perf() - t0)
            if not r.ok:
                refused += 1

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return {"latencies": lat, "refused": refused}


async def _batches(eng, ids: list[str], skus: list[str], concurrency: int,
                   batch: int) -> dict[str, Any]:
    """`concurrency` coroutines, each awaiting engine.aio.reserve_many(batch) in a loop."""
    from stockgate.engine import ReserveRequest

    nxt = itertools.count()
    n_batches = (len(ids) + batch - 1) // batch
    lat: list[float] = []
    refused = 0
    perf = time.perf_counter

    async def submitter() -> None:
        nonlocal refused
        while (b := next(nxt)) < n_batches:
            lo, hi = b * batch, min(len(ids), (b + 1) * batch)
            t0 = perf()
            reqs = [ReserveRequest(ids[i], "web", [(skus[i], 1)], ttl_ms=TTL_MS)
                    for i in range(lo, hi)]
            res = await eng.aio.reserve_many(reqs)
            lat.append(perf() - t0)
            refused += sum(1 for r in res if not r.ok)

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    return {"latencies": lat, "refused": refused}


def run_durable_case(loop, eng, name: str, mode: str, n: int, skus: list[str],
                     concurrency: int, batch: int, spy_out: Path | None = None
                     ) -> dict[str, Any]:
    ids = [f"{name}-{i}" for i in range(n)]
    warm = [f"{name}-warm-{i}" for i in range(min(2_000, n))]
    if mode == "single":
        loop.run_until_complete(_singles(eng, warm, skus, concurrency))
    else:
        loop.run_until_complete(_batches(eng, warm, skus, max(1, concurrency), batch))
    gc.collect()
    spy = start_py_spy(spy_out) if spy_out is not None else None
    w0 = eng._writer.batches_written
    c0 = time.process_time()
    t0 = time.perf_counter()
    if mode == "single":
        res = loop.run_until_complete(_singles(eng, ids, skus, concurrency))
    else:
        res = loop.run_until_complete(_batches(eng, ids, skus, concurrency, batch))
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    commits = eng._writer.batches_written - w0
    profile = None
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
        spy.wait()
        if spy_out.exists():
            profile = profile_summary(spy_out, n)
    lat = res["latencies"]
    out = {
        "mode": mode, "n": n, "concurrency": concurrency,
        "batch": batch if mode == "many" else 1, "seconds": wall, "per_s": n / wall,
        "cpu_us_per_reservation": cpu / n * 1e6, "cpu_util": cpu / wall,
        "latency_p50_ms": pct(lat, 50) * 1e3, "latency_p99_ms": pct(lat, 99) * 1e3,
        "latency_of": "one aio.reserve call" if mode == "single" else "one reserve_many call",
        "commits": commits, "reservations_per_commit": n / commits if commits else None,
        "refused": res["refused"],
    }
    if profile is not None:
        out["profile"] = profile
    return out


# Where a sampled stack's time goes: the frame nearest the leaf that names one of these
# (function names, not line numbers, so edits to the engine do not break the folding).
PROFILE_CATEGORIES = [
    ("writer: LMDB write txn, puts, commit+fsync", ("Store.write",)),
    ("writer: journal/bucket encoding, wake-ups, cut", ("Writer.",)),
    ("validation", ("_check_request", "_check_lines", "check_id", "check_int")),
    ("result objects (_public, _allocs, NamedTuples)",
     ("_public", "_allocs", "<lambda> (<string>", "_refused")),
    ("reservation record msgpack (_put_res)", ("_put_res", "_Res.encode")),
    ("journal event (_emit, _pairs)", ("_emit", "_pairs")),
    ("alerts", ("_alerts",)),
    ("source lookup (_sources)", ("_sources",)),
    ("_hold: arrays, core decide(), per-line loop", ("_hold",)),
    ("_decide_reserves: replay check, _Res, expiry heap", ("_decide_reserves",)),
    ("_reserve_many: lock, _begin, tickets", ("_reserve_many", "_begin", "now_ms")),
    ("asyncio: aio wrappers, shield, futures, wake-ups",
     ("aio.py", "tasks.py", "group_commit.py", "futures.py", "events.py", "runners.py",
      "base_events.py")),
    ("bench submitters", ("_singles", "_batches")),
]


def profile_summary(raw: Path, reservations: int) -> dict[str, Any]:
    """Fold py-spy raw (collapsed) stacks into PROFILE_CATEGORIES: GIL-holding time per
    reservation (py-spy --gil samples only the thread that holds the GIL)."""
    counts: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        name = None
        for frame in reversed(stack.split(";")):
            for cat, needles in PROFILE_CATEGORIES:
                if any(x in frame for x in needles):
                    name = cat
                    break
            if name:
                break
        name = name or "other: " + stack.split(";")[-1][:60]
        counts[name] = counts.get(name, 0) + int(n)
    rate = PROFILE_RATE_HZ
    per = 1e6 / rate / max(1, reservations)
    return {
        "samples": total, "rate_hz": rate, "reservations": reservations,
        "gil_us_per_reservation": total * per,
        "categories": {k: {"share": v / max(1, total), "us_per_reservation": v * per}
                       for k, v in sorted(counts.items(), key=lambda kv: -kv[1])},
    }


PROFILE_RATE_HZ = 1000


def start_py_spy(out: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        log("profile: py-spy not found (pip install py-spy); not profiling")
        return None
    proc = subprocess.Popen([exe, "record", "--gil", "--nonblocking",
                             "-r", str(PROFILE_RATE_HZ), "-f", "raw",
                             "-o", str(out), "--pid", str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return proc


def run_durable(path: Path, skus: int, n: int, concurrency: int, batch: int,
                batch_concurrency: int, loop_kind: str,
                profile_dir: Path | None = None) -> dict[str, Any]:
    eng = open_engine(path)
    loop, loop_name = new_loop(loop_kind)
    asyncio.set_event_loop(loop)
    rng = random.Random(3)
    out: dict[str, Any] = {"loop": loop_name, "durability": eng.durability}
    try:
        uniform = [sku_name(rng.randrange(skus)) for _ in range(n)]
        hot = [HOT_SKU] * n
        cases = [("aio_reserve_uniform", "single", uniform, concurrency),
                 ("aio_reserve_hot", "single", hot, concurrency),
                 ("aio_reserve_many_uniform", "many", uniform, batch_concurrency),
                 ("aio_reserve_many_hot", "many", hot, batch_concurrency)]
        for name, mode, sk, conc in cases:
            log(f"durable: {name} ({n:,} reservations, {conc} submitters"
                + (f", batches of {batch}" if mode == "many" else "") + f", {loop_name})")
            spy_out = profile_dir / f"{name}.raw" if profile_dir else None
            out[name] = r = run_durable_case(loop, eng, name, mode, n, sk, conc, batch, spy_out)
            log(f"durable: {name}: {r['per_s']:,.0f}/s, {r['cpu_us_per_reservation']:.1f} µs "
                f"CPU each, p50 {r['latency_p50_ms']:.1f} ms, p99 {r['latency_p99_ms']:.1f} ms, "
                f"{r['reservations_per_commit'] or 0:.0f} per commit")
        log("durable: consistency check")
        report = eng.check()
        out["check_ok"] = report.ok
        out["check_drifts"] = list(report.drifts[:5])
    finally:
        loop.close()
        asyncio.set_event_loop(None)
        eng.close()
    return out


def run_durable_fresh(path: Path, skus: int, n: int, concurrency: int, batch: int,
                      batch_concurrency: int, loop_kind: str,
                      profile_dir: Path | None = None) -> dict[str, Any]:
    """run_durable() in a fresh process: what the earlier stages left in this one (the
    decision arrays, the engines that built the store, their freed heap) is not a serving
    process's state, and measured here it cost the durable cases up to a fifth."""
    spec = {"path": str(path), "skus": skus, "n": n, "concurrency": concurrency,
            "batch": batch, "batch_concurrency": batch_concurrency, "loop_kind": loop_kind,
            "profile_dir": str(profile_dir) if profile_dir else None, "tune_gc": TUNE_GC}
    res = subprocess.run([sys.executable, __file__, "_durable", json.dumps(spec)],
                         stdout=subprocess.PIPE, text=True, check=True)  # its log: stderr
    return json.loads(res.stdout)


def durable_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The hidden `_durable` command: run_durable() as run_durable_fresh() asked."""
    global TUNE_GC
    TUNE_GC = spec.pop("tune_gc")
    spec["path"] = Path(spec["path"])
    if spec["profile_dir"]:
        spec["profile_dir"] = Path(spec["profile_dir"])
    return run_durable(**spec)


# ---------------------------------------------------------------------------- core


def cmd_core(args: argparse.Namespace) -> int:
    global TUNE_GC
    TUNE_GC = not args.no_tune_gc
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.quick:
        skus = args.skus or 50_000
        holds = args.holds or 5_000
        durable_n = args.durable_n or 20_000
        decide_total = 2_000_000
        fsync_n = 200
    else:
        skus = args.skus or 1_000_000
        holds = args.holds or 100_000
        durable_n = args.durable_n or 300_000
        decide_total = 20_000_000
        fsync_n = 1_000
    t_start = time.perf_counter()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": machine_info(),
        "config": {"quick": args.quick, "tune_gc": TUNE_GC, "skus": skus, "holds": holds,
                   "durable_n": durable_n,
                   "concurrency": args.concurrency, "batch": args.batch,
                   "batch_concurrency": args.batch_concurrency,
                   "decide_batch_ops": args.decide_batch, "decide_total_ops": decide_total},
    }
    log(f"machine: {results['machine']['nproc']} CPUs, {results['machine']['cpu_model']}, "
        f"Python {results['machine']['python']}")
    log(f"fsync: {fsync_n} x write(4 KiB)+fsync in {out_dir}")
    results["fsync"] = fsync_latency(out_dir, fsync_n)
    log(f"fsync: mean {results['fsync']['fsync_mean_us']:.0f} µs, "
        f"p99 {results['fsync']['fsync_p99_us']:.0f} µs")

    results["decisions"] = run_decisions(skus, args.decide_batch, decide_total)
    gc.collect()

    store = out_dir / "store"
    results["store"] = build_store(store, skus)
    log("memory: opening the buckets-only store in a fresh process")
    mem = run_probe(store)
    traced = run_probe(store, trace=True)
    buckets = mem["buckets"]
    results["memory"] = {
        "buckets": buckets,
        "counters_c_bytes_per_bucket": mem["counters_bytes"] / buckets,
        "rss_anon_bytes_per_bucket": mem["rss_anon_bytes"] / buckets,
        "traced_bytes_per_bucket": traced["traced_bytes"] / buckets,
        "index_c_bytes_per_bucket": mem["index_bytes"] / buckets,
        "python_objects_bytes_per_bucket":
            (traced["traced_bytes"] - mem["counters_bytes"] - mem["index_bytes"]) / buckets,
        "rss_file_bytes_per_bucket": mem["rss_file_bytes"] / buckets,
        "note": "rss_anon: process anonymous RSS growth from Engine(path) (heap + C arrays), "
                "fresh process; traced: tracemalloc; rss_file: LMDB mmap pages read "
                "(page cache, shared, reclaimable), not counted in the target",
    }
    results["holds"] = add_holds(store, skus, holds)
    log("recovery: timing Engine(path) in fresh processes")
    warm = [run_probe(store) for _ in range(3)]
    cold = run_probe(store, cold=True)
    best = min(warm, key=lambda r: r["open_s"])
    results["recovery"] = {
        "buckets": best["buckets"], "live_holds": best["live_holds"],
        "warm_open_s": [r["open_s"] for r in warm], "warm_open_s_median":
            statistics.median(r["open_s"] for r in warm),
        "cold_open_s": cold["open_s"],
        "rss_anon_bytes_with_holds": best["rss_anon_bytes"],
        "bytes_per_live_hold": (best["rss_anon_bytes"] - mem["rss_anon_bytes"])
            / max(1, best["live_holds"]),
        "store_bytes": (store / "data.mdb").stat().st_size,
    }
    log(f"recovery: warm {results['recovery']['warm_open_s_median']:.2f} s, "
        f"cold {cold['open_s']:.2f} s")

    profile_dir = None
    if args.profile:
        profile_dir = out_dir / "profile"
        profile_dir.mkdir(exist_ok=True)
    log("durable: in a fresh process that opens the store, as a server would")
    results["durable"] = run_durable_fresh(store, skus, durable_n, args.concurrency,
                                           args.batch, args.batch_concurrency, args.loop,
                                           profile_dir)
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    results["total_s"] = time.perf_counter() - t_start
    results["summary"] = summarize(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print_table(results)
    print(f"\nwrote {out_dir / 'results.json'} ({results['total_s']:.0f} s)")
    if not args.keep_store:
        shutil.rmtree(store, ignore_errors=True)
    return 0


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    d, dur = r["decisions"], r["durable"]
    best_durable = max(dur[k]["per_s"] for k in ("aio_reserve_uniform", "aio_reserve_hot"))
    measured = {
        "decisions_per_s_uniform": d["uniform"]["per_s"],
        "decisions_hot_over_uniform": d["hot_over_uniform"],
        "durable_reservations_per_s": min(dur["aio_reserve_uniform"]["per_s"],
                                          dur["aio_reserve_hot"]["per_s"]),
        "bytes_per_bucket": r["memory"]["rss_anon_bytes_per_bucket"],
        "recovery_s": max(r["recovery"]["warm_open_s_median"], r["recovery"]["cold_open_s"]),
    }
    out = {}
    for k, (op, target) in TARGETS.items():
        v = measured[k]
        ok = v >= target if op == ">=" else v <= target
        out[k] = {"measured": v, "target": f"{op} {target}", "pass": ok}
    out["durable_reservations_per_s"]["best_single_path"] = best_durable
    return out


def print_table(r: dict[str, Any]) -> None:
    m, f, d, dur = r["machine"], r["fsync"], r["decisions"], r["durable"]
    mem, rec = r["memory"], r["recovery"]
    print(f"\nstockgate core bench — {m['nproc']} CPUs {m['cpu_model']}, Python {m['python']}, "
          f"lmdb {m['lmdb_version']}, loop {dur['loop']}, load at start "
          f"{m['loadavg_at_start'][0]:.2f}")
    print(f"disk ({r['config']['quick'] and 'quick' or 'full'} run): write 4 KiB + fsync "
          f"mean {f['fsync_mean_us']:.0f} µs p50 {f['fsync_p50_us']:.0f} p99 "
          f"{f['fsync_p99_us']:.0f}; fdatasync mean {f['fdatasync_mean_us']:.0f} µs")
    rows = [("metric", "measured", "target", "")]

    def row(name: str, value: str, key: str | None = None) -> None:
        s = r["summary"].get(key) if key else None
        rows.append((name, value, s["target"] if s else "", ("PASS" if s["pass"] else "MISS")
                     if s else ""))

    for k in ("uniform", "hot", "uniform_2threads", "hot_2threads"):
        x = d[k]
        row(f"decisions/s {k} ({d['counters']:,} ctrs, batch {x['batch_ops']:,})",
            f"{x['per_s']:,.0f} ({x['ns_per_op']:.1f} ns)",
            "decisions_per_s_uniform" if k == "uniform" else None)
    row("decisions hot/uniform", f"{d['hot_over_uniform']:.2f}x", "decisions_hot_over_uniform")
    for k in ("aio_reserve_uniform", "aio_reserve_hot", "aio_reserve_many_uniform",
              "aio_reserve_many_hot"):
        x = dur[k]
        shape = (f"{x['concurrency']} coros" if x["mode"] == "single"
                 else f"{x['concurrency']} coros x {x['batch']}")
        row(f"durable/s {k} ({shape})",
            f"{x['per_s']:,.0f}; {x['cpu_us_per_reservation']:.1f} µs CPU; p50 "
            f"{x['latency_p50_ms']:.1f} p99 {x['latency_p99_ms']:.1f} ms; "
            f"{x['reservations_per_commit'] or 0:.0f}/commit",
            "durable_reservations_per_s" if k == "aio_reserve_hot" else None)
    row(f"bytes/bucket total (anon RSS, {mem['buckets']:,} buckets)",
        f"{mem['rss_anon_bytes_per_bucket']:.0f}", "bytes_per_bucket")
    row("  of which C counters", f"{mem['counters_c_bytes_per_bucket']:.1f}")
    row("  of which C bucket index (capacity)", f"{mem['index_c_bytes_per_bucket']:.1f}")
    row("  Python objects (tracemalloc, minus the C parts)",
        f"{mem['python_objects_bytes_per_bucket']:.0f}")
    row("  + LMDB mmap pages read (page cache)", f"{mem['rss_file_bytes_per_bucket']:.0f}")
    row(f"recovery, worse of warm/cold ({rec['buckets']:,} buckets + "
        f"{rec['live_holds']:,} holds)",
        f"{max(rec['warm_open_s_median'], rec['cold_open_s']):.2f} s", "recovery_s")
    row("  warm (store in the page cache, median of 3)", f"{rec['warm_open_s_median']:.2f} s")
    row("  cold (store evicted with POSIX_FADV_DONTNEED)", f"{rec['cold_open_s']:.2f} s")
    row("  memory per live hold (anon RSS)", f"{rec['bytes_per_live_hold']:.0f} B")
    row("import_rows", f"{r['store']['import_rows_per_s']:,.0f} rows/s")
    row("sync reserve_many(1000) while building holds",
        f"{r['holds']['sync_reserve_many_1000_per_s']:,.0f}/s")
    row("consistency check after the durable runs", "ok" if dur["check_ok"] else
        f"DRIFT {dur['check_drifts']}")
    w = [max(len(str(x[i])) for x in rows) for i in range(4)]
    for i, x in enumerate(rows):
        print("  ".join(str(c).ljust(w[j]) for j, c in enumerate(x)).rstrip())
        if i == 0:
            print("  ".join("-" * n for n in w))
    for k, x in dur.items():
        prof = x.get("profile") if isinstance(x, dict) else None
        if not prof:
            continue
        print(f"\nprofile {k}: {prof['gil_us_per_reservation']:.1f} µs of GIL-holding time per "
              f"reservation (py-spy --gil, {prof['samples']} samples)")
        for name, c in list(prof["categories"].items())[:12]:
            print(f"  {c['us_per_reservation']:6.1f} µs  {c['share']:6.1%}  {name}")


# ---------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/run.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True,
                            metavar="{core,server,drive,locust,report}")
    core = sub.add_parser("core", help="engine benchmarks without a server")
    core.add_argument("--out", required=True, help="directory for results.json and the store")
    core.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    core.add_argument("--skus", type=int, help="buckets (default 1,000,000; quick 50,000)")
    core.add_argument("--holds", type=int, help="live holds for recovery (default 100,000)")
    core.add_argument("--durable-n", type=int, help="reservations per durable case "
                      "(default 300,000; quick 20,000)")
    core.add_argument("--concurrency", type=int, default=1_000,
                      help="submitter coroutines of aio.reserve (default 1,000)")
    core.add_argument("--batch", type=int, default=500, help="reserve_many batch (default 500)")
    core.add_argument("--batch-concurrency", type=int, default=16,
                      help="submitter coroutines of aio.reserve_many (default 16)")
    core.add_argument("--decide-batch", type=int, default=100_000,
                      help="operations per Counters.decide() call (default 100,000)")
    core.add_argument("--loop", choices=("auto", "uvloop", "asyncio"), default="auto")
    core.add_argument("--no-tune-gc", action="store_true",
                      help="leave the GC at CPython's defaults (no engine.tune_gc())")
    core.add_argument("--profile", action="store_true",
                      help="sample each durable case with py-spy --gil into DIR/profile/ and "
                           "fold the stacks into µs per reservation per engine stage")
    core.add_argument("--keep-store", action="store_true", help="keep DIR/store afterwards")
    core.set_defaults(func=cmd_core)
    import server as server_bench  # bench/server.py, beside this file

    srv = sub.add_parser("server", help="stockgate over gRPC vs the bare grpc.aio floor")
    server_bench.add_arguments(srv)
    srv.set_defaults(func=server_bench.cmd_server)
    import driver
    import report
    import scenarios

    drv = sub.add_parser("drive", help="the lean load driver against one system")
    driver.add_drive_arguments(drv)
    drv.set_defaults(func=driver.cmd_drive)
    loc = sub.add_parser("locust", help="one locust scenario, headless")
    scenarios.add_arguments(loc)
    loc.set_defaults(func=scenarios.cmd_locust)
    import overload

    ovl = sub.add_parser("overload", help="stockgate flooded at 5x its capacity")
    overload.add_arguments(ovl)
    ovl.set_defaults(func=overload.cmd_overload)
    rep = sub.add_parser("report", help="everything, side by side: REPORT.md and charts")
    report.add_arguments(rep)
    rep.set_defaults(func=report.cmd_report)
    probe = sub.add_parser("_probe-open", help=argparse.SUPPRESS)
    probe.add_argument("path")
    probe.add_argument("--trace", action="store_true")
    probe.set_defaults(func=lambda a: print(json.dumps(probe_open(a.path, a.trace))) or 0)
    durable = sub.add_parser("_durable", help=argparse.SUPPRESS)
    durable.add_argument("spec")
    durable.set_defaults(
        func=lambda a: print(json.dumps(durable_child(json.loads(a.spec)), default=str)) or 0)
    args = ap.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
