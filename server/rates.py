"""Rates: a token bucket per bearer token, so that one caller flooding the server cannot
take the capacity the other callers need.

A token may start `ops_per_s` operations per second on average and up to `burst_ops` at
once after a quiet spell (a unary call is one operation; a batch or a Session message
counts its operations, as admission does). Past that, its calls are refused at once with
RESOURCE_EXHAUSTED and a retry hint saying when the bucket will hold enough, before
anything is done. The in-flight bound (admission) protects the server as a whole; this
protects the callers from each other.

Buckets live on the event loop, like everything they guard, so they need no lock. The
metrics endpoint reads their refusal counters from its own thread; an int read is safe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from .config import Config
from .status import CallError, shed

Clock = Callable[[], float]  # monotonic seconds


class Bucket:
    """The rate of one token. Starts full.

    The bucket is refilled lazily, from the time elapsed since it was last looked at,
    so an idle token costs nothing and a call costs one clock read and a few float
    operations.
    """

    __slots__ = ("name", "ops_per_s", "burst_ops", "tokens", "stamp", "refused_ops",
                 "_clock")

    def __init__(self, name: str, ops_per_s: int, burst_ops: int,
                 clock: Clock = time.monotonic) -> None:
        assert ops_per_s > 0 and burst_ops > 0, (ops_per_s, burst_ops)
        self.name = name
        self.ops_per_s = ops_per_s
        self.burst_ops = burst_ops
        self.tokens = float(burst_ops)
        self._clock = clock
        self.stamp = clock()
        self.refused_ops = 0  # operations refused for the rate, since start

    def _refill(self) -> float:
        now = self._clock()
        tokens = self.tokens + (now - self.stamp) * self.ops_per_s
        if tokens > self.burst_ops:
            tokens = self.burst_ops
        self.stamp = now
        return tokens

    def take(self, n: int) -> CallError | None:
        """Spend n operations, or (all or nothing: a batch is one decision) return the
        refusal, with nothing spent."""
        tokens = self._refill()
        if tokens >= n:
            self.tokens = tokens - n
            return None
        self.tokens = tokens
        self.refused_ops += n
        return self.refusal(n)

    def take_upto(self, n: int) -> int:
        """Spend as many of n operations as the bucket holds and return how many: a
        Session answers each operation on its own, so the rest are refused one by one
        (see refusal())."""
        tokens = self._refill()
        k = n if tokens >= n else int(tokens)
        self.tokens = tokens - k
        self.refused_ops += n - k
        return k

    def give_back(self, n: int) -> None:
        """n operations spent were never started (the server shed them for its own
        load): a caller is not charged for the server's overload."""
        tokens = self.tokens + n
        self.tokens = tokens if tokens < self.burst_ops else self.burst_ops

    def refusal(self, n: int) -> CallError:
        """RESOURCE_EXHAUSTED for n operations, with the time until the bucket holds
        them (or holds a burst, for more than a burst)."""
        missing = min(n, self.burst_ops) - self.tokens
        retry_after_ms = max(1, math.ceil(missing * 1000 / self.ops_per_s))
        return shed(f"token {self.name!r} is past its rate of {self.ops_per_s} operations "
                    f"per second (burst {self.burst_ops}); retry in {retry_after_ms} ms",
                    retry_after_ms)


def token_rate(config: Config, name: str) -> tuple[int, int]:
    """(ops_per_s, burst_ops) of token `name`: its own, else the server-wide defaults
    (token_ops_per_s, token_burst_ops). ops_per_s 0 is unlimited; burst_ops 0 is one
    second at the token's rate."""
    grant = config.tokens[name]
    ops_per_s = config.token_ops_per_s if grant.ops_per_s is None else grant.ops_per_s
    burst_ops = config.token_burst_ops if grant.burst_ops is None else grant.burst_ops
    return ops_per_s, burst_ops or ops_per_s


def buckets(config: Config, clock: Clock = time.monotonic) -> dict[str, Bucket]:
    """A bucket for each token with a rate (unlimited tokens have none). With auth off
    there are no tokens, so no buckets: one caller has nobody to starve."""
    out = {}
    for name in config.tokens:
        ops_per_s, burst_ops = token_rate(config, name)
        if ops_per_s:
            out[name] = Bucket(name, ops_per_s, burst_ops, clock)
    return out


def refused(rates: Mapping[str, Bucket]) -> dict[str, int]:
    """Operations refused for the rate, per token name (never its secret)."""
    return {name: b.refused_ops for name, b in rates.items()}


__all__ = ["Bucket", "Clock", "buckets", "refused", "token_rate"]
