"""A latency histogram with logarithmic buckets, in the spirit of HdrHistogram.

Every bucket is BUCKET_GROWTH times wider than the one before, so any percentile it
reports is within that relative error of the true value, whatever the range, and it costs
one log and one dict update per value. Histograms of several driver processes merge by
adding counts, which sorted lists of samples could not do cheaply.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

LATENCY_MIN_S = 1e-6  # values below land in the first bucket
BUCKET_GROWTH = 1.02  # each bucket 2 % wider than the one before: 2 % relative error
_LOG_GROWTH = math.log(BUCKET_GROWTH)
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


class LatencyHistogram:
    """Counts of latencies (in seconds) per logarithmic bucket."""

    __slots__ = ("counts", "total", "sum_s", "max_s")

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.total = 0
        self.sum_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        i = int(math.log(seconds / LATENCY_MIN_S) / _LOG_GROWTH) if seconds > LATENCY_MIN_S else 0
        counts = self.counts
        counts[i] = counts.get(i, 0) + 1
        self.total += 1
        self.sum_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds

    def merge(self, other: LatencyHistogram) -> LatencyHistogram:
        for i, n in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + n
        self.total += other.total
        self.sum_s += other.sum_s
        self.max_s = max(self.max_s, other.max_s)
        return self

    @staticmethod
    def bucket_value_s(i: int) -> float:
        """The geometric middle of bucket i, in seconds."""
        return LATENCY_MIN_S * BUCKET_GROWTH ** (i + 0.5)

    def percentile_s(self, p: float) -> float:
        """The value below which p percent of the recorded values fall (NaN when empty)."""
        if not self.total:
            return float("nan")
        rank = max(1, math.ceil(p / 100 * self.total))
        seen = 0
        for i in sorted(self.counts):
            seen += self.counts[i]
            if seen >= rank:
                return min(self.bucket_value_s(i), self.max_s)
        return self.max_s

    def mean_s(self) -> float:
        return self.sum_s / self.total if self.total else float("nan")

    def summary_ms(self) -> dict[str, float]:
        """p50 ... p99.9, mean and max, in ms: what tables print."""
        out = {f"p{p:g}_ms": self.percentile_s(p) * 1e3 for p in PERCENTILES}
        out["mean_ms"] = self.mean_s() * 1e3
        out["max_ms"] = self.max_s * 1e3
        return out

    def to_json(self) -> dict[str, Any]:
        return {"growth": BUCKET_GROWTH, "min_s": LATENCY_MIN_S, "total": self.total,
                "sum_s": self.sum_s, "max_s": self.max_s,
                "counts": {str(i): n for i, n in sorted(self.counts.items())}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyHistogram:
        if data.get("growth") != BUCKET_GROWTH or data.get("min_s") != LATENCY_MIN_S:
            raise ValueError("histogram made with other bucket settings")
        h = cls()
        h.counts = {int(i): int(n) for i, n in data["counts"].items()}
        h.total = int(data["total"])
        h.sum_s = float(data["sum_s"])
        h.max_s = float(data["max_s"])
        return h

    @classmethod
    def of(cls, values_s: Iterable[float]) -> LatencyHistogram:
        h = cls()
        for v in values_s:
            h.record(v)
        return h
