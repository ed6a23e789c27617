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
    from stockgate.engine import tune_gc
    from stockgate.engine.process import SWEEP_PASSES_FIRST

    class Node:
        pass

    tune_gc()
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle, alive (like a call in flight) at the next freeze
    gone = weakref.ref(a)
    gc.collect()  # full pass 1: a and b survive it and are frozen
    del a, b  # now garbage, but frozen
    alive = []
    for _ in range(2 * SWEEP_PASSES_FIRST):
        gc.collect()
        alive.append(gone() is not None)
    print(json.dumps({"alive": alive, "first": SWEEP_PASSES_FIRST,
                      "thresholds": gc.get_threshold()}))
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
