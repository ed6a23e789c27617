"""A power cut, not just a kill: after each kill -9 the data file loses every write the
server had not made durable (tests/powercut.py, tests/powercut_shim.c), then the server
restarts on it and the crash harness audits it as usual.

A kill -9 alone keeps the page cache, so it passes even when the store never syncs; the
control test shows that this one does not: with LMDB's sync off, acknowledged
reservations are lost, and the audit says so.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from crash_harness import CrashFailure, CrashPlan, run_crash
from powercut import build_shim, cut_power, shim_env

POWERCUT_ROUNDS_CI = int(os.environ.get("STOCKGATE_POWERCUT_ROUNDS", "4"))
POWERCUT_ROUNDS_LONG = 100
POWERCUT_SEED = int(os.environ.get("STOCKGATE_CRASH_SEED", "20251123"))
LONG_RUN_TIMEOUT_S = 3_600

WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
os.write(fd, b"A" * 10000)             # durable after the fsync below
os.fsync(fd)
os.pwrite(fd, b"B" * 5000, 2000)       # overwrites part of it: not durable
os.pwrite(fd, b"C" * 8192, 10000)      # grows the file: not durable
print("written", flush=True)
sys.stdin.read()                       # wait to be killed
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    path = build_shim(tmp_path_factory.mktemp("shim"))
    if path is None:
        pytest.skip("no C compiler to build the power-cut shim")
    return path


def _write_and_kill(shim, tmp_path):
    data, log = tmp_path / "data.bin", tmp_path / "undo.log"
    env = {**os.environ, **shim_env(shim, data, log)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "written\n"
    proc.kill()
    proc.wait()
    if not log.exists():
        pytest.skip("LD_PRELOAD is not honoured here: cannot model a power cut")
    assert data.read_bytes()[2000:2005] == b"BBBBB"  # the page cache kept it all
    return data, log


def test_a_power_cut_keeps_exactly_what_was_synced(shim, tmp_path):
    data, log = _write_and_kill(shim, tmp_path)
    cut = cut_power(data, log, "all")
    assert data.read_bytes() == b"A" * 10000
    assert cut.writes_pending == 2 and cut.pages_kept == 0


def test_a_power_cut_may_keep_any_pages_of_what_was_not_synced(shim, tmp_path):
    data, log = _write_and_kill(shim, tmp_path)
    cut = cut_power(data, log, "random", random.Random(3))
    after = data.read_bytes()
    # Every byte is the synced one or the one written after it; nothing else.
    assert after[:2000] == b"A" * 2000
    assert set(after[2000:7000]) <= {ord("A"), ord("B")}
    assert after[7000:10000] == b"A" * 3000
    assert set(after[10000:]) <= {ord("C"), 0}
    assert cut.pages_kept + cut.pages_lost == 2 + 2  # 5000 and 8192 bytes, 4 KiB pages


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_power_cuts_under_load_keep_what_the_clients_were_told(shim, durability, tmp_path):
    figures = run_crash(CrashPlan(durability=durability, rounds=POWERCUT_ROUNDS_CI,
                                  seed=POWERCUT_SEED, power_cut="mixed"), tmp_path)
    print("\n" + figures.summary())
    assert figures.power_cuts == POWERCUT_ROUNDS_CI
    assert figures.acks_verified >= POWERCUT_ROUNDS_CI
    if durability == "fsync":
        assert figures.acks_lost == 0


def test_kill9_alone_cannot_tell_a_store_that_does_not_sync(tmp_path):
    # LMDB's sync off, killed -9: the page cache survives the process, so every
    # acknowledged reservation is still there and the audit passes. Hence the power cut.
    figures = run_crash(CrashPlan(durability="fsync", rounds=1, seed=POWERCUT_SEED,
                                  store_sync=False), tmp_path)
    assert figures.acks_lost == 0


def test_a_power_cut_catches_a_store_that_does_not_sync(shim, tmp_path):
    # The same run with a power cut after the kill: what the workers were told is lost.
    with pytest.raises(CrashFailure, match="is lost"):
        run_crash(CrashPlan(durability="fsync", rounds=1, seed=POWERCUT_SEED,
                            power_cut="all", store_sync=False), tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(LONG_RUN_TIMEOUT_S)
@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_power_cuts_long_run(shim, durability, tmp_path):
    figures = run_crash(CrashPlan(durability=durability, rounds=POWERCUT_ROUNDS_LONG,
                                  seed=POWERCUT_SEED, power_cut="mixed"), tmp_path)
    print("\n" + figures.summary())
    if durability == "fsync":
        assert figures.acks_lost == 0
