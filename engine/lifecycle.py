"""The reservation lifecycle: an explicit state machine with one function that moves it."""

from __future__ import annotations

import enum


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
