"""`python bench/run.py report --out DIR [--quick]`: every bench in one run, side by side.

In order, on this machine:

  1. the machine, and write + fsync latency on the disk under test
  2. stockgate (durability fsync), through AsyncClient (client-coalesced): closed-loop
     peaks on uniform SKUs and on one hot SKU, an open-loop ladder of offered loads, a
     sell-out of one SKU, and a flash sale (driver.py); then the four locust scenarios
     (scenarios.py); then, with the server stopped, its store checked (verify.py)
  3. each peer present, on the same driver phases: Redis + Lua at appendfsync always and
     everysec, PostgreSQL with synchronous_commit on (a peer that is not installed is
     skipped, with the line that says how to install it)
  4. DIR/REPORT.md, DIR/results.json and the PNG charts (charts.py)

A progress bar runs on stderr. --quick takes under 3 minutes on 2 cores; the full run
about 15.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import book  # noqa: E402
import charts  # noqa: E402
import driver  # noqa: E402
import scenarios  # noqa: E402
import systems  # noqa: E402
import verify  # noqa: E402
from machine import fsync_latency, machine_info  # noqa: E402
from processes import CpuMeter  # noqa: E402
from progress import Progress  # noqa: E402

LOCUST_SCENARIOS = ("checkout", "flash", "pos", "watch")
TARGETS = {  # name: (comparison, threshold, what it says)
    "flash_sells_exactly_quota": ("==", True, "flash sale sells exactly the quota, 0 "
                                              "oversold, every customer within the limit"),
    "hot_over_postgres_hot": (">=", 20.0, "stockgate hot-SKU durable reservations/s "
                                          "÷ PostgreSQL's hot-SKU figure"),
    "hot_over_own_uniform": (">=", 0.8, "stockgate hot-SKU ÷ its own uniform reservations/s"),
    "cpu_over_redis_always": ("<=", 1.0, "stockgate server CPU per reservation "
                                         "(client-coalesced) ÷ Redis+Lua always"),
    "watch_delay_p99_ms": ("<=", 50.0, "Watch delay p99 under checkout load, ms: commit "
                                       "decided to update received"),
    "stockgate_oversold_units": ("==", 0, "units oversold by stockgate, every run"),
    "stockgate_acked_missing": ("==", 0, "acknowledged stockgate reservations missing"),
}
SELLOUT_RATE_MIN_PER_S = 1_000  # the sell-out phase lasts long enough at this rate


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of a report run."""

    quick: bool
    peak_s: float  # each closed-loop peak phase
    ladder_s: float  # each open-loop phase
    ladder_rates: tuple[int, ...]  # offered reservations/s
    skus: int = book.SKUS_DEFAULT
    concurrency: int = 2_000  # closed-loop callers (coalesced by each client)
    warmup_s: float = 1.0
    sellout_units: int = 10_000
    flash_quota: int = 100_000
    flash_skus: int = 4
    flash_max_s: float = 60.0
    locust: dict[str, tuple[int, float]] = field(default_factory=dict)  # users, seconds
    locust_flash_quota: int = 100_000
    watchers: int = 4  # Watch subscribers of the watch scenario
    fsync_probes: int = 1_000


QUICK = Plan(quick=True, peak_s=2.5, ladder_s=2.0, ladder_rates=(2_000, 8_000, 20_000),
             warmup_s=0.5, sellout_units=5_000, flash_quota=20_000, flash_max_s=15.0,
             locust={"checkout": (50, 6), "flash": (100, 20), "pos": (50, 6),
                     "watch": (50, 8)},
             locust_flash_quota=2_000, fsync_probes=200)
FULL = Plan(quick=False, peak_s=10.0, ladder_s=6.0,
            ladder_rates=(1_000, 2_500, 5_000, 10_000, 20_000, 40_000, 80_000),
            sellout_units=50_000, flash_quota=100_000, flash_max_s=60.0,
            locust={"checkout": (100, 60), "flash": (200, 240), "pos": (100, 60),
                    "watch": (100, 60)},
            locust_flash_quota=100_000, fsync_probes=1_000)


def driver_phases(plan: Plan) -> list[dict[str, Any]]:
    """The phases every system runs, in this order."""
    c = plan.concurrency
    out = [driver.phase("uniform", concurrency=c, duration_s=plan.peak_s),
           driver.phase("hot", workload="hot", concurrency=c, duration_s=plan.peak_s)]
    out += [driver.phase(f"load-{r}", rate=r, duration_s=plan.ladder_s)
            for r in plan.ladder_rates]
    # Long enough for the slowest system to sell out (a hot PostgreSQL row: ~2,000/s);
    # the others stop half a second after the last unit.
    out.append(driver.phase("sellout", workload="sellout", concurrency=c,
                            duration_s=max(plan.peak_s * 2,
                                           plan.sellout_units / SELLOUT_RATE_MIN_PER_S),
                            stop_after_units=plan.sellout_units, tail_s=0.5))
    return out


def estimate_s(plan: Plan) -> dict[str, float]:
    """Expected seconds per step: the progress bar's weights."""
    start = 2.0
    phases = (2 * plan.peak_s + len(plan.ladder_rates) * (plan.ladder_s + 0.5) + 2
              + plan.warmup_s + start)
    locust = sum(s + 3 for name, (_, s) in plan.locust.items() if name != "flash")
    # A flash run ends soon after the quota is sold: ~2,000 grants/s from one locust.
    locust += min(plan.locust["flash"][1], plan.locust_flash_quota / 2_000 + 5)
    return {"machine": 1.0, "stockgate": 3 + phases + plan.flash_quota / 12_000 + 3,
            "locust": locust, "verify": 5.0, "redis-always": 2 + phases,
            "redis-everysec": 2 + phases, "redis-records": 2 + phases, "postgres": 4 + phases,
            "charts": 4.0}


# ---------------------------------------------------------------------------- systems

class Run:
    """One report run: its plan, work dir, progress bar and results."""

    def __init__(self, plan: Plan, out: Path, work: Path) -> None:
        self.plan = plan
        self.out = out
        self.work = work
        self.weights = estimate_s(plan)
        self.progress = Progress(sum(self.weights.values()))
        self.results: dict[str, Any] = {"systems": {}, "scenarios": {}, "skipped": {}}

    def phase_hook(self, system: str, phases: list[dict[str, Any]], weight: float,
                   extra: Any = None):
        """Progress between driver phases (and the peers' level readings)."""
        each = weight / max(1, len(phases))

        def hook(i: int, when: str) -> None:
            if extra:
                extra(i, when)
            if when == "before":
                self.progress.show(f"{system}: {phases[i]['name']}")
            else:
                self.progress.advance(each)

        return hook

    # ------------------------------------------------------------------ stockgate

    def stockgate(self) -> None:
        plan = self.plan
        acked_dir = self.work / "acked"
        acked_dir.mkdir()
        self.progress.show(f"stockgate: loading the book ({plan.skus:,} SKUs)")
        cid = f"{book.CAMPAIGN_PREFIX}driver-{time.time_ns()}"
        quotas = book.flash_quotas(plan.flash_quota, plan.flash_skus)
        srv = systems.start("stockgate", self.work, skus=plan.skus,
                            sellout_units=plan.sellout_units, flash=(cid, quotas))
        meter = CpuMeter(srv.pid)
        sg: dict[str, Any] = {**srv.info, "cases": {}}
        self.results["systems"]["stockgate"] = sg
        phases = driver_phases(plan)
        w = self.weights["stockgate"]
        locust_campaign = None
        try:
            for r in driver.run_phases(
                    srv.driver_system, srv.target, phases, meter, skus=plan.skus,
                    warmup_s=plan.warmup_s, acked_dir=acked_dir,
                    between=self.phase_hook("stockgate", phases, w * 0.85)):
                sg["cases"][r["name"]] = r
            self.progress.show("stockgate: flash sale (driver)")
            flash = driver.phase("flash", workload="flash", concurrency=plan.concurrency,
                                 duration_s=plan.flash_max_s,
                                 stop_after_units=plan.flash_quota, tail_s=1.0)
            r = driver.run_phases("flash", srv.target, [flash], meter, skus=plan.skus,
                                  flash_skus=plan.flash_skus, warmup_s=0,
                                  options={"campaign": cid}, acked_dir=acked_dir)[0]
            r["campaign"], r["quota"] = cid, plan.flash_quota
            sg["cases"]["flash"] = r
            self.progress.advance(w * 0.15)
            locust_campaign = self.locust_scenarios(srv.target, meter)
        finally:
            srv.stop()
        sg["server_exit_code"] = srv.server.proc.returncode
        self.progress.show("stockgate: checking the store (server stopped)")
        acked = {name: r["acked_files"] for name, r in sg["cases"].items()}
        campaigns = {cid: 1}
        if locust_campaign:
            campaigns[locust_campaign] = 1
        sg["verify"] = v = verify.stockgate_store(srv.store, acked,
                                                  sellout_units=plan.sellout_units,
                                                  campaigns=campaigns)
        for name, r in sg["cases"].items():
            r["acked_missing"] = v["cases"].get(name, {}).get("acked_missing", 0)
            r["oversold"] = 0
        sg["cases"]["sellout"]["oversold"] = v["sellout"]["oversold"]
        sg["cases"]["flash"]["oversold"] = v["campaigns"][cid]["oversold"]
        sg["cases"]["flash"]["verify"] = v["campaigns"][cid]
        if locust_campaign and "flash" in self.results["scenarios"]:
            self.results["scenarios"]["flash"]["verify"] = v["campaigns"][locust_campaign]
        self.progress.advance(self.weights["verify"])

    def locust_scenarios(self, address: str, meter: CpuMeter) -> str | None:
        plan = self.plan
        out = self.out / "locust"
        campaign = None
        for name in LOCUST_SCENARIOS:
            users, secs = plan.locust[name]
            self.progress.show(f"locust: {name} ({users} users, {secs:g} s)")
            extra = ["--no-check", "--skus", str(plan.skus),
                     "--flash-quota", str(plan.locust_flash_quota),
                     "--flash-skus", str(plan.flash_skus)]
            try:
                r = scenarios.run(address, name, users, secs, out, meter, extra=extra,
                                  watchers=plan.watchers)
            except Exception as exc:  # noqa: BLE001 - one failed scenario is reported
                self.progress.note(f"locust {name} failed: {exc}")
                r = {"scenario": name, "error": str(exc)[-2000:]}
            self.results["scenarios"][name] = r
            if name == "flash":
                campaign = r.get("tallies", {}).get("campaign")
            self.progress.advance(secs + 3 if name != "flash" else min(
                secs, plan.locust_flash_quota / 2_000 + 5))
        return campaign

    # ------------------------------------------------------------------ peers

    def peer(self, system: str) -> None:
        plan = self.plan
        w = self.weights[system]
        why = systems.missing(system)
        if why:
            return self.skip(system, why, w)
        self.progress.show(f"{system}: starting and loading {plan.skus:,} SKUs")
        srv = systems.start(system, self.work, skus=plan.skus,
                            sellout_units=plan.sellout_units)
        phases = driver_phases(plan)
        watched = {"uniform": [book.sku_name(i) for i in range(plan.skus)],
                   "hot": [book.HOT_SKU], "sellout": [book.SELLOUT_SKU]}
        levels: dict[tuple[int, str], tuple[int, list[int]]] = {}

        def read_levels(i: int, when: str) -> None:
            got = srv.levels(watched[phases[i]["workload"]])
            levels[(i, when)] = (sum(got), got)

        try:
            results = driver.run_phases(srv.driver_system, srv.target, phases,
                                        CpuMeter(srv.pid), skus=plan.skus,
                                        warmup_s=plan.warmup_s, options=srv.options,
                                        between=self.phase_hook(system, phases, w,
                                                                read_levels))
        finally:
            srv.stop()
        cases = {}
        for i, r in enumerate(results):
            before, _ = levels[(i, "before")]
            after, got = levels[(i, "after")]
            stock = plan.sellout_units if phases[i]["workload"] == "sellout" else None
            r["verify"] = verify.units(before, after, r["units"], stock=stock,
                                       level_min=min(got))
            r["oversold"] = r["verify"]["oversold"]
            r["acked_missing"] = r["verify"]["acked_missing"]
            cases[r["name"]] = r
        self.results["systems"][system] = {**srv.info, "cases": cases}

    def skip(self, system: str, hint: str, weight: float) -> None:
        self.results["skipped"][system] = hint
        self.progress.note(f"{system}: skipped. {hint}")
        self.progress.advance(weight)


# ---------------------------------------------------------------------------- summary

def case(results: dict[str, Any], system: str, name: str) -> dict[str, Any] | None:
    return results["systems"].get(system, {}).get("cases", {}).get(name)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, measured; and the ratios of stockgate to each peer."""
    sg_u, sg_h = case(results, "stockgate", "uniform"), case(results, "stockgate", "hot")
    pg_h = case(results, "postgres", "hot")
    ra_u, ra_h = case(results, "redis-always", "uniform"), case(results, "redis-always", "hot")
    measured: dict[str, Any] = {}
    notes: dict[str, str] = {}
    flash = case(results, "stockgate", "flash")
    lf = results["scenarios"].get("flash", {}).get("verify")
    if flash:
        fv = flash["verify"]
        ok = (fv["sold_exactly_quota"] and fv["oversold"] == 0
              and fv["customers_over_limit"] == 0)
        notes["flash_sells_exactly_quota"] = (
            f"driver: sold {fv['sold']:,} of {fv['quota']:,}, oversold {fv['oversold']}, "
            f"customers over the limit {fv['customers_over_limit']} of {fv['customers']:,}")
        if lf:
            ok = ok and lf["sold_exactly_quota"] and lf["oversold"] == 0 \
                and lf["customers_over_limit"] == 0
            notes["flash_sells_exactly_quota"] += (
                f"; locust: sold {lf['sold']:,} of {lf['quota']:,}, oversold "
                f"{lf['oversold']}, over the limit {lf['customers_over_limit']}")
        measured["flash_sells_exactly_quota"] = ok
    if sg_h and pg_h:
        measured["hot_over_postgres_hot"] = sg_h["per_s"] / pg_h["per_s"]
        notes["hot_over_postgres_hot"] = (f"{sg_h['per_s']:,.0f} vs {pg_h['per_s']:,.0f} "
                                          "reservations/s")
    if sg_h and sg_u:
        measured["hot_over_own_uniform"] = sg_h["per_s"] / sg_u["per_s"]
        notes["hot_over_own_uniform"] = f"{sg_h['per_s']:,.0f} vs {sg_u['per_s']:,.0f}/s"
    if sg_u and ra_u:
        measured["cpu_over_redis_always"] = (sg_u["server_cpu_us_per_op"]
                                             / ra_u["server_cpu_us_per_op"])
        notes["cpu_over_redis_always"] = (
            f"uniform {sg_u['server_cpu_us_per_op']:.1f} vs "
            f"{ra_u['server_cpu_us_per_op']:.1f} µs"
            + (f"; hot {sg_h['server_cpu_us_per_op']:.1f} vs "
               f"{ra_h['server_cpu_us_per_op']:.1f} µs" if sg_h and ra_h else ""))
        rr_u = case(results, "redis-records", "uniform")
        if rr_u:
            notes["cpu_over_redis_always"] += (
                f"; Redis keeping stockgate's records of each reservation (redis-records): "
                f"uniform {rr_u['server_cpu_us_per_op']:.1f} µs, stockgate ÷ it "
                f"{sg_u['server_cpu_us_per_op'] / rr_u['server_cpu_us_per_op']:.2f}")
    watch = results["scenarios"].get("watch", {}).get("tallies", {})
    decided = sorted(watch.get("watch_decided_delays_ms") or [])
    if decided:
        sent = sorted(watch.get("watch_delays_ms") or [math.nan])
        acked = sorted(watch.get("watch_ack_delays_ms") or [math.nan])
        measured["watch_delay_p99_ms"] = p99(decided)
        notes["watch_delay_p99_ms"] = (
            f"from the server's commit decision to the update received: {len(decided)} "
            f"probes, p50 {decided[len(decided) // 2]:.1f} ms, max {decided[-1]:.1f} ms, "
            f"missed {watch.get('watch_missed', 0)}; p99 from the commit call sent "
            f"{p99(sent):.1f} ms, from its answer received {p99(acked):.1f} ms")
    sg = results["systems"].get("stockgate", {})
    if sg.get("verify"):
        v = sg["verify"]
        measured["stockgate_oversold_units"] = max(
            [v["oversold_units"]] + [r.get("oversold", 0) for r in sg["cases"].values()])
        measured["stockgate_acked_missing"] = sum(
            r.get("acked_missing", 0) for r in sg["cases"].values())
        notes["stockgate_oversold_units"] = (f"every bucket of the store; consistency "
                                             f"check {'clean' if v['check_ok'] else 'DRIFT'}")
        notes["stockgate_acked_missing"] = (
            f"{sum(c['acked'] for c in v['cases'].values()):,} granted ids looked up")
    targets = {}
    for key, (op, threshold, what) in TARGETS.items():
        if key not in measured:
            targets[key] = {"what": what, "target": f"{op} {threshold}", "measured": None,
                            "pass": None, "note": "not measured (a system was skipped)"}
            continue
        v = measured[key]
        ok = {"==": v == threshold, ">=": v >= threshold, "<=": v <= threshold}[op]
        targets[key] = {"what": what, "target": f"{op} {threshold}", "measured": v,
                        "pass": bool(ok), "note": notes.get(key, "")}
    ratios = {}
    for peer in systems.PEERS:
        row = {}
        for w in ("uniform", "hot"):
            s, p = case(results, "stockgate", w), case(results, peer, w)
            if s and p:
                row[f"{w}_throughput"] = s["per_s"] / p["per_s"]
                row[f"{w}_server_cpu"] = s["server_cpu_us_per_op"] / p["server_cpu_us_per_op"]
                row[f"{w}_p99"] = s["p99_ms"] / p["p99_ms"]
        if row:
            ratios[peer] = row
    return {"targets": targets, "ratios": ratios}


def p99(values: list[float]) -> float:
    """The 99th percentile of sorted values."""
    return values[min(len(values) - 1, int(0.99 * len(values)))]


# ---------------------------------------------------------------------------- charts

def draw_charts(results: dict[str, Any], out: Path) -> dict[str, str]:
    made = {}
    ladders = {}
    peaks = []
    for system, s in results["systems"].items():
        runs = [r for r in s["cases"].values() if r["rate"] and r["workload"] == "uniform"]
        if runs:
            ladders[system] = runs
        for w in ("uniform", "hot"):
            if w in s["cases"]:
                peaks.append(dict(s["cases"][w], system=system))
    if ladders:
        made["offered_load"] = charts.offered_load(ladders, out / "offered_load.png").name
    if peaks:
        made["peak"] = charts.peak(peaks, out / "peak.png").name
    curves = {}
    flash = case(results, "stockgate", "flash")
    if flash:
        tl = flash["timeline"]
        curves[f"driver: AsyncClient, {flash['concurrency']:,} buyers at once"] = {
            "bin_s": flash["timeline_bin_s"], "sold": tl.get("ok", []),
            "rejected": _sum_series([v for k, v in tl.items() if k not in ("ok", "replayed")]),
            "quota": flash["quota"]}
    lf = results["scenarios"].get("flash", {}).get("tallies")
    if lf and lf.get("timeline"):
        q = sum(lf.get("quotas", {}).values())
        curves[f"locust: {results['scenarios']['flash']['users']} users"] = {
            "bin_s": lf["timeline_bin_s"], "sold": lf["timeline"].get("sold", []),
            "rejected": lf["timeline"].get("rejected", []), "quota": q}
    if curves:
        made["flash_sellout"] = charts.flash_sellout(curves, out / "flash_sellout.png").name
    watch = results["scenarios"].get("watch", {}).get("tallies", {})
    if watch:
        made["watch_delay"] = charts.watch_delay(
            watch.get("watch_decided_delays_ms") or [], watch.get("watch_delays_ms") or [],
            out / "watch_delay.png").name
    return made


def _sum_series(series: list[list[int]]) -> list[int]:
    out: list[int] = []
    for s in series:
        if len(s) > len(out):
            out.extend([0] * (len(s) - len(out)))
        for i, n in enumerate(s):
            out[i] += n
    return out


# ---------------------------------------------------------------------------- command

def render(res: dict[str, Any], out: Path) -> None:
    """Summary, charts, results.json and REPORT.md of a run's results, into `out`."""
    import report_markdown

    res["summary"] = summarize(res)
    res["charts"] = draw_charts(res, out)
    (out / "results.json").write_text(json.dumps(res, indent=1, default=str) + "\n")
    (out / "REPORT.md").write_text(report_markdown.render(res))


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        res = json.loads(Path(args.from_results).read_text())
        render(res, out)
        print(f"wrote {out / 'REPORT.md'} from {args.from_results}")
        return 0
    plan = QUICK if args.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="stockgate-bench-", dir=args.store_dir))
    work.chmod(0o755)  # PostgreSQL runs as its own user and must reach its dir inside
    run = Run(plan, out, work)
    t0 = time.monotonic()
    res = run.results
    res["when"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    res["command"] = "python bench/run.py " + " ".join(sys.argv[1:])
    res["plan"] = asdict(plan)
    try:
        run.progress.show("machine: fsync latency")
        res["machine"] = machine_info()
        res["fsync"] = fsync_latency(work, plan.fsync_probes)
        run.progress.advance(run.weights["machine"])
        run.stockgate()
        for system in systems.PEERS:
            try:
                run.peer(system)
            except Exception as exc:  # noqa: BLE001 - a peer that breaks is reported
                run.progress.note(f"{system} failed: {exc}")
                res["skipped"][system] = f"failed: {exc}"
        res["machine"]["loadavg_at_end"] = os.getloadavg()
        run.progress.show("charts")
        res["total_s"] = time.monotonic() - t0
        render(res, out)
        run.progress.advance(run.weights["charts"])
        run.progress.close()
    finally:
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out / 'REPORT.md'} and {out / 'results.json'} "
          f"({res.get('total_s', 0):.0f} s)")
    for key, t in res.get("summary", {}).get("targets", {}).items():
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[t["pass"]]
        print(f"  {verdict:4}  {key}: {_fmt(t['measured'])} (target {t['target']}) {t['note']}")
    return 0


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="directory for REPORT.md, results.json, "
                                                 "the charts and locust's files")
    ap.add_argument("--quick", action="store_true", help="short phases: under 3 minutes")
    ap.add_argument("--store-dir", default=None,
                    help="where stores and peers' data go (default: the temp dir); put "
                         "it on the disk you mean to measure")
    ap.add_argument("--keep-work", action="store_true",
                    help="keep the stores and the peers' data afterwards")
    ap.add_argument("--from-results", metavar="FILE",
                    help="run nothing: draw the charts and write REPORT.md again from a "
                         "results.json (e.g. after changing how they are shown)")
