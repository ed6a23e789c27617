"""Queries (availability, stock, reservation) and the journal: dense seqs, alerts."""

from __future__ import annotations

import pytest

from stockgate.engine import Engine, InvalidArgument, NotFound


def events(engine: Engine, from_seq: int = 1, kind: str | None = None) -> list[dict]:
    engine.flush()
    evs = engine.journal(from_seq)
    return [e for e in evs if kind is None or e["kind"] == kind]


def busy(engine: Engine) -> None:
    engine.receive("SKU-1", "WH-EAST", 20)
    engine.receive("SKU-1", "WH-WEST", 10)
    engine.reserve("R1", "tmall", [("SKU-1", 5)])
    engine.reserve("R2", "tmall", [("SKU-1", 30)])  # refused: no event
    engine.commit("R1", [("SKU-1", 2)])
    engine.reserve("R3", "pos-12", [("SKU-1", 1)])
    engine.release("R3")


# ------------------------------------------------------------------ queries

def test_availability_per_channel(book):
    book.receive("SKU-1", "WH-EAST", 10)   # online 8, offline 2
    book.receive("SKU-1", "WH-WEST", 5)    # online 4, offline 1
    book.receive("SKU-1", "STORE-12", 3)   # offline 3
    assert book.availability("tmall", ["SKU-1", "SKU-404"]) == {"SKU-1": 12, "SKU-404": 0}
    assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 5}
    assert book.availability("tmall", ["SKU-1"], prefer_locations=["WH-WEST"]) == \
        {"SKU-1": 12}
    book.reserve("R1", "tmall", [("SKU-1", 9)])
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 3}
    assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 5}
    with pytest.raises(NotFound):
        book.availability("jd", ["SKU-1"])


def test_stock_lists_every_bucket(book):
    book.receive("SKU-1", "WH-EAST", 10)
    book.reserve("R1", "tmall", [("SKU-1", 3)])
    book.set_safety_stock(2, sku="SKU-1", location="WH-EAST", pool="online")
    got = {(b.location, b.pool): (b.on_hand, b.held, b.available, b.safety_stock)
           for b in book.stock("SKU-1")}
    assert got == {("WH-EAST", "online"): (8, 3, 5, 2), ("WH-EAST", "offline"): (2, 0, 2, 0)}
    assert book.stock("SKU-404") == []


def test_reservation_query(book):
    book.receive("SKU-1", "WH-EAST", 10)
    assert book.reservation("R1") is None
    book.reserve("R1", "tmall", [("SKU-1", 3)], customer="alice", ttl_ms=5_000)
    r = book.reservation("R1")
    assert (r.channel, r.customer, r.units, r.state.name) == ("tmall", "alice", 3, "HELD")
    assert r.expires_ms - r.created_ms == 5_000
    assert book.live_reservations() == 1


# ------------------------------------------------------------------ journal

def test_journal_seqs_are_dense_and_increasing(book):
    busy(book)
    evs = events(book)
    seqs = [e["seq"] for e in evs]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == book.last_seq
    ts = [e["t"] for e in evs]
    assert ts == sorted(ts)


def test_journal_kinds_of_a_busy_day(book):
    seq = book.last_seq
    busy(book)
    kinds = [e["kind"] for e in events(book, seq + 1)]
    for k in ("received", "reserved", "committed", "released"):
        assert k in kinds
    assert kinds.count("reserved") == 2  # R2 was refused: not journaled
    assert kinds.index("reserved") < kinds.index("committed") < kinds.index("released")


@pytest.mark.parametrize("from_seq, limit", [(1, 1), (5, 3), (9, 100), (2, 10_000)])
def test_read_from_a_seq(book, from_seq, limit):
    busy(book)
    whole = events(book)
    part = book.journal(from_seq, limit)
    assert part == whole[from_seq - 1:from_seq - 1 + limit]
    assert all(e["seq"] >= from_seq for e in part)


def test_read_past_the_end_is_empty(book):
    busy(book)
    book.flush()
    assert book.journal(book.last_seq + 1) == []
    assert book.journal(book.last_seq)[0]["seq"] == book.last_seq


def test_journal_continues_dense_after_restart(book, open_engine):
    busy(book)
    last = book.last_seq
    book.close()
    eng = open_engine()
    assert eng.last_seq == last
    eng.receive("SKU-2", "WH-EAST", 1, pool="online")
    evs = events(eng)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert evs[last]["kind"] == "received" and evs[last]["seq"] == last + 1


def test_journal_names_buckets_by_id(book):
    book.receive("SKU-1", "WH-EAST", 10)
    ev = events(book, kind="received")[0]
    assert {book.bucket_key(b): d for b, d in ev["on_hand"]} == {
        ("SKU-1", "WH-EAST", "online"): 8, ("SKU-1", "WH-EAST", "offline"): 2}


def test_journal_read_arguments(book):
    with pytest.raises(InvalidArgument) as ei:
        book.journal(0)
    assert ei.value.field == "from_seq"
    with pytest.raises(InvalidArgument) as ei:
        book.journal(1, 0)
    assert ei.value.field == "limit"


# ------------------------------------------------------------------ alerts

@pytest.mark.parametrize("story, actions, expected", [
    ("receive into an empty bucket -> back_in_stock",
     [("receive", 5)], [("back_in_stock", 5)]),
    ("hold the last units -> sold_out",
     [("receive", 5), ("reserve", "R1", 5)], [("back_in_stock", 5), ("sold_out", 0)]),
    ("release after sold out -> back_in_stock",
     [("receive", 5), ("reserve", "R1", 5), ("release", "R1")],
     [("back_in_stock", 5), ("sold_out", 0), ("back_in_stock", 5)]),
    ("a hold that leaves stock -> no alert",
     [("receive", 5), ("reserve", "R1", 4)], [("back_in_stock", 5)]),
    ("stocktake to zero -> sold_out", [("receive", 5), ("adjust", 0)],
     [("back_in_stock", 5), ("sold_out", 0)]),
    ("expiry of the hold that sold out -> back_in_stock",
     [("receive", 5), ("reserve", "R1", 5), ("advance", 1_000)],
     [("back_in_stock", 5), ("sold_out", 0), ("back_in_stock", 5)]),
])
def test_sold_out_and_back_in_stock(book, clock, story, actions, expected):
    seq = book.last_seq
    for a in actions:
        if a[0] == "receive":
            book.receive("SKU-1", "WH-EAST", a[1], pool="online")
        elif a[0] == "reserve":
            assert book.reserve(a[1], "tmall", [("SKU-1", a[2])], ttl_ms=1_000).ok
        elif a[0] == "release":
            book.release(a[1])
        elif a[0] == "adjust":
            book.adjust("SKU-1", "WH-EAST", "online", a[1])
        elif a[0] == "advance":
            clock.advance(a[1])
            book.stock("SKU-1")  # a read runs the due expiry
    got = [(e["kind"], e["available"]) for e in events(book, seq + 1)
           if e["kind"] in ("sold_out", "back_in_stock")]
    assert got == expected, story
    for e in events(book, seq + 1, "sold_out"):
        assert (e["sku"], e["location"], e["pool"]) == ("SKU-1", "WH-EAST", "online")


@pytest.mark.parametrize("story, holds, alerts", [
    ("10 -> 6 with threshold 5: no alert", [4], 0),
    ("10 -> 5: not below 5, no alert", [5], 0),
    ("10 -> 4: crosses below 5, one alert", [6], 1),
    ("10 -> 6 -> 4 -> 2: one alert at the crossing only", [4, 2, 2], 1),
])
def test_bucket_safety_stock(book, story, holds, alerts):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.set_safety_stock(5, sku="SKU-1", location="WH-EAST", pool="online")
    seq = book.last_seq
    for i, q in enumerate(holds):
        assert book.reserve(f"R{i}", "tmall", [("SKU-1", q)]).ok
    got = events(book, seq + 1, "below_safety_stock")
    assert len(got) == alerts, story
    for e in got:
        assert (e["threshold"], e["location"], e["pool"]) == (5, "WH-EAST", "online")
        assert e["available"] < 5


def test_channel_safety_stock(book):
    """What tmall can sell (both warehouses) dropping below 5 raises one channel alert."""
    book.receive("SKU-1", "WH-EAST", 4, pool="online")
    book.receive("SKU-1", "WH-WEST", 4, pool="online")
    book.set_safety_stock(5, sku="SKU-1", channel="tmall")
    seq = book.last_seq
    book.reserve("R1", "tmall", [("SKU-1", 3)])  # 8 -> 5: not below
    assert events(book, seq + 1, "below_safety_stock") == []
    book.reserve("R2", "tmall", [("SKU-1", 2)])  # 5 -> 3
    (e,) = events(book, seq + 1, "below_safety_stock")
    assert (e["channel"], e["sku"], e["available"], e["threshold"]) == ("tmall", "SKU-1", 3, 5)
    book.reserve("R3", "pos-12", [("SKU-1", 1)])  # another channel: no tmall alert
    assert len(events(book, seq + 1, "below_safety_stock")) == 1


def test_campaign_events(book, clock):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    t = clock.now_ms()
    book.create_campaign("FS1", channels=["tmall"], start_ms=t, end_ms=t + 1_000,
                         location="WH-EAST", source_pool="online", quotas={"SKU-1": 2})
    seq = book.last_seq
    assert book.reserve("R1", "tmall", [("SKU-1", 2)], campaign="FS1").ok
    clock.advance(1_000)
    book.stock("SKU-1")
    kinds = [e["kind"] for e in events(book, seq + 1)]
    assert kinds.count("campaign_sold_out") == 1
    assert kinds.count("campaign_ended") == 1
    assert kinds.index("campaign_sold_out") < kinds.index("campaign_ended")
    start = [e for e in events(book) if e["kind"] == "campaign_started"]
    assert start and start[0]["carved"] == {"SKU-1": 2}


@pytest.mark.parametrize("story, how", [
    ("the window closes with 3 of 5 unsold -> campaign_ended, no campaign_sold_out", "end"),
    ("stopped with 3 of 5 unsold -> campaign_ended, no campaign_sold_out", "stop"),
])
def test_an_ended_campaign_is_not_reported_sold_out(book, clock, story, how):
    """Returning the unsold rest empties the campaign pool, but nobody sold it out: a
    storefront must not show "sold out" for a sale that simply ended."""
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    t = clock.now_ms()
    book.create_campaign("FS1", channels=["tmall"], start_ms=t, end_ms=t + 1_000,
                         location="WH-EAST", source_pool="online", quotas={"SKU-1": 5})
    assert book.reserve("R1", "tmall", [("SKU-1", 2)], campaign="FS1").ok
    seq = book.last_seq
    if how == "end":
        clock.advance(1_000)
        book.stock("SKU-1")
    else:
        book.stop_campaign("FS1")
    kinds = [e["kind"] for e in events(book, seq + 1)]
    assert kinds.count("campaign_ended") == 1
    assert "campaign_sold_out" not in kinds, story


def test_listeners_get_each_durable_chunk_of_the_journal_in_order(engine, book):
    got: list[tuple[int, str]] = []

    def listener(first, events):
        got.extend((first + i, ev["kind"]) for i, ev in enumerate(events))

    engine.receive("SKU-A", "WH-EAST", 10)
    engine.listen(listener)
    start = engine.last_seq
    engine.reserve("L-1", "tmall", [("SKU-A", 1)])
    engine.release("L-1")
    engine.flush()
    assert [k for _, k in got] == ["reserved", "released"]
    assert [s for s, _ in got] == [start + 1, start + 2]
    assert [(e["seq"], e["kind"]) for e in engine.journal(start + 1)] == got
    engine.unlisten(listener)
    engine.reserve("L-2", "tmall", [("SKU-A", 1)])
    engine.flush()
    assert len(got) == 2


def test_a_failing_listener_does_not_stop_commits_or_other_listeners(engine, book):
    seen = []
    engine.receive("SKU-A", "WH-EAST", 10)
    engine.listen(lambda first, events: 1 / 0)
    engine.listen(lambda first, events: seen.append(first))
    assert engine.reserve("L-3", "tmall", [("SKU-A", 1)]).ok
    engine.flush()
    assert seen


def test_reservation_channel_and_bucket_count(engine, book):
    engine.receive("SKU-A", "WH-EAST", 10)
    assert engine.reserve("C-1", "tmall", [("SKU-A", 1)]).ok
    assert engine.reservation_channel("C-1") == "tmall"
    assert engine.reservation_channel("nope") is None
    n = engine.bucket_count
    assert n == 2  # online and offline of WH-EAST
    assert {engine.bucket_key(b) for b in range(n)} == {
        ("SKU-A", "WH-EAST", "online"), ("SKU-A", "WH-EAST", "offline")}
