"""REPORT.md from a report run's results (report.py). bench/README.md explains every
figure it shows."""

from __future__ import annotations

import math
import os
from typing import Any

CORES = os.cpu_count() or 1
DRIVER_KEEPS_UP = 0.95  # an open-loop phase answering less than this share fell behind
DRIVER_BOUND = 0.9  # cores: a driver this busy is what limits the phase
VERDICT = {True: "**PASS**", False: "**MISS**", None: "n/a"}
SYSTEM_ORDER = ("stockgate", "redis-always", "redis-everysec", "redis-records", "postgres")
_BATCH_ROUND_TRIP = (
    "Neither process uses a whole core: with one client process the closed loop is bound "
    "by the round trip of each batch (the client encodes it, the server decides and "
    "commits it, the client decodes the answers and wakes its callers, largely in turn), "
    "so more client processes or machines raise it (`python bench/run.py drive "
    "--processes 2`).")
WHY_NOT_CPU = {
    "stockgate": _BATCH_ROUND_TRIP,
    "redis-always": _BATCH_ROUND_TRIP,
    "redis-everysec": _BATCH_ROUND_TRIP,
    "redis-records": _BATCH_ROUND_TRIP,
    "postgres": "Each of the pool's connections waits for its own statement and commit "
                "(a round trip, a WAL flush shared with whoever commits at the same time): "
                "the pool size and the flushes bound it, and every buyer of one SKU queues "
                "on its row lock.",
}


def _n(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return f"{v:,.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _systems(res: dict[str, Any]) -> list[str]:
    return [s for s in SYSTEM_ORDER if s in res["systems"]]


def _errors(r: dict[str, Any]) -> int:
    return sum(n for k, n in r["outcomes"].items() if k.startswith("error:"))


def _sold_out_s(r: dict[str, Any]) -> float | None:
    ok = r["timeline"].get("ok") or []
    last = max((i for i, n in enumerate(ok) if n), default=None)
    return None if last is None else (last + 1) * r["timeline_bin_s"]


def cores_busy(r: dict[str, Any]) -> float:
    """Cores kept busy by server and driver together: (server + driver CPU) / wall."""
    return (r["server_cpu_s"] + r["driver_cpu_s"]) / r["wall_s"] if r["wall_s"] else 0.0


def driver_busy(r: dict[str, Any]) -> float:
    """Cores the driver process kept busy: near 1, the driver is the limit."""
    return r["driver_cpu_s"] / r["wall_s"] if r["wall_s"] else 0.0


def machine(res: dict[str, Any]) -> str:
    m, f = res["machine"], res["fsync"]
    versions = ", ".join(f"{k[:-8]} {v}" for k, v in m.items()
                         if k.endswith("_version") and v)
    versions_of = {s.split("-")[0]: r["version"] for s, r in res["systems"].items()
                   if s != "stockgate"}
    peers = [f"{name} {v}" for name, v in versions_of.items()]
    rows = [
        ["cores (usable)", f"{m['nproc']} ({m.get('affinity')})"],
        ["CPU", m["cpu_model"]],
        ["memory", m.get("mem_total", "?")],
        ["Python", f"{m['implementation']} {m['python']} on {m['platform']}"],
        ["disk: write 4 KiB + fsync (measured first)",
         f"mean {f['fsync_mean_us']:.0f} µs, p50 {f['fsync_p50_us']:.0f} µs, "
         f"p99 {f['fsync_p99_us']:.0f} µs ({f['n']} probes); fdatasync mean "
         f"{f['fdatasync_mean_us']:.0f} µs"],
        ["load average (1 min) at start / end",
         f"{m['loadavg_at_start'][0]:.2f} / {m.get('loadavg_at_end', [math.nan])[0]:.2f}"],
        ["stockgate commit", f"{m.get('git_commit', '?')}"
                             + (" (engine changed, uncommitted)" if m.get("engine_dirty")
                                else "")],
        ["peers", ", ".join(peers) or "none"],
        ["libraries", versions],
    ]
    return "## The machine\n\n" + _table(["", ""], rows) + (
        "\nEvery system ran on this machine, one after the other, each with the load "
        "driver (or locust) on the same cores: throughput is what server and client "
        "together reach here, and server CPU per reservation is the figure that carries "
        "to a machine where the clients run elsewhere.\n")


def targets(res: dict[str, Any]) -> str:
    rows = []
    for t in res["summary"]["targets"].values():
        m = t["measured"]
        shown = _n(m, 2) if isinstance(m, float) else _n(m)
        rows.append([t["what"], shown, t["target"], VERDICT[t["pass"]], t["note"]])
    return "## The issue's targets\n\n" + _table(
        ["target", "measured", "threshold", "verdict", "detail"], rows)


def peaks(res: dict[str, Any]) -> str:
    rows = []
    conc = res["plan"]["concurrency"]
    for s in _systems(res):
        for w in ("uniform", "hot"):
            r = res["systems"][s]["cases"].get(w)
            if not r:
                continue
            rows.append([s, w, _n(r["per_s"]), _n(r["server_cpu_us_per_op"], 1),
                         _n(r["driver_cpu_us_per_op"], 1), _n(cores_busy(r), 2),
                         _n(r.get("other_cores_busy"), 2),
                         _n(r["p50_ms"], 1), _n(r["p95_ms"], 1), _n(r["p99_ms"], 1),
                         _n(r["oversold"]), _n(r["acked_missing"]), _n(_errors(r))])
    return (f"## Peak durable reservations (closed loop, {conc:,} concurrent callers, "
            f"{res['plan']['peak_s']:g} s each)\n\n"
            + _table(["system", "SKUs", "reservations/s", "server CPU µs/res",
                      "driver CPU µs/res", "cores busy", "others' cores", "p50 ms", "p95 ms",
                      "p99 ms", "oversold", "acked missing", "errors"], rows)
            + "\n![peak throughput and server CPU per reservation](peak.png)\n")


def ratios(res: dict[str, Any]) -> str:
    rows = []
    for peer, r in res["summary"]["ratios"].items():
        rows.append([peer] + [f"{_n(r.get(k), 2)}×" for k in (
            "uniform_throughput", "hot_throughput", "uniform_server_cpu", "hot_server_cpu",
            "uniform_p99", "hot_p99")])
    if not rows:
        return ""
    return ("## stockgate ÷ each peer (same phases, same driver)\n\n"
            "Above 1 means stockgate is higher: good for throughput, bad for CPU and "
            "latency.\n\n"
            + _table(["peer", "uniform res/s", "hot res/s", "uniform server CPU/res",
                      "hot server CPU/res", "uniform p99", "hot p99"], rows))


def ladder(res: dict[str, Any]) -> str:
    rows = []
    for s in _systems(res):
        for r in res["systems"][s]["cases"].values():
            if r["rate"] and r["workload"] == "uniform":
                rows.append([s, _n(r["rate"]), _n(r["per_s"]), _n(r["p50_ms"], 1),
                             _n(r["p99_ms"], 1), _n(r["server_cpu_us_per_op"], 1),
                             _n(r["driver_cpu_us_per_op"], 1), _n(driver_busy(r), 2),
                             _n(r["dropped"]), _n(_errors(r))])
    if not rows:
        return ""
    return (f"## Offered load (open loop, uniform SKUs, {res['plan']['ladder_s']:g} s "
            "each)\n\nLatency counts from when each call was due, so a system that falls "
            "behind is charged for the queue.\n\n"
            + _table(["system", "offered /s", "answered /s", "p50 ms", "p99 ms",
                      "server CPU µs/res", "driver CPU µs/res", "driver cores", "dropped",
                      "errors"], rows)
            + "\n![throughput and p99 against offered load](offered_load.png)\n")


def sellout(res: dict[str, Any]) -> str:
    rows = []
    units = res["plan"]["sellout_units"]
    for s in _systems(res):
        r = res["systems"][s]["cases"].get("sellout")
        if not r:
            continue
        rows.append([s, _n(r["units"]), _n(r["outcomes"].get("sold_out", 0)),
                     _n(_sold_out_s(r), 2), _n(r["p99_ms"], 1), _n(r["oversold"]),
                     _n(r["acked_missing"]), _n(_errors(r))])
    return (f"## Sell-out of one SKU ({units:,} units, {res['plan']['concurrency']:,} "
            "callers)\n\n"
            + _table(["system", "units granted", "refused (sold out)", "last grant at s",
                      "p99 ms", "oversold", "acked missing", "errors"], rows))


def flash(res: dict[str, Any]) -> str:
    r = res["systems"].get("stockgate", {}).get("cases", {}).get("flash")
    parts = ["## Flash sale\n"]
    if r:
        v = r["verify"]
        o = r["outcomes"]
        t = _sold_out_s(r)
        rate = v["sold"] / t if t else None
        rows = [["quota (over the campaign's SKUs)", _n(v["quota"])],
                ["units sold (store)", _n(v["sold"])],
                ["oversold", _n(v["oversold"])],
                ["customers who bought", _n(v["customers"])],
                ["customers over the limit of 1 (journal)", _n(v["customers_over_limit"])],
                ["granted to a repeat customer (must be 0)", _n(o.get("limit_broken", 0))],
                ["repeat customers refused (CUSTOMER_LIMIT)", _n(o.get("customer_limit", 0))],
                ["lost answers retried with the same id, replayed", _n(o.get("replayed", 0))],
                ["retries granted anew (must be 0)", _n(o.get("retry_broken", 0))],
                ["refused once sold out", _n(o.get("sold_out", 0))],
                ["last unit sold at", f"{_n(t, 2)} s"],
                ["units/s while selling", _n(rate)],
                ["p50 / p99 latency", f"{_n(r['p50_ms'], 1)} / {_n(r['p99_ms'], 1)} ms"],
                ["server CPU per attempt", f"{_n(r['server_cpu_us_per_op'], 1)} µs"],
                ["errors", _n(_errors(r))]]
        parts.append(f"Driver: {r['concurrency']:,} concurrent buyers through one "
                     f"AsyncClient, {res['plan']['flash_skus']} campaign SKUs, a new "
                     "customer per attempt (some repeat buyers, some lost answers "
                     "retried).\n\n" + _table(["", ""], rows))
    lf = res["scenarios"].get("flash", {})
    if lf.get("verify"):
        v = lf["verify"]
        viol = lf["tallies"].get("violations", {})
        parts.append(f"\nlocust ({lf['users']} users): quota {v['quota']:,}, sold "
                     f"{v['sold']:,}, oversold {v['oversold']}, customers "
                     f"{v['customers']:,}, over the limit {v['customers_over_limit']}, "
                     f"client-side violations {viol or 'none'}.\n")
    parts.append("\n![flash sale sell-out](flash_sellout.png)\n")
    return "\n".join(parts)


def locust(res: dict[str, Any]) -> str:
    parts = ["## locust scenarios (stockgate)\n",
             "locust runs on the same 2 cores as the server and spends about as much CPU "
             "per call as the server does: these figures show the scenarios' mix and "
             "latencies, not stockgate's capacity (the driver's tables do).\n"]
    summary = []
    for name, sc in res["scenarios"].items():
        if "error" in sc:
            summary.append([name, "failed", sc["error"][:200], "", "", ""])
            continue
        summary.append([name, _n(sc["users"]), _n(sc["span_s"], 1),
                        _n(sc["per_s"]), _n(sc["failures"]),
                        _n(sc["server_cpu_us_per_request"], 1)])
    parts.append(_table(["scenario", "users", "seconds (first to last request)",
                         "requests/s", "failures",
                         "server CPU µs/request"], summary))
    for name, sc in res["scenarios"].items():
        if "rows" not in sc:
            continue
        rows = [[r["type"], r["name"], _n(r["requests"]), _n(r["per_s"]), _n(r["p50_ms"]),
                 _n(r["p95_ms"]), _n(r["p99_ms"]), _n(r["failures"])] for r in sc["rows"]]
        parts.append(f"\n### {name}\n\n`{sc['command']}`\n\n"
                     + _table(["call", "outcome", "requests", "per s", "p50 ms", "p95 ms",
                               "p99 ms", "failures"], rows))
    return "\n".join(parts)


def watch(res: dict[str, Any]) -> str:
    sc = res["scenarios"].get("watch", {})
    t = sc.get("tallies") or {}
    series = [("commit decided (server) → update received", "watch_decided_delays_ms"),
              ("commit call sent → update received", "watch_delays_ms"),
              ("commit answer received → update received", "watch_ack_delays_ms")]
    rows = []
    for label, key in series:
        d = sorted(t.get(key) or [])
        if not d:
            continue

        def p(q: float, d: list[float] = d) -> str:
            return _n(d[min(len(d) - 1, int(q / 100 * len(d)))], 1)

        rows.append([label, p(50), p(95), p(99), _n(d[-1], 1), _n(len(d))])
    if not rows:
        return ""
    w = res["plan"]["watchers"]
    return ("## Watch delay under checkout load\n\n"
            f"{sc['users'] - w} checkout shoppers in one locust process and, beside it, "
            f"{w} subscribers in another (so that their timing is not held up by the load "
            "generator), each subscribed to every availability change of the `web` channel "
            "and probing with a commit of its own SKU every 0.5 s. The first row is the "
            "Watch delay (the server's decision time is `resolved_ms`, read from the same "
            "clock on this one machine); the second includes the commit request's way to "
            "the server, the third starts only when its answer was back.\n\n"
            + _table(["", "p50 ms", "p95 ms", "p99 ms", "max ms", "probes"], rows)
            + f"\nMissed (no update within 5 s): {t.get('watch_missed', 0)}. Updates "
            f"received by the subscribers: {t.get('watch_updates', 0):,}.\n"
            + "\n![Watch delay distribution](watch_delay.png)\n")


def correctness(res: dict[str, Any]) -> str:
    rows = []
    for s in _systems(res):
        for name, r in res["systems"][s]["cases"].items():
            rows.append([s, name, _n(r["units"]), _n(r["oversold"]), _n(r["acked_missing"]),
                         _n(r.get("verify", {}).get("taken_unacked"))])
    sg = res["systems"].get("stockgate", {}).get("verify")
    text = ""
    if sg:
        text = (f"\nstockgate's store after the run (server stopped): consistency check "
                f"{'clean' if sg['check_ok'] else 'DRIFT: ' + '; '.join(sg['drifts'])}, "
                f"{sg['live_reservations']:,} live reservations, "
                f"{sg['journal_events']:,} journal events, oversold units over every "
                f"bucket: {sg['oversold_units']}.\n")
    return ("## Correctness after every run\n\n"
            + _table(["system", "case", "units granted", "oversold", "acked missing",
                      "taken, not acknowledged"], rows) + text)


def limits(res: dict[str, Any]) -> str:
    lines = ["## What limits these figures\n"]
    said: set[str] = set()
    for name in SYSTEM_ORDER:
        r = res["systems"].get(name, {}).get("cases", {}).get("uniform")
        if not r:
            continue
        busy = cores_busy(r)
        lines.append(
            f"- {name}, uniform peak: {r['per_s']:,.0f}/s with "
            f"{r['server_cpu_us_per_op']:.1f} µs of server CPU and "
            f"{r['driver_cpu_us_per_op']:.1f} µs of driver CPU per reservation, "
            f"{busy:.2f} of {CORES} cores busy. "
            + ("The cores are the limit." if busy >= CORES * 0.75 else
               "The same holds." if WHY_NOT_CPU[name] in said else WHY_NOT_CPU[name]))
        said.add(WHY_NOT_CPU[name])
    saturated = []
    for name in SYSTEM_ORDER:
        runs = [r for r in res["systems"].get(name, {}).get("cases", {}).values()
                if r["rate"] and r["per_s"] < DRIVER_KEEPS_UP * r["rate"]]
        if runs:
            r = min(runs, key=lambda r: r["rate"])
            busy = driver_busy(r)
            saturated.append(
                f"{name} from {r['rate']:,.0f}/s offered (answered {r['per_s']:,.0f}/s, "
                f"server {r['server_cpu_s'] / r['wall_s']:.2f} and driver {busy:.2f} "
                "cores busy" + (": the driver is the limit)" if busy >= DRIVER_BOUND
                                else ")"))
    if saturated:
        lines.append("- The open-loop ladder falls behind the offered rate for "
                     + "; ".join(saturated) + ".")
    pg = res["systems"].get("postgres", {}).get("cases", {}).get("hot")
    if pg:
        lines.append(
            f"- PostgreSQL on one hot SKU: {pg['per_s']:,.0f}/s, bounded by the row lock "
            "held across each commit's WAL flush, whatever the CPU "
            f"({pg['server_cpu_us_per_op']:.0f} µs server CPU per reservation, mostly "
            "lock waits and wake-ups).")
    lines.append(
        f"- The disk: fsync {res['fsync']['fsync_mean_us']:.0f} µs mean. Every system "
        "here shares fsyncs between concurrent callers (stockgate's group commit, Redis "
        "`always` writing the AOF once per event-loop turn, PostgreSQL's WAL flush), so "
        "the disk is not what sets the pace at these loads; on a disk with millisecond "
        "flushes the per-call paths would fall first.")
    others = [r["other_cores_busy"] for sys_ in res["systems"].values()
              for r in sys_["cases"].values() if "other_cores_busy" in r]
    if others:
        lines.append(
            f"- Other processes on the machine took {sum(others) / len(others):.2f} cores on "
            f"average during the driver's phases (from {min(others):.2f} to "
            f"{max(others):.2f}; the *others' cores* column): the figures of a phase "
            "where they took much are low, and the CPU per reservation of every process "
            "rises when the cores are shared. Read figures as ratios within this one run.")
    else:
        lines.append("- The machine may have been shared with other work: see the load "
                     "averages above; read figures as ratios within this one run.")
    return "\n".join(lines) + "\n"


def skipped(res: dict[str, Any]) -> str:
    if not res["skipped"]:
        return ""
    return "## Skipped\n\n" + "\n".join(f"- {s}: {why}" for s, why in
                                        res["skipped"].items()) + "\n"


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    head = (f"# stockgate bench report\n\n"
            f"{res['when']} · `{res['command']}` · commit {m.get('git_commit', '?')} · "
            f"{res['total_s']:.0f} s · {'quick' if res['plan']['quick'] else 'full'} run"
            f"{' (short phases: noisier figures)' if res['plan']['quick'] else ''}.\n"
            "What each figure means: [bench/README.md](../README.md) (in the repository: "
            "`bench/README.md`).\n")
    sections = [head, machine(res), targets(res), peaks(res), ratios(res), ladder(res),
                sellout(res), flash(res), locust(res), watch(res), correctness(res),
                limits(res), skipped(res)]
    return "\n".join(s for s in sections if s)
