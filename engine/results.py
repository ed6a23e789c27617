"""The records a reservation call gives back.

The records are NamedTuples: immutable like frozen dataclasses, at a quarter of the cost to
build, which matters when every reservation returns four of them.
"""

from __future__ import annotations

from typing import NamedTuple

from .lifecycle import State
from .outcomes import Outcome


class Allocation(NamedTuple):
    """Units of one line held in (or committed from) one bucket."""

    location: str
    pool: str
    qty: int


class LineResult(NamedTuple):
    """One line of a reservation: what was asked, what was granted, and from where."""

    sku: str
    qty: int
    granted: int
    outcome: Outcome
    allocations: tuple[Allocation, ...] = ()


class Reservation(NamedTuple):
    """A reservation as stored: a snapshot, safe to keep after the call."""

    reservation_id: str
    channel: str
    state: State
    lines: tuple[LineResult, ...]
    customer: str | None
    campaign: str | None
    created_ms: int
    expires_ms: int
    resolved_ms: int | None = None
    committed: tuple[tuple[str, int], ...] = ()  # (sku, units) committed, after a commit

    @property
    def units(self) -> int:
        """Units this reservation holds (HELD) or held when it ended."""
        return sum(line.granted for line in self.lines)


class Result(NamedTuple):
    """The answer to reserve/commit/release/extend/amend.

    `outcome` is the call's outcome; `reservation` is the reservation after the call
    (None when it does not exist); `replayed` is True when this repeats an earlier
    identical call's answer instead of doing it again.
    """

    outcome: Outcome
    reservation: Reservation | None = None
    replayed: bool = False
    lines: tuple[LineResult, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome.granted
