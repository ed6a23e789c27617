"""The audit of a crash run: what the store held after each kill, against what the
clients were told.

After every kill the harness copies the store and hands the copy to `read_snapshot`,
which opens it with the engine (on a manual clock stopped at the kill) and takes what
changed since the last snapshot: the reservations the new journal events name, receipts,
campaigns, the engine's consistency check. `Audit.add` checks the book of each snapshot
at once (nothing oversold, units conserved, customer limits and campaign windows kept,
no id reserved twice); `Audit.verify` compares every snapshot with the clients' logs at
the end, when the logs are complete.

Which server run decided an answer is read from the answer itself: a reservation's
created_ms (reserve) or resolved_ms (commit, release) is the deciding server's clock,
and runs never overlap in time (the harness records when each started and ended).

What `verify` asserts, per durability mode:

- both: every reservation in the store was asked for, with the lines asked; its state is
  one a caller drove it to (COMMITTED needs a commit, RELEASED a release, EXPIRED a short
  TTL that has run out); no id is reserved (or resolved) twice in the journal; a granted
  answer never contradicts the store (other units granted, another end state); a
  repeated call answers as the first answer did (`replayed`, same decision) unless, in
  async mode, that first answer was lost; a commit or release of a hold never answers
  NOT_HELD; no call is refused with an error.
- fsync: every answer granted by a run is in the snapshot taken after that run and in
  every later one.
- async: what survives a kill is a prefix in decision order: if an answer a was received
  before a call b was sent, both decided by the same run, and b survived, then a
  survived. Whatever survived one kill survives every later one; everything answered by
  the last run survives its graceful stop. A commit or release may answer NOT_FOUND only
  for a hold that was lost.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from crash_workload import (
    CHANNEL,
    CUSTOMER_LIMIT_UNITS,
    LOCATION,
    TTL_MS_SHORT,
)

from stockgate.engine import Engine, ManualClock
from stockgate.engine.store import Store

ID_EVENTS = ("reserved", "committed", "released", "expired", "extended", "amended")
TERMINAL_EVENTS = ("committed", "released", "expired")
JOURNAL_PAGE_EVENTS = 10_000
PROBLEMS_SHOWN_MAX = 20
REACHED, BEHIND, CONTRADICTED = "reached", "behind", "contradicted"


@dataclass(frozen=True)
class ResState:
    """A reservation as a snapshot holds it."""

    state: str
    lines: tuple[tuple[str, int], ...]  # asked
    granted: tuple[int, ...]
    committed: tuple[tuple[str, int], ...]
    campaign: str | None
    customer: str | None
    created_ms: int
    resolved_ms: int | None
    expires_ms: int


@dataclass
class Snapshot:
    """The store after server run `run` ended (a kill, or the final graceful stop)."""

    label: str
    run: int
    clock_ms: int  # the snapshot engine's clock: the wall time of the kill
    durable_last_seq: int
    changed: dict[str, ResState]  # reservations named by events since the last snapshot
    events: list[dict[str, Any]]  # the durable journal events since the last snapshot
    campaigns: dict[str, Any]
    stock: dict[str, list[Any]]  # sku -> buckets
    check_drifts: tuple[str, ...]
    first_event_again: dict[str, Any] | None  # the previous snapshot's last event, re-read


def read_snapshot(data_dir: str | os.PathLike[str], work_dir: str | os.PathLike[str], *,
                  label: str, run: int, clock_ms: int, after_seq: int,
                  skus: list[str]) -> Snapshot:
    """Copy the store (its data file; the lock file is rebuilt) and read the copy. The
    copy's engine may expire holds or end campaigns due at clock_ms, as a restarted
    server would at once; those events are not durable in the real store, so the next
    snapshot reads the journal from durable_last_seq on."""
    copy = pathlib.Path(work_dir) / "snapshot"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir(parents=True)
    shutil.copyfile(pathlib.Path(data_dir) / "data.mdb", copy / "data.mdb")
    store = Store(copy)
    durable = store.last_seq()
    store.close()
    with Engine(copy, clock=ManualClock(clock_ms)) as eng:
        events: list[dict[str, Any]] = []
        seq = max(after_seq, 1)
        while seq <= durable:
            page = eng.journal(seq, JOURNAL_PAGE_EVENTS)
            if not page:
                break
            events += [ev for ev in page if ev["seq"] <= durable]
            seq = page[-1]["seq"] + 1
        again = events[0] if events and after_seq and events[0]["seq"] == after_seq else None
        if after_seq:
            events = [ev for ev in events if ev["seq"] > after_seq]
        ids = {ev["id"] for ev in events if ev["kind"] in ID_EVENTS}
        # Holds the copy's engine expired (due at clock_ms) change state too.
        tail = eng.journal(durable + 1, JOURNAL_PAGE_EVENTS) if eng.last_seq > durable else []
        ids |= {ev["id"] for ev in tail if ev["kind"] in ID_EVENTS}
        changed = {}
        for rid in ids:
            r = eng.reservation(rid)
            changed[rid] = ResState(
                r.state.name, tuple((ln.sku, ln.qty) for ln in r.lines),
                tuple(ln.granted for ln in r.lines), tuple(sorted(r.committed)), r.campaign,
                r.customer, r.created_ms, r.resolved_ms, r.expires_ms)
        campaigns = {c.campaign_id: c for c in eng.campaigns()}
        stock = {sku: eng.stock(sku) for sku in skus}
        report = eng.check()
    shutil.rmtree(copy, ignore_errors=True)
    return Snapshot(label, run, clock_ms, durable, changed, events, campaigns, stock,
                    report.drifts, again)


@dataclass
class Run:
    """One server process: when it started and ended (wall ms), how it ended."""

    index: int
    spawn_ms: int
    end_ms: int = 0
    ending: str = ""  # the kill's kind ("random", "busy-session", "campaign-end") or "stop"


@dataclass
class Book:
    """The running totals of the snapshots so far."""

    states: dict[str, ResState] = field(default_factory=dict)
    reserved: Counter = field(default_factory=Counter)  # id -> reserved events
    resolved: Counter = field(default_factory=Counter)  # id -> terminal events
    received: Counter = field(default_factory=Counter)  # sku -> units received
    receipts: set[str] = field(default_factory=set)  # refs of receipts in the journal
    last_event: dict[str, Any] | None = None
    last_seq: int = 0


class Audit:
    """Snapshots in order; book checks as they come, the client logs at the end."""

    def __init__(self, mode: str, skus: list[str]) -> None:
        self.mode = mode
        self.skus = skus
        self.book = Book()
        self.snapshots: list[Snapshot] = []
        self.runs: list[Run] = []
        self.problems: list[str] = []

    # ------------------------------------------------------------------ per snapshot

    def add(self, snap: Snapshot) -> list[str]:
        """Fold a snapshot into the book and check the book; returns its problems."""
        found: list[str] = []
        book = self.book
        where = snap.label
        if book.last_event is not None and snap.first_event_again is not None:
            a, b = book.last_event, snap.first_event_again
            if (a["kind"], a.get("id"), a.get("ref")) != (b["kind"], b.get("id"), b.get("ref")):
                found.append(f"{where}: the journal changed under seq {a['seq']}: {a} / {b}")
        elif book.last_event is not None:
            found.append(f"{where}: the journal lost seq {book.last_event['seq']}, durable "
                         "at the previous snapshot")
        for ev in snap.events:
            kind = ev["kind"]
            if kind == "reserved":
                book.reserved[ev["id"]] += 1
            elif kind in TERMINAL_EVENTS:
                book.resolved[ev["id"]] += 1
            elif kind == "received":
                book.receipts.add(ev.get("ref"))
                book.received[ev["sku"]] += sum(d for _, d in ev["on_hand"])
        if snap.events:
            book.last_event = snap.events[-1]
        book.last_seq = snap.durable_last_seq
        twice = [rid for rid in snap.changed if book.reserved[rid] > 1 or book.resolved[rid] > 1]
        found += [f"{where}: {rid} reserved {book.reserved[rid]} times, resolved "
                  f"{book.resolved[rid]} times in the journal" for rid in twice]
        book.states.update(snap.changed)
        found += [f"{where}: consistency check: {d}" for d in snap.check_drifts]
        found += self._check_book(snap)
        self.snapshots.append(snap)
        self.problems += found
        return found

    def _check_book(self, snap: Snapshot) -> list[str]:
        found = []
        where = snap.label
        held: Counter = Counter()
        committed: Counter = Counter()
        per_customer: Counter = Counter()  # (campaign, customer, sku) -> held + committed
        per_campaign: Counter = Counter()  # (campaign, sku) -> held + committed
        for rid, r in self.book.states.items():
            if r.state == "HELD":
                for (sku, _), g in zip(r.lines, r.granted):
                    held[sku] += g
                    if r.campaign:
                        per_customer[(r.campaign, r.customer, sku)] += g
                        per_campaign[(r.campaign, sku)] += g
            elif r.state == "COMMITTED":
                for sku, u in r.committed:
                    committed[sku] += u
                    if r.campaign:
                        per_customer[(r.campaign, r.customer, sku)] += u
                        per_campaign[(r.campaign, sku)] += u
            if r.campaign and r.state in ("HELD", "COMMITTED"):
                c = snap.campaigns.get(r.campaign)
                if c is None:
                    found.append(f"{where}: {rid} names campaign {r.campaign}, not in the store")
                elif not c.start_ms <= r.created_ms < c.end_ms:
                    found.append(f"{where}: {rid} granted at {r.created_ms}, outside the "
                                 f"window [{c.start_ms}, {c.end_ms}) of {r.campaign}")
        for sku in self.skus:
            buckets = snap.stock[sku]
            received = self.book.received[sku]
            on_hand = sum(b.on_hand for b in buckets)
            for b in buckets:
                if b.available < 0:
                    found.append(f"{where}: {sku} oversold in {b.location}/{b.pool}: {b}")
            if sum(b.held for b in buckets) != held[sku]:
                found.append(f"{where}: {sku}: buckets hold {sum(b.held for b in buckets)}, "
                             f"reservations {held[sku]}")
            if on_hand != received - committed[sku]:
                found.append(f"{where}: {sku}: units not conserved: on hand {on_hand}, "
                             f"received {received} - committed {committed[sku]}")
            if held[sku] + committed[sku] > received:
                found.append(f"{where}: {sku} oversold: held {held[sku]} + committed "
                             f"{committed[sku]} > received {received}")
        for (campaign, customer, sku), units in per_customer.items():
            if units > CUSTOMER_LIMIT_UNITS:
                found.append(f"{where}: {customer} has {units} units of {sku} in {campaign}, "
                             f"over the limit of {CUSTOMER_LIMIT_UNITS}")
        for cid, c in snap.campaigns.items():
            for sku, carved in c.carved.items():
                if carved > c.quotas.get(sku, 0):
                    found.append(f"{where}: {cid} carved {carved} of {sku}, quota "
                                 f"{c.quotas.get(sku)}")
                if per_campaign[(cid, sku)] > carved:
                    found.append(f"{where}: {cid} sold {per_campaign[(cid, sku)]} of {sku}, "
                                 f"carved {carved}")
            if c.end_ms <= snap.clock_ms and c.state != "ended":
                found.append(f"{where}: {cid} ended at {c.end_ms}, still {c.state}")
            if c.state == "ended":
                pool = [b for b in snap.stock.get(next(iter(c.quotas)), [])
                        if b.pool == c.pool and b.location == LOCATION]
                if pool and pool[0].available != 0:
                    found.append(f"{where}: {cid} ended with {pool[0].available} units "
                                 "left in its pool, not returned")
        return found

    # ------------------------------------------------------------------ against the logs

    def run_of(self, decided_ms: int | None) -> int | None:
        if decided_ms is None:
            return None
        for run in self.runs:
            if run.spawn_ms <= decided_ms <= run.end_ms:
                return run.index
        return None

    def verify(self, logs: Logs) -> Figures:
        """Compare every snapshot with the logs; problems go to self.problems."""
        found: list[str] = []
        figures = Figures(mode=self.mode)
        by_run: dict[int, list[Ack]] = defaultdict(list)
        for rid, calls in logs.calls.items():
            for ack in calls.acks:
                figures.acks += 1
                figures.replays += ack.replayed
                if ack.dup:
                    continue
                if not ack.granted_call:
                    continue
                run = self.run_of(ack.decided_ms)
                if run is None:
                    found.append(f"{rid}: {ack.op} answered {ack.outcome} at "
                                 f"{ack.decided_ms}, when no server ran")
                    continue
                by_run[run].append(ack)
            figures.calls_retried += calls.retried_ops
            figures.errors_seen += calls.errors
        states: dict[str, ResState] = {}
        survived: set[int] = set()  # id() of acks reached in a snapshot
        lost: dict[int, str] = {}  # id() of acks lost -> the snapshot
        for snap in self.snapshots:
            states.update(snap.changed)
            recheck = [a for rid in snap.changed for a in logs.acks_of(rid)
                       if id(a) in survived]
            for a in recheck:  # durable stays durable
                if not a.reached(states.get(a.rid)):
                    found.append(f"{snap.label}: {a.rid} {a.op} -> {a.outcome} was in an "
                                 f"earlier snapshot and is gone: {states.get(a.rid)}")
            new = by_run.get(snap.run, [])
            run_lost = []
            for a in new:
                seen = a.compare(states.get(a.rid))
                if seen == REACHED:
                    survived.add(id(a))
                    figures.acks_verified += 1
                    continue
                if seen == CONTRADICTED:
                    found.append(f"{snap.label}: acknowledged {a.rid} {a.op} -> {a.outcome} "
                                 f"{a.granted}/{a.committed}, the store has "
                                 f"{states.get(a.rid)}")
                lost[id(a)] = snap.label
                run_lost.append(a)
            final = snap is self.snapshots[-1]
            if run_lost and (self.mode == "fsync" or final):
                for a in run_lost[:PROBLEMS_SHOWN_MAX]:
                    found.append(f"{snap.label}: acknowledged {a.rid} {a.op} -> "
                                 f"{a.outcome} {a.state} is lost: store has "
                                 f"{states.get(a.rid)}")
            elif run_lost:
                figures.acks_lost += len(run_lost)
                first_lost = min(a.t for a in run_lost)
                later = [b for b in new if id(b) in survived and not b.replayed
                         and b.t_try > first_lost]
                for b in later[:PROBLEMS_SHOWN_MAX]:
                    found.append(f"{snap.label}: not a prefix: {b.rid} {b.op} (sent after "
                                 f"a lost answer was received) survived")
        self._check_states(logs, states, found)
        self._check_answers(logs, lost, found, figures)
        figures.reserved_ids = len(self.book.reserved)
        figures.snapshots = len(self.snapshots)
        self.problems += found
        return figures

    def _check_states(self, logs: Logs, states: dict[str, ResState], found: list[str]) -> None:
        """No state nobody asked for."""
        end = self.snapshots[-1].clock_ms
        for rid, r in states.items():
            calls = logs.calls.get(rid)
            if calls is None:
                found.append(f"{rid}: in the store, never asked for")
                continue
            if r.lines != calls.lines:
                found.append(f"{rid}: stored lines {r.lines}, asked {calls.lines}")
            if r.state == "COMMITTED" and "commit" not in calls.ops:
                found.append(f"{rid}: COMMITTED, never committed by its caller")
            if r.state == "RELEASED" and "release" not in calls.ops:
                found.append(f"{rid}: RELEASED, never released by its caller")
            if r.state == "EXPIRED" and (calls.ttl_ms != TTL_MS_SHORT or r.expires_ms > end):
                found.append(f"{rid}: EXPIRED before its time ({r.expires_ms})")
            if self.book.reserved[rid] != 1:
                found.append(f"{rid}: {self.book.reserved[rid]} reserved events")

    def _check_answers(self, logs: Logs, lost: dict[int, str], found: list[str],
                       figures: Figures) -> None:
        """Repeats answer as the first answer; commits and releases find their hold."""
        for rid, calls in logs.calls.items():
            found += [f"{rid}: refused with {e}" for e in calls.refusals]
            first: dict[str, Ack] = {}
            for a in calls.acks:
                if a.granted_call and not a.dup and a.op not in first:
                    first[a.op] = a
            hold = first.get("reserve")
            for a in calls.acks:
                if a.dup:
                    figures.repeats += 1
                    orig = first.get(a.op)
                    if orig is None:
                        found.append(f"{rid}: repeat of {a.op} with no first answer")
                    elif a.replayed and a.same_answer(orig):
                        continue
                    elif self.mode == "async" and id(orig) in lost:
                        continue  # the first answer was lost: the repeat decides anew
                    else:
                        found.append(f"{rid}: repeat of {a.op} answered {a.outcome} "
                                     f"replayed={a.replayed} {a.granted}/{a.committed}, "
                                     f"first {orig.outcome} {orig.granted}/{orig.committed}")
                elif a.op in ("commit", "release") and a.outcome in ("NOT_FOUND", "NOT_HELD"):
                    if (self.mode == "async" and a.outcome == "NOT_FOUND" and hold is not None
                            and id(hold) in lost):
                        continue
                    found.append(f"{rid}: {a.op} of an acknowledged hold answered {a.outcome}")


@dataclass
class Ack:
    rid: str
    op: str
    t: int  # answer received, monotonic ns
    t_try: int  # the (last) attempt sent, monotonic ns
    dup: bool
    outcome: str
    replayed: bool
    state: str | None
    granted: tuple[int, ...]
    committed: tuple[tuple[str, int], ...]
    decided_ms: int | None

    @property
    def granted_call(self) -> bool:
        return self.outcome in ("OK", "PARTIAL")

    def reached(self, r: ResState | None) -> bool:
        """Does the store hold this answer (or a later state of the same reservation)?"""
        return self.compare(r) == REACHED

    def compare(self, r: ResState | None) -> str:
        """REACHED: the store holds this answer (or a later state the caller drove the
        reservation to); BEHIND: it holds an earlier state (or none); CONTRADICTED: it
        holds something this answer rules out, which no durability mode allows."""
        if r is None:
            return BEHIND
        if self.op == "reserve":
            return REACHED if r.granted == self.granted else CONTRADICTED
        if r.state == "HELD":
            return BEHIND
        if self.op == "commit":
            ok = r.state == "COMMITTED" and r.committed == self.committed
        else:
            ok = r.state == "RELEASED"
        return REACHED if ok else CONTRADICTED

    def same_answer(self, other: Ack) -> bool:
        """The same answer to the same call (a reserve's repeat may show the reservation
        committed since: only what the reserve decided counts)."""
        mine = (self.outcome, self.granted, self.decided_ms)
        theirs = (other.outcome, other.granted, other.decided_ms)
        if self.op == "commit":
            mine, theirs = mine + (self.committed,), theirs + (other.committed,)
        return mine == theirs


@dataclass
class Calls:
    """Everything one reservation id went through, from its owner's log."""

    lines: tuple[tuple[str, int], ...] = ()
    ttl_ms: int = 0
    ops: set[str] = field(default_factory=set)
    acks: list[Ack] = field(default_factory=list)
    errors: int = 0
    retried_ops: int = 0
    refusals: list[str] = field(default_factory=list)  # errors no call should get here


@dataclass
class Logs:
    calls: dict[str, Calls]

    def acks_of(self, rid: str) -> list[Ack]:
        calls = self.calls.get(rid)
        return [] if calls is None else [a for a in calls.acks if not a.dup]


def read_logs(paths: list[str | os.PathLike[str]]) -> Logs:
    calls: dict[str, Calls] = defaultdict(Calls)
    for path in paths:
        failing: dict[tuple[str, str], int] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # being written as we read
                rec = json.loads(line)
                rid, op = rec["id"], rec["op"]
                c = calls[rid]
                if rec["e"] == "try":
                    c.ops.add(op)
                    if op == "reserve" and not c.lines:
                        c.lines = tuple((s, q) for s, q in rec["lines"])
                        c.ttl_ms = rec["ttl_ms"]
                elif rec["e"] == "err":
                    c.errors += 1
                    failing[(rid, op)] = failing.get((rid, op), 0) + 1
                elif rec["e"] == "refused":
                    c.refusals.append(rec["error"])
                else:
                    if failing.pop((rid, op), 0):
                        c.retried_ops += 1
                    decided = rec.get("created_ms") if op == "reserve" else rec.get(
                        "resolved_ms")
                    c.acks.append(Ack(
                        rid, op, rec["t"], rec["t_try"], rec["dup"], rec["outcome"],
                        rec["replayed"], rec.get("state"), tuple(rec.get("granted", ())),
                        tuple(sorted(tuple(x) for x in rec.get("committed", ()))), decided))
    return Logs(dict(calls))


@dataclass
class Figures:
    """What a run checked, for the report."""

    mode: str
    rounds: int = 0
    kills: dict[str, int] = field(default_factory=Counter)
    acks: int = 0  # answers received
    acks_verified: int = 0  # granted answers found in the snapshot after their run
    acks_lost: int = 0  # granted answers not found (async only; 0 in fsync or it fails)
    reserved_ids: int = 0
    replays: int = 0  # answers marked replayed
    repeats: int = 0  # deliberate repeats of answered calls, checked
    errors_seen: int = 0  # Unavailable / DeadlineExceeded / Overloaded raised to callers
    calls_retried: int = 0  # calls that failed at least once, retried until answered
    snapshots: int = 0
    seconds_per_round: list[float] = field(default_factory=list)
    power_cuts: int = 0
    pages_lost: int = 0

    def summary(self) -> str:
        per = self.seconds_per_round or [0.0]
        return (f"{self.mode}: {self.rounds} rounds, kills {dict(self.kills)}, "
                f"{self.acks} answers, {self.acks_verified} granted answers verified, "
                f"{self.acks_lost} lost (async bound), {self.reserved_ids} reservations, "
                f"{self.repeats} repeats checked, {self.replays} replayed answers, "
                f"{self.errors_seen} errors seen by callers, {self.calls_retried} calls "
                f"retried until answered, {self.snapshots} snapshots, "
                f"{self.power_cuts} power cuts ({self.pages_lost} pages lost), "
                f"{sum(per) / len(per):.2f} s per round (max {max(per):.2f})")


__all__ = ["CHANNEL", "Audit", "Figures", "Run", "Snapshot", "read_logs", "read_snapshot"]
