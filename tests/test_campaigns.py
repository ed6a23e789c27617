"""Campaigns: quota carved at start, per-customer limits, window, return of the unsold rest."""

from __future__ import annotations

import pytest

from stockgate.engine import Conflict, Engine, InvalidArgument, NotFound, Outcome, State

START = 10_000  # ms after the clock's start
END = 60_000

LATER_MS = 2_000_000_000_000  # a campaign window still to come on the test clock


def buckets(engine: Engine, sku: str = "SKU-1") -> dict[str, tuple[int, int]]:
    """pool -> (on_hand, held) of the SKU's WH-EAST buckets."""
    return {b.pool: (b.on_hand, b.held) for b in engine.stock(sku) if b.location == "WH-EAST"}


def kinds(engine: Engine, from_seq: int = 1) -> list[str]:
    engine.flush()
    return [e["kind"] for e in engine.journal(from_seq)]


@pytest.fixture
def sale(book: Engine, clock):
    """WH-EAST online holds 100 SKU-1 and 5 SKU-2; campaign FS1 for tmall carves SKU-1 x10
    and SKU-2 x20 (more than there is), limit 3 per customer and SKU, window
    [now+10 s, now+60 s)."""
    book.receive("SKU-1", "WH-EAST", 100, pool="online")
    book.receive("SKU-2", "WH-EAST", 5, pool="online")
    t0 = clock.now_ms()
    book.create_campaign("FS1", channels=["tmall"], start_ms=t0 + START, end_ms=t0 + END,
                         location="WH-EAST", source_pool="online",
                         quotas={"SKU-1": 10, "SKU-2": 20}, customer_limit=3)
    book.t0 = t0
    return book


def start(sale, clock):
    """Move the clock to the window's start; a read runs the campaign's timer."""
    clock.set(sale.t0 + START)
    assert sale.campaign("FS1").state == "active"


def res(engine, rid, qty, customer, *, sku="SKU-1", channel="tmall", **kw):
    return engine.reserve(rid, channel, [(sku, qty)], campaign="FS1", customer=customer, **kw)


@pytest.mark.parametrize("story, at_ms, channel, campaign, outcome", [
    ("before the window -> CAMPAIGN_NOT_ACTIVE", START - 1, "tmall", "FS1",
     Outcome.CAMPAIGN_NOT_ACTIVE),
    ("at start_ms -> OK", START, "tmall", "FS1", Outcome.OK),
    ("one ms before end_ms -> OK", END - 1, "tmall", "FS1", Outcome.OK),
    ("at end_ms -> CAMPAIGN_NOT_ACTIVE", END, "tmall", "FS1", Outcome.CAMPAIGN_NOT_ACTIVE),
    ("pos-12 is not in FS1 -> CHANNEL_NOT_IN_CAMPAIGN", START, "pos-12", "FS1",
     Outcome.CHANNEL_NOT_IN_CAMPAIGN),
    ("campaign FS9 never created -> UNKNOWN_CAMPAIGN", START, "tmall", "FS9",
     Outcome.UNKNOWN_CAMPAIGN),
])
def test_window_and_channels(sale, clock, story, at_ms, channel, campaign, outcome):
    clock.set(sale.t0 + at_ms)
    r = sale.reserve("R1", channel, [("SKU-1", 1)], campaign=campaign, customer="c1")
    assert r.outcome == outcome, story
    assert [ln.outcome for ln in r.lines] == [Outcome.OK if outcome == Outcome.OK else outcome]
    if outcome != Outcome.OK:
        assert sale.reservation("R1") is None


def test_carve_at_start(sale, clock):
    assert sale.campaign("FS1").state == "scheduled"
    assert buckets(sale) == {"online": (100, 0)}
    start(sale, clock)
    c = sale.campaign("FS1")
    assert c.state == "active"
    assert c.carved == {"SKU-1": 10, "SKU-2": 5}  # SKU-2: only 5 were there
    assert buckets(sale)["online"] == (90, 0)
    assert buckets(sale)["campaign:FS1"] == (10, 0)
    assert buckets(sale, "SKU-2")["online"] == (0, 0)
    # tmall without the campaign sees 90; in the campaign 10
    assert sale.availability("tmall", ["SKU-1"]) == {"SKU-1": 90}
    assert sale.availability("tmall", ["SKU-1"], campaign="FS1") == {"SKU-1": 10}
    assert sale.availability("pos-12", ["SKU-1"], campaign="FS1") == {"SKU-1": 0}


def test_quota_sold_out_exactly(sale, clock):
    start(sale, clock)
    seq = sale.last_seq
    outcomes = [res(sale, f"R{i}", 1, f"cust-{i}").outcome for i in range(12)]
    assert outcomes == [Outcome.OK] * 10 + [Outcome.INSUFFICIENT_STOCK] * 2
    assert buckets(sale)["campaign:FS1"] == (10, 10)
    assert buckets(sale)["online"] == (90, 0)  # the campaign never dips into the source
    assert kinds(sale, seq + 1).count("campaign_sold_out") == 1
    ev = [e for e in sale.journal(seq + 1) if e["kind"] == "campaign_sold_out"][0]
    assert (ev["campaign"], ev["sku"], ev["available"]) == ("FS1", "SKU-1", 0)


@pytest.mark.parametrize("story, steps", [
    ("c1 x2 then x1 -> both OK, then x1 more -> CUSTOMER_LIMIT",
     [(2, "c1", Outcome.OK), (1, "c1", Outcome.OK), (1, "c1", Outcome.CUSTOMER_LIMIT)]),
    ("c1 x2 then x2 -> CUSTOMER_LIMIT (all or nothing); c2 unaffected",
     [(2, "c1", Outcome.OK), (2, "c1", Outcome.CUSTOMER_LIMIT), (3, "c2", Outcome.OK)]),
    ("c1 x4 at once -> CUSTOMER_LIMIT", [(4, "c1", Outcome.CUSTOMER_LIMIT)]),
])
def test_per_customer_limit_across_reservations(sale, clock, story, steps):
    start(sale, clock)
    for i, (qty, cust, outcome) in enumerate(steps):
        assert res(sale, f"R{i}", qty, cust).outcome == outcome, story


def test_customer_limit_is_per_sku(sale, clock):
    start(sale, clock)
    assert res(sale, "R1", 3, "c1").outcome == Outcome.OK
    assert res(sale, "R2", 3, "c1", sku="SKU-2").outcome == Outcome.OK
    assert res(sale, "R3", 1, "c1").outcome == Outcome.CUSTOMER_LIMIT


def test_customer_limit_partial_grants_what_is_left(sale, clock):
    start(sale, clock)
    assert res(sale, "R1", 2, "c1").outcome == Outcome.OK
    r = res(sale, "R2", 3, "c1", partial=True)
    assert r.outcome == Outcome.PARTIAL
    assert (r.lines[0].granted, r.lines[0].outcome) == (1, Outcome.CUSTOMER_LIMIT)


@pytest.mark.parametrize("story, end_first, expect_ok", [
    ("release gives the allowance back", "release", True),
    ("expiry gives the allowance back", "expire", True),
    ("commit keeps counting against the limit", "commit", False),
])
def test_allowance_after_resolution(sale, clock, story, end_first, expect_ok):
    start(sale, clock)
    assert res(sale, "R1", 3, "c1", ttl_ms=1_000).outcome == Outcome.OK
    if end_first == "release":
        sale.release("R1")
    elif end_first == "expire":
        clock.advance(1_000)
    else:
        sale.commit("R1")
    r = res(sale, "R2", 3, "c1")
    assert (r.outcome == Outcome.OK) is expect_ok, story


def test_limit_survives_restart(sale, clock, open_engine):
    start(sale, clock)
    assert res(sale, "R1", 2, "c1").outcome == Outcome.OK
    assert res(sale, "R2", 1, "c2").outcome == Outcome.OK
    sale.commit("R2")
    sale.close()
    eng = open_engine()
    assert res(eng, "R3", 2, "c1").outcome == Outcome.CUSTOMER_LIMIT
    assert res(eng, "R4", 1, "c1").outcome == Outcome.OK
    assert res(eng, "R5", 3, "c2").outcome == Outcome.CUSTOMER_LIMIT
    assert res(eng, "R6", 2, "c2").outcome == Outcome.OK
    assert eng.check().ok


def test_customer_required_when_campaign_has_a_limit(sale, clock):
    start(sale, clock)
    seq = sale.last_seq
    with pytest.raises(InvalidArgument) as ei:
        sale.reserve("R1", "tmall", [("SKU-1", 1)], campaign="FS1")
    assert ei.value.field == "customer"
    assert sale.last_seq == seq and buckets(sale)["campaign:FS1"] == (10, 0)


def test_sku_outside_the_campaign_is_unknown(sale, clock):
    sale.receive("SKU-3", "WH-EAST", 10, pool="online")
    start(sale, clock)
    r = res(sale, "R1", 1, "c1", sku="SKU-3")
    assert r.outcome == Outcome.UNKNOWN_SKU


def test_unsold_quota_returns_at_the_end(sale, clock):
    start(sale, clock)
    assert res(sale, "R1", 3, "c1").outcome == Outcome.OK
    assert res(sale, "R2", 2, "c2").outcome == Outcome.OK
    assert res(sale, "R3", 1, "c3", ttl_ms=120_000).outcome == Outcome.OK
    sale.commit("R1")
    seq = sale.last_seq
    clock.set(sale.t0 + END)
    c = sale.campaign("FS1")
    assert c.state == "ended"
    assert c.returned == {"SKU-1": 4, "SKU-2": 5}
    # 10 carved: 3 sold, 3 still held, 4 returned to online (90 + 4)
    assert buckets(sale)["online"] == (94, 0)
    assert buckets(sale)["campaign:FS1"] == (3, 3)
    assert buckets(sale, "SKU-2")["online"] == (5, 0)
    assert res(sale, "R4", 1, "c4").outcome == Outcome.CAMPAIGN_NOT_ACTIVE
    ended = [e for e in sale.journal(seq + 1) if e["kind"] == "campaign_ended"]
    assert len(ended) == 1 and ended[0]["reason"] == "ended"
    assert ended[0]["returned"] == {"SKU-1": 4, "SKU-2": 5}
    # held units come back to the source when released or expired after the end
    sale.release("R2")
    assert buckets(sale)["online"] == (96, 0)
    assert sale.campaign("FS1").returned["SKU-1"] == 6
    clock.set(sale.t0 + START + 120_000)
    assert buckets(sale)["online"] == (97, 0)
    assert buckets(sale)["campaign:FS1"] == (0, 0)
    assert sale.campaign("FS1").returned["SKU-1"] == 7
    assert sale.availability("tmall", ["SKU-1"]) == {"SKU-1": 97}
    assert sale.check().ok


def test_hold_committed_after_the_end_leaves_for_good(sale, clock):
    start(sale, clock)
    res(sale, "R1", 3, "c1")
    clock.set(sale.t0 + END)
    assert sale.commit("R1").outcome == Outcome.OK
    assert buckets(sale)["campaign:FS1"] == (0, 0)
    assert buckets(sale)["online"] == (97, 0)
    assert sale.check().ok


def test_return_after_end_survives_restart(sale, clock, open_engine):
    start(sale, clock)
    res(sale, "R1", 3, "c1")
    clock.set(sale.t0 + END)
    assert buckets(sale)["online"] == (97, 0)
    sale.close()
    eng = open_engine()
    eng.release("R1")
    assert buckets(eng)["online"] == (100, 0)
    assert buckets(eng)["campaign:FS1"] == (0, 0)
    assert eng.check().ok


def test_stop_campaign_returns_now(sale, clock):
    start(sale, clock)
    res(sale, "R1", 2, "c1")
    c = sale.stop_campaign("FS1")
    assert c.state == "ended" and c.returned == {"SKU-1": 8, "SKU-2": 5}
    assert res(sale, "R2", 1, "c2").outcome == Outcome.CAMPAIGN_NOT_ACTIVE
    assert buckets(sale)["online"] == (98, 0)
    ev = [e for e in sale.journal() if e["kind"] == "campaign_ended"][-1]
    assert ev["reason"] == "stopped"


def test_stop_a_scheduled_campaign_never_carves(sale, clock):
    sale.stop_campaign("FS1")
    clock.set(sale.t0 + START)
    assert sale.campaign("FS1").state == "ended"
    assert buckets(sale)["online"] == (100, 0)
    assert res(sale, "R1", 1, "c1").outcome == Outcome.CAMPAIGN_NOT_ACTIVE


def test_start_campaign_early(sale, clock):
    c = sale.start_campaign("FS1")
    assert c.state == "active" and c.carved["SKU-1"] == 10
    assert c.start_ms == clock.now_ms()
    assert res(sale, "R1", 1, "c1").outcome == Outcome.OK
    clock.set(sale.t0 + START)  # the scheduled start passes: no second carve
    assert buckets(sale)["online"] == (90, 0)


def test_campaign_window_open_at_creation_starts_at_once(book, clock):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    t = clock.now_ms()
    c = book.create_campaign("NOW", channels=["tmall"], start_ms=t - 1, end_ms=t + 1_000,
                             location="WH-EAST", source_pool="online", quotas={"SKU-1": 4})
    assert c.state == "active" and c.carved == {"SKU-1": 4}
    r = book.reserve("R1", "tmall", [("SKU-1", 4)], campaign="NOW")  # no limit: no customer
    assert r.outcome == Outcome.OK


@pytest.mark.parametrize("story, kwargs, exc, field", [
    ("duplicate id -> Conflict", {"campaign_id": "FS1"}, Conflict, "campaign_id"),
    ("unknown channel -> NotFound", {"channels": ["tmall", "nope"]}, NotFound, "channels[1]"),
    ("unknown location -> NotFound", {"location": "WH-NOPE"}, NotFound, "location"),
    ("source is a campaign pool -> InvalidArgument", {"source_pool": "campaign:X"},
     InvalidArgument, "source_pool"),
    ("end before start -> InvalidArgument", {"end_ms": 5}, InvalidArgument, "end_ms"),
    ("zero quota -> InvalidArgument", {"quotas": {"SKU-1": 0}}, InvalidArgument,
     "quotas[SKU-1]"),
    ("no quotas -> InvalidArgument", {"quotas": {}}, InvalidArgument, "quotas"),
    ("no channels -> InvalidArgument", {"channels": []}, InvalidArgument, "channels"),
])
def test_create_campaign_refusals(sale, story, kwargs, exc, field):
    args = dict(campaign_id="FS2", channels=["tmall"], start_ms=LATER_MS, end_ms=LATER_MS + 10,
                location="WH-EAST", source_pool="online", quotas={"SKU-1": 1})
    args.update(kwargs)
    seq = sale.last_seq
    with pytest.raises(exc) as ei:
        sale.create_campaign(args.pop("campaign_id"), **args)
    assert ei.value.field == field, story
    assert sale.last_seq == seq


def test_many_customers_race_for_the_quota(sale, clock):
    import threading

    start(sale, clock)
    n = 16
    barrier = threading.Barrier(n)
    got = [0] * n

    def buy(i):
        barrier.wait()
        for k in range(3):
            r = res(sale, f"R{i}-{k}", 1, f"c{i}")
            if r.ok:
                got[i] += 1

    ts = [threading.Thread(target=buy, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sum(got) == 10
    assert max(got) <= 3
    assert buckets(sale)["campaign:FS1"] == (10, 10)
    assert sale.check().ok


def test_campaign_reservation_state_after_end(sale, clock):
    start(sale, clock)
    res(sale, "R1", 1, "c1", ttl_ms=1_000)
    clock.set(sale.t0 + END)
    assert sale.reservation("R1").state == State.EXPIRED


def test_replay_keeps_the_customer_limit_line_outcome(sale, clock, open_engine):
    """A partial grant cut by the customer limit replays with the same line outcome,
    in the same process and after a restart."""
    start(sale, clock)
    first = res(sale, "R1", 5, "c1", partial=True)
    assert first.outcome == Outcome.PARTIAL
    assert [(ln.granted, ln.outcome) for ln in first.lines] == [(3, Outcome.CUSTOMER_LIMIT)]
    again = res(sale, "R1", 5, "c1", partial=True)
    assert again.replayed and again.outcome == Outcome.PARTIAL
    assert [(ln.granted, ln.outcome) for ln in again.lines] == [(3, Outcome.CUSTOMER_LIMIT)]
    sale.close()
    eng = open_engine()
    after = res(eng, "R1", 5, "c1", partial=True)
    assert after.replayed and after.outcome == Outcome.PARTIAL
    assert [(ln.granted, ln.outcome) for ln in after.lines] == [(3, Outcome.CUSTOMER_LIMIT)]


def test_amend_within_the_customer_limit(sale, clock):
    """The holder's own allowance counts as free for an amend: 3 -> 2 -> 3 stays within
    the limit of 3; 4 does not, and the failed amend keeps the hold of 3."""
    start(sale, clock)
    assert res(sale, "R1", 3, "c1").outcome == Outcome.OK
    assert sale.amend("R1", [("SKU-1", 2)]).outcome == Outcome.OK
    assert sale.amend("R1", [("SKU-1", 3)]).outcome == Outcome.OK
    r = sale.amend("R1", [("SKU-1", 4)])
    assert r.outcome == Outcome.CUSTOMER_LIMIT
    assert sale.reservation("R1").lines[0].granted == 3
    assert res(sale, "R2", 1, "c1").outcome == Outcome.CUSTOMER_LIMIT
    assert buckets(sale)["campaign:FS1"] == (10, 3)
    assert sale.check().ok


def test_campaign_window_passed_while_closed(sale, clock, open_engine):
    """Closed across the whole window: on reopening the campaign starts and ends at once,
    carving and returning its quota, and the books still balance."""
    sale.close()
    clock.set(sale.t0 + END + 1)
    eng = open_engine()
    c = eng.campaign("FS1")
    assert c.state == "ended" and c.carved == c.returned == {"SKU-1": 10, "SKU-2": 5}
    assert buckets(eng)["online"] == (100, 0)
    assert eng.check().ok
