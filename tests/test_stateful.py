"""The engine against a reference model, over random sequences of every operation.

A hypothesis RuleBasedStateMachine drives a real Engine (real LMDB in a temp dir, fsync
durability, ManualClock) and the plain-Python model in tests/model.py with the same calls,
and after every step checks that they agree exactly: every bucket's counters, what each
channel (and campaign) can sell, every reservation in the id pool, every campaign, the
transfers in transit, the conservation totals, and engine.check() finding no drift.

The domain is kept tiny (3 locations, 4 SKUs, quantities 1..8, 10 reservation ids, 3
transfer ids, 2 campaign ids, 2 customers) so that shortages, splits across sources,
duplicate SKUs in one request, replays, id conflicts, limits and campaign windows happen
often.

Restart and crash. "restart" closes the engine and opens a new one on the same directory.
"crash" must lose exactly what a power cut would lose, and nothing acknowledged. In fsync
mode every answered call is durable before it is answered, so the only work a crash may
lose is work nobody was told about: decisions staged by the engine on its own (expiries
and campaign starts/ends run by a read at a new clock value). The crash step therefore
(optionally) advances the clock, makes a read that stages those sweeps without waiting,
and at once takes a consistent copy of the LMDB environment (lmdb's env.copy(): the last
committed transaction, which with sync=True is exactly what survives power loss; a plain
file copy could tear if the writer thread commits during the copy). The copy may or may
not contain the sweep's batch. A new engine is opened on the copy (the old one is closed
and its directory abandoned) and must agree with the model exactly: lost sweeps are
redone at the same clock value, every acknowledged call is there. What this does not
cover: durability "async" (where acknowledged work may be lost, so the model cannot know
the state), torn pages and fsync lies (see the crash tests).

The model decides expiries and campaign windows in time order when the clock jumps over
several of them (see Model.advance_to).
"""

from __future__ import annotations

import collections
import os
import shutil
import tempfile

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from model import Expect, Line, Model, ModelError, Res

from stockgate.engine import (
    Conflict,
    Engine,
    InvalidArgument,
    ManualClock,
    NotFound,
    Outcome,
    Reservation,
    ReserveRequest,
    Result,
    State,
)

T0 = 1_700_000_000_000
LOCATIONS = ["WH-A", "WH-B", "STORE"]
POOLS = ["online", "offline", "shared"]
SKUS = ["S1", "S2", "S3", "S4"]
RIDS = [f"R{i}" for i in range(10)]
TIDS = ["T1", "T2", "T3"]
CIDS = ["F1", "F2"]
CUSTOMERS = ["c1", "c2"]
RULES = [  # (location, shares, sku override); STORE has no rule
    ("WH-A", {"online": 70, "offline": 20, "shared": 10}, None),
    ("WH-A", {"online": 50, "offline": 50}, "S2"),
    ("WH-B", {"online": 60, "offline": 40}, None),
]
CHANNELS = {  # name -> (sources, allow_presale)
    "web": ([("WH-A", "online"), ("WH-B", "online"), ("WH-A", "shared")], False),
    "pos": ([("STORE", "offline"), ("WH-A", "offline"), ("WH-A", "shared")], False),
    "pre": ([("WH-B", "online"), ("WH-A", "online")], True),
}

INITIAL_STOCK = [  # (sku, location, qty, pool or None for the rule)
    ("S1", "WH-A", 8, None), ("S1", "WH-B", 5, None), ("S1", "STORE", 3, "offline"),
    ("S2", "WH-A", 7, None), ("S2", "WH-B", 4, None),
    ("S3", "WH-A", 3, None), ("S3", "STORE", 2, "offline"),
]

STEPS = [0]
SEEN: collections.Counter[str] = collections.Counter()  # what the run exercised


def note(what: str) -> None:
    SEEN[what] += 1
    event(what)


skus = st.sampled_from(SKUS)
qtys = st.integers(1, 8)
locations = st.sampled_from(LOCATIONS)
pools = st.sampled_from(POOLS)
rids = st.sampled_from(RIDS)
ttls = st.sampled_from([1_000, 3_000, 10_000, 60_000])
lines_st = st.lists(st.tuples(skus, qtys), min_size=1, max_size=3)
prefers = st.sampled_from([(), ("WH-B",), ("STORE",), ("WH-B", "WH-A"), ("WH-A", "STORE")])
customers = st.sampled_from(CUSTOMERS + [None])


def _kind(exc: BaseException) -> str:
    if isinstance(exc, InvalidArgument):
        return "invalid"
    if isinstance(exc, Conflict):
        return "conflict"
    if isinstance(exc, NotFound):
        return "notfound"
    raise exc


def _alloc_view(allocs) -> tuple:
    return tuple((a.location, a.pool, a.qty) for a in allocs)


def eng_lines(lines) -> tuple:
    return tuple((ln.sku, ln.qty, ln.granted, Outcome(ln.outcome), _alloc_view(ln.allocations))
                 for ln in lines)


def model_lines(lines: list[Line]) -> tuple:
    return tuple((ln.sku, ln.qty, ln.granted, ln.outcome, tuple(ln.allocs)) for ln in lines)


def eng_res(r: Reservation) -> tuple:
    # Reservation.committed may list a SKU with 0 units (a partial line granted nothing);
    # the model lists only SKUs with units.
    return (r.reservation_id, r.channel, State(r.state), eng_lines(r.lines), r.customer,
            r.campaign, r.created_ms, r.expires_ms, r.resolved_ms,
            {s: u for s, u in r.committed if u})


def model_res(r: Res) -> tuple:
    return (r.rid, r.channel, r.state, model_lines(r.lines), r.customer, r.campaign,
            r.created_ms, r.expires_ms, r.resolved_ms, dict(r.committed))


class EngineVsModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="stockgate-stateful-")
        self.path = os.path.join(self.tmp, "db0")
        self.generation = 0
        self.clock = ManualClock(T0)
        self.engine = Engine(self.path, clock=self.clock)
        self.model = Model(T0)
        for loc in LOCATIONS:
            self.engine.add_location(loc, "store" if loc == "STORE" else "warehouse")
            self.model.add_location(loc)
        for loc, shares, sku in RULES:
            self.engine.set_allocation_rule(loc, shares, sku=sku)
            self.model.set_rule(loc, shares, sku)
        for name, (sources, presale) in CHANNELS.items():
            self.engine.set_channel(name, sources, allow_presale=presale)
            self.model.set_channel(name, sources, presale)
        for sku, loc, qty, pool in INITIAL_STOCK:  # S4 starts unknown
            assert self.engine.receive(sku, loc, qty, pool=pool) == self.model.receive(
                sku, loc, qty, pool)

    def teardown(self) -> None:
        self.engine.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ plumbing

    def both(self, engine_call, model_call):
        """Run one call on both; they must raise the same kind of error or both answer."""
        try:
            expected, m_err = model_call(), None
        except ModelError as exc:
            expected, m_err = None, exc.kind
        try:
            got, e_err = engine_call(), None
        except (InvalidArgument, Conflict, NotFound) as exc:
            got, e_err = None, _kind(exc)
        assert e_err == m_err, f"engine raised {e_err}, model {m_err}"
        return got, expected

    def check_result(self, got: Result | None, exp: Expect | None, what: str) -> None:
        if exp is None:
            note(f"{what}: error")
            return
        note(f"{what}: {exp.outcome.name}{' replayed' if exp.replayed else ''}")
        assert got.outcome == exp.outcome, (got, exp.outcome)
        assert got.replayed == exp.replayed, got
        if exp.res is None:
            assert got.reservation is None, got
        else:
            assert got.reservation is not None, got
            assert eng_res(got.reservation) == model_res(exp.res)
        if exp.lines is not None:
            assert eng_lines(got.lines) == model_lines(exp.lines)
        elif not exp.outcome.granted and got.lines:
            assert all(ln.granted == 0 for ln in got.lines), got

    def pick_rid(self, data, state: State | None = None) -> str:
        """Mostly an id the model knows (in `state`, if given), sometimes any id."""
        known = sorted(r.rid for r in self.model.res.values()
                       if state is None or r.state == state)
        if known and data.draw(st.integers(0, 9)) < 8:
            return data.draw(st.sampled_from(known))
        return data.draw(rids)

    def advance(self, ms: int) -> None:
        self.clock.advance(ms)
        self.model.advance_to(self.clock.now_ms())

    # ------------------------------------------------------------------ movements

    @rule(sku=skus, loc=locations, qty=qtys, pool=st.none() | pools)
    def receive(self, sku, loc, qty, pool):
        got, exp = self.both(lambda: self.engine.receive(sku, loc, qty, pool=pool),
                             lambda: self.model.receive(sku, loc, qty, pool))
        assert got == exp

    @rule(sku=skus, loc=locations, pool=pools, on_hand=st.integers(0, 10))
    def adjust(self, sku, loc, pool, on_hand):
        got, exp = self.both(lambda: self.engine.adjust(sku, loc, pool, on_hand),
                             lambda: self.model.adjust(sku, loc, pool, on_hand))
        assert got == exp

    @rule(sku=skus, loc=locations, src=pools, dst=pools, qty=qtys)
    def move(self, sku, loc, src, dst, qty):
        self.both(lambda: self.engine.move(sku, loc, src, dst, qty),
                  lambda: self.model.move(sku, loc, src, dst, qty))

    @rule(tid=st.sampled_from(TIDS), sku=skus, fl=locations, fp=pools, tl=locations,
          tp=pools, qty=qtys)
    def transfer_out(self, tid, sku, fl, fp, tl, tp, qty):
        got, exp = self.both(
            lambda: self.engine.transfer_out(tid, sku, fl, fp, tl, tp, qty),
            lambda: self.model.transfer_out(tid, sku, fl, fp, tl, tp, qty))
        assert got == exp

    @rule(data=st.data())
    def transfer_out_again(self, data):
        """Repeat an earlier transfer_out exactly: its state, nothing moves."""
        if not self.model.transfers:
            return
        tid = data.draw(st.sampled_from(sorted(self.model.transfers)))
        body = self.model.transfers[tid][:6]
        got, exp = self.both(lambda: self.engine.transfer_out(tid, *body),
                             lambda: self.model.transfer_out(tid, *body))
        assert got == exp

    @rule(tid=st.sampled_from(TIDS))
    def transfer_in(self, tid):
        got, exp = self.both(lambda: self.engine.transfer_in(tid),
                             lambda: self.model.transfer_in(tid))
        assert got == exp

    @rule(sku=skus, loc=st.sampled_from(["WH-A", "WH-B"]), units=st.integers(0, 4))
    def presale_allowance(self, sku, loc, units):
        self.both(lambda: self.engine.set_presale_allowance(sku, loc, "online", units),
                  lambda: self.model.set_presale_allowance(sku, loc, "online", units))

    # ------------------------------------------------------------------ reservations

    def _reserve(self, what: str, **call) -> None:
        got, exp = self.both(lambda: self.engine.reserve(**call),
                             lambda: self.model.reserve(**call))
        self.check_result(got, exp, what)

    @rule(rid=rids, channel=st.sampled_from(sorted(CHANNELS)), lines=lines_st,
          partial=st.booleans(), prefer=prefers, customer=customers, ttl=ttls)
    def reserve(self, rid, channel, lines, partial, prefer, customer, ttl):
        self._reserve("reserve", reservation_id=rid, channel=channel, lines=lines,
                      customer=customer, ttl_ms=ttl, partial=partial, prefer_locations=prefer)

    @rule(reqs=st.lists(st.fixed_dictionaries(dict(
        reservation_id=rids, channel=st.sampled_from(sorted(CHANNELS)), lines=lines_st,
        partial=st.booleans(), prefer_locations=prefers, customer=customers, ttl_ms=ttls)),
        min_size=2, max_size=4))
    def reserve_many(self, reqs):
        """One batch into the core must answer as the same calls one by one would,
        ids repeated within the batch included."""
        got = self.engine.reserve_many([ReserveRequest(**r) for r in reqs])
        for r, g in zip(reqs, got):
            self.check_result(g, self.model.reserve(**r), "reserve_many")

    @rule(sku=skus, a=qtys, b=qtys, rid=rids, channel=st.sampled_from(sorted(CHANNELS)),
          partial=st.booleans(), prefer=prefers, ttl=ttls)
    def reserve_one_sku_twice(self, sku, a, b, rid, channel, partial, prefer, ttl):
        self._reserve("reserve", reservation_id=rid, channel=channel, lines=[(sku, a), (sku, b)],
                      ttl_ms=ttl, partial=partial, prefer_locations=prefer)

    @rule(data=st.data(), rid=rids, partial=st.booleans(),
          customer=st.sampled_from(CUSTOMERS * 3 + [None]), ttl=ttls)
    def reserve_in_campaign(self, data, rid, partial, customer, ttl):
        cids = sorted(self.model.campaigns)
        if cids and data.draw(st.integers(0, 9)) < 9:
            c = self.model.campaigns[data.draw(st.sampled_from(cids))]
            cid = c.cid
            channel = data.draw(st.sampled_from(sorted(c.channels))
                                | st.sampled_from(sorted(CHANNELS)))
            line = st.tuples(st.sampled_from(sorted(c.quotas)) | skus, st.integers(1, 2))
            lines = data.draw(st.lists(line, min_size=1, max_size=2))
        else:
            cid = data.draw(st.sampled_from(CIDS + ["F9"]))
            channel = data.draw(st.sampled_from(sorted(CHANNELS)))
            lines = data.draw(lines_st)
        self._reserve("campaign reserve", reservation_id=rid, channel=channel, lines=lines,
                      customer=customer, campaign=cid, ttl_ms=ttl, partial=partial)

    @precondition(lambda self: self.model.res)
    @rule(data=st.data())
    def reserve_replay(self, data):
        """The same id and content again: the first outcome, replayed=True."""
        rid = data.draw(st.sampled_from(sorted(self.model.res)))
        self._reserve("replay", **self.model.res[rid].call)

    @precondition(lambda self: self.model.res)
    @rule(data=st.data(), how=st.sampled_from(["partial", "qty", "customer", "line", "channel"]))
    def reserve_conflict(self, data, how):
        """The same id with other content: ID_CONFLICT, nothing changes."""
        rid = data.draw(st.sampled_from(sorted(self.model.res)))
        call = dict(self.model.res[rid].call)
        lines = list(call["lines"])
        if how == "partial":
            call["partial"] = not call["partial"]
        elif how == "qty":
            lines[0] = (lines[0][0], lines[0][1] % 8 + 1)
        elif how == "customer":
            call["customer"] = "c1" if call["customer"] != "c1" else "c2"
        elif how == "line":
            lines.append(("S1", 1))
        else:
            call["channel"] = "pos" if call["channel"] != "pos" else "web"
        call["lines"] = lines
        self._reserve("conflict", **call)

    @rule(data=st.data())
    def commit(self, data):
        rid = self.pick_rid(data, State.HELD)
        got, exp = self.both(lambda: self.engine.commit(rid), lambda: self.model.commit(rid))
        self.check_result(got, exp, "commit")

    @rule(data=st.data())
    def commit_partial(self, data):
        rid = self.pick_rid(data, State.HELD)
        r = self.model.res.get(rid)
        held: dict[str, int] = {}
        for ln in (r.lines if r is not None else ()):
            held[ln.sku] = held.get(ln.sku, 0) + ln.granted
        lines = [(sku, data.draw(st.integers(0, n + 1))) for sku, n in held.items()]
        lines = [(s, q) for s, q in lines if q > 0] or [(data.draw(skus), data.draw(qtys))]
        if len(lines) == 1 and data.draw(st.booleans()) and lines[0][1] > 1:
            half = lines[0][1] // 2  # the same SKU twice in one commit
            lines = [(lines[0][0], half), (lines[0][0], lines[0][1] - half)]
        got, exp = self.both(lambda: self.engine.commit(rid, lines),
                             lambda: self.model.commit(rid, lines))
        self.check_result(got, exp, "partial commit")

    @precondition(lambda self: any(r.state == State.COMMITTED for r in self.model.res.values()))
    @rule(data=st.data())
    def commit_again(self, data):
        """The same commit of a committed reservation: OK, replayed."""
        rid = data.draw(st.sampled_from(sorted(
            r.rid for r in self.model.res.values() if r.state == State.COMMITTED)))
        req = self.model.res[rid].commit_req
        lines = None if req is None else [list(x) for x in req]
        got, exp = self.both(lambda: self.engine.commit(rid, lines),
                             lambda: self.model.commit(rid, lines))
        assert exp.replayed
        self.check_result(got, exp, "commit again")

    @rule(data=st.data())
    def release(self, data):
        rid = self.pick_rid(data)
        got, exp = self.both(lambda: self.engine.release(rid), lambda: self.model.release(rid))
        self.check_result(got, exp, "release")

    @rule(data=st.data(), ttl=ttls)
    def extend(self, data, ttl):
        rid = self.pick_rid(data, State.HELD)
        got, exp = self.both(lambda: self.engine.extend(rid, ttl),
                             lambda: self.model.extend(rid, ttl))
        self.check_result(got, exp, "extend")

    @rule(data=st.data(), lines=lines_st, same=st.booleans())
    def amend(self, data, lines, same):
        rid = self.pick_rid(data, State.HELD)
        r = self.model.res.get(rid)
        if same and r is not None:
            lines = [(ln.sku, ln.qty) for ln in r.lines]  # unchanged lines: a replay
        got, exp = self.both(lambda: self.engine.amend(rid, lines),
                             lambda: self.model.amend(rid, lines))
        self.check_result(got, exp, "amend")

    # ------------------------------------------------------------------ time, campaigns

    @rule(ms=st.sampled_from([1, 250, 999, 1_000, 4_000, 15_000]))
    def advance_clock(self, ms):
        self.advance(ms)

    @initialize(cid=st.sampled_from(CIDS),
                channels=st.lists(st.sampled_from(sorted(CHANNELS)), min_size=1, max_size=2,
                                  unique=True),
                start=st.sampled_from([-500, -500, 500, 2_500]),  # mostly open already
                duration=st.sampled_from([5_000, 60_000, 60_000]),
                loc=st.sampled_from(["WH-A", "WH-B"]),
                source_pool=st.sampled_from(["online", "shared"]),
                quotas=st.dictionaries(st.sampled_from(SKUS[:3]), qtys, min_size=1, max_size=2),
                limit=st.integers(0, 3))
    def first_campaign(self, **kw):
        # Stock the source first, so that the sale has something to sell and the
        # per-customer limits and sell-outs are exercised, not only refusals.
        for sku in kw["quotas"]:
            self.receive(sku, kw["loc"], 8, kw["source_pool"])
        self.create_campaign(**kw)

    @rule(cid=st.sampled_from(CIDS),
          channels=st.lists(st.sampled_from(sorted(CHANNELS)), min_size=1, max_size=2,
                            unique=True),
          start=st.integers(-3, 10).map(lambda x: x * 1_000 + 500),
          duration=st.sampled_from([1_000, 5_000, 30_000, 60_000]),
          loc=st.sampled_from(["WH-A", "WH-B"]), source_pool=st.sampled_from(["online", "shared"]),
          quotas=st.dictionaries(skus, qtys, min_size=1, max_size=2),
          limit=st.integers(0, 3))
    def create_campaign(self, cid, channels, start, duration, loc, source_pool, quotas, limit):
        now = self.clock.now_ms()
        kw = dict(channels=channels, start_ms=now + start, end_ms=now + start + duration,
                  location=loc, source_pool=source_pool, quotas=quotas, customer_limit=limit)
        got, exp = self.both(lambda: self.engine.create_campaign(cid, **kw),
                             lambda: self.model.create_campaign(cid, **kw))
        if exp is not None:
            self.check_campaign(cid)

    @rule(cid=st.sampled_from(CIDS))
    def start_campaign(self, cid):
        self.both(lambda: self.engine.start_campaign(cid), lambda: self.model.start_campaign(cid))

    @rule(cid=st.sampled_from(CIDS))
    def stop_campaign(self, cid):
        self.both(lambda: self.engine.stop_campaign(cid), lambda: self.model.stop_campaign(cid))

    # ------------------------------------------------------------------ restart, crash

    @rule()
    def restart(self):
        note("restart")
        self.engine.close()
        self.engine = Engine(self.path, clock=self.clock)

    @rule(ms=st.sampled_from([0, 1_000, 15_000]))
    def crash(self, ms):
        note("crash")
        if ms:
            self.advance(ms)
        self.engine.stock("S1")  # stages due sweeps without waiting for them
        self.generation += 1
        copy = os.path.join(self.tmp, f"db{self.generation}")
        os.makedirs(copy)
        self.engine._store.env.copy(copy)  # what a power cut would leave, taken at once
        self.engine.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.path = copy
        self.engine = Engine(self.path, clock=self.clock)

    # ------------------------------------------------------------------ invariants

    def check_campaign(self, cid):
        c = self.engine.campaign(cid)
        m = self.model.campaigns.get(cid)
        if m is None:
            assert c is None
            return
        assert (c.state, c.start_ms, c.end_ms, c.channels, c.location, c.source_pool, c.quotas,
                c.customer_limit, c.carved, c.returned) == (
            m.state, m.start_ms, m.end_ms, m.channels, m.location, m.source_pool, m.quotas,
            m.customer_limit, m.carved, m.returned), cid

    @invariant()
    def books_agree(self):
        STEPS[0] += 1
        eng, model = self.engine, self.model
        for r in model.res.values():
            note(f"reservation state {r.state.name}")
        for c in model.campaigns.values():
            note(f"campaign {c.state}")
        assert eng.clock.now_ms() == model.now
        # Every bucket's counters, exactly.
        for sku in SKUS:
            got = {(b.location, b.pool): (b.on_hand, b.held, b.available, b.presale_units)
                   for b in eng.stock(sku)}
            want = {(loc, pool): (b.on_hand, b.held, b.available, -b.floor)
                    for (s, loc, pool), b in model.buckets.items() if s == sku}
            assert got == want, sku
        # No bucket below its floor unless an admin action (stocktake, smaller presale
        # allowance) put it there.
        for key, b in model.buckets.items():
            if b.available >= b.floor:
                model.below_floor_by_admin.discard(key)
            else:
                assert key in model.below_floor_by_admin, (key, b)
        # What each channel, and each campaign, can sell.
        for ch in CHANNELS:
            assert eng.availability(ch, SKUS) == {s: model.availability(ch, s) for s in SKUS}, ch
            for cid in CIDS:
                if cid not in model.campaigns:
                    with pytest.raises(NotFound):
                        eng.availability(ch, SKUS, campaign=cid)
                    continue
                assert eng.availability(ch, SKUS, campaign=cid) == {
                    s: model.availability(ch, s, cid) for s in SKUS}, (ch, cid)
        # Every acknowledged reservation, in its state; no trace of refused ones.
        for rid in RIDS:
            r = eng.reservation(rid)
            m = model.res.get(rid)
            if m is None:
                assert r is None, rid
            else:
                assert r is not None, rid
                assert eng_res(r) == model_res(m), rid
        for cid in CIDS:
            self.check_campaign(cid)
        transit = model.in_transit()
        assert eng.in_transit() == transit
        # Conservation, in the model and in the engine's own books.
        on_hand = sum(b.on_hand for b in model.buckets.values())
        assert model.received - model.committed + model.variance == on_hand + sum(transit.values())
        report = eng.check()
        assert report.ok, report.drifts
        t = report.totals
        assert (t["received"], t["committed"], t["adjusted"], t["on_hand"], t["in_transit"]) == (
            model.received, -model.committed, model.variance, on_hand, sum(transit.values()))


SETTINGS = settings(
    max_examples=int(os.environ.get("STOCKGATE_STATEFUL_EXAMPLES", "100")),
    stateful_step_count=int(os.environ.get("STOCKGATE_STATEFUL_STEPS", "50")),
    deadline=None,
)


@pytest.mark.timeout(600)
def test_engine_matches_model():
    STEPS[0] = 0
    SEEN.clear()
    run_state_machine_as_test(EngineVsModel, settings=SETTINGS)
    print(f"\nstateful: {STEPS[0]} steps checked")
    if os.environ.get("STOCKGATE_STATEFUL_STATS"):
        for what, n in sorted(SEEN.items()):
            print(f"  {n:7d}  {what}")
