"""locust scenarios for stockgate, with the sync Client under gevent.

    locust -f bench/locustfile.py --headless --host 127.0.0.1:50051 \\
        --scenario checkout -u 100 -r 100 -t 60s

Scenarios (--scenario, or STOCKGATE_SCENARIO; naming user classes on the command line
works too):

  checkout   storefront buyers on the online channels: availability 70 %, reserve 20 %,
             commit 7 %, release 3 % (of the user's own holds; the rest expire after
             CHECKOUT_TTL_MS, as abandoned carts do); SKUs Zipf-distributed over --skus
  flash      every user on the campaign's 1-10 SKUs (--flash-skus), quota --flash-quota
             in total, one unit per customer: each attempt is a new customer, some are
             a second try by an earlier buyer (refused by the limit), some granted answers
             are "lost" and sent again with the same id (answered as a replay); transient
             errors are retried with the same id
  pos        store tills (pos-1..4) selling baskets from their store's offline and shared
             pools, while the marketplace channel sells online from those shared pools
  watch      checkout load, plus --watchers subscribers of the web channel's whole
             catalogue, each probing the delay from a commit to the update that shows it

Every call fires one request event: its type is the call ("reserve", "commit",
"availability", ...), its name the outcome ("OK", "INSUFFICIENT_STOCK",
"CUSTOMER_LIMIT", "replayed"), so sold-out answers are counted as successes of their
own kind, and only exceptions (overload, deadline, unavailable) are failures. An
interceptor on the channel (locust's gRPC example) would see one long Session stream
rather than the calls the Client coalesces onto it, so events are fired around each
Client call instead.

Before the run (on the master, or the only process), the book (bench/book.py) is loaded
through the client when its channels are missing, and the flash sale is opened. After
it, the consistency check runs and flash figures are checked (sold = quota, no unit
oversold, no customer over the limit). With --stockgate-out FILE, each process writes
its tallies (outcomes, the flash sell-out timeline, Watch delays) as JSON.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import grpc.experimental.gevent
from gevent.event import Event
from locust import User, constant, events, task
from locust.runners import LocalRunner, WorkerRunner

# gRPC must use gevent before any channel exists (locust has monkey-patched already).
grpc.experimental.gevent.init_gevent()

sys.path.insert(0, str(Path(__file__).resolve().parent))

import book  # noqa: E402

from stockgate.clients import (  # noqa: E402
    Client,
    DeadlineExceeded,
    Overloaded,
    StockgateError,
    Unavailable,
    new_reservation_id,
)

SCENARIOS = ("checkout", "flash", "pos", "watch")
CALL_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 600.0
CHECKOUT_TTL_MS = 15 * 60 * 1_000  # a storefront cart holds stock for 15 minutes
FLASH_TTL_MS = 5 * 60 * 1_000  # a flash-sale buyer must pay within 5 minutes
POS_TTL_MS = 60 * 1_000  # a till's hold lives only until the payment, seconds later
MARKETPLACE_TTL_MS = 30 * 60 * 1_000
CHECKOUT_LINES_MAX = 3
POS_LINES_MAX = 2
LINE_QTY_MAX = 2
AVAILABILITY_SKUS_MAX = 3
THINK_MS_DEFAULT = 100  # checkout and pos users wait 0..this between calls
REPEAT_CUSTOMER_SHARE = 0.05  # flash: attempts by a customer who already bought the SKU
RETRY_SAME_ID_SHARE = 0.05  # flash: granted answers treated as lost and sent again
TRANSIENT_RETRIES_MAX = 5  # flash: same-id retries after overload, deadline, unavailable
TRANSIENT_RETRY_S = 0.05
FLASH_TAIL_S = 2.0  # a lone flash process stops this long after the quota is gone
PROBE_INTERVAL_S = 0.5  # watch: one commit probe per subscriber per interval
PROBE_WAIT_S = 5.0  # an update slower than this counts as missed
WATCHERS_DEFAULT = 4
TIMELINE_BIN_S = 0.1
MARKETPLACE_COMMIT_SHARE = 0.5
MARKETPLACE_RELEASE_SHARE = 0.2
TRANSIENT = (DeadlineExceeded, Overloaded, Unavailable)


# ---------------------------------------------------------------------------- options

@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    g = parser.add_argument_group("stockgate")
    g.add_argument("--scenario", choices=SCENARIOS, default="checkout",
                   env_var="STOCKGATE_SCENARIO", help="which users run")
    g.add_argument("--token", default="", env_var="STOCKGATE_TOKEN",
                   help="admin token (the book and the flash sale are set up with it)")
    g.add_argument("--skus", type=int, default=book.SKUS_DEFAULT,
                   help="SKUs of the book (loaded when missing), Zipf-distributed")
    g.add_argument("--think-ms", type=int, default=THINK_MS_DEFAULT,
                   help="checkout and pos users wait 0..this between calls")
    g.add_argument("--flash-quota", type=int, default=100_000,
                   help="units of the flash sale, over all its SKUs")
    g.add_argument("--flash-skus", type=int, default=4, help="campaign SKUs (1-10)")
    g.add_argument("--watchers", type=int, default=WATCHERS_DEFAULT,
                   help="watch: subscribers, each probing the commit-to-update delay")
    g.add_argument("--no-check", action="store_true",
                   help="skip the consistency check after the run")
    g.add_argument("--stockgate-out", default="",
                   help="write this process's tallies here as JSON")


@events.init.add_listener
def _choose_users(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if opts is None:
        return
    WatchUser.fixed_count = opts.watchers
    if getattr(opts, "user_classes", None):
        return  # named on the command line: as asked
    environment.user_classes[:] = [u for u in environment.user_classes
                                   if opts.scenario in u.scenarios]


# ---------------------------------------------------------------------------- process state

class Process:
    """What the users of one locust process share: one Client (their calls coalesce on
    its Session stream), the scenario's setup, and the tallies written at the end."""

    def __init__(self) -> None:
        self.client: Client | None = None
        self.env: Any = None
        self.campaign: str | None = None
        self.quotas: dict[str, int] = {}
        self.zipf: book.Zipf | None = None
        self.store_zipf = book.Zipf(book.STORE_SKUS)
        self.outcomes: dict[str, int] = {}
        self.violations: dict[str, int] = {}
        self.timeline: dict[str, list[int]] = {}
        self.t0 = time.monotonic()
        self.sold_out: set[str] = set()
        self.granted = 0
        self.watch_delays_ms: list[float] = []
        self.watch_ack_delays_ms: list[float] = []
        self.watch_decided_delays_ms: list[float] = []
        self.watch_updates = 0
        self.watch_missed = 0
        self.quitting = False
        self.checks: dict[str, Any] = {}

    def connect(self, env: Any) -> Client:
        if self.client is None:
            self.env = env
            host = (env.host or "127.0.0.1:50051").removeprefix("grpc://")
            token = env.parsed_options.token if env.parsed_options else ""
            self.client = Client(host, token or None, timeout=CALL_TIMEOUT_S)
            skus = env.parsed_options.skus if env.parsed_options else book.SKUS_DEFAULT
            self.zipf = book.Zipf(skus)
        return self.client

    def count(self, key: str, n: int = 1) -> None:
        self.outcomes[key] = self.outcomes.get(key, 0) + n

    def violation(self, key: str) -> None:
        self.violations[key] = self.violations.get(key, 0) + 1

    def mark(self, series: str) -> None:
        s = self.timeline.setdefault(series, [])
        b = int((time.monotonic() - self.t0) / TIMELINE_BIN_S)
        if b >= len(s):
            s.extend([0] * (b + 1 - len(s)))
        s[b] += 1

    def find_campaign(self) -> None:
        """Workers of a distributed run: the newest active bench flash sale."""
        if self.campaign is not None:
            return
        found = [c for c in self.client.campaigns()
                 if c.campaign_id.startswith(book.CAMPAIGN_PREFIX) and c.state == "active"]
        if not found:
            raise RuntimeError("no active bench flash sale: the master opens it at start")
        newest = max(found, key=lambda c: c.start_ms)
        self.campaign, self.quotas = newest.campaign_id, dict(newest.quotas)

    def tallies(self) -> dict[str, Any]:
        return {"outcomes": self.outcomes, "violations": self.violations,
                "timeline_bin_s": TIMELINE_BIN_S, "timeline": self.timeline,
                "granted": self.granted, "campaign": self.campaign, "quotas": self.quotas,
                "watch_delays_ms": self.watch_delays_ms,
                "watch_ack_delays_ms": self.watch_ack_delays_ms,
                "watch_decided_delays_ms": self.watch_decided_delays_ms,
                "watch_updates": self.watch_updates, "watch_missed": self.watch_missed,
                "checks": self.checks}


PROC = Process()


@events.test_start.add_listener
def _setup(environment: Any, **_kw: Any) -> None:
    PROC.t0 = time.monotonic()  # the timeline starts with the test
    if isinstance(environment.runner, WorkerRunner):
        return  # the master sets up; workers find what it made
    opts = environment.parsed_options
    client = PROC.connect(environment)
    if not book.has_catalogue(client):
        book.load_catalogue(client, opts.skus)
    if opts.scenario == "flash":
        cid = f"{book.CAMPAIGN_PREFIX}{time.time_ns()}"
        quotas = book.flash_quotas(opts.flash_quota, opts.flash_skus)
        # Start a second early: the window must be open when the server looks.
        book.start_flash_sale(client, cid, quotas, int(time.time() * 1000) - 1_000)
        PROC.campaign, PROC.quotas = cid, quotas


@events.test_stop.add_listener
def _finish(environment: Any, **_kw: Any) -> None:
    opts = environment.parsed_options
    if not isinstance(environment.runner, WorkerRunner) and PROC.client is not None:
        if not opts.no_check:
            report = PROC.client.check(timeout=CHECK_TIMEOUT_S)
            PROC.checks["consistency_ok"] = report.ok
            PROC.checks["drifts"] = list(report.drifts[:10])
        if PROC.campaign:
            PROC.checks["flash"] = flash_figures(PROC.client, PROC.campaign, PROC.quotas)
    if opts and opts.stockgate_out:
        path = opts.stockgate_out
        if isinstance(environment.runner, WorkerRunner):
            path = f"{path}.worker{environment.runner.worker_index}"
        Path(path).write_text(json.dumps({"scenario": opts.scenario, "pid": os.getpid(),
                                          **PROC.tallies()}, indent=1) + "\n")


def flash_figures(client: Client, campaign: str, quotas: dict[str, int]) -> dict[str, Any]:
    """Units sold from the campaign's pool, against its quota: what the server says."""
    c = client.campaign(campaign)
    pool = c.pool or f"campaign:{campaign}"
    left = sum(b.available for sku in quotas for b in client.stock(sku) if b.pool == pool)
    carved = sum(c.carved.values())
    quota = sum(quotas.values())
    sold = carved - left
    return {"campaign": campaign, "quota": quota, "carved": carved, "sold": sold,
            "left": left, "oversold": max(0, sold - quota), "sold_out": left == 0}


# ---------------------------------------------------------------------------- calls

class Calls:
    """The Client's calls, each timed and reported to locust as one request event."""

    def __init__(self, env: Any, client: Client) -> None:
        self.fire = env.events.request.fire
        self.client = client

    def report(self, kind: str, name: str, t0: float, size: int = 0,
                exc: BaseException | None = None) -> None:
        self.fire(request_type=kind, name=name, response_time=(time.perf_counter() - t0) * 1e3,
                  response_length=size, exception=exc, context={})

    def op(self, kind: str, fn: Any, *args: Any, **kw: Any) -> Any:
        """A reservation call: reported under its outcome's name; None on an error."""
        t0 = time.perf_counter()
        try:
            res = fn(*args, **kw)
        except StockgateError as exc:
            self.report(kind, type(exc).__name__, t0, exc=exc)
            PROC.count(f"{kind} {type(exc).__name__}")
            return None
        name = "replayed" if res.replayed else res.outcome.name
        self.report(kind, name, t0, sum(ln.granted for ln in res.lines))
        PROC.count(f"{kind} {name}")
        return res

    def read(self, kind: str, fn: Any, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn(*args, **kw)
        except StockgateError as exc:
            self.report(kind, type(exc).__name__, t0, exc=exc)
            return None
        self.report(kind, "OK", t0, len(out) if hasattr(out, "__len__") else 0)
        return out


def think(opts: Any) -> float:
    ms = opts.think_ms if opts else THINK_MS_DEFAULT
    return random.random() * ms / 1e3


class StockgateUser(User):
    """A user of the process's shared Client."""

    abstract = True
    scenarios: tuple[str, ...] = ()

    def wait_time(self) -> float:
        return think(self.environment.parsed_options)

    def on_start(self) -> None:
        self.client = PROC.connect(self.environment)
        self.calls = Calls(self.environment, self.client)
        self.rng = random.Random()

    def zipf_skus(self, zipf: book.Zipf, most: int) -> list[str]:
        n = self.rng.randint(1, most)
        return sorted({book.sku_name(zipf.index(self.rng)) for _ in range(n)})


# ---------------------------------------------------------------------------- checkout

class CheckoutUser(StockgateUser):
    """A storefront shopper: looks, adds to cart (a hold), pays (commit) or gives up
    (release), on web or app."""

    scenarios = ("checkout", "watch")
    weight = 10

    def on_start(self) -> None:
        super().on_start()
        self.holds: list[str] = []
        self.channel = self.rng.choice(book.ONLINE_CHANNELS)

    @task(70)
    def availability(self) -> None:
        skus = self.zipf_skus(PROC.zipf, AVAILABILITY_SKUS_MAX)
        self.calls.read("availability", self.client.availability, self.channel, skus)

    @task(20)
    def reserve(self) -> None:
        lines = [(s, self.rng.randint(1, LINE_QTY_MAX))
                 for s in self.zipf_skus(PROC.zipf, CHECKOUT_LINES_MAX)]
        rid = new_reservation_id()
        res = self.calls.op("reserve", self.client.reserve, rid, self.channel, lines,
                            ttl_ms=CHECKOUT_TTL_MS)
        if res is not None and res.ok:
            self.holds.append(rid)

    @task(7)
    def commit(self) -> None:
        if self.holds:
            self.calls.op("commit", self.client.commit, self.holds.pop(0))

    @task(3)
    def release(self) -> None:
        if self.holds:
            self.calls.op("release", self.client.release, self.holds.pop(0))


# ---------------------------------------------------------------------------- flash

class FlashUser(StockgateUser):
    """Buyers storming the campaign's SKUs, one unit per customer."""

    scenarios = ("flash",)
    wait_time = constant(0)

    def on_start(self) -> None:
        super().on_start()
        PROC.find_campaign()
        self.skus = list(PROC.quotas)
        self.buyers: list[tuple[str, str]] = []  # (customer, sku) granted
        self.lost: list[tuple[str, str, str]] = []  # granted answers to send again
        self.customers = 0
        runner = self.environment.runner
        self.tag = f"{PROC.campaign}-w{getattr(runner, 'worker_index', 0)}-u{id(self):x}-"

    def _reserve(self, rid: str, customer: str, sku: str) -> Any:
        """One attempt, retried with the same id after a transient error."""
        for attempt in range(TRANSIENT_RETRIES_MAX + 1):
            res = self.calls.op("reserve", self.client.reserve, rid, book.CHANNEL,
                                [(sku, 1)], customer=customer, campaign=PROC.campaign,
                                ttl_ms=FLASH_TTL_MS)
            if res is not None:
                return res
            if attempt < TRANSIENT_RETRIES_MAX:
                gevent.sleep(TRANSIENT_RETRY_S * (attempt + 1))
        return None

    @task
    def buy(self) -> None:
        rng = self.rng
        if self.lost:
            rid, customer, sku = self.lost.pop()
            res = self._reserve(rid, customer, sku)
            if res is not None and not res.replayed:
                PROC.violation("retry_not_replayed")
            return
        if self.buyers and rng.random() < REPEAT_CUSTOMER_SHARE:
            customer, sku = rng.choice(self.buyers)
            res = self._reserve(new_reservation_id(), customer, sku)
            if res is not None and res.ok:
                PROC.violation("customer_over_limit")
                PROC.granted += 1
            elif res is not None:
                PROC.mark("rejected")
            return
        self.customers += 1
        customer = f"{self.tag}{self.customers}"
        sku = rng.choice(self.skus)
        rid = new_reservation_id()
        res = self._reserve(rid, customer, sku)
        if res is None:
            return
        if res.ok:
            PROC.granted += 1
            PROC.mark("sold")
            self.buyers.append((customer, sku))
            if rng.random() < RETRY_SAME_ID_SHARE:
                self.lost.append((rid, customer, sku))
        else:
            PROC.mark("rejected")
            if res.outcome.name == "INSUFFICIENT_STOCK":
                PROC.sold_out.add(sku)
                self._stop_when_sold_out()

    def _stop_when_sold_out(self) -> None:
        """A lone process ends the run FLASH_TAIL_S after every SKU answered sold out."""
        runner = self.environment.runner
        if PROC.quitting or not isinstance(runner, LocalRunner):
            return
        if PROC.sold_out >= set(self.skus):
            PROC.quitting = True
            gevent.spawn_later(FLASH_TAIL_S, runner.quit)


# ---------------------------------------------------------------------------- pos

class PosUser(StockgateUser):
    """A store's till: a basket held and paid at once, from its own store's pools."""

    scenarios = ("pos",)
    weight = 3

    def on_start(self) -> None:
        super().on_start()
        self.channel = self.rng.choice(book.POS_CHANNELS)

    @task(8)
    def sell(self) -> None:
        basket = [(s, self.rng.randint(1, LINE_QTY_MAX))
                  for s in self.zipf_skus(PROC.store_zipf, POS_LINES_MAX)]
        rid = new_reservation_id()
        res = self.calls.op("reserve", self.client.reserve, rid, self.channel, basket,
                            ttl_ms=POS_TTL_MS)
        if res is not None and res.ok:
            self.calls.op("commit", self.client.commit, rid)

    @task(2)
    def shelf(self) -> None:
        skus = self.zipf_skus(PROC.store_zipf, AVAILABILITY_SKUS_MAX)
        self.calls.read("availability", self.client.availability, self.channel, skus)


class MarketplaceUser(StockgateUser):
    """An online shopper served from the stores' shared pools (ship from store)."""

    scenarios = ("pos",)
    weight = 1

    @task
    def order(self) -> None:
        sku = book.sku_name(PROC.store_zipf.index(self.rng))
        rid = new_reservation_id()
        res = self.calls.op("reserve", self.client.reserve, rid, book.MARKETPLACE,
                            [(sku, 1)], ttl_ms=MARKETPLACE_TTL_MS)
        if res is None or not res.ok:
            return
        roll = self.rng.random()
        if roll < MARKETPLACE_COMMIT_SHARE:
            self.calls.op("commit", self.client.commit, rid)
        elif roll < MARKETPLACE_COMMIT_SHARE + MARKETPLACE_RELEASE_SHARE:
            self.calls.op("release", self.client.release, rid)


# ---------------------------------------------------------------------------- watch

class WatchUser(StockgateUser):
    """A channel's subscriber to every availability change of `web`, which also probes
    how long a commit takes to reach it: it holds and commits a unit of its own probe
    SKU, and times the update that carries the commit, from the moment the server
    decided the commit (so the commit's durable write is included)."""

    scenarios = ("watch",)
    fixed_count = WATCHERS_DEFAULT
    wait_time = constant(PROBE_INTERVAL_S)

    def on_start(self) -> None:
        super().on_start()
        runner = self.environment.runner
        self.probe = (f"{book.PROBE_SKU_PREFIX}{os.getpid()}-"
                      f"{getattr(runner, 'worker_index', 0)}-{id(self):x}")
        self.client.receive(self.probe, book.WAREHOUSE, book.PROBE_UNITS, pool="online")
        self.seen = Event()
        self.since = float("inf")  # updates that carry the probe after this time count
        self.arrived = 0.0  # perf_counter() when the expected update came
        self.arrived_ms = 0.0  # and the wall clock then, ms since the epoch
        self.stream = self.client.watch(book.CHANNEL)
        self.watcher = gevent.spawn(self._watch)

    def on_stop(self) -> None:
        self.watcher.kill()
        try:
            self.stream.close()
        except ValueError:
            pass  # the generator was inside gRPC when its greenlet was killed

    def _watch(self) -> None:
        for update in self.stream:
            PROC.watch_updates += 1
            if self.probe in update.available and time.perf_counter() > self.since:
                self.arrived = time.perf_counter()
                self.arrived_ms = time.time() * 1e3
                self.since = float("inf")
                self.seen.set()

    def _expect_update(self) -> float:
        """From now on, the next update carrying the probe counts."""
        self.seen.clear()
        self.since = time.perf_counter()
        return self.since

    def _update_arrived(self) -> float | None:
        """When the expected update arrived (waiting for it up to PROBE_WAIT_S), or None."""
        if not self.seen.wait(PROBE_WAIT_S):
            self.since = float("inf")
            return None
        return self.arrived

    @task
    def probe_commit(self) -> None:
        rid = new_reservation_id()
        self._expect_update()  # before the call: the update may beat the answer
        held = self.calls.op("probe reserve", self.client.reserve, rid, book.CHANNEL,
                             [(self.probe, 1)], ttl_ms=CHECKOUT_TTL_MS)
        if held is None or not held.ok:
            self.since = float("inf")
            return
        # The hold's own update first, so that the next one is the commit's.
        self._update_arrived()
        t_commit = self._expect_update()
        done = self.calls.op("probe commit", self.client.commit, rid)
        t_ack = time.perf_counter()
        if done is None:
            return
        arrived = self._update_arrived()
        if arrived is None:
            PROC.watch_missed += 1
            self.calls.report("watch", "missed", t_commit,
                               exc=TimeoutError(f"no update within {PROBE_WAIT_S} s"))
            return
        # Three clocks on one commit: from the call (an upper bound: it includes the
        # request's way to the server), from the server's decision (resolved_ms, the
        # server's wall clock: exact to 1 ms when client and server share a clock), and
        # from the answer (a lower bound: the update may even come first).
        PROC.watch_delays_ms.append((arrived - t_commit) * 1e3)
        PROC.watch_ack_delays_ms.append((arrived - t_ack) * 1e3)
        resolved_ms = done.reservation.resolved_ms if done.reservation else None
        if resolved_ms:
            delay_ms = self.arrived_ms - resolved_ms  # below 0 only if the clocks differ
            PROC.watch_decided_delays_ms.append(delay_ms)
            self.environment.events.request.fire(
                request_type="watch", name="commit->update", response_time=max(0.0, delay_ms),
                response_length=0, exception=None, context={})
