"""When the disk fails, the engine closes, or callers race it: nothing acknowledged is lost,
nothing hangs, nothing refused leaves a trace."""

from __future__ import annotations

import threading
import time

import pytest

from stockgate.engine import (
    Conflict,
    EngineClosed,
    InvalidArgument,
    NotFound,
    Outcome,
    ReserveRequest,
    StoreError,
    limits,
)


@pytest.fixture
def shop(book):
    book.receive("SKU-1", "WH-EAST", 1_000, pool="online")
    return book


class FailingWrites:
    """Makes the store's next `n` writes fail, optionally after a pause."""

    def __init__(self, engine, pause_s: float = 0.0):
        self.n = 0
        self.pause_s = pause_s
        self.real = engine._store.write
        engine._store.write = self

    def __call__(self, puts, journal):
        if self.n:
            self.n -= 1
            time.sleep(self.pause_s)
            raise StoreError("simulated EIO")
        return self.real(puts, journal)


def test_a_retry_after_a_failed_write_is_decided_against_the_store(shop):
    failing = FailingWrites(shop, pause_s=0.01)
    stop = threading.Event()

    def reads():  # reads take the lock too: they must not see the lost decisions
        while not stop.is_set():
            shop.availability("tmall", ["SKU-1"])

    readers = [threading.Thread(target=reads) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(40):
            failing.n = 1
            with pytest.raises(StoreError):
                shop.reserve(f"R{i}", "tmall", [("SKU-1", 1)])
            again = shop.reserve(f"R{i}", "tmall", [("SKU-1", 1)])
            assert again.ok and not again.replayed  # decided anew, and durable
            shop.flush()
            assert shop.reservation(f"R{i}").state.name == "HELD"
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert shop.stock("SKU-1")[0].held == 40
    assert shop.check().ok


def test_a_commit_that_failed_to_write_is_still_held(shop):
    assert shop.reserve("R1", "tmall", [("SKU-1", 2)]).ok
    failing = FailingWrites(shop)
    failing.n = 1
    with pytest.raises(StoreError):
        shop.commit("R1")
    assert shop.reservation("R1").state.name == "HELD"
    assert shop.commit("R1").outcome is Outcome.OK
    assert shop.check().ok


def test_a_refusal_does_not_wait_for_other_callers_fsync(shop):
    gate = threading.Event()
    real = shop._store.write

    def slow(puts, journal):
        gate.wait(10)
        return real(puts, journal)

    shop._store.write = slow
    holder = threading.Thread(target=shop.reserve, args=("R1", "tmall", [("SKU-1", 3)]))
    holder.start()
    time.sleep(0.05)  # R1 is decided and its batch is stuck on the disk
    t0 = time.perf_counter()
    refused = shop.reserve("R2", "tmall", [("SKU-1", 5_000)])
    waited = time.perf_counter() - t0
    gate.set()
    holder.join()
    assert refused.outcome is Outcome.INSUFFICIENT_STOCK
    assert waited < 5  # it did not wait for the stuck batch (which waits up to 10 s)


def test_close_answers_or_refuses_every_concurrent_caller(shop):
    results: list[object] = []

    def buyer(k: int):
        for i in range(10_000):
            try:
                results.append(shop.reserve(f"T{k}-{i}", "tmall", [("SKU-1", 1)]).outcome)
            except EngineClosed:
                results.append("closed")
                return

    threads = [threading.Thread(target=buyer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.1)
    shop.close()
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads), "a caller is stuck after close()"
    assert results.count("closed") == 8


def test_a_failed_reload_closes_the_engine_and_close_still_works(shop):
    failing = FailingWrites(shop)
    failing.n = 1
    shop._load = lambda: (_ for _ in ()).throw(StoreError("EIO on read"))
    with pytest.raises(StoreError):
        shop.reserve("R1", "tmall", [("SKU-1", 1)])
    time.sleep(0.05)
    with pytest.raises(EngineClosed):
        shop.reserve("R2", "tmall", [("SKU-1", 1)])
    shop.close()
    assert not shop._writer._thread.is_alive()
    assert shop._store_closed


def test_check_is_clean_while_others_keep_reserving(shop):
    stop = threading.Event()

    def buyer(k):
        i = 0
        while not stop.is_set():
            shop.reserve(f"C{k}-{i}", "tmall", [("SKU-1", 1)])
            shop.release(f"C{k}-{i}")
            i += 1

    threads = [threading.Thread(target=buyer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            report = shop.check()
            assert report.ok, report.drifts
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_move_over_the_on_hand_limit_changes_nothing(shop):
    shop.adjust("SKU-1", "WH-EAST", "offline", limits.ON_HAND_MAX)
    before = shop.stock("SKU-1"), shop.last_seq
    with pytest.raises(InvalidArgument, match=str(limits.ON_HAND_MAX)):
        shop.move("SKU-1", "WH-EAST", "online", "offline", 5)
    assert (shop.stock("SKU-1"), shop.last_seq) == before
    assert shop.check().ok


def test_a_repeated_id_after_a_refusal_in_one_batch_is_decided_anew(shop):
    results = shop.reserve_many([
        ReserveRequest("R1", "tmall", [("SKU-1", 5_000)]),  # refused: too many
        ReserveRequest("R1", "tmall", [("SKU-1", 1)]),  # a different request: fits
    ])
    assert [r.outcome for r in results] == [Outcome.INSUFFICIENT_STOCK, Outcome.OK]


@pytest.mark.parametrize("call, error, field", [
    (lambda e: e.availability("tmall", ["SKU-1"], prefer_locations="WH-EAST"),
     InvalidArgument, "prefer_locations"),
    (lambda e: e.availability("tmall", ["SKU-1"], prefer_locations=[None]),
     InvalidArgument, "prefer_locations[0]"),
    (lambda e: e.availability("tmall", ["SKU-1"], campaign="nope"), NotFound, "campaign"),
    (lambda e: e.set_channel("web", [("WH-EAST", "online")], allow_presale="no"),
     InvalidArgument, "allow_presale"),
    (lambda e: e.create_campaign("OLD", channels=["tmall"], start_ms=10, end_ms=20,
                                 location="WH-EAST", source_pool="online",
                                 quotas={"SKU-1": 1}), Conflict, "end_ms"),
], ids=["prefer as a string", "prefer not a string", "unknown campaign",
        "presale not a bool", "campaign window in the past"])
def test_more_bad_input_is_refused_and_changes_nothing(shop, call, error, field):
    before = shop.stock("SKU-1"), shop.last_seq, shop.channels(), shop.campaigns()
    with pytest.raises(error) as ei:
        call(shop)
    assert ei.value.field == field
    assert (shop.stock("SKU-1"), shop.last_seq, shop.channels(), shop.campaigns()) == before


def test_map_size_max_below_map_size_is_refused(tmp_path):
    from stockgate.engine import Engine

    with pytest.raises(InvalidArgument, match="map_size_bytes_max"):
        Engine(tmp_path / "db", map_size_bytes=4 << 20, map_size_bytes_max=2 << 20)
