"""Business outcomes: answers, not failures. Every reservation call returns one."""

from __future__ import annotations

import enum


class Outcome(enum.IntEnum):
    """The outcome of a reservation call, and of each of its lines.

    Checked in this order, so a caller sees the most fundamental problem first:
    ID_CONFLICT, NOT_FOUND, NOT_HELD, UNKNOWN_CAMPAIGN, CAMPAIGN_NOT_ACTIVE,
    CHANNEL_NOT_IN_CAMPAIGN, UNKNOWN_SKU, CUSTOMER_LIMIT, INSUFFICIENT_STOCK.
    The numbers are part of the wire contract: never renumber.
    """

    OK = 0
    PARTIAL = 1  # partial fulfilment was allowed and some line got less than asked
    INSUFFICIENT_STOCK = 2
    CUSTOMER_LIMIT = 3  # the customer's per-SKU campaign limit would be exceeded
    CAMPAIGN_NOT_ACTIVE = 4  # outside the campaign's window, or stopped
    CHANNEL_NOT_IN_CAMPAIGN = 5
    UNKNOWN_CAMPAIGN = 6
    UNKNOWN_SKU = 7  # the engine has never had stock of this SKU (or the campaign lacks it)
    ID_CONFLICT = 8  # the id was used before for a request with other content
    NOT_FOUND = 9  # commit/release/extend/amend of an id never reserved
    NOT_HELD = 10  # the reservation is already committed, released or expired

    @property
    def granted(self) -> bool:
        # By value: `Outcome.OK` looks the member up through the enum's class each time.
        return self <= 1  # OK or PARTIAL
