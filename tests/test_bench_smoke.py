"""Smoke runs of the bench (bench/): each locust scenario, the load driver, the peers when
their servers are installed, and the report's tables and charts. A few seconds each, on
small books; they check that every piece runs and that its correctness checks hold, never
how fast anything is (speed lives in `python bench/run.py report`)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.append(str(BENCH))

import book  # noqa: E402
import driver  # noqa: E402
import scenarios  # noqa: E402
import systems  # noqa: E402
import verify  # noqa: E402
from histogram import LatencyHistogram  # noqa: E402
from processes import CpuMeter, Served  # noqa: E402
from processes import children as processes_children  # noqa: E402

# Never imported here: importing locust monkey-patches the whole process for gevent.
needs_locust = pytest.mark.skipif(importlib.util.find_spec("locust") is None,
                                  reason="locust is not installed: pip install -e '.[test]'")
SKUS = 1_000  # a small book: the smoke runs check behaviour, not scale
SELLOUT_UNITS = 300
FLASH_QUOTA = 200
SCENARIO_S = 3
USERS = 10
CHILD_REAPED_WAIT_S_MAX = 10


@pytest.fixture(scope="module")
def stockgate(tmp_path_factory):
    """A stockgate server over the bench's book, for the locust scenarios."""
    srv = systems.start("stockgate", tmp_path_factory.mktemp("sg"), skus=SKUS,
                        sellout_units=SELLOUT_UNITS)
    yield srv
    srv.stop()


# ---------------------------------------------------------------------------- locust

def run_scenario(srv, name, out, seconds=SCENARIO_S, users=USERS, watchers=0):
    extra = ["--skus", str(SKUS), "--flash-quota", str(FLASH_QUOTA), "--flash-skus", "2",
             "--think-ms", "20"]
    r = scenarios.run(srv.target, name, users, seconds, out, CpuMeter(srv.pid), extra=extra,
                      watchers=watchers)
    assert r["exit_code"] == 0, r
    assert r["requests"] > 0 and r["failures"] == 0, r["rows"]
    assert r["tallies"]["checks"]["consistency_ok"], r["tallies"]["checks"]
    return r


@needs_locust
def test_locust_checkout_mixes_the_four_calls(stockgate, tmp_path):
    r = run_scenario(stockgate, "checkout", tmp_path)
    calls = {row["type"] for row in r["rows"]}
    assert {"availability", "reserve"} <= calls
    assert r["tallies"]["outcomes"].get("reserve OK", 0) > 0


@needs_locust
def test_locust_flash_sells_the_quota_once_per_customer(stockgate, tmp_path):
    r = run_scenario(stockgate, "flash", tmp_path, seconds=15, users=20)
    flash = r["tallies"]["checks"]["flash"]
    assert flash["sold"] == flash["quota"] == FLASH_QUOTA
    assert flash["oversold"] == 0
    assert r["tallies"]["violations"] == {}
    names = {row["name"] for row in r["rows"]}
    assert "INSUFFICIENT_STOCK" in names  # sold out answered as an outcome, not a failure


@needs_locust
def test_locust_pos_sells_from_the_stores(stockgate, tmp_path):
    r = run_scenario(stockgate, "pos", tmp_path)
    assert r["tallies"]["outcomes"].get("commit OK", 0) > 0


@needs_locust
def test_locust_watch_times_commits_to_updates(stockgate, tmp_path):
    r = run_scenario(stockgate, "watch", tmp_path, seconds=4, watchers=2)
    assert r["processes"] == 2  # the subscribers beside the checkout load
    assert r["tallies"]["outcomes"].get("reserve OK", 0) > 0
    t = r["tallies"]
    assert t["watch_delays_ms"] and t["watch_missed"] == 0
    assert len(t["watch_decided_delays_ms"]) == len(t["watch_delays_ms"])
    # One machine, one clock: the update comes after the server's decision, and after
    # the commit call was sent.
    assert all(d >= 0 for d in t["watch_decided_delays_ms"] + t["watch_delays_ms"])


# ---------------------------------------------------------------------------- driver

def test_driver_closed_and_open_loop_and_the_store_check(tmp_path):
    cid = f"{book.CAMPAIGN_PREFIX}smoke"
    quotas = book.flash_quotas(FLASH_QUOTA, 2)
    srv = systems.start("stockgate", tmp_path, skus=SKUS, sellout_units=SELLOUT_UNITS,
                        flash=(cid, quotas))
    acked = tmp_path / "acked"
    acked.mkdir()
    meter = CpuMeter(srv.pid)
    try:
        phases = [driver.phase("uniform", concurrency=50, duration_s=1),
                  driver.phase("load", rate=300, duration_s=1),
                  driver.phase("sellout", workload="sellout", concurrency=50, duration_s=5,
                               stop_after_units=SELLOUT_UNITS, tail_s=0.2)]
        got = driver.run_phases("coalesced", srv.target, phases, meter, skus=SKUS,
                                warmup_s=0.2, acked_dir=acked)
        flash = driver.run_phases("flash", srv.target, [driver.phase(
            "flash", workload="flash", concurrency=50, duration_s=10,
            stop_after_units=FLASH_QUOTA, tail_s=0.2)], meter, skus=SKUS, flash_skus=2,
            warmup_s=0, options={"campaign": cid}, acked_dir=acked)[0]
    finally:
        srv.stop()
    uniform, load, sellout = got
    assert uniform["ops"] > 0 and uniform["outcomes"] == {"ok": uniform["calls"]}
    assert uniform["server_cpu_s"] > 0 and not math.isnan(uniform["p99_ms"])
    assert load["sent"] == pytest.approx(300, rel=0.2) and load["dropped"] == 0
    assert sellout["units"] == SELLOUT_UNITS and sellout["outcomes"]["sold_out"] > 0
    assert flash["units"] == FLASH_QUOTA
    assert "limit_broken" not in flash["outcomes"] and "retry_broken" not in flash["outcomes"]
    checked = verify.stockgate_store(
        srv.store, {r["name"]: r["acked_files"] for r in got + [flash]},
        sellout_units=SELLOUT_UNITS, campaigns={cid: 1})
    assert checked["check_ok"], checked["drifts"]
    assert checked["oversold_units"] == 0 and checked["sellout"]["oversold"] == 0
    assert all(c["acked_missing"] == 0 and c["acked"] > 0 for c in checked["cases"].values())
    camp = checked["campaigns"][cid]
    assert camp["sold_exactly_quota"] and camp["customers_over_limit"] == 0


def test_the_echo_floor_answers_unary_and_coalesced_reserves():
    """`bench/run.py server`'s floors: the echo server grants every reserve, unary or
    riding the client's Session stream, each answer reaching its own caller."""
    echo = Served([sys.executable, str(BENCH / "echo_server.py"), "--listen", "127.0.0.1:0"])
    meter = CpuMeter(echo.pid)
    try:
        got = [driver.run_phases(mode, echo.address, [driver.phase(mode, concurrency=50,
                                                                   duration_s=1)],
                                 meter, skus=SKUS, warmup_s=0)[0]
               for mode in ("echo", "coalesced")]
    finally:
        assert echo.stop() == 0, echo.stderr_text()
    for r in got:
        assert r["calls"] > 50 and r["outcomes"] == {"ok": r["calls"]}, r
        assert r["server_cpu_s"] > 0


@pytest.mark.parametrize("hot", [False, True])
def test_the_engine_alone_grants_and_keeps_every_reserve(tmp_path, hot):
    """`bench/run.py server`'s engine case: every reserve granted, durable and checked."""
    import server
    from stockgate.engine import Engine

    store = tmp_path / "store"
    server.seed_store(store, SKUS)
    n = 2_000
    out = subprocess.run([sys.executable, str(BENCH / "engine_alone.py"), "--data-dir",
                          str(store), "--skus", str(SKUS), "--reservations", str(n)]
                         + (["--hot"] if hot else []),
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    assert r["granted"] == n and r["cpu_s"] > 0 and r["wall_s"] > 0
    with Engine(store) as eng:
        report = eng.check()
        assert report.ok and report.live_reservations == n
        held = [eng.reservation(f"{r['id_prefix']}{i:012d}") for i in (1, n)]
        assert all(h is not None and h.units == 1 for h in held)
        assert (held[0].lines[0].sku == server.HOT_SKU) == hot


def test_cpu_meter_counts_a_child_forked_and_reaped_between_its_readings(tmp_path):
    """As Redis's AOF rewrite is: forked, busy, and gone within one phase."""
    script = tmp_path / "parent.py"
    script.write_text("import subprocess, sys, time\n"
                      "time.sleep(0.3)\n"
                      "subprocess.run([sys.executable, '-c', "
                      "'import time\\nt = time.process_time() + 0.3\\n"
                      "while time.process_time() < t: pass'])\n"
                      "time.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, str(script)])
    try:
        meter = CpuMeter(parent.pid)
        meter.start()  # before the child exists
        deadline = time.monotonic() + CHILD_REAPED_WAIT_S_MAX
        while not processes_children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        while processes_children(parent.pid) and time.monotonic() < deadline:
            time.sleep(0.01)  # the child ran and was reaped
        assert meter.stop_ns() >= 0.25e9
    finally:
        parent.kill()
        parent.wait()


def test_histogram_percentiles_are_within_the_bucket_error():
    values = [i / 1e4 for i in range(1, 10_001)]  # 0.1 ms .. 1 s, evenly
    h = LatencyHistogram.of(values)
    for p in (50, 99, 99.9):
        exact = values[math.ceil(p / 100 * len(values)) - 1]
        assert h.percentile_s(p) == pytest.approx(exact, rel=0.02)
    again = LatencyHistogram.from_json(json.loads(json.dumps(h.to_json())))
    assert again.merge(h).total == 2 * len(values)


# ---------------------------------------------------------------------------- peers

@pytest.mark.parametrize("system", ["redis-always", "redis-records", "postgres"])
def test_peer_runs_the_same_phases_without_oversell(system, tmp_path):
    why = systems.missing(system)
    if why:
        print(f"{system}: skipped. {why}")
        pytest.skip(why)
    srv = systems.start(system, tmp_path, skus=SKUS, sellout_units=SELLOUT_UNITS)
    phases = [driver.phase("uniform", concurrency=50, duration_s=1),
              driver.phase("sellout", workload="sellout", concurrency=50, duration_s=5,
                           stop_after_units=SELLOUT_UNITS, tail_s=0.2)]
    watched = [[book.sku_name(i) for i in range(SKUS)], [book.SELLOUT_SKU]]
    levels = {}

    def read(i, when):
        levels[(i, when)] = srv.levels(watched[i])

    try:
        got = driver.run_phases(srv.driver_system, srv.target, phases, CpuMeter(srv.pid),
                                skus=SKUS, warmup_s=0.2, between=read, options=srv.options)
    finally:
        srv.stop()
    for i, r in enumerate(got):
        after = levels[(i, "after")]
        v = verify.units(sum(levels[(i, "before")]), sum(after), r["units"],
                         stock=SELLOUT_UNITS if i else None, level_min=min(after))
        assert v["oversold"] == 0 and v["acked_missing"] == 0, v
        assert r["server_cpu_s"] > 0
    assert got[1]["units"] == SELLOUT_UNITS


def test_redis_with_records_keeps_each_hold_and_a_replay_changes_nothing(tmp_path):
    why = systems.missing("redis-records")
    if why:
        pytest.skip(why)
    import redis_peer

    srv = systems.start("redis-records", tmp_path, skus=SKUS, sellout_units=SELLOUT_UNITS)
    assert srv.options == {"records": True}
    try:
        got = driver.run_phases(srv.driver_system, srv.target, [driver.phase(
            "uniform", concurrency=50, duration_s=1)], CpuMeter(srv.pid), skus=SKUS,
            warmup_s=0, options=srv.options)[0]
        r = srv.server.client()
        held = got["units"]
        assert held > 0 and got["outcomes"] == {"ok": held}
        assert len(r.keys(redis_peer.HOLD_PREFIX + "*")) == held
        assert r.zcard(redis_peer.EXPIRY_KEY) == held == r.xlen(redis_peer.JOURNAL_KEY)
        entry = dict(r.xrange(redis_peer.JOURNAL_KEY, count=1)[0][1])
        rid, sku = entry[b"reserved"].decode(), entry[b"sku"].decode()
        assert r.zscore(redis_peer.EXPIRY_KEY, rid) is not None
        assert f"|{sku}:1|" in r.get(redis_peer.HOLD_PREFIX + rid).decode()
        before = srv.levels([sku])
        again = r.evalsha(r.script_load(redis_peer.RESERVE_RECORDS_LUA), 4,
                          redis_peer.key(sku), redis_peer.HOLD_PREFIX + rid,
                          redis_peer.EXPIRY_KEY, redis_peer.JOURNAL_KEY, 1, "x", 0, rid, sku)
        assert again == redis_peer.LEVEL_REPLAYED and srv.levels([sku]) == before
        assert r.xlen(redis_peer.JOURNAL_KEY) == held
    finally:
        srv.stop()


# ---------------------------------------------------------------------------- report

def fake_case(name, workload, per_s, cpu, rate=0.0):
    """A driver result of the shape report.py handles (figures made up)."""
    h = LatencyHistogram.of([0.001, 0.002, 0.004])
    return {"name": name, "workload": workload, "rate": rate, "concurrency": 10,
            "per_s": per_s, "calls": 100, "ops": 100, "units": 100, "wall_s": 1.0,
            "sent": 100, "dropped": 0, "outcomes": {"ok": 90, "sold_out": 10},
            "timeline_bin_s": 0.1, "timeline": {"ok": [50, 40], "sold_out": [0, 10]},
            "histogram": h.to_json(), **h.summary_ms(), "server_cpu_s": cpu * 1e-4,
            "driver_cpu_s": 0.002, "server_cpu_us_per_op": cpu,
            "driver_cpu_us_per_op": 20.0, "oversold": 0, "acked_missing": 0}


def test_report_tables_and_charts_render(tmp_path):
    pytest.importorskip("matplotlib")
    import report
    import report_markdown

    def system(scale):
        return {"version": "x", "cases": {
            "uniform": fake_case("uniform", "uniform", 1000 * scale, 10 / scale),
            "hot": fake_case("hot", "hot", 900 * scale, 11 / scale),
            "load-500": fake_case("load-500", "uniform", 500, 12, rate=500),
            "sellout": fake_case("sellout", "sellout", 800, 9)}}

    sg = system(1)
    sg["cases"]["flash"] = dict(fake_case("flash", "flash", 700, 9), quota=90, verify={
        "quota": 90, "carved": 90, "sold": 90, "left": 0, "oversold": 0,
        "sold_exactly_quota": True, "customers": 90, "customers_over_limit": 0,
        "max_units_per_customer": 1})
    sg["verify"] = {"check_ok": True, "drifts": [], "oversold_units": 0,
                    "live_reservations": 5, "journal_events": 9,
                    "cases": {"uniform": {"acked": 90, "acked_missing": 0}}}
    res = {"when": "now", "command": "python bench/run.py report", "total_s": 1.0,
           "plan": asdict(report.QUICK),
           "machine": {"nproc": 2, "affinity": 2, "cpu_model": "cpu", "python": "3.11",
                       "implementation": "CPython", "platform": "linux",
                       "loadavg_at_start": [0.1], "loadavg_at_end": [0.2]},
           "fsync": {"fsync_mean_us": 90, "fsync_p50_us": 80, "fsync_p99_us": 200,
                     "fdatasync_mean_us": 85, "n": 10},
           "systems": {"stockgate": sg, "redis-always": system(3),
                       "redis-records": system(0.5), "postgres": system(0.2)},
           "scenarios": {"watch": {
               "scenario": "watch", "users": 10, "run_time_s": 3, "command": "locust ...",
               "requests": 3, "failures": 0, "per_s": 1.0, "span_s": 3.0,
               "server_cpu_us_per_request": 9.0,
               "rows": [{"type": "watch", "name": "commit->update", "requests": 3,
                         "failures": 0, "per_s": 1.0, "p50_ms": 7, "p95_ms": 30,
                         "p99_ms": 30, "max_ms": 30}],
               "tallies": {"watch_delays_ms": [5.0, 7.0, 30.0], "watch_ack_delays_ms": [1.0],
                           "watch_decided_delays_ms": [4.0, 6.0, 29.0],
                           "watch_missed": 0, "watch_updates": 12}}},
           "skipped": {"redis-everysec": "not installed"}}
    res["summary"] = report.summarize(res)
    t = res["summary"]["targets"]
    assert t["hot_over_own_uniform"]["pass"] and t["flash_sells_exactly_quota"]["pass"]
    assert t["cpu_over_redis_always"]["measured"] == pytest.approx(3.0)
    assert "(redis-records): uniform 20.0 µs, stockgate ÷ it 0.50" in \
        t["cpu_over_redis_always"]["note"]
    assert res["summary"]["ratios"]["redis-records"]["uniform_server_cpu"] == \
        pytest.approx(0.5)
    assert t["watch_delay_p99_ms"]["measured"] == 29.0
    made = report.draw_charts(res, tmp_path)
    assert set(made) == {"offered_load", "peak", "flash_sellout", "watch_delay"}
    assert all((tmp_path / f).stat().st_size > 0 for f in made.values())
    text = report_markdown.render(res)
    assert "## The issue's targets" in text and "redis-everysec: not installed" in text
    assert "| redis-records | uniform | 500 |" in text


def test_overload_runs_and_a_flood_changes_nothing(tmp_path):
    import overload

    assert overload.main(["--quick", "--duration", "1", "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["audit"]["check_clean"]
    assert r["audit"]["units_held"] == r["granted_units_total"] > 0
    assert r["errors_total"] == 0 and r["server_exit_code"] == 0
    for phase in ("capacity", "unloaded", "flood", "recovery"):
        assert r[phase]["messages_answered"] == r[phase]["messages_sent"] > 0
    assert r["flood"]["shed_without_retry_hint"] == 0
