"""The clients' exceptions, and the one place gRPC failures become them.

Business outcomes (sold out, over the customer limit, ...) are never exceptions: they are
`Outcome` codes in the `Result`. An exception means the call was not done as asked:
malformed input, an unknown object, an auth refusal, an overloaded or unreachable server,
a passed deadline. Each class says in `hint` what usually fixes it.

After `Unavailable` or `DeadlineExceeded` a mutation may or may not have been done (the
server may have made it durable after the answer was lost): retry it with the same
reservation id, and the server answers the first outcome with `replayed=True`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "ClientClosed",
    "Conflict",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "StockgateError",
    "Unauthenticated",
    "Unavailable",
]

_DETAILS_KEY = "grpc-status-details-bin"


class StockgateError(Exception):
    """Base class of every error the clients raise. `code` is the gRPC status name."""

    code = "UNKNOWN"
    hint = "see the message; the server's log has more"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _FieldError(StockgateError):
    """An error about one request field: `field` names it, `problem` says what is wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}" if field else problem)
        self.field = field
        self.problem = problem


class InvalidArgument(_FieldError, ValueError):
    """The request is malformed (a limit, a type, a format); nothing was changed.
    `field` names what to fix, e.g. 'lines[2].qty'."""

    code = "INVALID_ARGUMENT"
    hint = "fix the field named and send again"


class NotFound(_FieldError, LookupError):
    """An admin call named a location, channel, campaign or transfer that does not exist."""

    code = "NOT_FOUND"
    hint = "create it first, or check the name"

    def __str__(self) -> str:  # LookupError's KeyError-style quoting is not wanted
        return self.message


class FailedPrecondition(_FieldError):
    """The call contradicts the state (moving more than is available, a campaign source
    without the quota); nothing was changed."""

    code = "FAILED_PRECONDITION"
    hint = "the state does not allow it now; read it (stock, campaign show) and adjust"


Conflict = FailedPrecondition


class Unauthenticated(StockgateError):
    """No token, or a token the server does not know."""

    code = "UNAUTHENTICATED"
    hint = "pass a token the server is configured with (--token or STOCKGATE_TOKEN)"


class PermissionDenied(StockgateError):
    """The token is valid but not for this: another channel's reservation, or an admin
    call made with a channel token."""

    code = "PERMISSION_DENIED"
    hint = "use a token bound to this channel, or an admin token for admin calls"


class Overloaded(StockgateError):
    """The server shed the call (too much in flight, or the token past its rate);
    nothing was done. Retry after `retry_after_ms`, with the same reservation id."""

    code = "RESOURCE_EXHAUSTED"
    hint = "retry later with the same id"

    def __init__(self, message: str, retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Unavailable(StockgateError, ConnectionError):
    """The server could not be reached, or it is shutting down. A mutation may or may not
    have been done: retry with the same reservation id."""

    code = "UNAVAILABLE"
    hint = "check that the server runs at that address; retry with the same id"


class DeadlineExceeded(StockgateError, TimeoutError):
    """The call's deadline passed before its answer came. A mutation may or may not have
    been done: retry with the same reservation id."""

    code = "DEADLINE_EXCEEDED"
    hint = "retry with the same id, or give the call a longer timeout"


class ClientClosed(StockgateError):
    """The client was closed before or while the call ran."""

    code = "CANCELLED"
    hint = "make a new client"


_BY_CODE: dict[str, type[StockgateError]] = {
    cls.code: cls
    for cls in (InvalidArgument, NotFound, FailedPrecondition, Unauthenticated,
                PermissionDenied, Overloaded, Unavailable, DeadlineExceeded)
}
_BY_CODE["ALREADY_EXISTS"] = FailedPrecondition
_BY_CODE["ABORTED"] = FailedPrecondition
_BY_NUMBER = {sc.value[0]: sc.name for sc in grpc.StatusCode}


def error_for(code: str, message: str, field: str = "", retry_after_ms: int = 0,
              ) -> StockgateError:
    """The exception for a gRPC status name and what the server said about it."""
    cls = _BY_CODE.get(code)
    if cls is None:
        err = StockgateError(f"{code}: {message}" if message else code)
        err.code = code
        return err
    if issubclass(cls, _FieldError):
        return cls(field, message if not field else _strip_field(field, message))
    if cls is Overloaded:
        return Overloaded(message or "the server is overloaded", retry_after_ms)
    return cls(message or code.lower().replace("_", " "))


def error_for_number(code: int, message: str, field: str = "", retry_after_ms: int = 0,
                     ) -> StockgateError:
    """The exception for a numeric google.rpc.Code (as a Session operation's Error)."""
    return error_for(_BY_NUMBER.get(code, "UNKNOWN"), message, field, retry_after_ms)


def _strip_field(field: str, message: str) -> str:
    # Servers often say "lines[0].qty is 0; ...": keep only the problem after the field.
    if message.startswith(field + " "):
        return message[len(field) + 1:]
    return message


def error_from_rpc(err: grpc.RpcError) -> StockgateError:
    """Translate a failed gRPC call (sync or aio) into the clients' exception.

    The details come from the google.rpc.Status in the trailers: BadRequest names the
    field, RetryInfo gives the retry delay."""
    code = err.code() if hasattr(err, "code") else None
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    message = (err.details() if hasattr(err, "details") else "") or ""
    metadata: Any = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    field, problem, retry_after_ms = _read_details(metadata or ())
    if name == "RESOURCE_EXHAUSTED" and "larger than max" in message:
        # gRPC itself refused a message over the size limit: that is the caller's input.
        return InvalidArgument("request", f"is too large for the server: {message}")
    return error_for(name, problem or message, field, retry_after_ms)


def _read_details(metadata: Iterable[Any]) -> tuple[str, str, int]:
    """(field, problem, retry_after_ms) from a google.rpc.Status trailer, if any."""
    raw = None
    for item in metadata:
        key, value = item[0], item[1]
        if key == _DETAILS_KEY:
            raw = value
            break
    if not raw:
        return "", "", 0
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a trailer we cannot read is no reason to hide the error itself
        return "", "", 0
    field = problem = ""
    retry_after_ms = 0
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            if bad.field_violations and not field:
                field = bad.field_violations[0].field
                problem = bad.field_violations[0].description
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            retry_after_ms = info.retry_delay.seconds * 1_000 + info.retry_delay.nanos // 1_000_000
    return field, problem, retry_after_ms


def after_retries(err: StockgateError, unavailable: Unavailable | None) -> StockgateError:
    """What a caller is told when a call retried after UNAVAILABLE ends in `err`: a
    deadline that passed while retrying is told as the server's unavailability (with its
    reason), not as a plain deadline, whichever attempt the deadline happened to cut."""
    if unavailable is not None and isinstance(err, DeadlineExceeded):
        return Unavailable(f"{unavailable.message} (the deadline passed while retrying; "
                           "retry with the same id)")
    return err
