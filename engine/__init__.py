"""stockgate.engine: one book of stock, lock-free reservations, durable group commit.

Embedded use needs nothing else:

    from stockgate.engine import Engine
    with Engine("./stockgate-data") as engine:
        ...
"""

from . import limits
from .campaigns import Campaign
from .check import CheckReport
from .clock import Clock, ManualClock, SystemClock
from .engine import Engine
from .errors import (
    Conflict,
    CorruptRecord,
    EngineClosed,
    InvalidArgument,
    NotFound,
    Overloaded,
    StockgateError,
    StoreError,
    StoreFullError,
)
from .lifecycle import IllegalTransition, State
from .outcomes import Outcome
from .process import gc_tick, tune_gc
from .queries import BucketStock
from .reservations import ReserveRequest
from .results import Allocation, LineResult, Reservation, Result

__all__ = [
    "Allocation",
    "BucketStock",
    "Campaign",
    "CheckReport",
    "Clock",
    "Conflict",
    "CorruptRecord",
    "Engine",
    "EngineClosed",
    "IllegalTransition",
    "InvalidArgument",
    "LineResult",
    "ManualClock",
    "NotFound",
    "Outcome",
    "Overloaded",
    "Reservation",
    "ReserveRequest",
    "Result",
    "State",
    "StockgateError",
    "StoreError",
    "StoreFullError",
    "SystemClock",
    "limits",
    "gc_tick",
    "tune_gc",
]
