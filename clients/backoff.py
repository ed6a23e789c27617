"""Capped exponential backoff with jitter, for reconnecting streams and retries."""

from __future__ import annotations

import random

from . import limits

__all__ = ["Backoff"]


class Backoff:
    """Delays for successive failed attempts: uniform in [initial/4, min(cap, initial * 2**n)].

    The jitter spreads the reconnects of many clients after a server restart, so they do
    not arrive together; the floor keeps a client from spinning when the draw is near 0.
    `reset()` after a success starts again from the smallest delay.
    """

    def __init__(self, initial_ms: int = limits.BACKOFF_INITIAL_MS,
                 max_ms: int = limits.BACKOFF_MAX_MS,
                 multiplier: float = limits.BACKOFF_MULTIPLIER) -> None:
        self.initial_ms = initial_ms
        self.max_ms = max_ms
        self.multiplier = multiplier
        self.failures = 0

    def next_delay_s(self) -> float:
        """The delay before the next attempt, in seconds; counts one more failure."""
        cap = min(self.max_ms, self.initial_ms * self.multiplier ** self.failures)
        self.failures += 1
        return random.uniform(self.initial_ms / 4, cap) / 1_000

    def reset(self) -> None:
        self.failures = 0
