"""The durable store: map growth, a full map, format versions, recovery."""

from __future__ import annotations

import lmdb
import pytest

from stockgate.engine import CorruptRecord, Engine, Outcome, StoreFullError, records

MIB = 1 << 20


def _stock(engine: Engine, skus: int = 1, units: int = 1_000_000) -> None:
    engine.add_location("WH")
    engine.set_allocation_rule("WH", {"online": 100})
    engine.set_channel("web", [("WH", "online")])
    engine.import_rows([(f"SKU-{i}", "WH", "online", units) for i in range(skus)])


def test_map_grows_by_itself(open_engine):
    engine = open_engine(map_size_bytes=MIB)
    _stock(engine)
    engine.import_rows([(f"FILL-{j}", "WH", "online", 1) for j in range(30_000)])
    assert engine.reserve("order-1", "web", [("SKU-0", 1)]).ok
    assert engine._store.map_size_bytes >= 4 * MIB
    assert engine.check().ok


def test_full_map_is_a_clear_error_and_loses_nothing_acknowledged(open_engine, tmp_path):
    engine = open_engine(map_size_bytes=MIB, map_size_bytes_max=2 * MIB)
    _stock(engine)
    acked = []
    with pytest.raises(StoreFullError, match="map_size_bytes_max"):
        for i in range(100_000):
            rid = f"order-{i:06d}-" + "y" * 100
            assert engine.reserve(rid, "web", [("SKU-0", 1)]).ok
            acked.append(rid)
    assert len(acked) > 100
    # Memory was rebuilt from the store: what was acknowledged is there, nothing else.
    assert engine.check().ok
    held = sum(b.held for b in engine.stock("SKU-0"))
    assert held == len(acked)
    # Reads keep working while the disk is full.
    assert engine.availability("web", ["SKU-0"]) == {"SKU-0": 1_000_000 - len(acked)}
    engine.close()
    reopened = open_engine(map_size_bytes=MIB, map_size_bytes_max=64 * MIB)
    for rid in acked:
        assert reopened.reservation(rid).state.name == "HELD"
    assert reopened.reserve("after-the-disk-was-freed", "web", [("SKU-0", 1)]).ok
    assert reopened.check().ok


def test_unknown_format_version_is_refused(open_engine, tmp_path):
    engine = open_engine()
    _stock(engine)
    engine.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=16)
    db = env.open_db(b"buckets")
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db)))
        txn.put(key, bytes([records.BUCKET_FORMAT_VERSION + 1]) + value[1:], db=db)
    env.close()
    with pytest.raises(CorruptRecord, match="version"):
        Engine(tmp_path / "db")


def test_bucket_records_of_version_1_are_read_and_their_held_ignored(open_engine, tmp_path):
    # Version 1 stored held beside on_hand; held now comes from the live reservations.
    import struct

    engine = open_engine()
    _stock(engine)
    assert engine.reserve("v1", "web", [("SKU-0", 3)]).ok
    engine.close()
    env = lmdb.open(str(tmp_path / "db"), max_dbs=16)
    db = env.open_db(b"buckets")
    with env.begin(write=True) as txn:
        for key, value in list(txn.cursor(db)):
            _, on_hand, floor = struct.unpack("<Bqq", value)
            txn.put(key, struct.pack("<Bqqq", 1, on_hand, 999, floor), db=db)
    env.close()
    reopened = open_engine()
    assert sum(b.held for b in reopened.stock("SKU-0")) == 3
    assert reopened.check().ok


def test_recovery_expires_holds_whose_ttl_passed_while_down(open_engine, clock):
    engine = open_engine()
    _stock(engine)
    assert engine.reserve("short", "web", [("SKU-0", 3)], ttl_ms=5_000).ok
    assert engine.reserve("long", "web", [("SKU-0", 4)], ttl_ms=600_000).ok
    engine.close()
    clock.advance(10_000)
    reopened = open_engine()
    assert reopened.reservation("short").state.name == "EXPIRED"
    assert reopened.reservation("long").state.name == "HELD"
    assert sum(b.held for b in reopened.stock("SKU-0")) == 4
    assert reopened.commit("short").outcome is Outcome.NOT_HELD
    assert reopened.check().ok
    reopened.close()
    # The expiry itself was made durable.
    again = open_engine()
    assert again.reservation("short").state.name == "EXPIRED"
    assert any(e["kind"] == "expired" and e["id"] == "short" for e in again.journal())


def test_reads_keep_working_while_the_map_grows(open_engine):
    import threading

    engine = open_engine(map_size_bytes=MIB)
    _stock(engine)
    errors: list[BaseException] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                engine.journal(1, 1_000)
            except BaseException as exc:  # noqa: BLE001 - any error is the failure
                errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        engine.import_rows([(f"FILL-{j}", "WH", "online", 1) for j in range(30_000)])
    finally:
        stop.set()
        reader.join()
    assert engine._store.map_size_bytes >= 4 * MIB
    assert errors == []
