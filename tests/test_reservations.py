"""Reservations: hold, split, all-or-nothing, commit, release, amend, replay, races."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stockgate.engine import Allocation, Engine, Outcome, ReserveRequest, State


def held_by_bucket(engine: Engine, sku: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(location, pool) -> (on_hand, held) of every bucket of a SKU."""
    return {(b.location, b.pool): (b.on_hand, b.held) for b in engine.stock(sku)}


def allocs(result) -> list[list[tuple[str, str, int]]]:
    return [[(a.location, a.pool, a.qty) for a in line.allocations] for line in result.lines]


@pytest.fixture
def shop(book: Engine) -> Engine:
    """SKU-1: WH-EAST online 3, WH-WEST online 8, STORE-12 offline 4, WH-EAST offline 2.
    SKU-2: WH-EAST online 10."""
    book.receive("SKU-1", "WH-EAST", 3, pool="online")
    book.receive("SKU-1", "WH-WEST", 8, pool="online")
    book.receive("SKU-1", "STORE-12", 4, pool="offline")
    book.receive("SKU-1", "WH-EAST", 2, pool="offline")
    book.receive("SKU-2", "WH-EAST", 10, pool="online")
    return book


# ------------------------------------------------------------------ one request at a time

@pytest.mark.parametrize("story, channel, lines, kw, outcome, expected_allocs", [
    ("reserve SKU-1 x2 for tmall -> OK from WH-EAST online",
     "tmall", [("SKU-1", 2)], {}, Outcome.OK, [[("WH-EAST", "online", 2)]]),
    ("reserve SKU-1 x5 for tmall -> OK split EAST 3 + WEST 2 (source order)",
     "tmall", [("SKU-1", 5)], {}, Outcome.OK,
     [[("WH-EAST", "online", 3), ("WH-WEST", "online", 2)]]),
    ("reserve SKU-1 x5 for tmall preferring WH-WEST -> OK all from WEST",
     "tmall", [("SKU-1", 5)], {"prefer_locations": ["WH-WEST"]}, Outcome.OK,
     [[("WH-WEST", "online", 5)]]),
    ("reserve SKU-1 x10 for tmall preferring WH-WEST -> WEST 8 then EAST 2",
     "tmall", [("SKU-1", 10)], {"prefer_locations": ["WH-WEST"]}, Outcome.OK,
     [[("WH-WEST", "online", 8), ("WH-EAST", "online", 2)]]),
    ("reserve SKU-1 x11 for tmall -> OK, every online unit",
     "tmall", [("SKU-1", 11)], {}, Outcome.OK,
     [[("WH-EAST", "online", 3), ("WH-WEST", "online", 8)]]),
    ("reserve SKU-1 x12 for tmall -> INSUFFICIENT_STOCK (offline units are not tmall's)",
     "tmall", [("SKU-1", 12)], {}, Outcome.INSUFFICIENT_STOCK, None),
    ("reserve SKU-1 x5 for pos-12 -> STORE-12 4 then WH-EAST offline 1",
     "pos-12", [("SKU-1", 5)], {}, Outcome.OK,
     [[("STORE-12", "offline", 4), ("WH-EAST", "offline", 1)]]),
    ("reserve SKU-1 x3 + SKU-2 x4 for tmall -> OK both lines",
     "tmall", [("SKU-1", 3), ("SKU-2", 4)], {}, Outcome.OK,
     [[("WH-EAST", "online", 3)], [("WH-EAST", "online", 4)]]),
    ("two lines of SKU-1 (x6 + x6) over the 11 online -> nothing held",
     "tmall", [("SKU-1", 6), ("SKU-1", 6)], {}, Outcome.INSUFFICIENT_STOCK, None),
    ("two lines of SKU-1 (x5 + x6) exactly the 11 online -> OK",
     "tmall", [("SKU-1", 5), ("SKU-1", 6)], {}, Outcome.OK,
     [[("WH-EAST", "online", 3), ("WH-WEST", "online", 2)], [("WH-WEST", "online", 6)]]),
    ("SKU-2 x4 ok but SKU-1 x20 short -> all or nothing: nothing held",
     "tmall", [("SKU-2", 4), ("SKU-1", 20)], {}, Outcome.INSUFFICIENT_STOCK, None),
    ("partial: SKU-2 x4 + SKU-1 x20 -> PARTIAL, SKU-1 gets the 11 online",
     "tmall", [("SKU-2", 4), ("SKU-1", 20)], {"partial": True}, Outcome.PARTIAL,
     [[("WH-EAST", "online", 4)], [("WH-EAST", "online", 3), ("WH-WEST", "online", 8)]]),
    ("partial: two lines of SKU-1 x6 + x6 -> PARTIAL 6 + 5",
     "tmall", [("SKU-1", 6), ("SKU-1", 6)], {"partial": True}, Outcome.PARTIAL,
     [[("WH-EAST", "online", 3), ("WH-WEST", "online", 3)], [("WH-WEST", "online", 5)]]),
    ("partial, but SKU-2 x1 for pos-12 finds nothing at all -> INSUFFICIENT_STOCK",
     "pos-12", [("SKU-2", 1)], {"partial": True}, Outcome.INSUFFICIENT_STOCK, None),
    ("unknown SKU-9 -> UNKNOWN_SKU, nothing held",
     "tmall", [("SKU-2", 1), ("SKU-9", 1)], {}, Outcome.UNKNOWN_SKU, None),
    ("partial with unknown SKU-9 -> PARTIAL, SKU-2 held",
     "tmall", [("SKU-2", 1), ("SKU-9", 1)], {"partial": True}, Outcome.PARTIAL,
     [[("WH-EAST", "online", 1)], []]),
    ("SKU-2 exists only at WH-EAST online: pos-12 cannot reach it -> INSUFFICIENT_STOCK",
     "pos-12", [("SKU-2", 1)], {}, Outcome.INSUFFICIENT_STOCK, None),
])
def test_reserve_scenarios(shop, story, channel, lines, kw, outcome, expected_allocs):
    before = {s: held_by_bucket(shop, s) for s in ("SKU-1", "SKU-2")}
    res = shop.reserve("R1", channel, lines, **kw)
    assert res.outcome == outcome, story
    if expected_allocs is None:
        assert res.reservation is None
        assert shop.reservation("R1") is None
        assert {s: held_by_bucket(shop, s) for s in ("SKU-1", "SKU-2")} == before
        assert all(line.granted == 0 for line in res.lines)
        return
    assert allocs(res) == expected_allocs
    assert res.reservation.state == State.HELD
    held = {}
    for line in res.lines:
        for a in line.allocations:
            held[(line.sku, a.location, a.pool)] = held.get(
                (line.sku, a.location, a.pool), 0) + a.qty
    for (sku, loc, pool), units in held.items():
        on_hand, h = held_by_bucket(shop, sku)[(loc, pool)]
        assert h == units
        assert on_hand == before[sku][(loc, pool)][0]


@pytest.mark.parametrize("story, lines, short", [
    ("SKU-2 x4 fine, SKU-1 x20 short -> only the SKU-1 line says INSUFFICIENT_STOCK",
     [("SKU-2", 4), ("SKU-1", 20)], "SKU-1"),
    ("SKU-1 x20 short first, SKU-2 x4 never tried -> only SKU-1 says INSUFFICIENT_STOCK",
     [("SKU-1", 20), ("SKU-2", 4)], "SKU-1"),
])
def test_line_outcomes_name_the_short_line(shop, story, lines, short):
    """Per-line outcomes tell the caller which line to fix; nothing is granted."""
    res = shop.reserve("R1", "tmall", lines)
    assert res.outcome == Outcome.INSUFFICIENT_STOCK
    assert [ln.granted for ln in res.lines] == [0, 0]
    got = {ln.sku: ln.outcome for ln in res.lines}
    assert got[short] == Outcome.INSUFFICIENT_STOCK
    assert [s for s, o in got.items() if o == Outcome.INSUFFICIENT_STOCK] == [short], story


def test_rejection_is_not_remembered(shop):
    """A rejection changes nothing and is not remembered: the same id succeeds later."""
    assert shop.reserve("R1", "tmall", [("SKU-2", 15)]).outcome == Outcome.INSUFFICIENT_STOCK
    shop.receive("SKU-2", "WH-EAST", 5, pool="online")
    res = shop.reserve("R1", "tmall", [("SKU-2", 15)])
    assert res.outcome == Outcome.OK and not res.replayed


def test_unknown_channel_is_not_found(shop):
    from stockgate.engine import NotFound
    with pytest.raises(NotFound):
        shop.reserve("R1", "nope", [("SKU-1", 1)])


# ------------------------------------------------------------------ 80 % online

def test_online_80_percent_and_stores_keep_their_20(book):
    """WH-EAST splits receipts online 80 / offline 20: tmall sells out at 80 and the
    store channel can still sell the 20."""
    assert book.receive("SKU-1", "WH-EAST", 100) == {"online": 80, "offline": 20}
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 80}
    assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 20}
    assert book.reserve("T1", "tmall", [("SKU-1", 80)]).outcome == Outcome.OK
    assert book.reserve("T2", "tmall", [("SKU-1", 1)]).outcome == Outcome.INSUFFICIENT_STOCK
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 0}
    assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 20}
    for i in range(20):
        assert book.reserve(f"P{i}", "pos-12", [("SKU-1", 1)]).outcome == Outcome.OK
    assert book.reserve("P20", "pos-12", [("SKU-1", 1)]).outcome == Outcome.INSUFFICIENT_STOCK
    assert held_by_bucket(book, "SKU-1") == {("WH-EAST", "online"): (80, 80),
                                             ("WH-EAST", "offline"): (20, 20)}


# ------------------------------------------------------------------ presale

def test_presale_allowance_only_for_presale_channels(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.set_presale_allowance("SKU-1", "WH-EAST", "online", 5)
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 10}
    assert book.availability("presale-shop", ["SKU-1"]) == {"SKU-1": 15}
    assert book.reserve("T1", "tmall", [("SKU-1", 11)]).outcome == Outcome.INSUFFICIENT_STOCK
    assert book.reserve("P1", "presale-shop", [("SKU-1", 12)]).outcome == Outcome.OK
    (b,) = book.stock("SKU-1")
    assert (b.on_hand, b.held, b.available, b.presale_units) == (10, 12, -2, 5)
    assert book.reserve("T2", "tmall", [("SKU-1", 1)]).outcome == Outcome.INSUFFICIENT_STOCK
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 0}
    assert book.availability("presale-shop", ["SKU-1"]) == {"SKU-1": 3}
    assert book.reserve("P2", "presale-shop", [("SKU-1", 4)]).outcome == \
        Outcome.INSUFFICIENT_STOCK
    assert book.reserve("P3", "presale-shop", [("SKU-1", 3)]).outcome == Outcome.OK
    assert book.availability("presale-shop", ["SKU-1"]) == {"SKU-1": 0}


# ------------------------------------------------------------------ commit and release

def test_full_commit_takes_units_out_of_on_hand(shop):
    shop.reserve("R1", "tmall", [("SKU-1", 5)])
    res = shop.commit("R1")
    assert res.outcome == Outcome.OK and not res.replayed
    assert res.reservation.state == State.COMMITTED
    assert res.reservation.committed == (("SKU-1", 5),)
    s = held_by_bucket(shop, "SKU-1")
    assert s[("WH-EAST", "online")] == (0, 0)
    assert s[("WH-WEST", "online")] == (6, 0)


@pytest.mark.parametrize("story, second, outcome, replayed", [
    ("commit R1 SKU-1 x2 again -> OK replayed", [("SKU-1", 2)], Outcome.OK, True),
    ("commit R1 SKU-1 x1 (different) -> NOT_HELD", [("SKU-1", 1)], Outcome.NOT_HELD, False),
    ("commit R1 in full (different) -> NOT_HELD", None, Outcome.NOT_HELD, False),
])
def test_partial_commit_returns_the_rest(shop, story, second, outcome, replayed):
    shop.reserve("R1", "tmall", [("SKU-1", 5), ("SKU-2", 3)])
    first = shop.commit("R1", [("SKU-1", 2)])
    assert first.outcome == Outcome.OK
    assert first.reservation.committed == (("SKU-1", 2),)
    # SKU-1 x2 left from WH-EAST online (first allocation); the rest came back.
    s1, s2 = held_by_bucket(shop, "SKU-1"), held_by_bucket(shop, "SKU-2")
    assert s1[("WH-EAST", "online")] == (1, 0)
    assert s1[("WH-WEST", "online")] == (8, 0)
    assert s2[("WH-EAST", "online")] == (10, 0)
    again = shop.commit("R1", second)
    assert (again.outcome, again.replayed) == (outcome, replayed), story
    assert again.reservation.state == State.COMMITTED
    assert held_by_bucket(shop, "SKU-1") == s1 and held_by_bucket(shop, "SKU-2") == s2


def test_partial_commit_split_lines_of_one_sku(shop):
    """Two lines of SKU-1 (3 + 4): committing 5 of SKU-1 takes the first line whole and 2
    of the second, and releases the other 2."""
    shop.reserve("R1", "tmall", [("SKU-1", 3), ("SKU-1", 4)])
    res = shop.commit("R1", [("SKU-1", 5)])
    assert res.outcome == Outcome.OK
    assert res.reservation.committed == (("SKU-1", 5),)
    s = held_by_bucket(shop, "SKU-1")
    assert s[("WH-EAST", "online")] == (0, 0)
    assert s[("WH-WEST", "online")] == (6, 0)


def test_commit_more_than_held_is_refused_and_changes_nothing(shop):
    from stockgate.engine import InvalidArgument
    shop.reserve("R1", "tmall", [("SKU-1", 2)])
    seq = shop.last_seq
    with pytest.raises(InvalidArgument) as ei:
        shop.commit("R1", [("SKU-1", 3)])
    assert ei.value.field == "lines.qty"
    with pytest.raises(InvalidArgument):
        shop.commit("R1", [("SKU-2", 1)])
    assert shop.reservation("R1").state == State.HELD
    assert held_by_bucket(shop, "SKU-1")[("WH-EAST", "online")] == (3, 2)
    assert shop.last_seq == seq


@pytest.mark.parametrize("story, first, then, outcome, replayed, state", [
    ("release R1, release R1 again -> OK replayed", "release", "release", Outcome.OK, True,
     State.RELEASED),
    ("release R1, then commit R1 -> NOT_HELD", "release", "commit", Outcome.NOT_HELD, False,
     State.RELEASED),
    ("commit R1, then release R1 -> NOT_HELD", "commit", "release", Outcome.NOT_HELD, False,
     State.COMMITTED),
    ("commit R1, commit R1 again -> OK replayed", "commit", "commit", Outcome.OK, True,
     State.COMMITTED),
    ("commit R1, then extend R1 -> NOT_HELD", "commit", "extend", Outcome.NOT_HELD, False,
     State.COMMITTED),
    ("release R1, then amend R1 -> NOT_HELD", "release", "amend", Outcome.NOT_HELD, False,
     State.RELEASED),
])
def test_lifecycle_table(shop, story, first, then, outcome, replayed, state):
    shop.reserve("R1", "tmall", [("SKU-2", 4)])
    calls = {
        "release": lambda: shop.release("R1"),
        "commit": lambda: shop.commit("R1"),
        "extend": lambda: shop.extend("R1", 60_000),
        "amend": lambda: shop.amend("R1", [("SKU-2", 1)]),
    }
    assert calls[first]().outcome == Outcome.OK
    snap = held_by_bucket(shop, "SKU-2")
    res = calls[then]()
    assert (res.outcome, res.replayed) == (outcome, replayed), story
    assert res.reservation.state == state
    assert held_by_bucket(shop, "SKU-2") == snap


def test_release_returns_units_to_the_buckets_they_came_from(shop):
    shop.reserve("R1", "tmall", [("SKU-1", 5)])
    shop.receive("SKU-1", "WH-EAST", 10, pool="online")  # now EAST could serve all 5
    shop.release("R1")
    s = held_by_bucket(shop, "SKU-1")
    assert s[("WH-EAST", "online")] == (13, 0)
    assert s[("WH-WEST", "online")] == (8, 0)


@pytest.mark.parametrize("call", ["commit", "release", "extend", "amend"])
def test_unknown_id_is_not_found(shop, call):
    fn = {"commit": lambda: shop.commit("NOPE"), "release": lambda: shop.release("NOPE"),
          "extend": lambda: shop.extend("NOPE", 5_000),
          "amend": lambda: shop.amend("NOPE", [("SKU-1", 1)])}[call]
    seq = shop.last_seq
    assert fn().outcome == Outcome.NOT_FOUND
    assert shop.last_seq == seq


# ------------------------------------------------------------------ amend

def test_amend_never_blocked_by_own_hold(book):
    book.receive("SKU-1", "WH-EAST", 6, pool="online")
    assert book.reserve("R1", "tmall", [("SKU-1", 5)]).outcome == Outcome.OK
    res = book.amend("R1", [("SKU-1", 6)])
    assert res.outcome == Outcome.OK
    assert book.reservation("R1").lines[0].granted == 6
    assert held_by_bucket(book, "SKU-1")[("WH-EAST", "online")] == (6, 6)
    res = book.amend("R1", [("SKU-1", 2)])
    assert res.outcome == Outcome.OK
    assert held_by_bucket(book, "SKU-1")[("WH-EAST", "online")] == (6, 2)
    assert book.reserve("R2", "tmall", [("SKU-1", 4)]).outcome == Outcome.OK


def test_failed_amend_leaves_the_old_hold_exactly(shop):
    shop.reserve("R1", "tmall", [("SKU-1", 5), ("SKU-2", 2)])
    shop.reserve("R2", "tmall", [("SKU-2", 7)])
    before = shop.reservation("R1")
    stock_before = {s: held_by_bucket(shop, s) for s in ("SKU-1", "SKU-2")}
    seq = shop.last_seq
    res = shop.amend("R1", [("SKU-1", 5), ("SKU-2", 4)])  # only 3 of SKU-2 reachable
    assert res.outcome == Outcome.INSUFFICIENT_STOCK
    assert shop.reservation("R1") == before
    assert {s: held_by_bucket(shop, s) for s in ("SKU-1", "SKU-2")} == stock_before
    assert shop.last_seq == seq
    # and the old hold is still live: R1 commits exactly its old lines
    assert shop.commit("R1").reservation.committed == (("SKU-1", 5), ("SKU-2", 2))


def test_amend_to_an_unknown_sku_keeps_the_old_hold(shop):
    shop.reserve("R1", "tmall", [("SKU-2", 2)])
    res = shop.amend("R1", [("SKU-9", 1)])
    assert res.outcome == Outcome.UNKNOWN_SKU
    assert shop.reservation("R1").lines[0].granted == 2
    assert held_by_bucket(shop, "SKU-2")[("WH-EAST", "online")] == (10, 2)


# ------------------------------------------------------------------ idempotency

def test_same_id_same_content_is_replayed_other_content_conflicts(shop):
    first = shop.reserve("R1", "tmall", [("SKU-1", 5)])
    again = shop.reserve("R1", "tmall", [("SKU-1", 5)])
    assert again.outcome == Outcome.OK and again.replayed
    assert allocs(again) == allocs(first)
    assert held_by_bucket(shop, "SKU-1")[("WH-EAST", "online")] == (3, 3)
    assert held_by_bucket(shop, "SKU-1")[("WH-WEST", "online")] == (8, 2)
    for other in ([("SKU-1", 4)], [("SKU-2", 5)]):
        assert shop.reserve("R1", "tmall", other).outcome == Outcome.ID_CONFLICT
    assert shop.reserve("R1", "pos-12", [("SKU-1", 5)]).outcome == Outcome.ID_CONFLICT
    assert shop.reserve("R1", "tmall", [("SKU-1", 5)], customer="c1").outcome == \
        Outcome.ID_CONFLICT
    assert held_by_bucket(shop, "SKU-1")[("WH-WEST", "online")] == (8, 2)


def test_replay_after_restart(book, open_engine):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    first = book.reserve("R1", "tmall", [("SKU-1", 4)], customer="alice")
    book.reserve("R2", "tmall", [("SKU-1", 3)])
    book.commit("R2", [("SKU-1", 1)])
    book.close()

    eng = open_engine()
    again = eng.reserve("R1", "tmall", [("SKU-1", 4)], customer="alice")
    assert again.outcome == Outcome.OK and again.replayed
    assert allocs(again) == allocs(first)
    assert again.reservation.state == State.HELD
    assert eng.reserve("R1", "tmall", [("SKU-1", 5)], customer="alice").outcome == \
        Outcome.ID_CONFLICT
    assert eng.reserve("R1", "tmall", [("SKU-1", 4)]).outcome == Outcome.ID_CONFLICT
    c = eng.commit("R2", [("SKU-1", 1)])
    assert c.outcome == Outcome.OK and c.replayed
    assert eng.commit("R2").outcome == Outcome.NOT_HELD
    # stock survived exactly: 10 - 1 committed, 4 held by R1
    assert held_by_bucket(eng, "SKU-1") == {("WH-EAST", "online"): (9, 4)}
    assert eng.check().ok


def test_same_id_twice_in_one_batch(shop):
    rs = shop.reserve_many([
        ReserveRequest("R1", "tmall", [("SKU-2", 3)]),
        ReserveRequest("R1", "tmall", [("SKU-2", 3)]),
        ReserveRequest("R1", "tmall", [("SKU-2", 4)]),
    ])
    assert [(r.outcome, r.replayed) for r in rs] == [
        (Outcome.OK, False), (Outcome.OK, True), (Outcome.ID_CONFLICT, False)]
    assert held_by_bucket(shop, "SKU-2")[("WH-EAST", "online")] == (10, 3)


def test_reserve_many_decides_in_order(shop):
    rs = shop.reserve_many([ReserveRequest(f"R{i}", "tmall", [("SKU-2", 3)])
                            for i in range(4)])
    assert [r.outcome for r in rs] == [Outcome.OK] * 3 + [Outcome.INSUFFICIENT_STOCK]


# ------------------------------------------------------------------ races

def test_last_unit_many_threads_exactly_one_wins(book):
    book.receive("HOT", "WH-EAST", 1, pool="online")
    n = 32
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def buy(i: int) -> None:
        barrier.wait()
        results[i] = book.reserve(f"T{i}", "tmall", [("HOT", 1)])

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.OK) == 1
    assert outcomes.count(Outcome.INSUFFICIENT_STOCK) == n - 1
    assert held_by_bucket(book, "HOT") == {("WH-EAST", "online"): (1, 1)}
    assert book.live_reservations() == 1


def test_hot_sku_many_threads_never_oversell(book):
    book.receive("HOT", "WH-EAST", 100, pool="online")
    book.receive("HOT", "WH-WEST", 50, pool="online")
    n, per = 8, 40
    barrier = threading.Barrier(n)
    granted = [0] * n

    def buy(i: int) -> None:
        barrier.wait()
        reqs = [ReserveRequest(f"T{i}-{k}", "tmall", [("HOT", 1 + k % 2)])
                for k in range(per)]
        for k in range(0, per, 10):
            for r in book.reserve_many(reqs[k:k + 10]):
                granted[i] += sum(ln.granted for ln in r.lines) if r.ok else 0

    threads = [threading.Thread(target=buy, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) <= 150
    assert sum(granted) >= 149  # demand (480) far exceeds stock: at most one unit stranded
    s = held_by_bucket(book, "HOT")
    assert s[("WH-EAST", "online")][1] + s[("WH-WEST", "online")][1] == sum(granted)
    assert all(b.available >= 0 for b in book.stock("HOT"))
    assert book.check().ok


def test_last_unit_many_coroutines_exactly_one_wins(book):
    book.receive("HOT", "WH-EAST", 1, pool="online")

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(
            book.aio.reserve(f"A{i}", "tmall", [("HOT", 1)]) for i in range(200))), 30)

    results = asyncio.run(main())
    outcomes = [r.outcome for r in results]
    assert outcomes.count(Outcome.OK) == 1
    assert outcomes.count(Outcome.INSUFFICIENT_STOCK) == 199
    assert held_by_bucket(book, "HOT") == {("WH-EAST", "online"): (1, 1)}
    # and the winner's hold is durable: the journal has exactly one reservation
    assert [e["kind"] for e in book.journal()].count("reserved") == 1


def test_aio_lifecycle(book):
    book.receive("SKU-1", "WH-EAST", 5, pool="online")

    async def main():
        r = await book.aio.reserve("A1", "tmall", [("SKU-1", 3)])
        a = await book.aio.amend("A1", [("SKU-1", 4)])
        x = await book.aio.extend("A1", 60_000)
        c = await book.aio.commit("A1", [("SKU-1", 1)])
        rel = await book.aio.release("A1")
        many = await book.aio.reserve_many([ReserveRequest("A2", "tmall", [("SKU-1", 4)])])
        return r, a, x, c, rel, many

    r, a, x, c, rel, many = asyncio.run(asyncio.wait_for(main(), 30))
    assert [r.outcome, a.outcome, x.outcome, c.outcome] == [Outcome.OK] * 4
    assert rel.outcome == Outcome.NOT_HELD
    assert many[0].outcome == Outcome.OK
    assert held_by_bucket(book, "SKU-1") == {("WH-EAST", "online"): (4, 4)}


def test_allocation_reports_location_and_pool(shop):
    res = shop.reserve("R1", "tmall", [("SKU-1", 4)])
    assert res.lines[0].allocations == (Allocation("WH-EAST", "online", 3),
                                        Allocation("WH-WEST", "online", 1))
    assert res.reservation.units == 4


def test_amend_to_the_same_lines_is_a_replay(shop):
    shop.reserve("R1", "tmall", [("SKU-2", 2)])
    seq = shop.last_seq
    res = shop.amend("R1", [("SKU-2", 2)])
    assert res.outcome == Outcome.OK and res.replayed
    assert shop.last_seq == seq


def test_extend_survives_restart(shop, clock, open_engine):
    shop.reserve("R1", "tmall", [("SKU-2", 2)], ttl_ms=1_000)
    shop.extend("R1", 10_000)
    shop.close()
    clock.advance(5_000)
    eng = open_engine()
    assert eng.reservation("R1").state == State.HELD
    clock.advance(5_000)
    assert eng.reservation("R1").state == State.EXPIRED


def test_async_durability_keeps_what_close_wrote(open_engine, clock):
    eng = open_engine(durability="async")
    eng.add_location("WH-EAST")
    eng.set_channel("tmall", [("WH-EAST", "online")])
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    outcomes = [eng.reserve(f"A{i}", "tmall", [("SKU-1", 1)]).outcome for i in range(12)]
    assert outcomes == [Outcome.OK] * 10 + [Outcome.INSUFFICIENT_STOCK] * 2
    eng.close()
    again = open_engine()
    assert again.live_reservations() == 10
    assert [(b.on_hand, b.held) for b in again.stock("SKU-1")] == [(10, 10)]
    assert again.reserve("A3", "tmall", [("SKU-1", 1)]).replayed
    assert again.check().ok


def test_calls_after_close_raise_engine_closed(shop):
    from stockgate.engine import EngineClosed
    shop.close()
    shop.close()  # idempotent
    for call in (lambda: shop.reserve("R9", "tmall", [("SKU-1", 1)]),
                 lambda: shop.receive("SKU-1", "WH-EAST", 1, pool="online"),
                 lambda: shop.stock("SKU-1"),
                 lambda: shop.availability("tmall", ["SKU-1"])):
        with pytest.raises(EngineClosed):
            call()


def test_cancelled_coroutine_may_still_hold_retry_learns_it(book):
    """A caller cancelled while its reserve is in flight learns the outcome by retrying
    the id: the retry holds the unit exactly once (whether the first attempt was decided
    before the cancel, and is replayed, or not, and is decided now)."""
    book.receive("HOT", "WH-EAST", 1, pool="online")

    async def main():
        task = asyncio.ensure_future(book.aio.reserve("A1", "tmall", [("HOT", 1)]))
        await asyncio.sleep(0)  # the coroutine runs up to its first await: decided
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return await asyncio.wait_for(book.aio.reserve("A1", "tmall", [("HOT", 1)]), 10)

    retry = asyncio.run(asyncio.wait_for(main(), 30))
    assert retry.outcome == Outcome.OK
    assert held_by_bucket(book, "HOT") == {("WH-EAST", "online"): (1, 1)}
    assert book.reserve("A2", "tmall", [("HOT", 1)]).outcome == Outcome.INSUFFICIENT_STOCK


def test_mixed_threads_keep_the_books(book, clock):
    """Threads reserve, amend, commit, release and extend on two hot SKUs while the clock
    moves and holds expire; afterwards every bucket's held equals its live holds."""
    book.receive("HOT", "WH-EAST", 200, pool="online")
    book.receive("HOT", "WH-WEST", 100, pool="online")
    book.receive("WARM", "WH-EAST", 150, pool="online")
    n = 6
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            barrier.wait()
            for k in range(40):
                rid = f"W{w}-{k}"
                r = book.reserve(rid, "tmall", [("HOT", 1 + k % 4), ("WARM", 1 + k % 2)],
                                 ttl_ms=1_000 + 1_000 * (k % 3), partial=bool(k % 5 == 0))
                if not r.ok:
                    continue
                step = (w + k) % 5
                if step == 0:
                    book.commit(rid)
                elif step == 1:
                    book.release(rid)
                elif step == 2:
                    book.amend(rid, [("HOT", 2)])
                elif step == 3:  # ship one unit of a line that got something
                    sku = next(ln.sku for ln in r.lines if ln.granted)
                    book.commit(rid, [(sku, 1)])
                else:
                    book.extend(rid, 5_000)
                if w == 0 and k % 10 == 9:
                    clock.advance(1_000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rep = book.check()
    assert rep.ok, rep.drifts
    for sku in ("HOT", "WARM"):
        assert all(b.available >= 0 and b.on_hand >= 0 for b in book.stock(sku))


def test_one_bad_checkout_in_a_burst_fails_alone(book, clock):
    """Concurrent aio reserves are decided together; a malformed or unknown one gets its
    own error and the others their own outcomes."""
    from stockgate.engine import InvalidArgument, NotFound

    book.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        return await asyncio.wait_for(asyncio.gather(
            book.aio.reserve("G1", "tmall", [("SKU-1", 2)]),
            book.aio.reserve("G2", "tmall", [("SKU-1", 0)]),
            book.aio.reserve("G3", "jd", [("SKU-1", 1)]),
            book.aio.reserve("G1", "tmall", [("SKU-1", 2)]),
            book.aio.reserve("G1", "tmall", [("SKU-1", 3)]),
            book.aio.reserve("G4", "tmall", [("SKU-1", 9)]),
            book.aio.reserve("G5", "tmall", [("SKU-1", 8)]),
            return_exceptions=True), 30)

    g1, g2, g3, g1_again, g1_other, g4, g5 = asyncio.run(main())
    assert g1.outcome == Outcome.OK and not g1.replayed
    assert isinstance(g2, InvalidArgument) and g2.field == "lines[0].qty"
    assert isinstance(g3, NotFound) and g3.field == "channel"
    assert g1_again.outcome == Outcome.OK and g1_again.replayed
    assert g1_other.outcome == Outcome.ID_CONFLICT
    assert g4.outcome == Outcome.INSUFFICIENT_STOCK  # 8 left after G1
    assert g5.outcome == Outcome.OK
    assert held_by_bucket(book, "SKU-1") == {("WH-EAST", "online"): (10, 10)}
    assert book.check().ok


def test_only_ok_and_partial_count_as_granted():
    assert {o for o in Outcome if o.granted} == {Outcome.OK, Outcome.PARTIAL}
