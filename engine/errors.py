"""Exceptions of the engine. Business outcomes are not exceptions: see outcomes.Outcome."""

from __future__ import annotations


class StockgateError(Exception):
    """Base class of every error the engine raises on purpose."""


class InvalidArgument(StockgateError, ValueError):
    """A request is malformed; nothing was changed. `field` names what to fix."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class NotFound(StockgateError, KeyError):
    """An admin call named a location, channel, campaign or transfer that does not exist."""

    def __init__(self, field: str, value: str) -> None:
        super().__init__(f"{field} {value!r} does not exist")
        self.field = field
        self.value = value

    def __str__(self) -> str:
        return self.args[0]


class Conflict(StockgateError):
    """An admin call contradicts the state (e.g. moving more than is available)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field = field
        self.problem = problem


class Overloaded(StockgateError):
    """Too much work is waiting to become durable; retry after `retry_after_ms`."""

    def __init__(self, pending: int, limit: int, retry_after_ms: int) -> None:
        super().__init__(
            f"{pending} operations are waiting for the disk (limit {limit}); "
            f"retry in {retry_after_ms} ms"
        )
        self.retry_after_ms = retry_after_ms


class StoreError(StockgateError):
    """The durable store failed; the operation was not acknowledged and is not applied."""


class StoreFullError(StoreError):
    """The disk is full or the map cannot grow. Free disk space or raise map_size_bytes_max;
    nothing acknowledged was lost, and the engine keeps serving reads."""


class CorruptRecord(StoreError):
    """A stored record cannot be read (unknown format version or damaged bytes)."""


class EngineClosed(StockgateError):
    """The engine was closed; open it again."""
