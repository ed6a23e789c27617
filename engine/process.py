"""Process-wide settings for a process whose main job is running the engine.

CPython's cyclic GC runs a young-generation pass every 700 container allocations, and each
pass walks the open batch's growing dicts and lists: measured here, that tripled the CPU
per reservation. A server (or a bench) calls tune_gc() once after opening the engine; an
application embedding the engine may prefer to leave its GC alone.
"""

from __future__ import annotations

import gc

# Container allocations between young passes (CPython: 700). Each pass stops the event
# loop while it walks the young objects: at 50,000, passes of 30-60 ms every second or
# two were an unloaded server's p99. Measured side by side (`bench/run.py core --quick`,
# alternately, twice each), 10,000 costs no more CPU per durable reservation (15-17 µs
# one by one, 12-13 µs in batches, against 16 and 14-16 µs) and lowers the p99 (19-25 ms
# against 26-28 ms; in batches 100-126 ms against 140-190 ms).
GC_GEN0_THRESHOLD = 10_000
GC_GEN1_THRESHOLD = 3  # a middle pass walks the survivors of 3 young passes, not 20
GC_GEN2_THRESHOLD = 20


def tune_gc() -> None:
    """Freeze what exists now (the loaded book) out of the GC's sight and make young
    passes rarer. Idempotent.

    Only what exists at this call is frozen, never later: a frozen object is not examined
    again, so a reference cycle it later joined would never be collected, and a server's
    objects at any later moment include calls in flight (tasks, exceptions with their
    tracebacks) that do end in cycles. The price is that full passes still walk the book
    grown since the start; CPython runs one only when the long-lived objects grew by a
    quarter since the last."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
