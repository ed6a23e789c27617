"""Business outcomes and reservation states, as the clients hand them to callers.

The numbers are the wire contract's (proto/stockgate/v1/types.proto) and never change;
the clients keep their own copy so that a client install needs neither the engine nor
protobuf types in its callers' code.
"""

from __future__ import annotations

import enum

__all__ = ["Outcome", "State"]


class Outcome(enum.IntEnum):
    """The outcome of a reservation call, and of each of its lines: an answer, not an error.

    The server checks them in this order, so a caller sees the most fundamental problem
    first: ID_CONFLICT, NOT_FOUND, NOT_HELD, UNKNOWN_CAMPAIGN, CAMPAIGN_NOT_ACTIVE,
    CHANNEL_NOT_IN_CAMPAIGN, UNKNOWN_SKU, CUSTOMER_LIMIT, INSUFFICIENT_STOCK.
    """

    OK = 0
    PARTIAL = 1  # partial fulfilment was allowed and some line got less than asked
    INSUFFICIENT_STOCK = 2
    CUSTOMER_LIMIT = 3  # the customer's per-SKU campaign limit would be exceeded
    CAMPAIGN_NOT_ACTIVE = 4  # outside the campaign's window, or stopped
    CHANNEL_NOT_IN_CAMPAIGN = 5
    UNKNOWN_CAMPAIGN = 6
    UNKNOWN_SKU = 7  # never had stock of this SKU (or the campaign has no quota of it)
    ID_CONFLICT = 8  # the id was used before for a request with other content
    NOT_FOUND = 9  # commit/release/extend/amend of an id never reserved
    NOT_HELD = 10  # the reservation is already committed, released or expired

    @property
    def granted(self) -> bool:
        """True for OK and PARTIAL: the call did what it was asked (or what it could)."""
        return self in (Outcome.OK, Outcome.PARTIAL)


class State(enum.IntEnum):
    """Where a reservation is in its life: HELD -> COMMITTED | RELEASED | EXPIRED."""

    HELD = 1
    COMMITTED = 2
    RELEASED = 3
    EXPIRED = 4
