"""A progress bar on stderr for a run made of weighted steps.

On a terminal the bar redraws in place; otherwise (CI, a log file) each step prints one
line, so a log still tells where a run was when it stopped.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_CELLS = 30


class Progress:
    """Steps with weights (their expected share of the run, e.g. in seconds)."""

    def __init__(self, total_weight: float, stream: TextIO | None = None) -> None:
        self.total = max(total_weight, 1e-9)
        self.done = 0.0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.t0 = time.monotonic()
        self.label = ""

    def _line(self) -> str:
        share = min(1.0, self.done / self.total)
        full = int(share * BAR_CELLS)
        bar = "#" * full + "." * (BAR_CELLS - full)
        elapsed = int(time.monotonic() - self.t0)
        return f"[{bar}] {share:4.0%} {elapsed // 60}:{elapsed % 60:02d} {self.label}"

    def show(self, label: str) -> None:
        """Say what runs now."""
        self.label = label
        if self.tty:
            self.stream.write("\r\033[K" + self._line())
        else:
            self.stream.write(self._line() + "\n")
        self.stream.flush()

    def advance(self, weight: float, label: str | None = None) -> None:
        """A step of `weight` finished."""
        self.done += weight
        self.show(label if label is not None else self.label)

    def note(self, message: str) -> None:
        """A line of its own (a skipped system, a failure), the bar redrawn below it."""
        if self.tty:
            self.stream.write("\r\033[K" + message + "\n" + self._line())
        else:
            self.stream.write(message + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.done = self.total
        self.show("done")
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
