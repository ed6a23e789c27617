"""stockgate.clients: thin clients of the stockgate gRPC service.

::

    from stockgate.clients import Client, new_reservation_id

    with Client("127.0.0.1:50051", token="...") as client:
        result = client.reserve(new_reservation_id(), "tmall", [("SKU-1001", 2)])
        if result.ok:
            client.commit(result.reservation.reservation_id)

`AsyncClient` has the same methods as coroutines. Both coalesce concurrent reservation
calls into one Session stream, resend unanswered ones with the same ids after a
reconnect, and put a deadline on every call. Results and errors are this package's own
types: no protobuf message reaches the caller, and the engine is not needed.
"""

from .aio_client import AsyncClient
from .batch import ReserveRequest
from .client import Client
from .errors import (
    ClientClosed,
    Conflict,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    StockgateError,
    Unauthenticated,
    Unavailable,
)
from .ids import new_reservation_id, reservation_id_time_ms
from .outcomes import Outcome, State
from .records import BucketStock, Campaign, Channel, CheckReport, JournalEvent, JournalPage
from .results import Allocation, LineResult, Reservation, Result
from .updates import Alert, Update

__all__ = [
    "Alert",
    "Allocation",
    "AsyncClient",
    "BucketStock",
    "Campaign",
    "Channel",
    "CheckReport",
    "Client",
    "ClientClosed",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "JournalEvent",
    "JournalPage",
    "LineResult",
    "NotFound",
    "Outcome",
    "Overloaded",
    "PermissionDenied",
    "Reservation",
    "ReserveRequest",
    "Result",
    "State",
    "StockgateError",
    "Unauthenticated",
    "Unavailable",
    "Update",
    "new_reservation_id",
    "reservation_id_time_ms",
]
