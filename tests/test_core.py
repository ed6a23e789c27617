"""The Cython core on its own: CAS counters and the batch decide(), also under threads."""

from __future__ import annotations

import struct
import threading
import time
from array import array

import pytest

from stockgate.engine import _core, records
from stockgate.engine._core import (
    FLAG_PARTIAL,
    FLAG_PRESALE,
    LINE_OK,
    LINE_SHORT_LIMIT,
    LINE_SHORT_STOCK,
    Counters,
)


def decide(counters: Counters, ops, limits: Counters | None = None):
    """ops: [(flags, [(qty, limit index or -1, [source counters...]), ...]), ...].

    Returns (full, per line: (granted, status, [taken per source])).
    """
    op_end, flags, qty, lim, src_end, srcs = (array("q") for _ in range(6))
    for f, lines in ops:
        flags.append(f)
        for q, li, sources in lines:
            qty.append(q)
            lim.append(li)
            srcs.extend(sources)
            src_end.append(len(srcs))
        op_end.append(len(qty))
    taken = array("q", [0] * len(srcs))
    granted = array("q", [0] * len(qty))
    status = array("q", [0] * len(qty))
    full = counters.decide(limits if limits is not None else Counters(), op_end, flags, qty,
                           lim, src_end, srcs, taken, granted, status)
    lines = []
    for j in range(len(qty)):
        k0 = src_end[j - 1] if j else 0
        lines.append((granted[j], status[j], list(taken[k0:src_end[j]])))
    return full, lines


def table(*stock: int, floor: int = 0) -> Counters:
    c = Counters()
    for s in stock:
        c.add(s, 0, floor)
    return c


def avail(c: Counters) -> list[int]:
    return [c.available(i) for i in range(len(c))]


# ------------------------------------------------------------------ counters

def test_counter_basics():
    c = Counters()
    assert len(c) == 0
    i = c.add(10, 3, -2)
    assert (c.on_hand_of(i), c.held(i), c.available(i), c.floor_of(i)) == (10, 3, 7, -2)
    c.add_on_hand(i, 5)      # receipt: on_hand and available move together
    assert (c.on_hand_of(i), c.held(i), c.available(i)) == (15, 3, 12)
    c.settle(i, 2)           # commit: on_hand and held drop
    assert (c.on_hand_of(i), c.held(i), c.available(i)) == (13, 1, 12)
    c.credit(i, 1)           # release
    assert (c.held(i), c.available(i)) == (0, 13)
    assert c.try_take(i, 13) and not c.try_take(i, 1)
    assert c.try_take(i, 2, presale=True) and not c.try_take(i, 1, presale=True)
    assert c.available(i) == -2
    with pytest.raises(ValueError):
        c.add(1, 0, 1)       # a floor above zero makes no sense
    with pytest.raises(IndexError):
        c.available(5)


def test_bucket_records_are_what_the_store_reads_back():
    c = table(7, 9)
    c.try_take(1, 4)
    c.add(5, 0, -3)  # a presale floor: negative
    recs = c.bucket_records([1, 0, 2], records.BUCKET_FORMAT_VERSION)
    assert list(recs) == [records.bucket_id_key(b) for b in (1, 0, 2)]
    assert all(len(v) == records.BUCKET.size for v in recs.values())
    assert [records.decode_bucket(v) for v in recs.values()] == [(9, 0), (7, 0), (5, -3)]
    assert recs[records.bucket_id_key(0)] == records.bucket_value(struct.pack("<qq", 7, 0))
    with pytest.raises(IndexError):
        c.bucket_records([3], records.BUCKET_FORMAT_VERSION)


def test_changes_of_on_hand_and_floor_are_tracked_and_holds_are_not():
    c = Counters(track_changes=True)
    for _ in range(4):
        c.add(10, 0, 0)
    assert c.take_changed() == [0, 1, 2, 3] and c.take_changed() == []
    c.try_take(0, 2)
    c.credit(0, 1)
    c.force_take(1, 1)
    assert c.take_changed() == []  # holds come back from the reservations, not the store
    c.settle(2, 1)
    c.add_on_hand(1, 5)
    c.set_floor(3, -4)
    assert c.take_changed() == [1, 2, 3]
    u = Counters()  # an untracked table (the customer allowances) tracks nothing
    u.add(1, 0, 0)
    u.add_on_hand(0, 1)
    assert u.take_changed() == []
    u.track_changes(True)
    u.settle(0, 1)
    assert u.take_changed() == [0]


def test_growth_keeps_values():
    c = Counters()
    for i in range(5_000):
        c.add(i, 0, 0)
    assert len(c) == 5_000 and c.available(4_999) == 4_999
    assert c.memory_bytes() >= 3 * 8 * 5_000


# ------------------------------------------------------------------ decide, one thread

@pytest.mark.parametrize("story, stock, ops, full, lines, after", [
    ("one line, enough stock -> granted",
     (5,), [(0, [(3, -1, [0])])], 1, [(3, LINE_OK, [3])], [2]),
    ("split across sources in order: 3 then 3",
     (3, 5), [(0, [(6, -1, [0, 1])])], 1, [(6, LINE_OK, [3, 3])], [0, 2]),
    ("source order matters: 5 from the second first",
     (3, 5), [(0, [(6, -1, [1, 0])])], 1, [(6, LINE_OK, [5, 1])], [2, 0]),
    ("short -> all or nothing: nothing taken",
     (3, 2), [(0, [(6, -1, [0, 1])])], 0, [(0, LINE_SHORT_STOCK, [0, 0])], [3, 2]),
    ("second line short -> the first line's units come back",
     (5, 1), [(0, [(4, -1, [0]), (2, -1, [1])])], 0,
     [(0, LINE_OK, [0]), (0, LINE_SHORT_STOCK, [0])], [5, 1]),
    ("first line short -> later lines not tried",
     (1, 5), [(0, [(2, -1, [0]), (2, -1, [1])])], 0,
     [(0, LINE_SHORT_STOCK, [0]), (0, LINE_OK, [0])], [1, 5]),
    ("two lines of one counter over stock -> nothing",
     (8,), [(0, [(5, -1, [0]), (5, -1, [0])])], 0,
     [(0, LINE_OK, [0]), (0, LINE_SHORT_STOCK, [0])], [8]),
    ("partial: the short line gets what there is",
     (5, 1), [(FLAG_PARTIAL, [(4, -1, [0]), (2, -1, [1])])], 0,
     [(4, LINE_OK, [4]), (1, LINE_SHORT_STOCK, [1])], [1, 0]),
    ("partial on an empty counter -> 0 granted",
     (0,), [(FLAG_PARTIAL, [(2, -1, [0])])], 0, [(0, LINE_SHORT_STOCK, [0])], [0]),
    ("ops in order: the second op sees what the first left",
     (5,), [(0, [(3, -1, [0])]), (0, [(3, -1, [0])]), (0, [(2, -1, [0])])], 2,
     [(3, LINE_OK, [3]), (0, LINE_SHORT_STOCK, [0]), (2, LINE_OK, [2])], [0]),
    ("a line with no sources -> short",
     (5,), [(0, [(1, -1, [])])], 0, [(0, LINE_SHORT_STOCK, [])], [5]),
])
def test_decide_table(story, stock, ops, full, lines, after):
    c = table(*stock)
    got_full, got_lines = decide(c, ops)
    assert (got_full, got_lines) == (full, lines), story
    assert avail(c) == after
    assert [c.on_hand_of(i) for i in range(len(c))] == list(stock)  # holds only


@pytest.mark.parametrize("story, flags, want, granted, after", [
    ("no presale flag: stops at 0", 0, 7, 0, 5),
    ("presale: down to the floor -3", FLAG_PRESALE, 8, 8, -3),
    ("presale: one past the floor -> nothing", FLAG_PRESALE, 9, 0, 5),
    ("presale + partial: up to the floor", FLAG_PRESALE | FLAG_PARTIAL, 9, 8, -3),
    ("partial without presale: up to 0", FLAG_PARTIAL, 9, 5, 0),
])
def test_presale_floor(story, flags, want, granted, after):
    c = table(5, floor=-3)
    _, [(g, _, _)] = decide(c, [(flags, [(want, -1, [0])])])
    assert (g, c.available(0)) == (granted, after), story


def test_presale_floor_split_across_sources():
    c = Counters()
    c.add(2, 0, -1)
    c.add(2, 0, 0)
    _, [(g, _, taken)] = decide(c, [(FLAG_PRESALE, [(5, -1, [0, 1])])])
    assert (g, taken, avail(c)) == (5, [3, 2], [-1, 0])


def test_customer_limit_counter():
    stock, lim = table(100), table(3)  # the customer may take 3 more units of this SKU
    full, lines = decide(stock, [(0, [(2, 0, [0])])], lim)
    assert (full, lines[0][:2], lim.available(0)) == (1, (2, LINE_OK), 1)
    full, lines = decide(stock, [(0, [(2, 0, [0])])], lim)
    assert (full, lines[0][:2], lim.available(0)) == (0, (0, LINE_SHORT_LIMIT), 1)
    assert stock.available(0) == 98
    full, lines = decide(stock, [(FLAG_PARTIAL, [(2, 0, [0])])], lim)
    assert lines[0][:2] == (1, LINE_SHORT_LIMIT) and lim.available(0) == 0


def test_limit_is_given_back_when_stock_is_short():
    stock, lim = table(1), table(5)
    full, lines = decide(stock, [(0, [(3, 0, [0])])], lim)
    assert lines[0][:2] == (0, LINE_SHORT_STOCK)
    assert (stock.available(0), lim.available(0)) == (1, 5)
    # partial: the limit keeps only what stock could give
    full, lines = decide(stock, [(FLAG_PARTIAL, [(3, 0, [0])])], lim)
    assert lines[0][0] == 1 and (stock.available(0), lim.available(0)) == (0, 4)


def test_limit_rolled_back_with_a_failed_later_line():
    stock, lim = table(10, 0), table(5)
    full, lines = decide(stock, [(0, [(2, 0, [0]), (1, -1, [1])])], lim)
    assert full == 0 and [ln[0] for ln in lines] == [0, 0]
    assert (stock.available(0), lim.available(0)) == (10, 5)


@pytest.mark.parametrize("story, mutate, exc", [
    ("op_flags length", lambda a: a.update(flags=array("q")), ValueError),
    ("source out of range", lambda a: a.update(srcs=array("q", [7])), IndexError),
    ("limit out of range", lambda a: a.update(lim=array("q", [3])), IndexError),
    ("qty zero", lambda a: a.update(qty=array("q", [0])), ValueError),
    ("qty negative", lambda a: a.update(qty=array("q", [-4])), ValueError),
    ("taken too short", lambda a: a.update(taken=array("q")), ValueError),
    ("op_line_end past the lines", lambda a: a.update(op_end=array("q", [2])), ValueError),
])
def test_decide_refuses_malformed_arrays(story, mutate, exc):
    c = table(5)
    a = dict(op_end=array("q", [1]), flags=array("q", [0]), qty=array("q", [1]),
             lim=array("q", [-1]), src_end=array("q", [1]), srcs=array("q", [0]),
             taken=array("q", [0]), granted=array("q", [0]), status=array("q", [0]))
    mutate(a)
    with pytest.raises(exc):
        c.decide(Counters(), a["op_end"], a["flags"], a["qty"], a["lim"], a["src_end"],
                 a["srcs"], a["taken"], a["granted"], a["status"])
    assert c.available(0) == 5, story


# ------------------------------------------------------------------ THE THREAD TEST

def _batch(n_ops: int, seed: int, sources: list[int], partial_every: int = 0):
    """n_ops one-line ops of 1-3 units walking `sources`; all-or-nothing unless
    partial_every marks every partial_every-th op FLAG_PARTIAL. Built with array
    arithmetic so that big batches cost nothing to make."""
    pattern = [1 + (seed + i) % 3 for i in range(3)]
    qty = array("q", pattern) * (n_ops // 3) + array("q", pattern[:n_ops % 3])
    flags = array("q", [0]) * n_ops
    if partial_every:
        flags[::partial_every] = array("q", [FLAG_PARTIAL]) * len(range(0, n_ops,
                                                                          partial_every))
    width = len(sources)
    srcs = array("q", sources) * n_ops
    src_end = array("q", range(width, width * n_ops + 1, width))
    op_end = array("q", range(1, n_ops + 1))
    lim = array("q", [-1]) * n_ops
    return op_end, flags, qty, lim, src_end, srcs


def _run_threads(counters: Counters, batches, watch: list[int], limits=None):
    """Run one decide() per batch, each in its own thread, all released together; a
    watcher samples the watched counters meanwhile. Returns per batch (taken, granted,
    status), the lowest value seen per watched counter, and each call's (start, end)."""
    outs = []
    for b in batches:
        outs.append((array("q", bytes(8 * len(b[5]))), array("q", bytes(8 * len(b[2]))),
                     array("q", bytes(8 * len(b[2])))))
    barrier = threading.Barrier(len(batches) + 1)
    done = threading.Event()
    lowest = {i: counters.available(i) for i in watch}
    spans = [None] * len(batches)
    lim = limits if limits is not None else Counters()

    def work(k):
        barrier.wait()
        t0 = time.perf_counter()
        counters.decide(lim, *batches[k], *outs[k])
        spans[k] = (t0, time.perf_counter())

    def watcher():
        barrier.wait()
        while not done.is_set():
            for i in watch:
                v = counters.available(i)
                if v < lowest[i]:
                    lowest[i] = v

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(batches))]
    w = threading.Thread(target=watcher)
    for t in threads + [w]:
        t.start()
    for t in threads:
        t.join()
    done.set()
    w.join()
    return outs, lowest, spans


def _overlapped(spans) -> bool:
    """Did at least two decide() calls run at the same time (the GIL was released)?"""
    return any(a[0] < b[1] and b[0] < a[1]
               for i, a in enumerate(spans) for b in spans[i + 1:])


@pytest.mark.parametrize("round_", range(4))
def test_threads_on_one_hot_counter_never_oversell(round_):
    """THE THREAD TEST: four threads, each one decide() of 600,000 ops on one counter
    (2.4 M units asked of 1 M), two of them with partial ops mixed in."""
    stock = 1_000_000
    c = table(stock)
    n_threads, n_ops = 4, 600_000
    batches = [_batch(n_ops, seed=round_ + k, sources=[0], partial_every=7 if k % 2 else 0)
               for k in range(n_threads)]
    outs, lowest, spans = _run_threads(c, batches, [0])
    granted = sum(sum(g) for _, g, _ in outs)
    taken = sum(sum(t) for t, _, _ in outs)
    assert granted == taken
    assert granted <= stock
    assert granted >= stock - 2  # demand dwarfs stock: at most a unit or two stranded
    assert c.available(0) == stock - granted >= 0
    assert lowest[0] >= 0
    assert c.on_hand_of(0) == stock and c.held(0) == granted
    for (_, granted_b, status_b), b in zip(outs, batches):
        flags, qty = b[1], b[2]
        for j in range(0, len(qty), 97):  # a sample: all or nothing, even racing
            assert 0 <= granted_b[j] <= qty[j]
            if not flags[j] & FLAG_PARTIAL:
                assert granted_b[j] in (0, qty[j])
            assert (status_b[j] == LINE_OK) == (granted_b[j] == qty[j])


def test_decide_releases_the_gil_for_big_batches():
    """Two big decide() calls in two threads run at the same time (the scheduler may
    serialise one attempt on a busy machine, so a few attempts are allowed)."""
    attempts = []
    for _ in range(5):
        c = table(10**12)
        batches = [_batch(1_000_000, seed=k, sources=[0]) for k in range(2)]
        _, _, spans = _run_threads(c, batches, [])
        attempts.append(spans)
        if _overlapped(spans):
            break
    else:
        pytest.fail(f"decide() calls never ran at the same time: {attempts}")


@pytest.mark.parametrize("round_", range(3))
def test_threads_all_or_nothing_across_two_hot_counters(round_):
    """Every op takes one line from counter 0 and one from counter 1; rollbacks race
    with takers. Counters are conserved exactly and never dip below 0."""
    c = table(300_000, 200_000)
    n_threads, n_ops = 4, 200_000
    batches = []
    for k in range(n_threads):
        first = (0, 1) if k % 2 else (1, 0)  # half the threads walk the other way round
        op_end = array("q", range(2, 2 * n_ops + 1, 2))
        flags = array("q", [0]) * n_ops
        qty = array("q", [1 + (k + round_) % 2, 1, 2, 1 + k % 2]) * (n_ops // 2)
        lim = array("q", [-1]) * (2 * n_ops)
        srcs = array("q", first) * n_ops
        src_end = array("q", range(1, 2 * n_ops + 1))
        batches.append((op_end, flags, qty, lim, src_end, srcs))
    outs, lowest, spans = _run_threads(c, batches, [0, 1])
    taken_from = [0, 0]
    for (taken, granted, _), b in zip(outs, batches):
        srcs, qty = b[5], b[2]
        for j in range(0, len(qty), 2):
            pair = (granted[j], granted[j + 1])
            assert pair == (0, 0) or pair == (qty[j], qty[j + 1])  # both lines or neither
        for s in (0, 1):
            taken_from[srcs[s]] += sum(taken[s::2])
    assert lowest[0] >= 0 and lowest[1] >= 0
    assert c.available(0) == 300_000 - taken_from[0] >= 0
    assert c.available(1) == 200_000 - taken_from[1] >= 0
    assert c.held(0) == taken_from[0] and c.held(1) == taken_from[1]
    assert min(c.available(0), c.available(1)) <= 2  # demand exhausted one of them


def test_threads_with_a_shared_customer_limit():
    """Four threads race for one customer's allowance of 50,000 units over plenty of
    stock: the allowance, not the stock, is the hot counter."""
    c, lim = table(10_000_000), table(50_000)
    n_ops = 100_000
    batches = []
    for k in range(4):
        b = list(_batch(n_ops, seed=k, sources=[0]))
        b[3] = array("q", [0]) * n_ops  # every line charges limit counter 0
        batches.append(tuple(b))
    outs, _, spans = _run_threads(c, batches, [0], limits=lim)
    total = sum(sum(g) for _, g, _ in outs)
    assert 49_998 <= total <= 50_000
    assert lim.available(0) == 50_000 - total >= 0
    assert c.held(0) == total
    assert any(LINE_SHORT_LIMIT in s for _, _, s in outs)
    assert LINE_SHORT_STOCK not in [x for _, _, s in outs for x in s]


def test_grow_refused_while_decide_runs():
    """The arrays must not move under a running decide(): add() waits for none, it refuses."""
    c = table(10_000_000)
    b = _batch(400_000, seed=1, sources=[0])
    out = (array("q", bytes(8 * len(b[5]))), array("q", bytes(8 * len(b[2]))),
           array("q", bytes(8 * len(b[2]))))
    errors = []
    started = threading.Event()

    def work():
        started.set()
        c.decide(Counters(), *b, *out)

    t = threading.Thread(target=work)
    t.start()
    started.wait()
    try:
        for _ in range(_core.CAPACITY_MIN * 4):
            c.add()
    except RuntimeError as exc:
        errors.append(exc)
    t.join()
    # either decide finished before the table had to grow, or add() refused to move it
    assert errors == [] or "cannot grow" in str(errors[0])
    assert sum(out[1]) == 10_000_000 - c.available(0)


def test_the_reservation_pass_uses_the_engines_outcome_codes():
    from stockgate.engine import Outcome

    assert {name: int(Outcome[name]) for name in _core.HOLD_OUTCOME_CODES} == \
        _core.HOLD_OUTCOME_CODES
