"""The report's PNG charts, drawn with matplotlib (Agg: no display needed).

    offered_load.png   throughput achieved and p99 latency against the offered load,
                       one line per system (open-loop runs of the uniform workload)
    peak.png           peak reservations/s and server CPU per reservation per system
    flash_sellout.png  the flash sale: units sold over time and requests refused
    watch_delay.png    the distribution of the delay from a commit to its Watch update
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WATCH_DELAY_TARGET_MS = 50.0
WATCH_BINS = 60
DPI = 110
FIGSIZE_WIDE_IN = (11, 4.2)
FIGSIZE_IN = (7.5, 4.2)
COLORS = {"stockgate": "#1b7837", "redis-always": "#c51b7d", "redis-everysec": "#e9a3c9",
          "redis-records": "#8c510a", "postgres": "#2166ac"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def offered_load(systems: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """`systems` maps a system to its open-loop results (rate, per_s, p99_ms)."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=FIGSIZE_WIDE_IN)
    rates: set[float] = set()
    for name, runs in systems.items():
        runs = sorted(runs, key=lambda r: r["rate"])
        x = [r["rate"] for r in runs]
        c = COLORS.get(name)
        ax1.plot(x, [r["per_s"] for r in runs], "o-", label=name, color=c)
        ax2.plot(x, [r["p99_ms"] for r in runs], "o-", label=name, color=c)
        rates.update(x)
    if rates:
        ax1.plot([min(rates), max(rates)], [min(rates), max(rates)], ":", color="grey",
                 label="answered = offered")
    ax1.set(title="Throughput vs offered load", xlabel="offered reservations/s (log)",
            ylabel="reservations/s answered (log)", xscale="log", yscale="log")
    ax2.set(title="p99 latency vs offered load", xlabel="offered reservations/s (log)",
            ylabel="p99 latency (ms, log)", xscale="log", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def peak(rows: list[dict[str, Any]], path: Path) -> Path:
    """`rows`: system, workload, per_s, server_cpu_us_per_op (closed-loop peaks), drawn
    as one group of bars per system, one bar per workload."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=FIGSIZE_WIDE_IN)
    systems = list(dict.fromkeys(r["system"] for r in rows))
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    width = 0.8 / max(1, len(workloads))
    hatches = ("", "//", "..")
    for j, w in enumerate(workloads):
        got = {r["system"]: r for r in rows if r["workload"] == w}
        xs = [i + (j - (len(workloads) - 1) / 2) * width for i in range(len(systems))]
        colors = [COLORS.get(s, "grey") for s in systems]
        for ax, key in ((ax1, "per_s"), (ax2, "server_cpu_us_per_op")):
            ax.bar(xs, [got[s][key] if s in got else 0 for s in systems], width,
                   color=colors, hatch=hatches[j % len(hatches)], edgecolor="white",
                   label=f"{w} SKUs")
    ax1.set(title="Peak durable reservations/s (closed loop)", ylabel="reservations/s")
    ax2.set(title="Server CPU per reservation", ylabel="µs (log)", yscale="log")
    for ax in (ax1, ax2):
        ax.set_xticks(range(len(systems)), systems, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def flash_sellout(curves: dict[str, dict[str, Any]], path: Path) -> Path:
    """`curves` maps a run's label to {bin_s, sold: [per bin], rejected: [per bin],
    quota}: one panel per run, units sold (cumulative) and requests refused per bin."""
    plt = _plt()
    n = max(1, len(curves))
    fig, axes = plt.subplots(1, n, figsize=(5.5 * n, 4.2), squeeze=False)
    for ax, (label, c) in zip(axes[0], curves.items()):
        bin_s = c["bin_s"]
        sold, rejected = c["sold"], c["rejected"]
        bins = max(len(sold), len(rejected))
        t = [i * bin_s for i in range(bins)]
        cum, total = [0], 0
        for i in range(bins):
            total += sold[i] if i < len(sold) else 0
            cum.append(total)
        ax.step([0.0] + [(i + 1) * bin_s for i in range(bins)], cum, where="post",
                color="#1b7837", label="units sold (cumulative)")
        ax.axhline(c["quota"], color="grey", ls=":", label=f"quota {c['quota']:,}")
        ax.set(title=label, xlabel="seconds", ylabel="units sold", ylim=(0, c["quota"] * 1.1))
        ax2 = ax.twinx()
        ax2.bar(t, [rejected[i] / bin_s if i < len(rejected) else 0 for i in range(bins)],
                width=bin_s, align="edge", alpha=0.35, color="#b2182b",
                label="refused requests/s (sold out, over the limit)")
        ax2.set_ylabel("refused requests/s")
        lines = ax.get_legend_handles_labels()
        bars = ax2.get_legend_handles_labels()
        ax.legend(lines[0] + bars[0], lines[1] + bars[1], fontsize=8, loc="upper left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def watch_delay(decided_ms: list[float], sent_ms: list[float], path: Path) -> Path:
    """The distribution of commit-to-update delays: from the server's commit decision
    (bars, with p50, p99 and the target), and from the commit call sent (an outline)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE_IN)
    if decided_ms:
        s = sorted(decided_ms)
        p50 = s[len(s) // 2]
        p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
        top = max(s[-1], max(sent_ms, default=0.0))
        bins = [top * i / WATCH_BINS for i in range(WATCH_BINS + 1)]
        ax.hist(s, bins=bins, color="#2166ac", alpha=0.8,
                label="commit decided → update received")
        if sent_ms:
            ax.hist(sent_ms, bins=bins, histtype="step", color="#b2182b",
                    label="commit call sent → update received")
        ax.axvline(p50, color="black", ls="--", label=f"p50 {p50:.1f} ms")
        ax.axvline(p99, color="#2166ac", ls="--", label=f"p99 {p99:.1f} ms")
    ax.axvline(WATCH_DELAY_TARGET_MS, color="grey", ls=":",
               label=f"target p99 ≤ {WATCH_DELAY_TARGET_MS:g} ms")
    ax.set(title=f"Commit to Watch update, under checkout load ({len(decided_ms)} probes)",
           xlabel="ms", ylabel="probes", yscale="log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
