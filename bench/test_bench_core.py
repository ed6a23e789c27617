"""pytest-benchmark suites for the paths `python bench/run.py core` measures.

Not part of the default `pytest` run (pyproject sets testpaths = ["tests"]); run them by
naming the folder:

    pytest bench/ --benchmark-only                 # all suites
    pytest bench/ --benchmark-only -k decide       # just the core
    SG_BENCH_SKUS=1000000 pytest bench/ --benchmark-only --benchmark-save=core

Sizes are smaller than run.py's full mode (SG_BENCH_SKUS, default 100,000 buckets) so the
suite takes a minute. Each benchmark records a rate in extra_info (ops or reservations/s).
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import os
import random
from pathlib import Path

import pytest

from stockgate import engine as sg

_spec = importlib.util.spec_from_file_location("stockgate_bench_run",
                                               Path(__file__).with_name("run.py"))
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)

SKUS = int(os.environ.get("SG_BENCH_SKUS", "100000"))
HOLDS = int(os.environ.get("SG_BENCH_HOLDS", str(SKUS // 10)))
DECIDE_BATCH = 100_000
_ids = itertools.count()


def _rate(benchmark, items: int, unit: str) -> None:
    mean = benchmark.stats.stats.mean
    benchmark.extra_info[unit] = round(items / mean) if mean else None


# ---------------------------------------------------------------------------- core


@pytest.fixture(scope="module")
def counters():
    return run.make_counters(SKUS, 10**15), sg._core.Counters()


@pytest.mark.parametrize("shape", ["uniform", "hot"])
def test_decide(benchmark, counters, shape):
    """Counters.decide(): one call of 100,000 operations of 1 line x 1 unit."""
    table, limits = counters
    rng = random.Random(1)
    srcs = ([rng.randrange(SKUS) for _ in range(DECIDE_BATCH)] if shape == "uniform"
            else [0] * DECIDE_BATCH)
    arrays = run.decide_arrays(DECIDE_BATCH, srcs)
    full = benchmark(table.decide, limits, *arrays)
    assert full == DECIDE_BATCH
    _rate(benchmark, DECIDE_BATCH, "decisions_per_s")


# ---------------------------------------------------------------------------- engine


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store with SKUS buckets (plus HOT) and HOLDS live holds, closed."""
    path = tmp_path_factory.mktemp("bench") / "store"
    run.build_store(path, SKUS)
    run.add_holds(path, SKUS, HOLDS)
    return path


@pytest.fixture(scope="module")
def engine(store):
    eng = run.open_engine(store)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def loop():
    lp, _ = run.new_loop("auto")
    yield lp
    lp.close()


def _requests(n: int, shape: str) -> list[sg.ReserveRequest]:
    rng = random.Random(next(_ids))
    return [sg.ReserveRequest(f"bench-{next(_ids)}", "web",
                              [(run.HOT_SKU if shape == "hot" else
                                run.sku_name(rng.randrange(SKUS)), 1)],
                              ttl_ms=run.TTL_MS)
            for _ in range(n)]


@pytest.mark.parametrize("shape", ["uniform", "hot"])
def test_reserve_many_sync(benchmark, engine, shape):
    """Engine.reserve_many() of 1,000, durable (returns after the fsync'd commit)."""
    def one(reqs):
        res = engine.reserve_many(reqs)
        assert all(r.ok for r in res)

    benchmark.pedantic(one, setup=lambda: ((_requests(1_000, shape),), {}), rounds=20)
    _rate(benchmark, 1_000, "reservations_per_s")


@pytest.mark.parametrize("shape", ["uniform", "hot"])
def test_aio_reserve_1000_concurrent(benchmark, engine, loop, shape):
    """1,000 concurrent `await engine.aio.reserve()` calls, each durable."""
    async def burst(reqs):
        res = await asyncio.gather(*(engine.aio.reserve(q.reservation_id, q.channel, q.lines,
                                                        ttl_ms=q.ttl_ms) for q in reqs))
        assert all(r.ok for r in res)

    benchmark.pedantic(lambda reqs: loop.run_until_complete(burst(reqs)),
                       setup=lambda: ((_requests(1_000, shape),), {}), rounds=20)
    _rate(benchmark, 1_000, "reservations_per_s")


@pytest.mark.parametrize("shape", ["uniform", "hot"])
def test_aio_reserve_many_16x500(benchmark, engine, loop, shape):
    """16 concurrent `await engine.aio.reserve_many()` of 500 each, durable."""
    async def burst(batches):
        for res in await asyncio.gather(*(engine.aio.reserve_many(b) for b in batches)):
            assert all(r.ok for r in res)

    def setup():
        reqs = _requests(8_000, shape)
        return ([reqs[i:i + 500] for i in range(0, 8_000, 500)],), {}

    benchmark.pedantic(lambda b: loop.run_until_complete(burst(b)), setup=setup, rounds=10)
    _rate(benchmark, 8_000, "reservations_per_s")


def test_recovery_open(benchmark, store):
    """Engine(path) over SKUS buckets + HOLDS live holds (and whatever the suites above
    reserved), page cache warm. Opened in a fresh process, as a restart does (LMDB refuses
    a second open of one environment in a process); the timing includes interpreter start,
    extra_info["open_s_in_child"] is Engine(path) alone."""

    def reopen():
        return run.run_probe(store)["open_s"]

    times = []
    benchmark.pedantic(lambda: times.append(reopen()), rounds=3)
    benchmark.extra_info["open_s_in_child"] = min(times)
