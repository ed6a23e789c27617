"""Holds expire by themselves when their TTL passes; nobody ever sees an expired hold."""

from __future__ import annotations

import pytest

from stockgate.engine import Engine, Outcome, State


def held(engine: Engine, sku: str = "SKU-1") -> int:
    return sum(b.held for b in engine.stock(sku))


@pytest.fixture
def shop(book: Engine) -> Engine:
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    return book


def test_staggered_expiry(shop, clock):
    """R1 x1 ttl 1 s, R2 x2 ttl 2 s, R3 x3 ttl 3 s: each read sees exactly the live ones."""
    for i, ttl in enumerate((1_000, 2_000, 3_000), start=1):
        assert shop.reserve(f"R{i}", "tmall", [("SKU-1", i)], ttl_ms=ttl).outcome == \
            Outcome.OK
    table = [
        # (advance ms, held, tmall availability, states of R1..R3)
        (999, 6, 4, ("HELD", "HELD", "HELD")),
        (1, 5, 5, ("EXPIRED", "HELD", "HELD")),
        (999, 5, 5, ("EXPIRED", "HELD", "HELD")),
        (1, 3, 7, ("EXPIRED", "EXPIRED", "HELD")),
        (1_000, 0, 10, ("EXPIRED", "EXPIRED", "EXPIRED")),
    ]
    for advance, want_held, avail, states in table:
        clock.advance(advance)
        # a read right after the clock moved: no sweeper had to run first
        assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": avail}
        assert held(shop) == want_held
        assert tuple(shop.reservation(f"R{i}").state.name for i in (1, 2, 3)) == states


@pytest.mark.parametrize("story, read", [
    ("availability after the TTL counts the expired units as free", "availability"),
    ("stock after the TTL shows held 0", "stock"),
    ("reservation after the TTL says EXPIRED", "reservation"),
    ("a reserve after the TTL can take the expired units", "reserve"),
])
def test_a_read_never_counts_an_expired_hold(shop, clock, story, read):
    shop.reserve("R1", "tmall", [("SKU-1", 10)], ttl_ms=5_000)
    clock.advance(5_000)
    if read == "availability":
        assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": 10}
    elif read == "stock":
        assert [(b.on_hand, b.held, b.available) for b in shop.stock("SKU-1")] == [(10, 0, 10)]
    elif read == "reservation":
        assert shop.reservation("R1").state == State.EXPIRED
    else:
        assert shop.reserve("R2", "tmall", [("SKU-1", 10)]).outcome == Outcome.OK


@pytest.mark.parametrize("story, action, outcome", [
    ("commit after expiry -> NOT_HELD", "commit", Outcome.NOT_HELD),
    ("release after expiry -> NOT_HELD", "release", Outcome.NOT_HELD),
    ("extend after expiry -> NOT_HELD", "extend", Outcome.NOT_HELD),
    ("amend after expiry -> NOT_HELD", "amend", Outcome.NOT_HELD),
])
def test_after_expiry(shop, clock, story, action, outcome):
    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    clock.advance(1_000)
    res = {"commit": lambda: shop.commit("R1"), "release": lambda: shop.release("R1"),
           "extend": lambda: shop.extend("R1", 5_000),
           "amend": lambda: shop.amend("R1", [("SKU-1", 1)])}[action]()
    assert res.outcome == outcome, story
    assert res.reservation.state == State.EXPIRED
    assert held(shop) == 0
    assert shop.stock("SKU-1")[0].on_hand == 10


def test_extend_moves_the_deadline(shop, clock):
    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    clock.advance(900)
    res = shop.extend("R1", 2_000)
    assert res.outcome == Outcome.OK
    assert res.reservation.expires_ms == clock.now_ms() + 2_000
    clock.advance(1_999)  # past the first deadline, before the second
    assert shop.reservation("R1").state == State.HELD
    assert held(shop) == 4
    clock.advance(1)
    assert shop.reservation("R1").state == State.EXPIRED
    assert held(shop) == 0


def test_replay_of_an_expired_reservation_does_not_hold_again(shop, clock):
    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    clock.advance(1_000)
    res = shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    assert res.replayed and res.reservation.state == State.EXPIRED
    assert held(shop) == 0


def test_expired_event_in_journal(shop, clock):
    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    clock.advance(1_000)
    shop.flush()
    assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": 10}
    shop.flush()
    evs = [e for e in shop.journal() if e["kind"] == "expired"]
    assert len(evs) == 1
    assert evs[0]["id"] == "R1" and evs[0]["t"] == clock.now_ms()
    assert [(shop.bucket_key(b), d) for b, d in evs[0]["held"]] == [
        (("SKU-1", "WH-EAST", "online"), -4)]


def test_expiry_across_restart(shop, clock, open_engine):
    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    shop.reserve("R2", "tmall", [("SKU-1", 5)], ttl_ms=60_000)
    shop.close()
    clock.advance(1_000)
    eng = open_engine()
    assert eng.availability("tmall", ["SKU-1"]) == {"SKU-1": 5}
    assert eng.reservation("R1").state == State.EXPIRED
    assert eng.reservation("R2").state == State.HELD
    assert eng.check().ok


def test_expiry_of_a_split_hold_returns_each_bucket(book, clock):
    book.receive("SKU-1", "WH-EAST", 2, pool="online")
    book.receive("SKU-1", "WH-WEST", 3, pool="online")
    book.reserve("R1", "tmall", [("SKU-1", 5)], ttl_ms=1_000)
    assert [b.available for b in book.stock("SKU-1")] == [0, 0]
    clock.advance(1_000)
    assert {(b.location, b.available, b.held) for b in book.stock("SKU-1")} == {
        ("WH-EAST", 2, 0), ("WH-WEST", 3, 0)}


def test_the_sweeper_expires_without_any_call(shop, clock):
    """The writer looks for due expiries at least every SWEEP_INTERVAL_MS_MAX: the
    journal gets the expiry although no engine call is made after the clock moved."""
    import time

    shop.reserve("R1", "tmall", [("SKU-1", 4)], ttl_ms=1_000)
    seq = shop.last_seq
    clock.advance(1_000)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and shop.last_seq == seq:
        time.sleep(0.01)  # real time for the writer thread to tick
    shop.flush()
    assert any(e["kind"] == "expired" for e in shop.journal(seq + 1))
