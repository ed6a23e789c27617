"""What a reservation call gives back: immutable records, safe to keep after the call."""

from __future__ import annotations

from typing import NamedTuple

from .outcomes import Outcome, State

__all__ = ["Allocation", "LineResult", "Reservation", "Result"]


class Allocation(NamedTuple):
    """Units of one line held in (or committed from) one bucket."""

    location: str
    pool: str
    qty: int  # units


class LineResult(NamedTuple):
    """One line of a reservation: what was asked, what was granted, and from where."""

    sku: str
    qty: int  # units asked
    granted: int  # units held; 0 when the line was refused
    outcome: Outcome
    allocations: tuple[Allocation, ...] = ()  # in source order; their qty sums to granted


class Reservation(NamedTuple):
    """A reservation as the server stores it."""

    reservation_id: str
    channel: str
    state: State
    lines: tuple[LineResult, ...]  # in request order
    customer: str | None
    campaign: str | None
    created_ms: int  # ms since the Unix epoch
    expires_ms: int  # ms since the Unix epoch; held until then unless extended
    resolved_ms: int | None = None  # when it left HELD; None while HELD
    committed: tuple[tuple[str, int], ...] = ()  # (sku, units) committed, after a commit

    @property
    def units(self) -> int:
        """Units this reservation holds (HELD), or held when it ended."""
        return sum(line.granted for line in self.lines)


class Result(NamedTuple):
    """The answer to reserve, commit, release, extend or amend.

    `outcome` is the call's outcome (check `ok` first); `reservation` is the reservation
    after the call, None when it does not exist (a refused reserve, NOT_FOUND);
    `replayed` is True when the server repeated the answer of an earlier identical call
    (a retry after a lost response) instead of doing it again; `lines` says, for a
    refused reserve or amend, which line was short and why.
    """

    outcome: Outcome
    reservation: Reservation | None = None
    replayed: bool = False
    lines: tuple[LineResult, ...] = ()

    @property
    def ok(self) -> bool:
        """True when the call did what it asked (OK, or PARTIAL when partial was allowed)."""
        return self.outcome.granted
