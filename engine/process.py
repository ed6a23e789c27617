"""Process-wide settings for a process whose main job is running the engine.

CPython's cyclic GC runs a young-generation pass every 700 container allocations, and each
pass walks the open batch's growing dicts and lists: measured here, that tripled the CPU
per reservation. A server (or a bench) calls tune_gc() once after opening the engine; an
application embedding the engine may prefer to leave its GC alone.
"""

from __future__ import annotations

import gc
import time

# Live young container objects that trigger a young pass (CPython: 700; it counts
# allocations minus deallocations). Set above what a batch's answers and journal events
# waiting for their fsync amount to, so those mostly die before a pass walks them and
# promotes them to be walked again by the middle and full passes. Once fresh holds
# stopped being Python objects (engine.Ledger), 50,000 measured here (`bench/run.py core
# --quick`, alternately, twice each) 146-159k durable reservations/s at 6.0-6.5 µs CPU
# one by one, against 90-129k at 7.5-10.6 µs for 10,000, with young passes of 2-12 ms.
# (Before the ledger, every hold left objects behind and 50,000 made passes of 30-60 ms.)
GC_GEN0_THRESHOLD = 50_000
GC_GEN1_THRESHOLD = 3  # a middle pass every 4th young pass (CPython collects past it)
# A full pass every 3rd middle pass walks only what survived since the last (frozen after
# each, below): under 40 ms measured here, where 20 made passes of 100-140 ms. Side by
# side with 20 it costs about the same CPU per reservation one by one and up to a fifth
# more in batches of 500 (`bench/run.py core --quick`, alternately, twice each).
GC_GEN2_THRESHOLD = 2
SWEEP_PASSES_FIRST = 64  # full passes before the first sweep (see _after_full_pass)
SWEEP_PASSES_GAP_MAX = 4_096  # ... and at most this many between two sweeps
# ... unless sweeping would then take more than this share of the time: a sweep walks
# the whole book (about a second per million reservations).
SWEEP_TIME_SHARE_MAX = 0.001


def tune_gc() -> None:
    """Freeze what exists now (the loaded book) out of the GC's sight, make young passes
    rarer, and keep the book growing while serving out of full passes (below). A server
    calls gc_tick() every second or so after it. Idempotent."""
    gc.collect()
    gc.freeze()
    # CPython runs a full pass only once the survivors of middle passes reach a quarter of
    # what the last full pass kept; after the collect above that is the whole book, so a
    # first long pass would wait for a quarter of the book and then walk all of it. This
    # pass walks nothing (all is frozen) and sets that count to about zero.
    gc.collect()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
    if _after_full_pass not in gc.callbacks:
        gc.callbacks.insert(0, _after_full_pass)


def gc_tick() -> None:
    """Finish a sweep (below) outside the collector, where collecting is allowed: freeze
    what the sweep kept and reset CPython's count of it, as tune_gc() does at start.
    Cheap when there is nothing to do; call it from the event loop about once a second."""
    if _sweep.refreeze:
        _sweep.refreeze = False
        gc.freeze()
        gc.collect()


class _Sweep:
    passes = 0  # full passes since the start
    next_at = SWEEP_PASSES_FIRST  # the full pass after which the frozen are handed back
    not_before = 0.0  # ... and not before this time (time.monotonic())
    due = False  # they were: the next full pass walks everything
    started = 0.0  # when the sweep's pass started
    refreeze = False  # the sweep is over: gc_tick() freezes again


_sweep = _Sweep()


def _after_full_pass(phase: str, info: dict) -> None:
    """After each full pass, freeze its survivors, so the next full pass walks only what
    came since (measured here: left to CPython, full passes over a growing book stopped
    the loop for 180 ms at 200,000 reservations and 740 ms at 900,000).

    Freezing has a price: a frozen object is never examined again, so a reference cycle
    it joins later is never collected, and survivors include calls in flight at that
    moment (tasks, exceptions with their tracebacks) that can end in cycles. So after 64,
    128, 256... full passes (then every 4,096, and never taking more than 0.1 % of the
    time), the frozen are handed back and the next full pass walks everything once and
    collects what leaked: the leak is bounded by what leaks between two sweeps. Passes
    are counted, not objects: counting frozen objects walks them all."""
    if info["generation"] != 2:
        return
    if phase == "start":
        if _sweep.due:
            _sweep.started = time.monotonic()
        return
    if _sweep.due:  # this pass walked everything: gc_tick() freezes again
        _sweep.due = False
        _sweep.refreeze = True
        took = time.monotonic() - _sweep.started
        _sweep.not_before = time.monotonic() + took / SWEEP_TIME_SHARE_MAX
        return
    if _sweep.refreeze:
        return  # a pass before gc_tick() came: leave it to the tick
    _sweep.passes += 1
    if _sweep.passes >= _sweep.next_at and time.monotonic() >= _sweep.not_before:
        _sweep.next_at = _sweep.passes + min(_sweep.passes, SWEEP_PASSES_GAP_MAX)
        _sweep.due = True
        gc.unfreeze()
    else:
        gc.freeze()
