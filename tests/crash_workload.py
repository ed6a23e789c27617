"""The clients of the crash harness: processes that reserve, commit and release through
the real clients while the server is killed under them, and write down every answer.

Each worker process owns its reservation ids (no other process touches them) and keeps
an append-only log, one JSON object a line, flushed before the next call:

    {"e": "try", "id", "op", "t", ...request}   before the call is made
    {"e": "ack", "id", "op", "t", "t_try", ...answer}   the answer the client got
    {"e": "err", "id", "op", "t", "error"}      the call failed (Unavailable, deadline):
                                                 it may or may not have been done
    {"e": "refused", "id", "op", "t", "error"}  any other error: never expected here,
                                                 the audit reports it

A failed call is made again with the same id and the same content until it is answered:
what a caller must do, and what the audit checks lands exactly once. Times `t` are
CLOCK_MONOTONIC nanoseconds, one clock for every process of the machine, so the audit
can order the answers of different processes ("a was answered before b was sent").

Two kinds of worker: "threads" (a blocking Client shared by a few threads, as a web
server would) and "async" (an AsyncClient firing bursts of concurrent calls, so its
Session stream is busy most of the time, and now and then a ReserveBatch call).
"""

from __future__ import annotations

import asyncio
import faulthandler
import json
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from stockgate.clients import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    Overloaded,
    ReserveRequest,
    StockgateError,
    Unavailable,
    new_reservation_id,
)

# The book every crash run starts from (seeded by the harness through the server).
LOCATION = "WH"
CHANNEL = "web"
POOL = "online"
HOT_SKUS = ("HOT-1", "HOT-2")
COLD_SKUS = tuple(f"COLD-{i}" for i in range(6))
FLASH_SKU = "FLASH"  # sold only through the campaigns
# Hot SKUs sell out now and then (the moment oversell would happen), and get topped up
# each round.
SEED_UNITS = {**{s: 400 for s in HOT_SKUS}, **{s: 150 for s in COLD_SKUS}, FLASH_SKU: 120}
TOPUP_UNITS = {**{s: 100 for s in HOT_SKUS}, **{s: 20 for s in COLD_SKUS}, FLASH_SKU: 30}
CUSTOMERS = tuple(f"cust-{i}" for i in range(20))  # shared by every worker: 40 > quota
CUSTOMER_LIMIT_UNITS = 2
CAMPAIGN_QUOTA_UNITS = 25

TTL_MS_LONG = 7 * 24 * 3_600 * 1_000  # never expires during a run
TTL_MS_SHORT = 1_000  # expires during the run, across kills
CALL_TIMEOUT_S = 2.0  # per attempt: shorter than a restart now and then, so callers
# see Unavailable/DeadlineExceeded and retry by hand, as well as the clients' own resends
RETRY_PAUSE_S = (0.02, 0.2)
THREADS_PER_WORKER = 3
# The mix of calls, as shares of 1.
RESOLVE_SHARE = (0.3, 0.6)  # commit or release a hold; the second once holds pile up
HELD_PER_ACTOR_SOFT_MAX = 15
REPEATABLE_KEPT_MAX = 200  # answered calls an actor keeps to repeat
COMMIT_SHARE = 0.4  # of resolutions (the rest are releases)
REPEAT_SHARE = 0.04  # an answered call made again
CAMPAIGN_SHARE = 0.12  # of new reservations: in the running flash sale
SHORT_TTL_SHARE = 0.05  # of new reservations: a TTL that runs out during the run
BURST_OPS = (5, 60)  # concurrent calls of one async burst
RETRYABLE = (Unavailable, DeadlineExceeded, Overloaded)


@dataclass(frozen=True)
class WorkerPlan:
    index: int
    kind: str  # "threads" or "async"
    address: str
    log_path: str
    seed: int
    campaign_file: str  # holds the id of the campaign running now (the harness writes it)


def now_ns() -> int:
    return time.monotonic_ns()


class Log:
    """The worker's append-only log: one line per record, flushed at once."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            self._f.write(line)
            self._f.flush()

    def close(self) -> None:
        self._f.close()


def answer_fields(result: Any) -> dict[str, Any]:
    """What an answer said, for the log: outcome, replayed, and the reservation after it."""
    out: dict[str, Any] = {"outcome": result.outcome.name, "replayed": result.replayed}
    r = result.reservation
    if r is not None:
        out["state"] = r.state.name
        out["granted"] = [line.granted for line in r.lines]
        out["committed"] = [list(c) for c in r.committed]
        out["created_ms"] = r.created_ms
        out["resolved_ms"] = r.resolved_ms
        out["expires_ms"] = r.expires_ms
    return out


class Actor:
    """The choices of one thread (or one async task group) of a worker, seeded."""

    def __init__(self, plan: WorkerPlan, rng: random.Random, log: Log) -> None:
        self.plan = plan
        self.rng = rng
        self.log = log
        self.held: list[tuple[str, list[list[Any]]]] = []  # (id, lines) acknowledged HELD
        self.done: list[tuple[str, dict[str, Any]]] = []  # acknowledged ops to repeat

    def campaign(self) -> str | None:
        try:
            with open(self.plan.campaign_file, encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def next_op(self) -> dict[str, Any]:
        """The next call: a dict with op, id and the request's content."""
        rng = self.rng
        # Resolve more often as holds pile up, so stock keeps moving.
        resolve = RESOLVE_SHARE[0] if len(self.held) < HELD_PER_ACTOR_SOFT_MAX else (
            RESOLVE_SHARE[1])
        x = rng.random()
        if self.held and x < resolve:
            rid, lines = self.held.pop(rng.randrange(len(self.held)))
            if rng.random() < COMMIT_SHARE:
                commit_lines = None
                if rng.random() < 0.3:  # a partial shipment: one unit less of line 1
                    commit_lines = [[lines[0][0], max(1, lines[0][1] - 1)]]
                return {"op": "commit", "id": rid, "lines": commit_lines}
            return {"op": "release", "id": rid}
        x = rng.random()
        if self.done and x < REPEAT_SHARE:
            rid, op = self.done[rng.randrange(len(self.done))]
            return {**op, "dup": True}  # the same call again: must replay its answer
        if x < REPEAT_SHARE + CAMPAIGN_SHARE:
            campaign = self.campaign()
            if campaign is not None:
                return {"op": "reserve", "id": new_reservation_id(),
                        "lines": [[FLASH_SKU, rng.randint(1, 2)]], "campaign": campaign,
                        "customer": rng.choice(CUSTOMERS), "ttl_ms": TTL_MS_LONG}
        skus = rng.sample(HOT_SKUS + COLD_SKUS, rng.randint(1, 2))
        if rng.random() < 0.7 and not any(s in HOT_SKUS for s in skus):
            skus[0] = rng.choice(HOT_SKUS)
        lines = [[s, rng.randint(1, 3)] for s in dict.fromkeys(skus)]
        short = rng.random() < SHORT_TTL_SHARE
        return {"op": "reserve", "id": new_reservation_id(), "lines": lines,
                "ttl_ms": TTL_MS_SHORT if short else TTL_MS_LONG}

    def answered(self, op: dict[str, Any], result: Any) -> None:
        """Remember what the answer makes possible next."""
        if op.get("dup"):
            return
        if op["op"] == "reserve" and result.ok and op["ttl_ms"] == TTL_MS_LONG:
            lines = [[ln[0], g] for ln, g in zip(op["lines"],
                                                 (x.granted for x in result.reservation.lines))
                     if g]
            self.held.append((op["id"], lines))
        if result.ok and len(self.done) < REPEATABLE_KEPT_MAX:
            self.done.append((op["id"], op))


def call_args(op: dict[str, Any]) -> tuple[str, tuple, dict[str, Any]]:
    if op["op"] == "reserve":
        kw = {"ttl_ms": op["ttl_ms"], "timeout": CALL_TIMEOUT_S}
        if op.get("campaign"):
            kw.update(campaign=op["campaign"], customer=op["customer"])
        return "reserve", (op["id"], CHANNEL, [tuple(x) for x in op["lines"]]), kw
    if op["op"] == "commit":
        lines = None if op["lines"] is None else [tuple(x) for x in op["lines"]]
        return "commit", (op["id"], lines), {"timeout": CALL_TIMEOUT_S}
    return "release", (op["id"],), {"timeout": CALL_TIMEOUT_S}


def _try_record(op: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in op.items() if k != "op" and k != "id"}


def run_threads(plan: WorkerPlan, stop: Any) -> None:
    log = Log(plan.log_path)
    client = Client(plan.address, timeout=CALL_TIMEOUT_S)

    def actor_loop(k: int) -> None:
        actor = Actor(plan, random.Random(plan.seed * 100 + k), log)
        while not stop.is_set():
            op = actor.next_op()
            log.write(e="try", id=op["id"], op=op["op"], t=now_ns(), **_try_record(op))
            name, args, kw = call_args(op)
            while True:  # until answered: the server comes back
                t_try = now_ns()
                try:
                    result = getattr(client, name)(*args, **kw)
                except RETRYABLE as e:
                    log.write(e="err", id=op["id"], op=op["op"], t=now_ns(),
                              error=f"{type(e).__name__}: {e}")
                    time.sleep(actor.rng.uniform(*RETRY_PAUSE_S))
                    continue
                except StockgateError as e:
                    result = None
                    log.write(e="refused", id=op["id"], op=op["op"], t=now_ns(),
                              error=f"{type(e).__name__}: {e}")
                break
            if result is not None:
                log.write(e="ack", id=op["id"], op=op["op"], t=now_ns(), t_try=t_try,
                          dup=bool(op.get("dup")), **answer_fields(result))
                actor.answered(op, result)

    threads = [threading.Thread(target=actor_loop, args=(k,)) for k in range(THREADS_PER_WORKER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    log.close()


async def _async_main(plan: WorkerPlan, stop: Any, busy: Any) -> None:
    log = Log(plan.log_path)
    actor = Actor(plan, random.Random(plan.seed * 100), log)
    async with AsyncClient(plan.address, timeout=CALL_TIMEOUT_S) as client:

        async def one(op: dict[str, Any]) -> None:
            name, args, kw = call_args(op)
            while True:
                t_try = now_ns()
                try:
                    result = await getattr(client, name)(*args, **kw)
                except RETRYABLE as e:
                    log.write(e="err", id=op["id"], op=op["op"], t=now_ns(),
                              error=f"{type(e).__name__}: {e}")
                    await asyncio.sleep(actor.rng.uniform(*RETRY_PAUSE_S))
                    continue
                except StockgateError as e:
                    log.write(e="refused", id=op["id"], op=op["op"], t=now_ns(),
                              error=f"{type(e).__name__}: {e}")
                    return
                break
            log.write(e="ack", id=op["id"], op=op["op"], t=now_ns(), t_try=t_try,
                      dup=bool(op.get("dup")), **answer_fields(result))
            actor.answered(op, result)

        async def batch(ops: list[dict[str, Any]]) -> None:
            requests = [ReserveRequest(op["id"], CHANNEL, [tuple(x) for x in op["lines"]],
                                       ttl_ms=op["ttl_ms"]) for op in ops]
            while True:
                t_try = now_ns()
                try:
                    results = await client.reserve_many(requests, timeout=CALL_TIMEOUT_S)
                except RETRYABLE as e:
                    for op in ops:
                        log.write(e="err", id=op["id"], op="reserve", t=now_ns(),
                                  error=f"{type(e).__name__}: {e}")
                    await asyncio.sleep(actor.rng.uniform(*RETRY_PAUSE_S))
                    continue
                except StockgateError as e:
                    for op in ops:
                        log.write(e="refused", id=op["id"], op="reserve", t=now_ns(),
                                  error=f"{type(e).__name__}: {e}")
                    return
                break
            t = now_ns()
            for op, result in zip(ops, results):
                log.write(e="ack", id=op["id"], op="reserve", t=t, t_try=t_try, dup=False,
                          **answer_fields(result))
                actor.answered(op, result)

        while not stop.is_set():
            ops = []
            ids: set[str] = set()
            for _ in range(actor.rng.randint(*BURST_OPS)):
                op = actor.next_op()
                if op["id"] in ids:  # one call per id at a time, as a caller would
                    continue
                ids.add(op["id"])
                ops.append(op)
            for op in ops:
                log.write(e="try", id=op["id"], op=op["op"], t=now_ns(), **_try_record(op))
            plain = [op for op in ops if op["op"] == "reserve" and not op.get("campaign")
                     and not op.get("dup")]
            if plain and actor.rng.random() < 0.1:
                rest = [op for op in ops if op not in plain]
                busy.set()
                await asyncio.gather(batch(plain), *(one(op) for op in rest))
            else:
                busy.set()
                await asyncio.gather(*(one(op) for op in ops))
            busy.clear()
    log.close()


def run_async(plan: WorkerPlan, stop: Any, busy: Any) -> None:
    asyncio.run(_async_main(plan, stop, busy))


def worker_main(plan: WorkerPlan, stop: Any, busy: Any) -> None:
    """The entry point of a worker process (multiprocessing, spawn). SIGUSR1 prints the
    stacks of its threads to stderr: the harness sends it to a worker that does not
    finish in time."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if plan.kind == "async":
        run_async(plan, stop, busy)
    else:
        run_threads(plan, stop)
    # Everything is in the log (closed, so flushed). Skip the interpreter's finalization:
    # once, after a hundred restarts, its last garbage collection hung in a gRPC call
    # object's __del__, on a lock a daemon thread still held (stack in the report).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
