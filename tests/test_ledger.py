"""The reservation record written in C, and the ledger that keeps fresh holds as it.

A hold the core grants is recorded by _core.hold_and_record() as msgpack bytes, kept as
they are in memory (engine.Ledger) until something reads the hold; its "reserved" journal
event is packed there too. These tests hold that record to the layout records.pack() and
_Res.encode() define, the event to the map _emit() would make, and the ledger's lazy form
to the behaviour of the decoded one.
"""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from stockgate.engine import Engine, Outcome, ReserveRequest, State, _core, records
from stockgate.engine.reservations import _Res

LISTENER_TEST_WAIT_S = 30  # far above a commit here; only a stopped writer takes longer
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
LEAF = st.none() | st.booleans() | INT64 | st.text(max_size=300)
VALUES = st.recursive(LEAF, lambda inner: st.lists(inner, max_size=20)
                      | st.lists(inner, max_size=20).map(tuple), max_leaves=60)


def test_the_c_record_version_is_the_stores() -> None:
    assert _core.RECORD_FORMAT_VERSION == records.FORMAT_VERSION


@given(st.lists(VALUES, max_size=20))
def test_pack_record_writes_what_msgpack_writes(fields) -> None:
    assert _core.pack_record(fields) == records.pack(fields)


def test_pack_record_at_the_size_boundaries_of_each_form() -> None:
    edges = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
             -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    texts = ["", "x" * 31, "x" * 32, "x" * 255, "x" * 256, "é" * 40_000, "日本"]
    arrays = [[1] * 15, [1] * 16, [0] * 65535, [0] * 65536]
    for fields in (edges, texts, arrays):
        assert _core.pack_record(fields) == records.pack(fields)


def test_a_fresh_hold_is_stored_as_res_encode_writes_it(book: Engine) -> None:
    book.receive("SKU-1", "WH-EAST", 10)
    book.receive("SKU-1", "WH-WEST", 10)
    reqs = [ReserveRequest("R-1", "tmall", [("SKU-1", 9), ("SKU-1", 4)], customer="c-1",
                           ttl_ms=60_000),
            ReserveRequest("R-2", "tmall", [("SKU-1", 2)], partial=True)]
    answers = book.reserve_many(reqs)
    for req, res in zip(reqs, answers):
        kept = dict.get(book._res, req.reservation_id)
        assert type(kept) is bytes  # nothing has read it yet
        # What the record must hold, from the request and the answer (not from itself):
        pub = res.reservation
        expected = [req.reservation_id, req.channel, req.customer, None, int(State.HELD),
                    req.partial, pub.created_ms, pub.expires_ms, None,
                    [[ln.sku, ln.qty, ln.granted, _flat(book, ln), int(ln.outcome)]
                     for ln in res.lines],
                    None, None, int(res.outcome), [list(x) for x in req.lines], None]
        assert kept == records.pack(expected)
        assert _Res.decode(kept).encode() == kept
    assert answers[0].lines[0].allocations[0].qty == 8  # a line split across sources
    assert len(answers[0].lines[0].allocations) == 2


def _flat(book: Engine, line) -> list[int]:
    """A line's allocations as stored: [bucket, units, ...]."""
    out = []
    for a in line.allocations:
        out += [book._index.get(line.sku, a.location, a.pool), a.qty]
    return out


def test_a_held_record_thaws_once_and_changes_stick(book: Engine) -> None:
    book.receive("SKU-1", "WH-EAST", 10)
    first = book.reserve("R-1", "tmall", [("SKU-1", 3)])
    again = book.reserve("R-1", "tmall", [("SKU-1", 3)])  # a replay reads the ledger
    assert again.replayed and again.outcome == first.outcome == Outcome.OK
    assert type(dict.get(book._res, "R-1")) is _Res
    assert book._res.get("R-1") is book._res.get("R-1")
    assert book.commit("R-1").outcome == Outcome.OK
    assert book.reservation("R-1").state == State.COMMITTED


def test_the_lock_free_channel_read_does_not_replace_the_kept_form(book: Engine) -> None:
    book.receive("SKU-1", "WH-EAST", 10)
    book.reserve("R-1", "tmall", [("SKU-1", 3)])
    assert book.reservation_channel("R-1") == "tmall"
    assert type(dict.get(book._res, "R-1")) is bytes


def test_kept_records_survive_a_reopen_and_replay(open_engine) -> None:
    from server_calls import seed_book

    eng = open_engine()
    seed_book(eng)
    eng.receive("SKU-1", "WH-EAST", 10)
    first = eng.reserve("R-1", "tmall", [("SKU-1", 3)])
    eng.close()
    eng = open_engine()
    assert type(dict.get(eng._res, "R-1")) is bytes  # loaded as stored
    again = eng.reserve("R-1", "tmall", [("SKU-1", 3)])
    assert again.replayed and again.reservation == first.reservation
    assert eng.live_reservations() == 1
    assert eng.check().ok


def test_ids_of_a_str_subclass_are_recorded_like_any_str(book: Engine) -> None:
    # A StrEnum id passes the engine's checks; the C record writer once refused it after
    # the stock was taken (units held by no reservation, a journal seq used twice).
    import enum

    class Channel(enum.StrEnum):
        TMALL = "tmall"

    book.receive("SKU-1", "WH-EAST", 10)
    first = book.reserve("R-1", Channel.TMALL, [("SKU-1", 3)])
    assert first.outcome == Outcome.OK
    book.receive("SKU-2", "WH-EAST", 5)  # the next event gets its own seq
    assert book.reserve("R-1", "tmall", [("SKU-1", 3)]).replayed
    report = book.check()
    assert report.ok, report.drifts


def test_reserved_events_are_stored_as_packing_their_maps_would(book: Engine, clock) -> None:
    book.receive("SKU-1", "WH-EAST", 100, pool="online")
    book.receive("SKU-1", "WH-WEST", 10)
    t = clock.now_ms()
    book.create_campaign("NOW", channels=["tmall"], start_ms=t - 1, end_ms=t + 60_000,
                         location="WH-EAST", source_pool="online", quotas={"SKU-1": 4})
    start = book.last_seq
    answers = book.reserve_many([
        ReserveRequest("R-1", "tmall", [("SKU-1", 79), ("SKU-1", 3)], ttl_ms=60_000),
        ReserveRequest("R-ü-日本", "tmall", [("SKU-1", 2)], customer="c-é" * 20),
        ReserveRequest("R-3", "tmall", [("SKU-1", 2)], campaign="NOW", customer="c-2"),
    ])
    book.release("R-3")  # an event of the engine's other path, in the same chunk
    book.flush()
    chunks = [(first, events, value) for first, events, value in _journal_chunks(book)
              if first + len(events) > start]
    assert chunks
    for first, events, value in chunks:
        assert records.pack([first, events]) == value  # canonical msgpack, byte for byte
    got = [ev for first, events, _ in chunks for i, ev in enumerate(events)
           if first + i > start]
    assert [ev["kind"] for ev in got] == ["reserved"] * 3 + ["released"]
    # Each reserved event, built here in _emit()'s key order from the answers, must be
    # what the chunk stores, byte for byte.
    made = {}
    for res in answers:
        pub = res.reservation
        pairs = [_flat(book, ln) for ln in res.lines]
        made[pub.reservation_id] = {
            "id": pub.reservation_id, "channel": pub.channel, "customer": pub.customer,
            "campaign": pub.campaign,
            "held": [[p[x], p[x + 1]] for p in pairs for x in range(0, len(p), 2)],
            "expires_ms": pub.expires_ms, "kind": "reserved", "t": pub.created_ms}
    for first, events, value in chunks:
        rebuilt = [made.get(ev["id"], ev) if ev["kind"] == "reserved" else ev for ev in events]
        assert records.pack([first, rebuilt]) == value
    assert sum(units for _, units in got[0]["held"]) == 82
    assert got[1]["id"] == "R-ü-日本" and got[1]["customer"] == "c-é" * 20
    assert got[2]["campaign"] == "NOW" and got[2]["customer"] == "c-2"
    assert [e["seq"] for e in book.journal(start + 1)] == list(range(start + 1, start + 5))


def test_listeners_get_the_core_s_events_as_a_journal_read_does(book: Engine) -> None:
    heard = []
    book.receive("SKU-1", "WH-EAST", 10)
    book.listen(lambda first, events: heard.extend(events))
    start = book.last_seq
    book.reserve("R-1", "tmall", [("SKU-1", 3)], customer="c-1")
    book.commit("R-1")
    book.flush()
    read = [{k: v for k, v in ev.items() if k != "seq"} for ev in book.journal(start + 1)]
    assert heard == read and [ev["kind"] for ev in heard] == ["reserved", "committed"]


def _journal_chunks(book: Engine):
    for _, value in book._store.items("journal"):
        first, events = records.unpack(value, "journal")
        yield first, events, value


def test_answers_built_in_c_hash_like_the_same_tuples_built_in_python(book: Engine) -> None:
    # The core makes its NamedTuples without tuple.__new__ (engine/_holds.pxi, sg_named).
    book.receive("SKU-1", "WH-EAST", 10)
    res = book.reserve("R-1", "tmall", [("SKU-1", 2)])
    line = res.lines[0]
    for made in (res, res.reservation, line, line.allocations[0]):
        rebuilt = type(made)(*made)
        assert made == rebuilt and hash(made) == hash(rebuilt)


def test_a_packed_listener_gets_the_core_s_events_as_bytes(book: Engine) -> None:
    heard = []
    book.receive("SKU-1", "WH-EAST", 10)
    book.listen(lambda first, events: heard.extend(events), packed=True)
    start = book.last_seq
    book.reserve("R-1", "tmall", [("SKU-1", 3)])
    book.release("R-1")
    book.flush()
    assert type(heard[0]) is bytes and type(heard[1]) is dict
    read = [{k: v for k, v in ev.items() if k != "seq"} for ev in book.journal(start + 1)]
    assert [records.unpack_event(heard[0]), heard[1]] == read


def test_a_listener_that_cannot_be_served_never_stops_the_writer(book: Engine,
                                                                  monkeypatch) -> None:
    # Listeners run on the writer thread after the commit and before the callers are
    # woken: anything raised there once stopped the writer with every caller waiting.
    def broken(value):
        raise ValueError("cannot decode")

    monkeypatch.setattr(records, "unpack_event", broken)
    book.listen(lambda first, events: None)
    book.receive("SKU-1", "WH-EAST", 10)
    answers = []

    def reserve_twice():  # in a thread: a stopped writer would leave it waiting for good
        answers.append(book.reserve("R-1", "tmall", [("SKU-1", 3)]).ok)
        answers.append(book.reserve("R-2", "tmall", [("SKU-1", 3)]).ok)
        book.flush()

    caller = threading.Thread(target=reserve_twice, daemon=True)
    caller.start()
    caller.join(LISTENER_TEST_WAIT_S)
    assert answers == [True, True] and not caller.is_alive()  # the writer still commits
