"""kill -9 in the middle of a stream of acknowledged reservations, then reopen and audit.

A child process opens an Engine, reserves, commits and releases from several threads and
from an asyncio loop, and prints one line per call as soon as the call returns:

    TRY <id> <op>                 before the call (so the parent knows every id in play)
    ACK <id> <outcome> <units>    after it returned: HELD, COMMITTED, RELEASED, or the
                                  refusal's Outcome name (INSUFFICIENT_STOCK, ...)

The parent SIGKILLs it after a seeded number of ACKs, reopens the store in-process and
checks that every acknowledged change is there, that no SKU is oversold and that
Engine.check() finds no drift. Durability "fsync" promises all of it; durability "async"
only promises consistency (see test_kill9_async_mode_stays_consistent).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import defaultdict

import pytest

from stockgate.engine import Engine, State

HOT_UNITS = 500
COLD_SKUS = 8
COLD_UNITS = 60
RUNS = 20

CHILD = r"""
import asyncio, random, sys, threading, time
from stockgate.engine import Engine, ReserveRequest, State

path, durability, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
HOT_UNITS, COLD_SKUS, COLD_UNITS = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
out_lock = threading.Lock()

def say(*lines):
    with out_lock:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

def ack(rid, result, op):
    if op == "reserve":
        if result.ok:
            say(f"ACK {rid} HELD {result.reservation.units}")
        else:
            say(f"ACK {rid} {result.outcome.name} 0")
    elif result.ok:
        res = result.reservation
        units = sum(u for _, u in res.committed) if op == "commit" else res.units
        say(f"ACK {rid} {res.state.name} {units}")
    else:
        say(f"ACK {rid} {result.outcome.name} 0")

eng = Engine(path, durability=durability)
eng.add_location("WH")
eng.set_allocation_rule("WH", {"online": 100})
eng.set_channel("web", [("WH", "online")])
eng.receive("HOT", "WH", HOT_UNITS)
for i in range(COLD_SKUS):
    eng.receive(f"SKU-{i}", "WH", COLD_UNITS)
eng.flush()
say("READY")

def pick(rng):
    sku = "HOT" if rng.random() < 0.8 else f"SKU-{rng.randrange(COLD_SKUS)}"
    return [(sku, rng.randint(1, 4))]

def worker(w):
    rng = random.Random(seed * 1000 + w)
    held = []
    for n in range(100_000):
        x = rng.random()
        if held and x < 0.25:
            rid = held.pop(rng.randrange(len(held)))
            op = "commit" if x < 0.12 else "release"
            say(f"TRY {rid} {op}")
            ack(rid, eng.commit(rid) if op == "commit" else eng.release(rid), op)
            continue
        rid = f"t{w}-{n}"
        say(f"TRY {rid} reserve")
        r = eng.reserve(rid, "web", pick(rng))
        ack(rid, r, "reserve")
        if r.ok:
            held.append(rid)

async def aio_main():
    rng = random.Random(seed * 1000 + 99)
    held = []
    for n in range(100_000):
        if rng.random() < 0.5:
            # single reserves gathered, plus a commit or release of earlier holds
            rids = [f"a{n}-{k}" for k in range(rng.randint(2, 40))]
            say(*[f"TRY {rid} reserve" for rid in rids])
            coros = [eng.aio.reserve(rid, "web", pick(rng)) for rid in rids]
            ends = []
            while held and len(ends) < 3:
                rid = held.pop(rng.randrange(len(held)))
                op = rng.choice(["commit", "release"])
                say(f"TRY {rid} {op}")
                ends.append((rid, op))
                coros.append(eng.aio.commit(rid) if op == "commit" else eng.aio.release(rid))
            results = await asyncio.gather(*coros)
            for rid, r in zip(rids, results):
                ack(rid, r, "reserve")
                if r.ok:
                    held.append(rid)
            for (rid, op), r in zip(ends, results[len(rids):]):
                ack(rid, r, op)
        else:
            reqs = [ReserveRequest(f"m{n}-{k}", "web", pick(rng))
                    for k in range(rng.randint(1, 60))]
            say(*[f"TRY {q.reservation_id} reserve" for q in reqs])
            results = await eng.aio.reserve_many(reqs)
            for q, r in zip(reqs, results):
                ack(q.reservation_id, r, "reserve")
                if r.ok:
                    held.append(q.reservation_id)

threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(3)]
threads.append(threading.Thread(target=lambda: asyncio.run(aio_main()), daemon=True))
for t in threads:
    t.start()
time.sleep(60)  # the parent kills us long before this
say("TIMEOUT")
"""


def _run_and_kill(db: str, durability: str, seed: int, kill_after: int):
    """Run the child, SIGKILL it after `kill_after` ACK lines; return (tries, acks)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, db, durability, str(seed), str(HOT_UNITS),
         str(COLD_SKUS), str(COLD_UNITS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watchdog = threading.Timer(40, proc.kill)
    watchdog.start()
    lines: list[str] = []
    n_acks = 0
    ready = False
    try:
        for line in proc.stdout:
            lines.append(line)
            ready = ready or line == "READY\n"
            if line.startswith("ACK "):
                n_acks += 1
                if n_acks >= kill_after:
                    os.kill(proc.pid, signal.SIGKILL)
                    break
        # Everything the child wrote before it died was acknowledged too.
        lines.extend(proc.stdout.readlines())
        proc.wait()
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert ready, f"child did not get ready; stderr:\n{err}"
    assert proc.returncode == -signal.SIGKILL, f"child ended with {proc.returncode}:\n{err}"
    assert "Traceback" not in err, err
    tries: dict[str, set[str]] = defaultdict(set)
    acks: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for line in lines:
        if not line.endswith("\n"):
            continue  # torn by the kill: never fully acknowledged
        parts = line.split()
        if parts[0] == "TRY":
            tries[parts[1]].add(parts[2])
        elif parts[0] == "ACK":
            acks[parts[1]].append((parts[2], int(parts[3])))
    assert sum(map(len, acks.values())) >= kill_after
    return tries, acks


def _recovered(eng: Engine) -> set[str]:
    """Every reservation id the journal says was ever reserved."""
    ids: set[str] = set()
    seq = 1
    while True:
        events = eng.journal(seq)
        if not events:
            return ids
        ids.update(ev["id"] for ev in events if ev["kind"] == "reserved")
        seq = events[-1]["seq"] + 1


def _audit(db: str, tries, acks, *, durable: bool) -> None:
    with Engine(db) as eng:
        report = eng.check()
        assert report.ok, report.drifts

        # No oversell, counted two ways: from the buckets and from the reservations.
        received = {"HOT": HOT_UNITS, **{f"SKU-{i}": COLD_UNITS for i in range(COLD_SKUS)}}
        for sku, units in received.items():
            for b in eng.stock(sku):
                assert b.available >= 0, b
                assert b.held + (units - b.on_hand) <= units, b
        recovered = _recovered(eng)
        assert recovered <= set(tries), "a reservation nobody asked for"
        taken: dict[str, int] = defaultdict(int)
        for rid in recovered:
            r = eng.reservation(rid)
            assert r is not None, rid
            if r.state == State.HELD:
                for line in r.lines:
                    taken[line.sku] += line.granted
            elif r.state == State.COMMITTED:
                for sku, u in r.committed:
                    taken[sku] += u
            if r.state == State.COMMITTED:
                assert "commit" in tries[rid], rid
            if r.state == State.RELEASED:
                assert "release" in tries[rid], rid
            assert r.state != State.EXPIRED, rid
        for sku, units in taken.items():
            assert units <= received[sku], f"{sku} oversold: {units} > {received[sku]}"

        # Every acknowledged change is there (fsync), or at least never contradicted.
        lost = []
        for rid, seen in acks.items():
            r = eng.reservation(rid)
            for outcome, units in seen:
                if outcome == "HELD":
                    if r is None:
                        lost.append(f"{rid}: acknowledged HELD {units}, not in the store")
                    else:
                        assert r.units == units, (rid, r)
                elif outcome in ("COMMITTED", "RELEASED"):
                    if r is None or r.state.name != outcome:
                        lost.append(f"{rid}: acknowledged {outcome}, store says "
                                    f"{None if r is None else r.state.name}")
                elif not any(o == "HELD" for o, _ in seen):
                    assert r is None, (rid, outcome, r)  # a refused reserve is not kept
        if durable:
            assert not lost, f"{len(lost)} acknowledged changes lost, e.g. {lost[:5]}"


_rng = random.Random(20251122)
KILL_POINTS = [_rng.randint(5, 400) for _ in range(RUNS)]


@pytest.mark.parametrize("run", range(RUNS))
def test_kill9_loses_no_acknowledged_reservation(tmp_path, run):
    db = str(tmp_path / "db")
    tries, acks = _run_and_kill(db, "fsync", seed=run, kill_after=KILL_POINTS[run])
    _audit(db, tries, acks, durable=True)


def test_kill9_async_mode_stays_consistent(tmp_path):
    # durability="async" answers right after the in-memory decision, before the group
    # commit. A kill -9 (or power loss) therefore may lose acknowledged changes: those in
    # the open batch and in the batch the writer was committing when the process died.
    # What is lost is lost whole (each batch is one LMDB transaction): never a
    # half-applied decision, never an oversell, never a reservation nobody asked for.
    db = str(tmp_path / "db")
    tries, acks = _run_and_kill(db, "async", seed=1000, kill_after=300)
    _audit(db, tries, acks, durable=False)
