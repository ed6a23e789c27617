"""Process-wide settings for a process whose main job is running the engine.

CPython's cyclic GC runs a young-generation pass every 700 container allocations, and each
pass walks the open batch's growing dicts and lists: measured here, that tripled the CPU
per reservation. A server (or a bench) calls tune_gc() once after opening the engine; an
application embedding the engine may prefer to leave its GC alone.
"""

from __future__ import annotations

import gc

# Container allocations between young passes (CPython: 700). Each pass stops the event
# loop for its young objects: at 50,000 the passes showed in the p99 of answers, at
# 10,000 none passed 15 ms. Measured side by side (`bench/run.py core --quick`, run
# alternately twice each), 10,000 also cost less CPU per durable reservation: 12-17 µs
# against 14-19 µs (with the middle-pass freeze below in both).
GC_GEN0_THRESHOLD = 10_000
GC_GEN1_THRESHOLD = 3  # each middle pass walks at most 3 young passes of survivors
GC_GEN2_THRESHOLD = 20


def tune_gc() -> None:
    """Freeze what exists now (the loaded book) out of the GC's sight, make young passes
    rarer, and freeze what survives each older pass too. Idempotent."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict) -> None:
    """What outlives a middle-generation pass is the book growing (reservations, their
    records): measured here, each such pass over a million of them stopped the event
    loop for 185 ms, and a full pass grows with the book without end. Frozen, they are
    never walked again. The price: a reference cycle formed later among frozen objects
    is never collected; the engine's long-lived objects hold no cycles."""
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()
