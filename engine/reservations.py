"""Reservations: their lifecycle state machine and the records callers get back.

The records are NamedTuples: immutable like frozen dataclasses, at a quarter of the cost to
build, which matters when every reservation returns four of them.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from .outcomes import Outcome


class State(enum.IntEnum):
    """HELD -> COMMITTED | RELEASED | EXPIRED; the three ends are final."""

    HELD = 1
    COMMITTED = 2
    RELEASED = 3
    EXPIRED = 4


_MOVES = {
    State.HELD: frozenset({State.HELD, State.COMMITTED, State.RELEASED, State.EXPIRED}),
    State.COMMITTED: frozenset(),
    State.RELEASED: frozenset(),
    State.EXPIRED: frozenset(),
}


class IllegalTransition(AssertionError):
    """A bug: the engine tried a move the lifecycle does not allow."""


def transition(current: State, to: State) -> State:
    """Return `to` if the lifecycle allows current -> to (HELD -> HELD is an extend or
    amend), else raise IllegalTransition. The engine routes every state change here."""
    if to not in _MOVES[current]:
        raise IllegalTransition(f"reservation cannot go from {current.name} to {to.name}")
    return to


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
