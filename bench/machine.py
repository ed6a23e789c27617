"""The machine a bench runs on: cores, CPU model, memory, software versions, and the
latency of write + fsync on the disk under test (every durable figure depends on it, so
the report measures it first)."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

# Read from the installed distributions, never imported: importing locust would
# monkey-patch this process for gevent.
VERSIONED_DISTRIBUTIONS = ("lmdb", "msgpack", "uvloop", "Cython", "grpcio", "protobuf",
                           "locust", "gevent", "redis", "hiredis", "asyncpg", "matplotlib")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }
    try:
        mem = Path("/proc/meminfo").read_text().split("\n", 1)[0]
        info["mem_total"] = mem.split(":", 1)[1].strip()
    except OSError:
        pass
    repo = Path(__file__).resolve().parent.parent
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo,
                                            capture_output=True, text=True).stdout.strip()
        info["engine_dirty"] = bool(subprocess.run(
            ["git", "status", "--porcelain", "engine"], cwd=repo, capture_output=True,
            text=True).stdout.strip())
    except OSError:
        pass
    for dist in VERSIONED_DISTRIBUTIONS:
        try:
            info[f"{dist}_version"] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[f"{dist}_version"] = None
    return info


def fsync_latency(directory: Path, n: int) -> dict[str, float]:
    """write(4 KiB) + fsync, and + fdatasync, n times each, in `directory`."""
    path = directory / "fsync-probe.bin"
    block = os.urandom(4096)
    out: dict[str, float] = {}
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, block)
        os.fsync(fd)
        for name, sync in (("fsync", os.fsync), ("fdatasync", os.fdatasync)):
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                os.pwrite(fd, block, 0)
                sync(fd)
                lat.append(time.perf_counter() - t0)
            out[f"{name}_mean_us"] = statistics.fmean(lat) * 1e6
            out[f"{name}_p50_us"] = pct(lat, 50) * 1e6
            out[f"{name}_p99_us"] = pct(lat, 99) * 1e6
        out["n"] = n
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return out


