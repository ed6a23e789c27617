"""check(): clean after a busy day; a deliberately corrupted copy of the store is caught."""

from __future__ import annotations

import shutil
import struct

import lmdb
import msgpack
import pytest

from stockgate.engine import CorruptRecord, Engine, Outcome

BUCKET = struct.Struct("<Bqq")  # the stored bucket record: version, on_hand, floor


def busy_day(e: Engine, clock) -> None:
    """Every kind of change, leaving live holds, a transfer on the road and an ended
    campaign with a hold still out."""
    e.receive("SKU-1", "WH-EAST", 100)            # online 80 / offline 20
    e.receive("SKU-1", "WH-WEST", 10)
    e.receive("SKU-2", "STORE-12", 7)
    e.import_rows([("SKU-3", "WH-EAST", "online", 30), ("SKU-3", "WH-WEST", "online", 4)],
                  chunk_rows=1)
    e.move("SKU-1", "WH-EAST", "offline", "online", 5)
    e.transfer_out("TR-1", "SKU-1", "WH-WEST", "online", "STORE-12", "offline", 3)
    e.transfer_out("TR-2", "SKU-3", "WH-EAST", "online", "STORE-12", "offline", 2)
    e.transfer_in("TR-1")
    assert e.reserve("R1", "tmall", [("SKU-1", 90)]).outcome == Outcome.OK  # split E/W
    assert e.reserve("R2", "pos-12", [("SKU-1", 4), ("SKU-2", 2)]).outcome == Outcome.OK
    assert e.reserve("R3", "tmall", [("SKU-3", 5)], ttl_ms=1_000).outcome == Outcome.OK
    assert e.reserve("R4", "tmall", [("SKU-3", 3)]).outcome == Outcome.OK
    e.commit("R1", [("SKU-1", 50)])
    e.release("R2")
    e.amend("R4", [("SKU-3", 6)])
    e.adjust("SKU-3", "WH-EAST", "online", 20)   # 28 counted as 20: variance -8
    t = clock.now_ms()
    e.create_campaign("FS1", channels=["tmall"], start_ms=t, end_ms=t + 5_000,
                      location="WH-EAST", source_pool="online", quotas={"SKU-3": 3},
                      customer_limit=2)
    assert e.reserve("C1", "tmall", [("SKU-3", 2)], campaign="FS1", customer="u1").ok
    assert e.reserve("C2", "tmall", [("SKU-3", 1)], campaign="FS1", customer="u2",
                     ttl_ms=60_000).ok
    e.commit("C1")
    clock.advance(5_000)                          # R3 expires, FS1 ends, C2 still held
    assert e.availability("tmall", ["SKU-3"])["SKU-3"] >= 0


def test_check_clean_after_a_busy_day(book, clock, open_engine):
    busy_day(book, clock)
    rep = book.check()
    assert rep.ok, rep.drifts
    assert rep.live_reservations == 2  # R4 and C2; R1/C1 committed, R2 released, R3 expired
    assert rep.totals["adjusted"] == -8 + 34  # the stocktake and the import
    assert rep.totals["in_transit"] == 2
    assert rep.events == book.last_seq
    book.close()
    eng = open_engine()
    rep2 = eng.check()
    assert rep2.ok, rep2.drifts
    assert rep2.totals == rep.totals
    eng.release("C2")  # back to the source after the end
    assert eng.check().ok


def test_check_clean_after_presale_commit(book):
    book.receive("SKU-1", "WH-EAST", 10)  # online 8
    book.set_presale_allowance("SKU-1", "WH-EAST", "online", 5)
    assert book.reserve("P1", "presale-shop", [("SKU-1", 12)]).outcome == Outcome.OK
    assert book.check().ok
    book.commit("P1")
    rep = book.check()
    assert rep.ok, rep.drifts


def test_check_clean_after_commit_of_a_hold_a_stocktake_undercut(book):
    book.receive("SKU-1", "WH-EAST", 10)  # online 8
    book.reserve("R1", "tmall", [("SKU-1", 8)])
    book.adjust("SKU-1", "WH-EAST", "online", 3)
    assert book.check().ok
    book.commit("R1")
    rep = book.check()
    assert rep.ok, rep.drifts


# ------------------------------------------------------------------ corrupted copies

@pytest.fixture
def corrupt_copy(book, clock, tmp_path):
    """Run the busy day, close, and hand back (copy dir, lmdb env of the copy, opener)."""
    busy_day(book, clock)
    book.flush()
    book.close()
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "db", copy)
    env = lmdb.open(str(copy), max_dbs=16, subdir=True)
    opened: list[Engine] = []

    def open_copy() -> Engine:
        env.close()
        eng = Engine(copy, clock=clock)
        opened.append(eng)
        return eng

    yield env, open_copy
    for eng in opened:
        eng.close()
    env.close()


def bucket_id(env, sku: str, loc: str, pool: str) -> int:
    with env.begin() as txn:
        for key, value in txn.cursor(env.open_db(b"bucket_keys", txn=txn)):
            if msgpack.unpackb(value)[1:] == [sku, loc, pool]:
                return struct.unpack(">I", key)[0]
    raise KeyError((sku, loc, pool))


def rewrite_bucket(env, b: int, d_on_hand: int = 0, d_floor: int = 0) -> None:
    db = env.open_db(b"buckets")
    with env.begin(write=True) as txn:
        key = struct.pack(">I", b)
        v, on_hand, floor = BUCKET.unpack(txn.get(key, db=db))
        txn.put(key, BUCKET.pack(v, on_hand + d_on_hand, floor + d_floor), db=db)


@pytest.mark.parametrize("story, d_on_hand, d_floor, words", [
    ("on_hand +5 in the stored record", 5, 0, "on_hand is"),
    ("on_hand -1 in the stored record", -1, 0, "on_hand is"),
])
def test_corrupt_bucket_record_is_reported(corrupt_copy, story, d_on_hand, d_floor, words):
    env, open_copy = corrupt_copy
    b = bucket_id(env, "SKU-1", "WH-EAST", "online")
    rewrite_bucket(env, b, d_on_hand, d_floor)
    rep = open_copy().check()
    assert not rep.ok, story
    named = [d for d in rep.drifts if "SKU-1/WH-EAST/online" in d]
    assert named and any(words in d for d in named), rep.drifts


def test_deleted_reservation_is_reported(corrupt_copy):
    env, open_copy = corrupt_copy
    with env.begin(write=True) as txn:
        assert txn.delete(b"R4", db=env.open_db(b"reservations", txn=txn))
    rep = open_copy().check()
    assert any("SKU-3/WH-EAST/online" in d and "held" in d for d in rep.drifts), rep.drifts


def drop_journal_chunk(env, pick) -> None:
    """Delete the first journal chunk whose events `pick` chooses (there must be one)."""
    jdb = env.open_db(b"journal")
    with env.begin(write=True) as txn:
        for key, value in txn.cursor(jdb):
            _, _, evs = msgpack.unpackb(value, strict_map_key=False)
            if pick(evs):
                assert txn.delete(key, db=jdb)
                return
    raise AssertionError("no journal chunk matched")


def test_dropped_journal_chunk_is_reported(corrupt_copy):
    env, open_copy = corrupt_copy
    drop_journal_chunk(env, lambda evs: any(
        e["kind"] == "received" and e["location"] == "WH-WEST" for e in evs))
    rep = open_copy().check()
    assert any("SKU-1/WH-WEST/online" in d and "on_hand" in d for d in rep.drifts), rep.drifts


def test_journal_gap_without_stock_is_reported(corrupt_copy):
    """A dropped chunk that moved no stock (a reservation's event) still leaves a hole
    in the dense sequence that watchers resume from: check() should say so."""
    env, open_copy = corrupt_copy
    drop_journal_chunk(env, lambda evs: [e["kind"] for e in evs] == ["reserved"])
    rep = open_copy().check()
    assert not rep.ok, "a hole in the journal's sequence went unnoticed"


def test_garbage_bucket_record_refuses_to_open(corrupt_copy):
    env, open_copy = corrupt_copy
    b = bucket_id(env, "SKU-1", "WH-EAST", "online")
    with env.begin(write=True) as txn:
        txn.put(struct.pack(">I", b), b"\x09garbage", db=env.open_db(b"buckets", txn=txn))
    with pytest.raises(CorruptRecord) as ei:
        open_copy()
    assert "bucket record" in str(ei.value)


def test_the_original_is_untouched(corrupt_copy, open_engine):
    env, _ = corrupt_copy
    rewrite_bucket(env, bucket_id(env, "SKU-1", "WH-EAST", "online"), 0, 7)
    eng = open_engine()
    assert eng.check().ok
