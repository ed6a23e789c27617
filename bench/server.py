"""`python bench/run.py server --out DIR`: stockgate over gRPC against the bare grpc.aio floor.

Every figure comes from one run on this machine, side by side:

  echo        a grpc.aio server that parses a ReserveRequest and answers a Result of the
              same shape without any engine: the floor of a unary call in Python gRPC
  unary       stockgate's Reserve, one reservation per call, from concurrent callers
  coalesced   stockgate through AsyncClient: concurrent reserve() calls of one process
              ride together on the client's Session stream
  latency     p50/p99 of coalesced reserves offered open-loop at half the peak rate

Uniform cases spread reservations over --skus SKUs; hot cases put every one on one SKU.
Durability is fsync: every answer is on disk. Each server runs in its own process and its
CPU is read from /proc (every thread, in ns), so the load driver's CPU never counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOT_SKU = "HOT"
UNITS_PER_SKU = 10**9  # the bench never sells out
HOT_UNITS = 10**12
TTL_MS = 7 * 24 * 3_600 * 1_000
CHANNEL = "web"
TARGETS = {
    "unary_cpu_over_echo": ("<=", 1.25),
    "coalesced_reservations_per_s": (">=", 100_000),
    "coalesced_cpu_us": ("<=", 10.0),
    "hot_over_uniform": (">=", 0.8),
}
SERVER_START_S_MAX = 60
DRIVER_SLACK_S = 120


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sku_name(i: int) -> str:
    return f"SKU-{i:07d}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


# ---------------------------------------------------------------------------- servers

def cpu_ns(pid: int) -> int:
    """CPU time of every thread of a process, in ns (schedstat: ns, not clock ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended between listing and reading
    return total


class Served:
    """A server subprocess and its address."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        deadline = time.monotonic() + SERVER_START_S_MAX
        self.address = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read()
                raise RuntimeError(f"server exited: {argv}\n{err}")
            m = re.search(r"(127\.0\.0\.1:\d+)", line)
            if m and not m.group(1).endswith(":0"):
                self.address = m.group(1)
                break
        if not self.address:
            raise RuntimeError(f"server did not print its address in time: {argv}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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


# ---------------------------------------------------------------------------- driver

async def _drive(args: argparse.Namespace) -> dict[str, Any]:
    import grpc

    from stockgate.v1 import reservations_pb2, reservations_pb2_grpc, types_pb2

    rnd = random.Random(os.getpid())
    skus = [HOT_SKU] if args.hot else [sku_name(i) for i in range(args.skus)]
    prefix = f"{args.mode}-{os.getpid()}-{time.time_ns()}-"
    counter = 0
    latencies: list[float] = []
    refused = 0

    def next_id() -> str:
        nonlocal counter
        counter += 1
        return f"{prefix}{counter}"

    if args.mode in ("echo", "unary"):
        channel = grpc.aio.insecure_channel(args.target)
        stub = reservations_pb2_grpc.ReservationsStub(channel)

        async def one() -> bool:
            req = reservations_pb2.ReserveRequest(
                reservation_id=next_id(), channel=CHANNEL, ttl_ms=TTL_MS,
                lines=[types_pb2.Line(sku=rnd.choice(skus), qty=1)])
            res = await stub.Reserve(req, timeout=30)
            return res.outcome == types_pb2.OUTCOME_OK

        close = channel.close
    else:
        from stockgate.clients import AsyncClient

        client = AsyncClient(args.target)

        async def one() -> bool:
            res = await client.reserve(next_id(), CHANNEL, [(rnd.choice(skus), 1)],
                                       ttl_ms=TTL_MS, timeout=30)
            return res.ok

        close = client.close

    async def closed_loop(stop_at: float) -> int:
        nonlocal refused
        n = 0
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            if not await one():
                refused += 1
            latencies.append(time.perf_counter() - t0)
            n += 1
        return n

    async def open_loop(rate: float, stop_at: float) -> int:
        nonlocal refused
        tasks = set()

        async def timed() -> None:
            nonlocal refused
            t0 = time.perf_counter()
            if not await one():
                refused += 1
            latencies.append(time.perf_counter() - t0)

        start = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            due = int((now - start) * rate)
            for _ in range(due - sent):
                t = asyncio.ensure_future(timed())
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            sent = max(sent, due)
            await asyncio.sleep(0.001)
        if tasks:
            await asyncio.gather(*tasks)
        return sent

    # Warm up (connections, the Session stream, caches), then tell the parent to start
    # its clock and CPU reading, and run.
    await asyncio.gather(*(closed_loop(time.monotonic() + args.warmup)
                           for _ in range(min(args.concurrency, 64))))
    latencies.clear()
    refused = 0
    print("START", flush=True)
    sys.stdin.readline()
    t0 = time.perf_counter()
    stop_at = time.monotonic() + args.duration
    if args.rate:
        n = await open_loop(args.rate, stop_at)
    else:
        n = sum(await asyncio.gather(*(closed_loop(stop_at) for _ in range(args.concurrency))))
    wall = time.perf_counter() - t0
    await close()
    return {"ops": n, "wall_s": wall, "per_s": n / wall, "refused": refused,
            "p50_ms": pct(latencies, 50) * 1e3, "p99_ms": pct(latencies, 99) * 1e3}


def cmd_drive(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(args))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_case(served: Served, mode: str, *, hot: bool, skus: int, duration: float,
             concurrency: int, rate: float = 0.0) -> dict[str, Any]:
    """Run one driver process against a server; return its figures and the server's CPU."""
    argv = [sys.executable, str(Path(__file__)), "_drive", "--target", served.address,
            "--mode", mode, "--skus", str(skus), "--duration", str(duration),
            "--concurrency", str(concurrency), "--rate", str(rate), "--warmup", "1"]
    if hot:
        argv.append("--hot")
    drv = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = drv.stdout.readline()
    if line.strip() != "START":
        drv.kill()
        raise RuntimeError(f"driver failed to start ({mode}): {line!r}")
    c0 = cpu_ns(served.proc.pid)
    drv.stdin.write("\n")
    drv.stdin.flush()
    out = drv.stdout.readline()
    c1 = cpu_ns(served.proc.pid)
    drv.wait(DRIVER_SLACK_S)
    if not out.startswith("RESULT "):
        raise RuntimeError(f"driver failed ({mode}): {out!r}")
    r = json.loads(out[len("RESULT "):])
    r["server_cpu_s"] = (c1 - c0) / 1e9
    r["server_cpu_us_per_op"] = (c1 - c0) / 1e3 / max(r["ops"], 1)
    return r


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
    finally:
        echo.stop()

    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp:
        store = Path(tmp) / "store"
        log(f"seeding {skus:,} SKUs")
        seed_store(store, skus)
        sg = Served([sys.executable, "-m", "stockgate.server", "--data-dir", str(store),
                     "--listen", "127.0.0.1:0", "--durability", "fsync"], env)
        try:
            for name, mode, hot, conc in (
                ("unary_uniform", "unary", False, args.unary_concurrency),
                ("coalesced_uniform", "coalesced", False, args.concurrency),
                ("coalesced_hot", "coalesced", True, args.concurrency),
            ):
                log(name)
                results[name] = run_case(sg, mode, hot=hot, skus=skus, duration=duration,
                                         concurrency=conc)
            peak = results["coalesced_uniform"]["per_s"]
            log(f"latency at half the peak ({peak / 2:,.0f}/s offered)")
            results["latency_at_half_peak"] = run_case(
                sg, "coalesced", hot=False, skus=skus, duration=duration,
                concurrency=args.concurrency, rate=peak / 2)
        finally:
            sg.stop()
        results["server_exit_code"] = sg.proc.returncode

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
    for k in ("echo_unary", "unary_uniform", "coalesced_uniform", "coalesced_hot",
              "latency_at_half_peak"):
        x = r[k]
        rows.append((k, f"{x['per_s']:,.0f}", f"{x['server_cpu_us_per_op']:.1f}",
                     f"{x['p50_ms']:.2f}", f"{x['p99_ms']:.2f}"))
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
    sub = ap.add_subparsers(dest="command", required=True)
    add_arguments(sub.add_parser("server"))
    d = sub.add_parser("_drive")
    d.add_argument("--target", required=True)
    d.add_argument("--mode", choices=("echo", "unary", "coalesced"), required=True)
    d.add_argument("--skus", type=int, default=100_000)
    d.add_argument("--hot", action="store_true")
    d.add_argument("--duration", type=float, default=5.0)
    d.add_argument("--concurrency", type=int, default=64)
    d.add_argument("--rate", type=float, default=0.0)
    d.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args(argv)
    return cmd_server(args) if args.command == "server" else cmd_drive(args)


if __name__ == "__main__":
    sys.exit(main())
