"""Stock movements: receive, adjust (stocktake), move, transfer, bulk import."""

from __future__ import annotations

import pytest

from stockgate.engine import Conflict, Engine, InvalidArgument, NotFound, Outcome


def pools(engine: Engine, sku: str = "SKU-1", location: str = "WH-EAST"
          ) -> dict[str, tuple[int, int, int]]:
    """pool -> (on_hand, held, available) at one location."""
    return {b.pool: (b.on_hand, b.held, b.available)
            for b in engine.stock(sku) if b.location == location}


def fingerprint(engine: Engine, skus=("SKU-1", "SKU-2")):
    engine.flush()
    return ({s: engine.stock(s) for s in skus}, engine.last_seq, len(engine.journal()),
            engine.in_transit())


# ------------------------------------------------------------------ receive

def test_receive_by_rule_and_into_a_pool(book):
    assert book.receive("SKU-1", "WH-EAST", 10) == {"online": 8, "offline": 2}
    assert book.receive("SKU-1", "WH-EAST", 5, pool="shared", ref="PO-77") == {"shared": 5}
    assert pools(book) == {"online": (8, 0, 8), "offline": (2, 0, 2), "shared": (5, 0, 5)}
    ev = [e for e in book.journal() if e["kind"] == "received"][-1]
    assert ev["ref"] == "PO-77"


def test_receive_at_unknown_location_changes_nothing(book):
    fp = fingerprint(book)
    with pytest.raises(NotFound) as ei:
        book.receive("SKU-1", "WH-NOPE", 5, pool="online")
    assert ei.value.field == "location"
    assert fingerprint(book) == fp


# ------------------------------------------------------------------ adjust

@pytest.mark.parametrize("story, held, count, variance, after, new_hold_ok", [
    ("count 10 of 10, 4 held -> variance 0, 6 free", 4, 10, 0, (10, 4, 6), True),
    ("count 12 (found 2) -> variance +2, 8 free", 4, 12, 2, (12, 4, 8), True),
    ("count 5 (lost 5) -> variance -5, 1 free", 4, 5, -5, (5, 4, 1), True),
    ("count 4 = held -> nothing free, new holds blocked", 4, 4, -6, (4, 4, 0), False),
    ("count 2 < held 4 -> holds stay, new holds blocked", 4, 2, -8, (2, 4, -2), False),
    ("count 0 -> holds stay, new holds blocked", 4, 0, -10, (0, 4, -4), False),
])
def test_adjust_never_revokes_holds(book, story, held, count, variance, after, new_hold_ok):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    assert book.reserve("R1", "tmall", [("SKU-1", held)]).outcome == Outcome.OK
    assert book.adjust("SKU-1", "WH-EAST", "online", count, ref="count-1") == variance
    assert pools(book)["online"] == after, story
    r1 = book.reservation("R1")
    assert r1.lines[0].granted == held and r1.state.name == "HELD"
    r2 = book.reserve("R2", "tmall", [("SKU-1", 1)])
    assert (r2.outcome == Outcome.OK) is new_hold_ok
    ev = [e for e in book.journal() if e["kind"] == "adjusted"][-1]
    assert (ev["variance"], ev["ref"]) == (variance, "count-1")


def test_adjust_below_holds_then_release_frees_only_what_exists(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.reserve("R1", "tmall", [("SKU-1", 6)])
    book.adjust("SKU-1", "WH-EAST", "online", 3)
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 0}
    book.release("R1")
    assert pools(book)["online"] == (3, 0, 3)
    assert book.availability("tmall", ["SKU-1"]) == {"SKU-1": 3}


def test_adjust_creates_a_bucket(book):
    assert book.adjust("SKU-9", "STORE-12", "offline", 7) == 7
    assert pools(book, "SKU-9", "STORE-12") == {"offline": (7, 0, 7)}
    assert book.availability("pos-12", ["SKU-9"]) == {"SKU-9": 7}


# ------------------------------------------------------------------ move

@pytest.mark.parametrize("story, qty, ok", [
    ("move 3 of the 5 free online units to offline -> OK", 3, True),
    ("move all 5 free units -> OK", 5, True),
    ("move 6 while 3 of 8 are held -> Conflict (held units never move)", 6, False),
])
def test_move_between_pools(book, story, qty, ok):
    book.receive("SKU-1", "WH-EAST", 10)  # online 8, offline 2
    book.reserve("R1", "tmall", [("SKU-1", 3)])
    fp = fingerprint(book)
    if ok:
        book.move("SKU-1", "WH-EAST", "online", "offline", qty)
        assert pools(book) == {"online": (8 - qty, 3, 5 - qty),
                               "offline": (2 + qty, 0, 2 + qty)}
        assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 2 + qty}
        ev = [e for e in book.journal() if e["kind"] == "moved"][-1]
        assert (ev["from_pool"], ev["to_pool"]) == ("online", "offline")
    else:
        with pytest.raises(Conflict) as ei:
            book.move("SKU-1", "WH-EAST", "online", "offline", qty)
        assert ei.value.field == "qty"
        assert fingerprint(book) == fp


def test_move_to_the_same_pool_is_refused(book):
    book.receive("SKU-1", "WH-EAST", 10)
    with pytest.raises(InvalidArgument) as ei:
        book.move("SKU-1", "WH-EAST", "online", "online", 1)
    assert ei.value.field == "to_pool"


def test_move_from_a_pool_that_never_had_stock(book):
    with pytest.raises(Conflict):
        book.move("SKU-1", "WH-EAST", "vip", "online", 1)
    assert book.stock("SKU-1") == []


# ------------------------------------------------------------------ transfer

def test_transfer_out_in_transit_then_in(book, open_engine):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    assert book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline",
                             4) == "in_transit"
    assert pools(book)["online"] == (6, 0, 6)
    assert pools(book, location="STORE-12") == {}
    assert book.in_transit() == {"SKU-1": 4}
    assert book.availability("pos-12", ["SKU-1"]) == {"SKU-1": 0}
    # a repeat of the same transfer_out is safe
    assert book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline",
                             4) == "in_transit"
    assert pools(book)["online"] == (6, 0, 6)
    # in transit survives a restart
    book.close()
    eng = open_engine()
    assert eng.in_transit() == {"SKU-1": 4}
    assert eng.check().ok
    assert eng.transfer_in("TR-1") == "received"
    assert pools(eng, location="STORE-12") == {"offline": (4, 0, 4)}
    assert eng.in_transit() == {}
    assert eng.availability("pos-12", ["SKU-1"]) == {"SKU-1": 4}
    seq = eng.last_seq
    assert eng.transfer_in("TR-1") == "received"  # idempotent
    assert eng.last_seq == seq
    assert pools(eng, location="STORE-12") == {"offline": (4, 0, 4)}
    assert eng.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline",
                            4) == "received"
    assert eng.check().ok


@pytest.mark.parametrize("story, args, exc, field", [
    ("same id, other qty -> Conflict",
     ("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 5), Conflict,
     "transfer_id"),
    ("more than available -> Conflict",
     ("TR-2", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 7), Conflict, "qty"),
    ("unknown destination -> NotFound",
     ("TR-3", "SKU-1", "WH-EAST", "online", "STORE-99", "offline", 1), NotFound,
     "to_location"),
    ("zero units -> InvalidArgument",
     ("TR-4", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 0), InvalidArgument,
     "qty"),
])
def test_transfer_refusals_change_nothing(book, story, args, exc, field):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 4)
    fp = fingerprint(book)
    with pytest.raises(exc) as ei:
        book.transfer_out(*args)
    assert ei.value.field == field, story
    assert fingerprint(book) == fp


def test_transfer_in_unknown_id(book):
    with pytest.raises(NotFound):
        book.transfer_in("TR-NOPE")


def test_held_units_cannot_be_transferred(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.reserve("R1", "tmall", [("SKU-1", 8)])
    with pytest.raises(Conflict):
        book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 3)
    book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 2)
    assert pools(book)["online"] == (8, 8, 0)


# ------------------------------------------------------------------ import

def test_import_rows_in_chunks(book):
    rows = [(f"SKU-{i}", "WH-EAST", "online", i) for i in range(1, 8)]
    assert book.import_rows(rows, chunk_rows=3) == 7
    imported = [e for e in book.journal() if e["kind"] == "imported"]
    assert [e["rows"] for e in imported] == [3, 3, 1]
    for i in range(1, 8):
        assert pools(book, f"SKU-{i}") == {"online": (i, 0, i)}


def test_import_sets_on_hand_like_a_stocktake(book):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    book.reserve("R1", "tmall", [("SKU-1", 3)])
    rows = [["SKU-1", "WH-EAST", "online", "4"],  # CSV text is accepted
            ["SKU-2", "STORE-12", "offline", " 9"]]
    assert book.import_rows(iter(rows)) == 2
    assert pools(book)["online"] == (4, 3, 1)
    assert pools(book, "SKU-2", "STORE-12") == {"offline": (9, 0, 9)}
    assert book.check().ok


def test_import_many_rows(book):
    rows = [(f"SKU-{i}", "WH-WEST", "online", 1 + i % 5) for i in range(2_500)]
    assert book.import_rows(rows, chunk_rows=1_000) == 2_500
    assert [e["rows"] for e in book.journal() if e["kind"] == "imported"] == [1000, 1000, 500]
    assert book.availability("tmall", [f"SKU-{i}" for i in range(0, 2_500, 250)]) == {
        f"SKU-{i}": 1 + i % 5 for i in range(0, 2_500, 250)}


@pytest.mark.parametrize("story, bad_row, exc, field", [
    ("negative on_hand in row 4 -> nothing imported", ("SKU-1", "WH-EAST", "online", -1),
     InvalidArgument, "rows[4].on_hand"),
    ("text that is not a number", ("SKU-1", "WH-EAST", "online", "ten"), InvalidArgument,
     "rows[4].on_hand"),
    ("a row of three fields", ("SKU-1", "WH-EAST", 5), InvalidArgument, "rows[4]"),
    ("control character in a SKU", ("SKU\t1", "WH-EAST", "online", 5), InvalidArgument,
     "rows[4].sku"),
    ("unknown location -> NotFound", ("SKU-1", "WH-NOPE", "online", 5), NotFound,
     "rows[4].location"),
])
def test_bad_import_changes_nothing(book, story, bad_row, exc, field):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    fp = fingerprint(book)
    rows = [(f"SKU-{i}", "WH-EAST", "online", 5) for i in range(4)] + [bad_row]
    with pytest.raises(exc) as ei:
        book.import_rows(rows, chunk_rows=2)
    assert ei.value.field == field, story
    assert fingerprint(book) == fp
    assert book.stock("SKU-0") == []


def test_movements_keep_the_books_balanced(book):
    book.receive("SKU-1", "WH-EAST", 50)  # online 40, offline 10
    book.move("SKU-1", "WH-EAST", "offline", "online", 5)
    book.transfer_out("TR-1", "SKU-1", "WH-EAST", "online", "WH-WEST", "online", 10)
    book.adjust("SKU-1", "WH-EAST", "offline", 3)  # 5 counted as 3: variance -2
    book.reserve("R1", "tmall", [("SKU-1", 30)])
    book.commit("R1", [("SKU-1", 20)])
    rep = book.check()
    assert rep.ok, rep.drifts
    assert rep.totals["in_transit"] == 10
    assert rep.totals["on_hand"] == 50 - 2 - 20 - 10
    assert rep.totals["adjusted"] == -2 and rep.totals["committed"] == -20
