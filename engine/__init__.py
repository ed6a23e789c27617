"""stockgate.engine: one book of stock, lock-free reservations, durable group commit.

Embedded use needs nothing else:

    from stockgate.engine import Engine
    with Engine("./stockgate-data") as engine:
        ...
"""

from . import limits
from .clock import Clock, ManualClock, SystemClock
from .engine import BucketStock, Campaign, CheckReport, Engine, ReserveRequest
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
from .outcomes import Outcome
from .process import tune_gc
from .reservations import Allocation, IllegalTransition, LineResult, Reservation, Result, State

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
    "tune_gc",
]
