"""The end-to-end crash harness: the real server as a subprocess, clients in several
processes, kill -9 at random moments, restart on the same data directory, audit.

    figures = run_crash(CrashPlan(durability="fsync", rounds=10, seed=7), tmp_path)

One run:
1. start `python -m stockgate.server` on a fresh data directory, seed the book through
   the client (a warehouse, a channel, stock), stop it with SIGTERM (it must exit 0),
   start it again: the book the workers see is durable in either mode;
2. start the worker processes (tests/crash_workload.py) and wait until each has had an
   answer; then each round: open a flash-sale
   campaign with a short window, top the stock up, let the workers run, then kill -9
   the server at a moment of the round's kind:
     "random"        a random moment,
     "busy-session"  while the async worker's Session stream carries a burst,
     "campaign-end"  within CAMPAIGN_END_KILL_MS of the campaign's end, either side;
     "mid-commit"    (power-cut runs) the server kills itself right after a write it
                     has not synced yet, the N-th of its run, N random;
   optionally cut the power on the data file (tests/powercut.py); read a copy of what
   the store holds (tests/crash_audit.py) and check its book; restart on the same port;
3. stop the workers (each finishes its calls: the last ones land on the restarted
   server), run the consistency check through the client, stop the server with SIGTERM,
   read the store one last time, and compare every snapshot with the workers' logs.

Everything random comes from the plan's seed; a failure names it, and
STOCKGATE_CRASH_SEED=<seed> replays the same choices (the timing of the machine differs,
so a replay explores the same plan, not the same interleaving).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pathlib
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import crash_workload as wl
import powercut
from crash_audit import Audit, Figures, Run, read_logs, read_snapshot

from stockgate.clients import Client, Conflict, StockgateError

SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 60
WORKER_START_TIMEOUT_S = 60
WORKER_DRAIN_TIMEOUT_S = 120  # the workers finish their calls after the last restart
ADMIN_TIMEOUT_S = 10.0
UPTIME_S = (0.2, 0.8)  # how long the server runs before a "random" kill
CAMPAIGN_WINDOW_MS = (300, 1_000)
CAMPAIGN_END_KILL_MS = 150  # a "campaign-end" kill lands this close to the end
BUSY_WAIT_S = 5.0  # how long to wait for a busy Session before killing anyway
BUSY_KILL_DELAY_S = (0.0, 0.02)
KILL_KINDS = ("random", "busy-session", "campaign-end")
MID_COMMIT_WRITES = (1, 300)  # the unsynced write after which a "mid-commit" kill falls
MID_COMMIT_WAIT_S = 10.0  # a server that has not died by then is killed anyway
# A server whose store must not sync (the control that shows a power cut bites): it
# opens LMDB without fsync, everything else as `stockgate serve`.
UNSYNCED_SERVER = (
    "import sys\n"
    "import stockgate.engine.store as store\n"
    "real = store.Store.__init__\n"
    "store.Store.__init__ = lambda self, *a, **k: real(self, *a, **{**k, 'sync': False})\n"
    "from stockgate.server.app import main\n"
    "sys.exit(main())\n"
)


@dataclass(frozen=True)
class CrashPlan:
    durability: str  # "fsync" or "async"
    rounds: int
    seed: int
    workers: tuple[str, ...] = ("threads", "threads", "async")
    power_cut: str | None = None  # None: kill -9 only; "all", "random": the disk's loss
    store_sync: bool = True  # False only for the control run


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ServerProcess:
    """`python -m stockgate.server` on one data directory, started and killed at will."""

    def __init__(self, data_dir: pathlib.Path, work_dir: pathlib.Path, plan: CrashPlan,
                 env: dict[str, str]) -> None:
        self.data_dir = data_dir
        self.work_dir = work_dir
        self.plan = plan
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.address = ""
        self.starts = 0

    def start(self, env: dict[str, str] | None = None) -> int:
        """Start it (on the port of the first start), with `env` added to its
        environment; returns the wall ms just before."""
        spawn_ms = wall_ms()
        args = ["--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}",
                "--durability", self.plan.durability, "--shutdown-grace-ms", "5000"]
        self.starts += 1
        # The control's first run (the seeding) syncs: what it loses is the workers'.
        unsynced = not self.plan.store_sync and self.starts > 1
        head = ([sys.executable, "-c", UNSYNCED_SERVER] if unsynced
                else [sys.executable, "-m", "stockgate.server"])
        err = open(self.work_dir / f"server-{self.starts}.err", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(head + args, stdout=subprocess.PIPE, stderr=err,
                                     text=True, env={**self.env, **(env or {})})
        err.close()
        ready, _, _ = select.select([self.proc.stdout], [], [], SERVER_START_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip():
            try:
                code = self.proc.wait(1)  # it ended (stdout closed), or it hangs
            except subprocess.TimeoutExpired:
                code = None
            if code == -signal.SIGKILL and env and "POWERCUT_KILL_AT_WRITE" in env:
                return spawn_ms  # the power failed in a commit of its recovery: the kill
            self.proc.kill()
            self.proc.wait()
            raise RuntimeError(f"the server did not start ({code}): {self.stderr_tail()}")
        self.address = line.strip()
        self.port = int(self.address.rsplit(":", 1)[1])
        return spawn_ms

    def kill(self, wait_s: float = 0.0) -> int:
        """kill -9, after waiting up to wait_s for it to die by itself; returns the wall
        ms once it is gone (no decision comes after)."""
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc.stdout.close()
        return wall_ms()

    def stop(self) -> tuple[int, int]:
        """SIGTERM; returns (exit code, wall ms once it is gone)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc.stdout.close()
        return code, wall_ms()

    def stderr_tail(self, lines: int = 30) -> str:
        path = self.work_dir / f"server-{self.starts}.err"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class CrashFailure(AssertionError):
    pass


def seed_book(client: Client) -> None:
    client.add_location(wl.LOCATION)
    client.set_allocation_rule(wl.LOCATION, {wl.POOL: 100})
    client.set_channel(wl.CHANNEL, [(wl.LOCATION, wl.POOL)])
    for sku, units in wl.SEED_UNITS.items():
        client.receive(sku, wl.LOCATION, units, ref=f"seed-{sku}")


def run_crash(plan: CrashPlan, work_dir: str | os.PathLike[str]) -> Figures:
    """Run the plan; raise CrashFailure (naming the seed) when the audit finds anything."""
    work = pathlib.Path(work_dir)
    data_dir = work / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(plan.seed)
    skus = list(wl.SEED_UNITS)
    audit = Audit(plan.durability, skus)
    figures_kills: dict[str, int] = {}
    env = dict(os.environ)
    undo_log = work / "undo.log"
    if plan.power_cut:
        shim = powercut.build_shim(work)
        if shim is None:
            raise RuntimeError("no C compiler for the power-cut shim")
        env.update(powercut.shim_env(shim, data_dir / "data.mdb", undo_log))
    server = ServerProcess(data_dir, work, plan, env)
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    busy = ctx.Event()
    campaign_file = work / "campaign"
    log_paths = [work / f"worker-{i}.log" for i in range(len(plan.workers))]
    procs: list[multiprocessing.process.BaseProcess] = []
    cuts: list[powercut.PowerCut] = []
    round_s: list[float] = []

    def fail(message: str) -> CrashFailure:
        return CrashFailure(f"{message}\n(seed {plan.seed}: replay with "
                            f"STOCKGATE_CRASH_SEED={plan.seed}; plan {plan})")

    def snapshot(label: str, run: Run, clock_ms: int) -> None:
        snap = read_snapshot(data_dir, work, label=label, run=run.index, clock_ms=clock_ms,
                             after_seq=audit.book.last_seq, skus=skus)
        problems = audit.add(snap)
        if problems:
            raise fail(f"{label}: the store's book is wrong:\n" + "\n".join(problems[:20]))

    try:
        spawn = server.start()
        with Client(server.address, timeout=ADMIN_TIMEOUT_S) as admin:
            seed_book(admin)
        code, end = server.stop()
        if code != 0:
            raise fail(f"the server exited {code} on SIGTERM: {server.stderr_tail()}")
        audit.runs.append(Run(0, spawn, end, "stop"))
        # Power-cut runs fail mid-commit every other round; not the first, which must
        # give the workers time to start and get answers.
        kinds = ["mid-commit" if plan.power_cut and k % 2 == 1 else rng.choice(KILL_KINDS)
                 for k in range(plan.rounds)]

        def server_env(k: int) -> dict[str, str]:
            if k < plan.rounds and kinds[k] == "mid-commit":
                return {"POWERCUT_KILL_AT_WRITE": str(rng.randint(*MID_COMMIT_WRITES))}
            return {}

        run = Run(1, server.start(server_env(0)))
        audit.runs.append(run)
        for i, kind in enumerate(plan.workers):
            p = ctx.Process(target=wl.worker_main, name=f"crash-worker-{i}", args=(
                wl.WorkerPlan(i, kind, server.address, str(log_paths[i]),
                              plan.seed * 10 + i, str(campaign_file)), stop, busy))
            p.start()
            procs.append(p)
        wait_for_answers(log_paths, procs)
        admin = Client(server.address, timeout=ADMIN_TIMEOUT_S)
        try:
            for k in range(plan.rounds):
                t0 = time.monotonic()
                kind = kinds[k]
                end_ms = open_campaign(admin, k, rng, campaign_file)
                top_up(admin, k)
                wait_for_kill(kind, rng, end_ms, busy)
                run.end_ms = server.kill(MID_COMMIT_WAIT_S if kind == "mid-commit" else 0)
                run.ending = kind
                figures_kills[kind] = figures_kills.get(kind, 0) + 1
                if plan.power_cut:
                    loss = plan.power_cut if plan.power_cut != "mixed" else rng.choice(
                        powercut.LOSS_MODES)
                    cuts.append(powercut.cut_power(data_dir / "data.mdb", undo_log, loss,
                                                   random.Random(rng.random())))
                snapshot(f"round {k} ({kind} kill)", run, run.end_ms)
                run = Run(run.index + 1, server.start(server_env(k + 1)))
                audit.runs.append(run)
                round_s.append(time.monotonic() - t0)
            stop.set()
            for p in procs:
                p.join(WORKER_DRAIN_TIMEOUT_S)
                if p.exitcode is None:
                    os.kill(p.pid, signal.SIGUSR1)  # its stacks, on stderr
                    time.sleep(1)
                if p.exitcode != 0:
                    raise fail(f"worker {p.name} ended with {p.exitcode}")
            report = admin.check()
            if not report.ok:
                raise fail(f"Inventory.Check after the last restart: {report.drifts}")
        finally:
            admin.close()
        code, run.end_ms = server.stop()
        run.ending = "stop"
        if code != 0:
            raise fail(f"the server exited {code} on SIGTERM: {server.stderr_tail()}")
        snapshot("final (after SIGTERM)", run, run.end_ms)
        figures = audit.verify(read_logs(log_paths))
        if audit.problems:
            raise fail("the clients were told something the store does not hold:\n"
                       + "\n".join(audit.problems[:40]))
    finally:
        stop.set()
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.kill()
        server.close()
    figures.rounds = plan.rounds
    figures.kills = figures_kills
    figures.seconds_per_round = round_s
    figures.power_cuts = len(cuts)
    figures.pages_lost = sum(c.pages_lost for c in cuts)
    return figures


def wait_for_answers(log_paths: list[pathlib.Path], procs: list) -> None:
    """Wait until every worker has had an answer, so that the first kill has something
    to lose (a worker process takes a while to start)."""
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while True:
        answered = [p.exists() and '"e":"ack"' in p.read_text() for p in log_paths]
        if all(answered):
            return
        dead = [p.name for p in procs if not p.is_alive()]
        if dead or time.monotonic() > deadline:
            raise RuntimeError(f"workers without an answer: {answered}; dead: {dead}")
        time.sleep(0.05)


def open_campaign(admin: Client, k: int, rng: random.Random,
                  campaign_file: pathlib.Path) -> int:
    """Create this round's flash sale, open now, ending soon; returns its end (wall ms).
    An admin call that fails is not retried blindly: creating twice is a Conflict."""
    cid = f"flash-{k}"
    start = wall_ms()
    end = start + rng.randint(*CAMPAIGN_WINDOW_MS)
    for _ in range(3):
        try:
            admin.create_campaign(cid, channels=[wl.CHANNEL], start_ms=start, end_ms=end,
                                  location=wl.LOCATION, source_pool=wl.POOL,
                                  quotas={wl.FLASH_SKU: wl.CAMPAIGN_QUOTA_UNITS},
                                  customer_limit=wl.CUSTOMER_LIMIT_UNITS)
            break
        except Conflict:
            break  # the first attempt landed
        except StockgateError:
            time.sleep(0.1)
    tmp = campaign_file.with_suffix(".tmp")
    tmp.write_text(cid)
    os.replace(tmp, campaign_file)
    return end


def top_up(admin: Client, k: int) -> None:
    """Receive more stock (with a ref per receipt): not idempotent, so a receipt whose
    answer was lost is not sent again; the audit reads receipts from the journal."""
    for sku, units in wl.TOPUP_UNITS.items():
        with contextlib.suppress(StockgateError):
            admin.receive(sku, wl.LOCATION, units, ref=f"topup-{k}-{sku}")


def wait_for_kill(kind: str, rng: random.Random, campaign_end_ms: int, busy) -> None:
    if kind == "mid-commit":
        return  # the server kills itself
    if kind == "random":
        time.sleep(rng.uniform(*UPTIME_S))
    elif kind == "busy-session":
        time.sleep(rng.uniform(UPTIME_S[0], UPTIME_S[0] * 2))
        busy.wait(BUSY_WAIT_S)
        time.sleep(rng.uniform(*BUSY_KILL_DELAY_S))
    else:
        at = campaign_end_ms + rng.randint(-CAMPAIGN_END_KILL_MS, CAMPAIGN_END_KILL_MS)
        time.sleep(max(0.0, (at - wall_ms()) / 1000))
