"""The lean load driver: asyncio, one target per process, for peak figures.

On 2 cores locust eats the CPU it measures; this driver spends its CPU on the client
calls only. It runs a list of phases against one system (bench/targets.py), each

    closed-loop   `concurrency` callers, each calling again as soon as it is answered
    open-loop     calls started at `rate` per second whatever the answers do; latency
                  counts from when a call was due, not when it went out, so a system
                  that falls behind is charged for the wait (no coordinated omission)

over a workload of SKUs ("uniform" over --skus, "hot": one SKU, "sellout": one SKU with
few units, "flash": the campaign SKUs), and reports per phase: operations/s, a latency
histogram (histogram.py), outcomes, a timeline of outcomes per TIMELINE_BIN_S, the
driver's own CPU, and the ids of the granted reservations (to check them afterwards).

The parent (`run_phases`) starts the driver processes, and around each phase reads the
server's CPU (processes.CpuMeter), so server CPU per operation excludes the driver.
Protocol on the driver's stdio: it warms up, prints "READY i", waits for a line on
stdin, runs phase i, prints "RESULT {json}"; and so on for every phase.

    python bench/driver.py --system coalesced --target 127.0.0.1:50051 \\
        --phases '[{"shape": "closed", "concurrency": 2000, "duration_s": 5}]'
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from book import FLASH_SKU_PREFIX, HOT_SKU, SELLOUT_SKU, sku_name  # noqa: E402
from histogram import LatencyHistogram  # noqa: E402
from processes import machine_cpu_s  # noqa: E402

TIMELINE_BIN_S = 0.1
OPEN_LOOP_TICK_S = 0.001  # how often the open loop starts the calls that came due
OPEN_LOOP_INFLIGHT_MAX = 50_000  # past this many unanswered calls, due calls are dropped
WARMUP_CONCURRENCY_MAX = 64
DRIVER_START_S_MAX = 120  # imports, connection, warm-up
PHASE_SLACK_S = 120  # a phase's answers may come this long after its duration
WORKLOADS = ("uniform", "hot", "sellout", "flash")
# Reservation ids are the process's prefix and a counter of this many digits, so that they
# sort in the order they are made, as new_reservation_id()'s do. Unpadded counters
# ("...-9" after "...-10") put each new hold at a random place in every store's index:
# a page written per reservation, about 1 µs of stockgate's server CPU each once the
# store held the 800,000 holds of a full run's uniform phase.
RESERVATION_ID_COUNTER_DIGITS = 12


def id_prefix(system: str) -> str:
    """The reservation ids of one driver process: this prefix (the system, the pid, the
    start time: unique across processes and runs) and a counter of
    RESERVATION_ID_COUNTER_DIGITS digits."""
    return f"{system[:2]}-{os.getpid()}-{time.time_ns()}-"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- phases

def phase(name: str, *, workload: str = "uniform", concurrency: int = 0, rate: float = 0.0,
          duration_s: float = 5.0, stop_after_units: int = 0,
          tail_s: float = 1.0) -> dict[str, Any]:
    """A phase: closed-loop at `concurrency` callers, or open-loop at `rate` calls/s.
    With stop_after_units, it ends tail_s after that many units were granted (a sell-out),
    or at duration_s, whichever comes first."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload {workload!r}; one of {WORKLOADS}")
    if (concurrency > 0) == (rate > 0):
        raise ValueError("a phase is closed-loop (concurrency) or open-loop (rate)")
    return {"name": name, "workload": workload, "concurrency": concurrency, "rate": rate,
            "duration_s": duration_s, "stop_after_units": stop_after_units, "tail_s": tail_s}


class Workload:
    """Which SKU each attempt names."""

    def __init__(self, kind: str, skus: int, flash_skus: int, rng: random.Random) -> None:
        self.kind = kind
        self.rng = rng
        if kind == "uniform":
            self.names = [sku_name(i) for i in range(skus)]
        elif kind == "hot":
            self.names = [HOT_SKU]
        elif kind == "sellout":
            self.names = [SELLOUT_SKU]
        else:
            self.names = [f"{FLASH_SKU_PREFIX}{i + 1}" for i in range(flash_skus)]

    def sku(self) -> str:
        names = self.names
        return names[0] if len(names) == 1 else names[int(self.rng.random() * len(names))]


class Tally:
    """What one phase saw."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.hist = LatencyHistogram()
        self.outcomes: dict[str, int] = {}
        self.timeline: dict[str, list[int]] = {}
        self.calls = 0
        self.ops = 0
        self.units = 0
        self.acked: list[str] = []

    def add(self, t_due: float, t_done: float, outcome: str, units: int, ops: int,
            rid: str) -> None:
        self.hist.record(t_done - t_due)
        self.calls += 1
        self.ops += ops
        self.units += units
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "ok":
            self.acked.append(rid)
        series = self.timeline.get(outcome)
        if series is None:
            series = self.timeline[outcome] = []
        b = int((t_done - self.start) / TIMELINE_BIN_S)
        if b >= len(series):
            series.extend([0] * (b + 1 - len(series)))
        series[b] += 1


async def run_phase(target: Any, ph: dict[str, Any], work: Workload, prefix: str,
                    ids: Callable[[], int]) -> dict[str, Any]:
    perf = time.perf_counter
    reserve = target.reserve
    start = perf()
    tally = Tally(start)
    stop_at = start + ph["duration_s"]
    want = ph["stop_after_units"]
    tail = ph["tail_s"]

    async def attempt(t_due: float) -> None:
        nonlocal stop_at
        rid = f"{prefix}{ids():0{RESERVATION_ID_COUNTER_DIGITS}d}"
        try:
            outcome, units, ops = await reserve(rid, work.sku())
        except Exception as exc:  # noqa: BLE001 - every failure is counted by its kind
            outcome, units, ops = f"error:{type(exc).__name__}", 0, 1
        tally.add(t_due, perf(), outcome, units, ops, rid)
        if want and tally.units >= want and stop_at > perf() + tail:
            stop_at = perf() + tail

    # No cyclic GC during a phase: with tens of thousands of calls in flight its
    # collections would walk them all, again and again, on the driver's one core, and
    # land in the latencies. The phase's garbage is collected after it.
    gc.disable()
    c0 = time.process_time()
    dropped = 0
    sent = 0
    if ph["concurrency"]:
        async def caller() -> None:
            while perf() < stop_at:
                await attempt(perf())

        await asyncio.gather(*(caller() for _ in range(ph["concurrency"])))
    else:
        rate = ph["rate"]
        tasks: set[asyncio.Task] = set()
        while (now := perf()) < stop_at:
            due = int((now - start) * rate)
            while sent < due:
                t_due = start + sent / rate
                sent += 1
                if len(tasks) >= OPEN_LOOP_INFLIGHT_MAX:
                    dropped += 1
                    continue
                t = asyncio.ensure_future(attempt(t_due))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            await asyncio.sleep(OPEN_LOOP_TICK_S)
        if tasks:
            await asyncio.wait(tasks, timeout=PHASE_SLACK_S)
    wall = perf() - start
    cpu = time.process_time() - c0
    gc.enable()
    gc.collect()
    return {
        "name": ph["name"], "workload": ph["workload"], "concurrency": ph["concurrency"],
        "rate": ph["rate"], "wall_s": wall, "calls": tally.calls, "ops": tally.ops,
        "units": tally.units, "per_s": tally.ops / wall if wall else 0.0,
        "sent": sent, "dropped": dropped, "outcomes": tally.outcomes,
        "histogram": tally.hist.to_json(), "timeline_bin_s": TIMELINE_BIN_S,
        "timeline": tally.timeline, "driver_cpu_s": cpu,
        "_acked": tally.acked,
    }


async def drive(args: argparse.Namespace) -> None:
    import targets

    phases = json.loads(args.phases)
    options = json.loads(args.options) if args.options else {}
    rng = random.Random(args.seed)
    options.setdefault("seed", args.seed)
    target = await targets.open_target(args.system, args.target, options)
    prefix = id_prefix(args.system)
    counter = iter(range(1, 1 << 62))
    ids = counter.__next__
    try:
        if args.warmup_s > 0:  # connections, streams, caches; on uniform SKUs only
            warm = Workload("uniform", args.skus, args.flash_skus, rng)
            await run_phase(target, phase("warmup", concurrency=WARMUP_CONCURRENCY_MAX,
                                          duration_s=args.warmup_s), warm, prefix, ids)
        for i, ph in enumerate(phases):
            work = Workload(ph["workload"], args.skus, args.flash_skus, rng)
            print(f"READY {i}", flush=True)
            if not sys.stdin.readline():
                return  # the parent is gone
            result = await run_phase(target, ph, work, prefix, ids)
            acked = result.pop("_acked")
            if args.acked_dir:
                path = Path(args.acked_dir) / f"{os.getpid()}-{i}.ids"
                path.write_text("\n".join(acked) + ("\n" if acked else ""))
                result["acked_file"] = str(path)
            print("RESULT " + json.dumps(result), flush=True)
    finally:
        await target.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--system", required=True, help="echo, unary, session, coalesced, flash, "
                                                    "redis or postgres")
    ap.add_argument("--target", required=True, help="host:port (postgres: a DSN)")
    ap.add_argument("--phases", required=True, help="JSON list of phases (driver.phase())")
    ap.add_argument("--options", default="", help="JSON options of the target")
    ap.add_argument("--skus", type=int, default=100_000, help="SKUs of the uniform workload")
    ap.add_argument("--flash-skus", type=int, default=1)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--acked-dir", default="", help="write granted reservation ids here")
    args = ap.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(drive(args))
    return 0


# ---------------------------------------------------------------------------- parent

def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's results from several driver processes, as one."""
    if len(results) == 1:
        out = dict(results[0])
        out["histogram"] = LatencyHistogram.from_json(out["histogram"])
        out["acked_files"] = [out.pop("acked_file")] if "acked_file" in out else []
        return out
    out = dict(results[0])
    out["histogram"] = LatencyHistogram()
    out["outcomes"], out["timeline"] = {}, {}
    out["acked_files"] = []
    for k in ("calls", "ops", "units", "sent", "dropped", "driver_cpu_s", "per_s",
              "concurrency", "rate"):
        out[k] = sum(r[k] for r in results)
    out["wall_s"] = max(r["wall_s"] for r in results)
    for r in results:
        out["histogram"].merge(LatencyHistogram.from_json(r["histogram"]))
        for k, n in r["outcomes"].items():
            out["outcomes"][k] = out["outcomes"].get(k, 0) + n
        for k, series in r["timeline"].items():
            mine = out["timeline"].setdefault(k, [])
            if len(series) > len(mine):
                mine.extend([0] * (len(series) - len(mine)))
            for i, n in enumerate(series):
                mine[i] += n
        if "acked_file" in r:
            out["acked_files"].append(r["acked_file"])
    out.pop("acked_file", None)
    return out


def finish(r: dict[str, Any], server_ns: int) -> dict[str, Any]:
    """Add the server's CPU and the latency summary; the histogram becomes JSON."""
    h: LatencyHistogram = r["histogram"]
    r.update(h.summary_ms())
    r["histogram"] = h.to_json()
    r["server_cpu_s"] = server_ns / 1e9
    r["server_cpu_us_per_op"] = server_ns / 1e3 / max(r["ops"], 1)
    r["driver_cpu_us_per_op"] = r["driver_cpu_s"] * 1e6 / max(r["ops"], 1)
    return r


def run_phases(system: str, target: str, phases: list[dict[str, Any]], meter: Any, *,
               processes: int = 1, skus: int = 100_000, flash_skus: int = 1,
               warmup_s: float = 1.0, options: dict[str, Any] | None = None,
               acked_dir: str | Path | None = None,
               between: Callable[[int, str], None] | None = None) -> list[dict[str, Any]]:
    """Run `phases` against `system` from `processes` driver processes; `meter` reads the
    server's CPU (start(), stop_ns()). `between(i, when)` is called with when="before"
    and "after" around phase i while every driver waits (the peers read their totals
    there). Open-loop rates and closed-loop concurrencies are split among the processes.
    Returns one result per phase."""
    per_proc = []
    for ph in phases:
        p = dict(ph)
        p["concurrency"] = -(-ph["concurrency"] // processes) if ph["concurrency"] else 0
        p["rate"] = ph["rate"] / processes
        p["stop_after_units"] = ph["stop_after_units"]
        per_proc.append(p)
    argv = [sys.executable, str(HERE / "driver.py"), "--system", system, "--target", target,
            "--phases", json.dumps(per_proc), "--skus", str(skus),
            "--flash-skus", str(flash_skus), "--warmup-s", str(warmup_s)]
    if options:
        argv += ["--options", json.dumps(options)]
    if acked_dir:
        argv += ["--acked-dir", str(acked_dir)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [subprocess.Popen(argv + ["--seed", str(k)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
             for k in range(processes)]
    results: list[dict[str, Any]] = []
    try:
        for i in range(len(phases)):
            for p in procs:
                line = p.stdout.readline()
                if line.strip() != f"READY {i}":
                    raise RuntimeError(f"driver ({system}) did not get ready for phase {i}: "
                                       f"{line!r}")
            if between:
                between(i, "before")
            machine0 = machine_cpu_s()
            meter.start()
            for p in procs:
                p.stdin.write("\n")
                p.stdin.flush()
            got = []
            for p in procs:
                line = p.stdout.readline()
                if not line.startswith("RESULT "):
                    raise RuntimeError(f"driver ({system}) failed in phase {i}: {line!r}")
                got.append(json.loads(line[len("RESULT "):]))
            server_ns = meter.stop_ns()
            machine_s = machine_cpu_s() - machine0
            if between:
                between(i, "after")
            r = finish(merge(got), server_ns)
            # What the whole machine spent meanwhile, whoever spent it: past the server's
            # and the driver's share, other processes were taking CPU from the run.
            r["machine_cpu_s"] = machine_s
            r["other_cores_busy"] = max(0.0, machine_s - r["server_cpu_s"]
                                        - r["driver_cpu_s"]) / r["wall_s"]
            r["system"] = system
            r["processes"] = processes
            results.append(r)
        for p in procs:
            p.stdin.close()
            p.wait(PHASE_SLACK_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return results


# ---------------------------------------------------------------------------- command

def add_drive_arguments(ap: argparse.ArgumentParser) -> None:
    import systems

    ap.add_argument("--system", default="stockgate", choices=systems.SYSTEMS)
    ap.add_argument("--out", required=True, help="directory for results.json")
    ap.add_argument("--workload", choices=("uniform", "hot", "sellout"), default="uniform")
    ap.add_argument("--concurrency", type=int, default=2_000,
                    help="closed loop: concurrent callers (ignored with --rate)")
    ap.add_argument("--rate", type=float, action="append", default=[],
                    help="open loop at this many calls/s (repeat for a ladder)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--skus", type=int, default=100_000)
    ap.add_argument("--sellout-units", type=int, default=10_000)
    ap.add_argument("--processes", type=int, default=1, help="driver processes")
    ap.add_argument("--store-dir", default=None, help="where the system keeps its data")


def cmd_drive(args: argparse.Namespace) -> int:
    """`python bench/run.py drive`: start one system on loopback with the bench's book,
    drive it, print a table and write DIR/results.json."""
    import shutil
    import tempfile

    import systems
    from processes import CpuMeter

    why = systems.missing(args.system)
    if why:
        print(f"{args.system}: skipped. {why}", file=sys.stderr)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="stockgate-drive-", dir=args.store_dir))
    work.chmod(0o755)  # PostgreSQL runs as its own user and must reach its dir inside
    stop = args.sellout_units if args.workload == "sellout" else 0
    if args.rate:
        phases = [phase(f"open-{r:g}", workload=args.workload, rate=r,
                        duration_s=args.duration, stop_after_units=stop) for r in args.rate]
    else:
        phases = [phase(f"closed-{args.concurrency}", workload=args.workload,
                        concurrency=args.concurrency, duration_s=args.duration,
                        stop_after_units=stop)]
    try:
        log(f"{args.system}: starting with {args.skus:,} SKUs in {work}")
        srv = systems.start(args.system, work, skus=args.skus,
                            sellout_units=args.sellout_units)
        try:
            results = run_phases(srv.driver_system, srv.target, phases, CpuMeter(srv.pid),
                                 processes=args.processes, skus=args.skus,
                                 options=srv.options)
        finally:
            srv.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (out / "results.json").write_text(json.dumps(
        {"system": args.system, "info": srv.info, "phases": results}, indent=1) + "\n")
    print(f"{'phase':16} {'ops/s':>10} {'server µs/op':>13} {'driver µs/op':>13} "
          f"{'p50 ms':>8} {'p99 ms':>8}  outcomes")
    for r in results:
        print(f"{r['name']:16} {r['per_s']:10,.0f} {r['server_cpu_us_per_op']:13.1f} "
              f"{r['driver_cpu_us_per_op']:13.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}  "
              f"{r['outcomes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
