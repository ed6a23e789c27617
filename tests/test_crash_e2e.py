"""kill -9 the real server under clients in several processes, restart it on the same
data directory, and hold it to what the clients were told (tests/crash_harness.py).

CI runs STOCKGATE_CRASH_ROUNDS rounds (default 10) per durability mode; the long mode
(`pytest -m slow`, or STOCKGATE_SLOW=1) runs CRASH_ROUNDS_LONG. STOCKGATE_CRASH_SEED
replays a failing plan (each failure names its seed). The figures of each run are
printed (`pytest -s` shows them).
"""

from __future__ import annotations

import os

import pytest
from crash_harness import CrashPlan, run_crash

CRASH_ROUNDS_CI = int(os.environ.get("STOCKGATE_CRASH_ROUNDS", "10"))
CRASH_ROUNDS_LONG = 100
CRASH_SEED = int(os.environ.get("STOCKGATE_CRASH_SEED", "20251122"))
LONG_RUN_TIMEOUT_S = 3_600


def _run(durability: str, rounds: int, tmp_path) -> None:
    figures = run_crash(CrashPlan(durability=durability, rounds=rounds, seed=CRASH_SEED),
                        tmp_path)
    print("\n" + figures.summary())
    assert sum(figures.kills.values()) == rounds
    assert figures.snapshots == rounds + 1
    # The run did what it claims: answers were checked against every kill, and callers
    # saw the server go away and retried.
    assert figures.acks_verified >= rounds
    assert figures.errors_seen > 0 or figures.replays > 0
    if durability == "fsync":
        assert figures.acks_lost == 0


@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_kill9_under_load_keeps_what_the_clients_were_told(durability, tmp_path):
    _run(durability, CRASH_ROUNDS_CI, tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(LONG_RUN_TIMEOUT_S)
@pytest.mark.parametrize("durability", ["fsync", "async"])
def test_kill9_long_run(durability, tmp_path):
    _run(durability, CRASH_ROUNDS_LONG, tmp_path)
