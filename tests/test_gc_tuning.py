"""The GC policy of a serving process (stockgate.engine.tune_gc): survivors of full
passes are frozen, and the frozen are handed back for one full sweep at 64, 128, 256...
full passes, so a cycle that was alive at a freeze and became garbage later is collected
at the next sweep, not never. Run in a subprocess: the policy is process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import gc, json, weakref
    from stockgate.engine import gc_tick, tune_gc
    from stockgate.engine.process import SWEEP_PASSES_FIRST, _sweep

    class Node:
        pass

    tune_gc()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, alive (like a call in flight) at the next freeze
    gone = weakref.ref(a)
    gc.collect()  # full pass 1: a and b survive it and are frozen
    del a, b  # now garbage, but frozen
    alive = []
    frozen_after_sweep = None
    for _ in range(2 * SWEEP_PASSES_FIRST):
        gc.collect()
        alive.append(gone() is not None)
        if _sweep.refreeze and frozen_after_sweep is None:
            gc_tick()  # what the server's loop does every second
            frozen_after_sweep = gc.get_freeze_count()
    print(json.dumps({"alive": alive, "first": SWEEP_PASSES_FIRST,
                      "thresholds": gc.get_threshold(), "refrozen": frozen_after_sweep,
                      "refreeze_left": _sweep.refreeze}))
""")


def test_a_cycle_frozen_while_alive_is_collected_at_the_next_sweep():
    import json

    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    r = json.loads(out)
    alive, first = r["alive"], r["first"]
    # Frozen: full passes do not see it until the sweep's...
    assert all(alive[:first - 2])
    # ...which hands the frozen back after pass `first` and walks everything next.
    assert not alive[first]
    assert r["thresholds"][0] > 700  # young passes made rarer than CPython's default
    # After the sweep, the tick froze what it kept, and nothing was left to do.
    assert r["refrozen"] and r["refrozen"] > 0 and not r["refreeze_left"]


DEFERRAL = textwrap.dedent("""
    import gc, json
    from stockgate.engine import tune_gc
    from stockgate.engine.process import (GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD,
                                          GC_GEN2_THRESHOLD)

    book = [[i] for i in range(1_000_000)]  # a loaded book: a million tracked objects
    full = []
    gc.callbacks.append(
        lambda phase, info: full.append(1) if phase == "stop" and info["generation"] == 2
        else None)
    tune_gc()
    full.clear()
    # What survives while serving: enough young passes for a full one, by the thresholds
    # (a full pass comes after GEN2 + 1 middle passes, each after GEN1 + 1 young ones).
    enough = GC_GEN0_THRESHOLD * (GC_GEN1_THRESHOLD + 1) * (GC_GEN2_THRESHOLD + 1) * 2
    served = [[i] for i in range(enough)]
    print(json.dumps({"full_passes": len(full)}))
""")


def test_full_passes_keep_coming_after_a_big_book_is_frozen():
    # CPython waits for a quarter of what its last full pass kept before the next one;
    # if that were the whole book, the first pass while serving would come late and walk
    # a quarter of the book at once.
    import json

    out = subprocess.run([sys.executable, "-c", DEFERRAL], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert json.loads(out)["full_passes"] >= 1
