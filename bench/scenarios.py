"""Running the locust scenarios headless from the bench, and reading what they report.

Each scenario is one `locust -f bench/locustfile.py --headless` subprocess against a
running server; the server's CPU is read around it (processes.CpuMeter) and divided by
the requests locust made. Figures come from locust's own JSON stats (requests, failures
and its response-time histogram per request type and outcome) and from the tallies the
locustfile writes (--stockgate-out).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile.py"
STOP_TIMEOUT_S = 5  # users finish their call in flight when the time is up
SLACK_S = 120  # locust start-up, set-up and shutdown on top of the run time


def locust_argv(address: str, scenario: str, users: int, run_time_s: float, out: Path, *,
                name: str = "", extra: list[str] | None = None) -> list[str]:
    """The locust command of one process; its files are out/<name>.json and
    out/<name>-tallies.json (name: the scenario's, unless given)."""
    name = name or scenario
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
            "--host", address, "--scenario", scenario, "-u", str(users), "-r", str(users),
            "-t", f"{max(1, round(run_time_s))}s", "--stop-timeout", str(STOP_TIMEOUT_S),
            "--only-summary", "--loglevel", "WARNING", "--json-file", str(out / name),
            "--stockgate-out", str(out / f"{name}-tallies.json"), *(extra or [])]


def percentile_ms(times: dict[str, int], p: float) -> float:
    """A percentile of locust's response-time histogram (keys are rounded ms)."""
    items = sorted((float(k), n) for k, n in times.items())
    total = sum(n for _, n in items)
    if not total:
        return float("nan")
    rank = p / 100 * total
    seen = 0
    for v, n in items:
        seen += n
        if seen >= rank:
            return v
    return items[-1][0]


def read_stats(path: Path) -> dict[str, Any]:
    """Per request type and outcome: requests, failures, rate and percentiles."""
    entries = json.loads(path.read_text())
    rows = []
    total = fails = 0
    first, last = float("inf"), 0.0
    for e in entries:
        n = e["num_requests"]
        span = (e["last_request_timestamp"] or e["start_time"]) - e["start_time"]
        times = e["response_times"]
        rows.append({"type": e["method"], "name": e["name"], "requests": n,
                     "failures": e["num_failures"],
                     "per_s": n / span if span > 0 else float("nan"),
                     "p50_ms": percentile_ms(times, 50), "p95_ms": percentile_ms(times, 95),
                     "p99_ms": percentile_ms(times, 99), "max_ms": e["max_response_time"],
                     "per_second": e["num_reqs_per_sec"]})
        total += n
        fails += e["num_failures"]
        first = min(first, e["start_time"])
        last = max(last, e["last_request_timestamp"] or 0)
    span = last - first if last > first else float("nan")
    return {"rows": sorted(rows, key=lambda r: (r["type"], r["name"])), "requests": total,
            "failures": fails, "span_s": span, "per_s": total / span if span else 0.0}


def _launch(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, name: str, timeout_s: float) -> int:
    _, err = proc.communicate(timeout=timeout_s)
    if proc.returncode not in (0, 1):  # 1: some requests failed, which the figures show
        raise RuntimeError(f"locust {name} failed ({proc.returncode}):\n{err[-3000:]}")
    return proc.returncode


def _tallies(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def run(address: str, scenario: str, users: int, run_time_s: float, out: Path, meter: Any,
        *, extra: list[str] | None = None, watchers: int = 0) -> dict[str, Any]:
    """Run one scenario; returns its figures with the server's CPU per request.

    With `watchers` (the watch scenario only), the subscribers run in a locust process of
    their own beside a process of users - watchers checkout users, so that their timing
    is not held up by the load generator's own greenlets; both hit the same server at
    the same time, and their figures are added up."""
    out.mkdir(parents=True, exist_ok=True)
    timeout_s = run_time_s + STOP_TIMEOUT_S + SLACK_S
    split = scenario == "watch" and watchers > 0
    runs: list[tuple[str, list[str]]] = []
    if split:
        runs.append(("watch-load", locust_argv(address, "checkout", users - watchers,
                                               run_time_s, out, name="watch-load",
                                               extra=extra)))
        runs.append(("watch", locust_argv(address, "watch", watchers, run_time_s, out,
                                          extra=(extra or []) + ["--watchers", str(watchers),
                                                                 "WatchUser"])))
    else:
        runs.append((scenario, locust_argv(address, scenario, users, run_time_s, out,
                                           extra=extra)))
    meter.start()
    procs = [(name, _launch(argv)) for name, argv in runs]
    codes = [_finish(p, name, timeout_s) for name, p in procs]
    server_ns = meter.stop_ns()
    parts = [read_stats(out / f"{name}.json") for name, _ in runs]
    stats = parts[0] if len(parts) == 1 else merge_stats(parts)
    tallies = _tallies(out / f"{scenario}-tallies.json")
    if split:
        load = _tallies(out / "watch-load-tallies.json")
        tallies["outcomes"] = {**load.get("outcomes", {}), **tallies.get("outcomes", {})}
    return {"scenario": scenario, "users": users, "run_time_s": run_time_s,
            "command": " && ".join(" ".join(["locust"] + argv[3:]) for _, argv in runs),
            "processes": len(runs), "exit_code": max(codes), **stats,
            "server_cpu_s": server_ns / 1e9,
            "server_cpu_us_per_request": server_ns / 1e3 / max(1, stats["requests"]),
            "tallies": tallies}


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Figures of locust processes that ran side by side, as one."""
    rows = sorted((r for p in parts for r in p["rows"]), key=lambda r: (r["type"], r["name"]))
    span = max(p["span_s"] for p in parts)
    total = sum(p["requests"] for p in parts)
    return {"rows": rows, "requests": total, "failures": sum(p["failures"] for p in parts),
            "span_s": span, "per_s": total / span if span else 0.0}


# ---------------------------------------------------------------------------- command

def add_arguments(ap: Any) -> None:
    ap.add_argument("--scenario", choices=("checkout", "flash", "pos", "watch"),
                    default="checkout")
    ap.add_argument("--out", required=True, help="directory for locust's JSON and tallies")
    ap.add_argument("--address", default="",
                    help="a running server (default: start one with the bench's book)")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--time", type=float, default=30.0, help="seconds")
    ap.add_argument("--skus", type=int, default=100_000)
    ap.add_argument("--flash-quota", type=int, default=10_000)
    ap.add_argument("--flash-skus", type=int, default=4)
    ap.add_argument("--store-dir", default=None)


def cmd_locust(args: Any) -> int:
    """`python bench/run.py locust`: one scenario against --address or a server started
    here over the bench's book; prints locust's table of figures."""
    import shutil
    import tempfile

    import systems
    from processes import CpuMeter

    out = Path(args.out)
    extra = ["--skus", str(args.skus), "--flash-quota", str(args.flash_quota),
             "--flash-skus", str(args.flash_skus)]
    work = srv = None
    try:
        if args.address:
            address, meter = args.address, _NoMeter()
        else:
            work = Path(tempfile.mkdtemp(prefix="stockgate-locust-", dir=args.store_dir))
            srv = systems.start("stockgate", work, skus=args.skus, sellout_units=0)
            address, meter = srv.target, CpuMeter(srv.pid)
        r = run(address, args.scenario, args.users, args.time, out, meter, extra=extra)
    finally:
        if srv is not None:
            srv.stop()
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.scenario}: {r['requests']:,} requests, {r['per_s']:,.0f}/s, "
          f"{r['failures']} failures" + (f", server CPU {r['server_cpu_us_per_request']:.1f} "
                                         "µs/request" if srv is not None else ""))
    print(f"{'call':14} {'outcome':20} {'requests':>9} {'per s':>8} {'p50':>6} {'p95':>6} "
          f"{'p99 ms':>7}")
    for row in r["rows"]:
        print(f"{row['type']:14} {row['name']:20} {row['requests']:9,} {row['per_s']:8,.0f} "
              f"{row['p50_ms']:6.0f} {row['p95_ms']:6.0f} {row['p99_ms']:7.0f}")
    checks = r["tallies"].get("checks")
    if checks:
        print("checks:", json.dumps(checks))
    (out / f"{args.scenario}-figures.json").write_text(json.dumps(r, indent=1) + "\n")
    return 0


class _NoMeter:
    """A server that is not ours: its CPU is not read."""

    def start(self) -> None:
        pass

    def stop_ns(self) -> int:
        return 0
