"""The error model: engine exceptions and the server's own refusals as gRPC statuses with
google.rpc details, and as the per-operation Error of batch and Session answers.

| raised                        | gRPC status          | detail     |
|-------------------------------|----------------------|------------|
| InvalidArgument               | INVALID_ARGUMENT     | BadRequest |
| NotFound                      | NOT_FOUND            | BadRequest |
| Conflict                      | FAILED_PRECONDITION  | BadRequest |
| Overloaded, shedding          | RESOURCE_EXHAUSTED   | RetryInfo  |
| StoreError, StoreFullError    | UNAVAILABLE          |            |
| CorruptRecord                 | INTERNAL             |            |
| EngineClosed, shutting down   | UNAVAILABLE          |            |

Business outcomes (sold out, customer limit, ...) never come here: they are answers.
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from stockgate.engine import (
    Conflict,
    CorruptRecord,
    EngineClosed,
    InvalidArgument,
    NotFound,
    Overloaded,
    StoreError,
)
from stockgate.v1 import types_pb2

log = logging.getLogger("stockgate.server")

SC = grpc.StatusCode


class CallError(Exception):
    """A refusal of the server's own (auth, shedding, deadline, shutdown), carrying its
    gRPC code; `field` names the request field at fault, if one is."""

    def __init__(self, code: grpc.StatusCode, message: str, *, field: str = "",
                 retry_after_ms: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after_ms = retry_after_ms


def unauthenticated(message: str) -> CallError:
    """A missing, malformed or unknown token."""
    return CallError(SC.UNAUTHENTICATED, message)


def permission_denied(message: str, field: str = "") -> CallError:
    """A token out of its rights (`field` names what it asked for)."""
    return CallError(SC.PERMISSION_DENIED, message, field=field)


def shed(message: str, retry_after_ms: int) -> CallError:
    """Overload: RESOURCE_EXHAUSTED with a retry hint."""
    return CallError(SC.RESOURCE_EXHAUSTED, message, retry_after_ms=retry_after_ms)


def unavailable(message: str) -> CallError:
    """The server cannot do it now (shutting down); the same ids may be sent again."""
    return CallError(SC.UNAVAILABLE, message)


def deadline_exceeded(message: str) -> CallError:
    """The caller's deadline passed before the work started (nothing was done)."""
    return CallError(SC.DEADLINE_EXCEEDED, message)


def prefixed(exc: BaseException, prefix: str) -> BaseException:
    """The same error with its field named under `prefix` (e.g. "requests[3].")."""
    if isinstance(exc, InvalidArgument):
        return InvalidArgument(prefix + exc.field, exc.problem)
    if isinstance(exc, NotFound):
        return NotFound(prefix + exc.field, exc.value)
    if isinstance(exc, Conflict):
        return Conflict(prefix + exc.field, exc.problem)
    if isinstance(exc, CallError) and exc.field:
        return CallError(exc.code, exc.message, field=prefix + exc.field,
                         retry_after_ms=exc.retry_after_ms)
    return exc


def classify(exc: BaseException) -> tuple[grpc.StatusCode, str, str, int]:
    """(code, message, field, retry_after_ms) of an exception raised while serving."""
    if isinstance(exc, CallError):
        return exc.code, exc.message, exc.field, exc.retry_after_ms
    if isinstance(exc, InvalidArgument):
        return SC.INVALID_ARGUMENT, str(exc), exc.field, 0
    if isinstance(exc, NotFound):
        return SC.NOT_FOUND, str(exc), exc.field, 0
    if isinstance(exc, Conflict):
        return SC.FAILED_PRECONDITION, str(exc), exc.field, 0
    if isinstance(exc, Overloaded):
        return SC.RESOURCE_EXHAUSTED, str(exc), "", exc.retry_after_ms
    if isinstance(exc, CorruptRecord):
        return SC.INTERNAL, f"the store holds a record it cannot read: {exc}", "", 0
    if isinstance(exc, StoreError):
        return (SC.UNAVAILABLE, f"the store failed and nothing of this call was kept: {exc}; "
                "retry with the same ids", "", 0)
    if isinstance(exc, EngineClosed):
        return SC.UNAVAILABLE, "the server is shutting down; retry with the same ids", "", 0
    log.error("stockgate: unexpected error while serving", exc_info=exc)
    return SC.INTERNAL, f"internal error: {type(exc).__name__}", "", 0


def to_status(exc: BaseException) -> grpc.Status:
    """The gRPC status (with BadRequest or RetryInfo in its details) for an exception."""
    code, message, field, retry_after_ms = classify(exc)
    details = []
    if field and code in (SC.INVALID_ARGUMENT, SC.NOT_FOUND, SC.FAILED_PRECONDITION,
                          SC.PERMISSION_DENIED):
        problem = getattr(exc, "problem", None) or message
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=problem)]))
        details.append(detail)
    if code == SC.RESOURCE_EXHAUSTED and retry_after_ms:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(
            retry_delay=duration_pb2.Duration(seconds=retry_after_ms // 1000,
                                              nanos=retry_after_ms % 1000 * 1_000_000)))
        details.append(detail)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message,
                                                  details=details))


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    """End the call with the status of exc (raises, as context.abort does)."""
    await context.abort_with_status(to_status(exc))


def fill_error(msg: types_pb2.Error, exc: BaseException) -> None:
    """Fill the per-operation Error of a batch or Session answer."""
    code, message, field, retry_after_ms = classify(exc)
    msg.code = code.value[0]
    msg.message = message
    if field:
        msg.field = field
    if retry_after_ms:
        msg.retry_after_ms = retry_after_ms


def is_store_failure(exc: BaseException) -> bool:
    """True for failures that make the server unhealthy (its store), not the call."""
    return isinstance(exc, StoreError)
