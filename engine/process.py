"""Process-wide settings for a process whose main job is running the engine.

CPython's cyclic GC runs a young-generation pass every 700 container allocations, and each
pass walks the open batch's growing dicts and lists: measured here, that tripled the CPU
per reservation. A server (or a bench) calls tune_gc() once after opening the engine; an
application embedding the engine may prefer to leave its GC alone.
"""

from __future__ import annotations

import gc

GC_GEN0_THRESHOLD = 50_000  # container allocations between young passes (CPython: 700)
GC_GEN1_THRESHOLD = 20
GC_GEN2_THRESHOLD = 20


def tune_gc() -> None:
    """Freeze what exists now (the loaded book) out of the GC's sight and make young
    passes rarer. Idempotent."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
