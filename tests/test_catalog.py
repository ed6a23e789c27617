"""The catalogue: locations, channels and their sources, allocation rules and rounding."""

from __future__ import annotations

import pytest

from stockgate.engine import Engine, InvalidArgument, NotFound, Outcome


def test_locations_and_kinds(engine: Engine):
    engine.add_location("WH-EAST")
    engine.add_location("STORE-12", "store")
    assert engine.locations() == {"WH-EAST": "warehouse", "STORE-12": "store"}
    seq = engine.last_seq
    engine.add_location("WH-EAST")  # same kind again: no-op, no event
    assert engine.last_seq == seq
    engine.add_location("WH-EAST", "store")  # a new kind is a change
    assert engine.locations()["WH-EAST"] == "store"
    assert engine.last_seq == seq + 1


def test_bad_location_kind(engine: Engine):
    with pytest.raises(InvalidArgument) as ei:
        engine.add_location("X", "shed")
    assert ei.value.field == "kind"
    assert engine.locations() == {}


def test_catalogue_survives_restart(book: Engine, open_engine):
    book.set_allocation_rule("WH-EAST", {"online": 50, "offline": 50}, sku="SKU-7")
    book.set_safety_stock(3, sku="SKU-1", channel="tmall")
    locations, channels = book.locations(), book.channels()
    book.close()
    eng = open_engine()
    assert eng.locations() == locations
    assert eng.channels() == channels
    assert eng.channels()["presale-shop"][1] is True
    assert eng.receive("SKU-7", "WH-EAST", 10) == {"online": 5, "offline": 5}
    assert eng.receive("SKU-1", "WH-EAST", 10) == {"online": 8, "offline": 2}


@pytest.mark.parametrize("story, sources, exc, field", [
    ("unknown location -> NotFound", [("WH-NOPE", "online")], NotFound,
     "sources[0].location"),
    ("the same source twice -> InvalidArgument", [("WH-EAST", "online")] * 2,
     InvalidArgument, "sources[1]"),
    ("no sources -> InvalidArgument", [], InvalidArgument, "sources"),
    ("a source that is not a pair -> InvalidArgument", [("WH-EAST",)], InvalidArgument,
     "sources[0]"),
    ("sources as a string -> InvalidArgument", "WH-EAST", InvalidArgument, "sources"),
    ("empty pool -> InvalidArgument", [("WH-EAST", "")], InvalidArgument, "sources[0].pool"),
])
def test_set_channel_refusals(book, story, sources, exc, field):
    before = book.channels()
    seq = book.last_seq
    with pytest.raises(exc) as ei:
        book.set_channel("jd", sources)
    assert ei.value.field == field, story
    assert book.channels() == before and book.last_seq == seq


def test_redefining_a_channel_changes_source_order(book):
    book.receive("SKU-1", "WH-EAST", 5, pool="online")
    book.receive("SKU-1", "WH-WEST", 5, pool="online")
    book.set_channel("tmall", [("WH-WEST", "online"), ("WH-EAST", "online")])
    r = book.reserve("R1", "tmall", [("SKU-1", 6)])
    assert [(a.location, a.qty) for a in r.lines[0].allocations] == [("WH-WEST", 5),
                                                                      ("WH-EAST", 1)]


def test_a_channel_sharing_a_pool(book):
    """douyin and tmall both draw WH-EAST online: one book, no double selling."""
    book.set_channel("douyin", [("WH-EAST", "online"), ("WH-EAST", "shared")])
    book.receive("SKU-1", "WH-EAST", 5, pool="online")
    book.receive("SKU-1", "WH-EAST", 2, pool="shared")
    assert book.reserve("T1", "tmall", [("SKU-1", 4)]).outcome == Outcome.OK
    assert book.availability("douyin", ["SKU-1"]) == {"SKU-1": 3}
    assert book.reserve("D1", "douyin", [("SKU-1", 4)]).outcome == Outcome.INSUFFICIENT_STOCK
    assert book.reserve("D2", "douyin", [("SKU-1", 3)]).outcome == Outcome.OK
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 0}


# ------------------------------------------------------------------ allocation rules

@pytest.mark.parametrize("story, rule, qty, split", [
    ("80/20 of 100 -> 80 + 20", {"online": 80, "offline": 20}, 100,
     {"online": 80, "offline": 20}),
    ("80/20 of 1 -> the unit goes online (remainder 80 > 20)",
     {"online": 80, "offline": 20}, 1, {"online": 1}),
    ("80/20 of 3 -> 2.4/0.6: floors 2/0, the spare unit to offline (60 > 40)",
     {"online": 80, "offline": 20}, 3, {"online": 2, "offline": 1}),
    ("80/20 of 7 -> 5.6/1.4: 6 + 1", {"online": 80, "offline": 20}, 7,
     {"online": 6, "offline": 1}),
    ("80/20 of 9 -> 7.2/1.8: 7 + 2", {"online": 80, "offline": 20}, 9,
     {"online": 7, "offline": 2}),
    ("33/33/34 of 1 -> the largest remainder (c)", {"a": 33, "b": 33, "c": 34}, 1, {"c": 1}),
    ("33/33/34 of 2 -> c, then the tie a/b goes to a (rule order)",
     {"a": 33, "b": 33, "c": 34}, 2, {"a": 1, "c": 1}),
    ("50/50 of 1 -> tie: the first pool of the rule", {"a": 50, "b": 50}, 1, {"a": 1}),
    ("50/50 of 1, rule order b, a -> b (rule order, not name order)",
     {"b": 50, "a": 50}, 1, {"b": 1}),
    ("10/20/70 of 4 -> 0.4/0.8/2.8: b and c get the spares (tie 80 to b first)",
     {"a": 10, "b": 20, "c": 70}, 4, {"b": 1, "c": 3}),
    ("0/100 of 5 -> a zero share gets nothing", {"x": 0, "y": 100}, 5, {"y": 5}),
    ("34/33/33 of 100 -> exact", {"a": 34, "b": 33, "c": 33}, 100,
     {"a": 34, "b": 33, "c": 33}),
])
def test_receipt_split_rounding(engine, story, rule, qty, split):
    engine.add_location("WH")
    engine.set_allocation_rule("WH", rule)
    assert engine.receive("SKU-1", "WH", qty) == split, story
    got = {b.pool: b.on_hand for b in engine.stock("SKU-1")}
    assert got == split
    assert sum(got.values()) == qty


def test_per_sku_rule_overrides_the_location_default(book):
    book.set_allocation_rule("WH-EAST", {"online": 30, "offline": 70}, sku="SKU-B2B")
    assert book.receive("SKU-B2B", "WH-EAST", 10) == {"online": 3, "offline": 7}
    assert book.receive("SKU-1", "WH-EAST", 10) == {"online": 8, "offline": 2}


@pytest.mark.parametrize("story, shares, field", [
    ("sum 90 -> refused", {"online": 80, "offline": 10}, "shares"),
    ("sum 101 -> refused", {"online": 81, "offline": 20}, "shares"),
    ("negative share -> refused", {"online": 100, "offline": -20}, "shares[offline]"),
    ("share over 100 -> refused", {"online": 120, "offline": -20}, "shares[online]"),
    ("a campaign pool -> refused", {"campaign:X": 100}, "shares.pool"),
    ("no pools -> refused", {}, "shares"),
    ("share as a float -> refused", {"online": 80.0, "offline": 20}, "shares[online]"),
    ("share as bool -> refused", {"online": True, "offline": 99}, "shares[online]"),
    ("not a mapping -> refused", [("online", 100)], "shares"),
])
def test_bad_allocation_rules(book, story, shares, field):
    seq = book.last_seq
    with pytest.raises(InvalidArgument) as ei:
        book.set_allocation_rule("WH-EAST", shares)
    assert ei.value.field == field, story
    assert book.last_seq == seq
    assert book.receive("SKU-1", "WH-EAST", 10) == {"online": 8, "offline": 2}


def test_rule_for_unknown_location(book):
    with pytest.raises(NotFound):
        book.set_allocation_rule("WH-NOPE", {"online": 100})


def test_receive_without_rule_needs_a_pool(engine):
    engine.add_location("WH")
    with pytest.raises(InvalidArgument) as ei:
        engine.receive("SKU-1", "WH", 5)
    assert ei.value.field == "pool"
    assert engine.stock("SKU-1") == []
    assert engine.receive("SKU-1", "WH", 5, pool="bin-a") == {"bin-a": 5}


@pytest.mark.parametrize("story, kwargs, exc, field", [
    ("channel and location together -> refused",
     {"sku": "SKU-1", "channel": "tmall", "location": "WH-EAST"}, InvalidArgument, "channel"),
    ("unknown channel -> NotFound", {"sku": "SKU-1", "channel": "jd"}, NotFound, "channel"),
    ("bucket without pool -> refused", {"sku": "SKU-1", "location": "WH-EAST"},
     InvalidArgument, "pool"),
    ("unknown location -> NotFound", {"sku": "SKU-1", "location": "X", "pool": "online"},
     NotFound, "location"),
])
def test_safety_stock_refusals(book, story, kwargs, exc, field):
    seq = book.last_seq
    with pytest.raises(exc) as ei:
        book.set_safety_stock(5, **kwargs)
    assert ei.value.field == field, story
    assert book.last_seq == seq
