"""The bookkeeping of a coalescing Session stream, shared by the asyncio and thread owners.

Every reserve, commit, release, extend and amend of a client becomes an operation with a
correlation id, queued in an Outbox. Whoever owns the stream takes everything queued as
one SessionRequest when it can write (so calls made while a message is in flight ride
together in the next one), keeps what it sent in flight until answered, and routes each
answer back to its caller. When the stream breaks, what was in flight goes back to the
front of the queue and is sent again on the next stream, with the same reservation ids:
the server answers a repeat with the first answer (`replayed`), so nothing is done twice.

The Outbox itself does no I/O and takes no lock; its owner serialises access.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import grpc

from . import limits, wire
from .backoff import Backoff
from .errors import (
    DeadlineExceeded,
    InvalidArgument,
    StockgateError,
    Unavailable,
    error_for_number,
    error_from_rpc,
)
from .results import Result

_UNAVAILABLE = 14  # google.rpc.Code: the server is going away or its store failed; resend

# Stream endings after which the unanswered operations are sent again on a new stream.
# INTERNAL and UNKNOWN are among them: a server stopping while a stream is open can end it
# with "Internal error from Core" (seen with grpcio 1.85), and every operation is safe to
# send again (same ids: the server answers a repeat with its first answer). Each
# operation's deadline bounds the resending.
RESEND_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                          grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
                          grpc.StatusCode.UNKNOWN})
# Stream endings that concern every operation, queued ones included; after any other
# ending only the operations in flight fail (the stream refused what they carried).
FAIL_ALL_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.UNIMPLEMENTED})


class Pending:
    """One caller's operation, from the call until its answer (or its deadline)."""

    __slots__ = ("id", "field", "body", "size", "deadline", "settle", "done", "not_before",
                 "attempts", "unavailable")

    def __init__(self, op: wire.Op, deadline: float,
                 settle: Callable[[Result | None, BaseException | None], None]) -> None:
        self.field, self.body = op  # wire.operation(): which request, and its bytes
        self.id = 0  # the correlation id, given when queued
        self.size = wire.operation_bytes(op)
        if self.size > limits.OPERATION_BYTES_MAX:
            raise InvalidArgument("request", f"is {self.size} bytes; the limit of one "
                                  f"operation is {limits.OPERATION_BYTES_MAX} bytes")
        self.deadline = deadline  # on the owner's clock, seconds
        self.settle = settle  # called once, by the Outbox's owner
        self.done = False
        self.not_before = 0.0  # not to be sent before (a resend after UNAVAILABLE)
        self.attempts = 0
        # The server's last UNAVAILABLE message for it (a full disk...): what its caller
        # is told if the deadline passes before a resend is answered.
        self.unavailable: str | None = None

    def deadline_error(self, last_error: StockgateError | None) -> StockgateError:
        """What its caller is told when the deadline passes unanswered: the server's
        reason if the operation was waiting to be resent, or why the stream is down
        (`last_error`), else a plain deadline; each says to retry with the same id."""
        if self.unavailable is not None:
            return Unavailable(f"{self.unavailable} (the deadline passed while it was "
                               "being sent again)")
        if last_error is not None:
            return Unavailable(f"{last_error.message} (the deadline passed while "
                               "reconnecting; retry with the same id)")
        return DeadlineExceeded("the deadline passed before the answer came; the call may "
                                "or may not have been done: retry with the same id")


class Outbox:
    """Operations waiting to be sent, and those sent and not yet answered."""

    def __init__(self) -> None:
        self.queue: deque[Pending] = deque()
        self.in_flight: dict[int, Pending] = {}
        self.delayed: list[Pending] = []  # to be resent once their not_before passes
        self._next_id = 1
        self.messages_sent = 0
        self.ops_sent = 0
        self._resend_backoff = Backoff()

    def add(self, p: Pending) -> None:
        p.id = self._next_id
        self._next_id += 1
        self.queue.append(p)

    def has_work(self, now: float) -> bool:
        while self.queue and self.queue[0].done:  # callers that stopped waiting
            self.queue.popleft()
        return bool(self.queue) or any(p.not_before <= now for p in self.delayed)

    def next_ready_s(self, now: float) -> float | None:
        """Seconds until a delayed operation may be sent; None when none waits."""
        if not self.delayed:
            return None
        return max(0.0, min(p.not_before for p in self.delayed) - now)

    def pending(self) -> int:
        return (sum(1 for p in self.queue if not p.done) + len(self.in_flight)
                + len(self.delayed))

    def take_message(self, now: float) -> bytes | None:
        """Everything ready to send, up to one message's limits, as a SessionRequest's
        bytes; None when nothing is.

        Each operation carries the time left before its caller's deadline, so the
        server drops it unstarted when the caller has stopped waiting."""
        if self.delayed:
            ready = [p for p in self.delayed if p.not_before <= now]
            if ready:
                self.delayed = [p for p in self.delayed if p.not_before > now]
                self.queue.extendleft(reversed(ready))
        ops, taken = [], []
        size = 0
        while self.queue and len(ops) < limits.SESSION_OPS_PER_MESSAGE_MAX:
            p = self.queue[0]
            if ops and size + p.size > limits.SESSION_MESSAGE_BYTES_MAX:
                break
            self.queue.popleft()
            if p.done:
                continue
            left_ms = (p.deadline - now) * 1_000
            if left_ms <= 0:
                self.settle(p, None, DeadlineExceeded("the deadline passed before the call "
                                                      "was sent; nothing was done"))
                continue
            ops.append((p.id, math.ceil(left_ms), p.field, p.body))
            taken.append(p)
            size += p.size
        if not ops:
            return None
        try:
            message = wire.session_request(ops)
        except BaseException:  # a bug: nothing is in flight that was not sent
            self.queue.extendleft(reversed(taken))
            raise
        in_flight = self.in_flight
        for p in taken:
            p.attempts += 1
            in_flight[p.id] = p
        self.messages_sent += 1
        self.ops_sent += len(ops)
        return message

    def answer(self, response: bytes, now: float) -> None:
        """Route each answer of a SessionResponse (its bytes) to its caller. Raises
        wire.UnreadableResponse when the message cannot be read at all."""
        answers, refused_ids, refused_error = wire.session_answers(response)
        in_flight = self.in_flight
        for op_id, res, err in answers:
            p = in_flight.pop(op_id, None)
            if p is None or p.done:
                continue  # its caller stopped waiting (deadline), or a stray answer
            if res is not None:
                self.settle(p, res, None)
            elif isinstance(err, StockgateError):
                self.settle(p, None, err)
            else:
                self.refused(p, err or wire.NO_ERROR, now)
        if refused_ids:
            for op_id in refused_ids:
                p = in_flight.pop(op_id, None)
                if p is not None and not p.done:
                    self.refused(p, refused_error or wire.NO_ERROR, now)

    def refused(self, p: Pending, err: wire.ErrorAnswer, now: float) -> None:
        """An operation answered with an Error (its own, or one shared by refused_ids)."""
        if err.code == _UNAVAILABLE:
            # The server cannot do it now (shutting down, store failure): send the
            # same operation again later, within the caller's deadline.
            p.unavailable = err.message or "the server is unavailable"
            self._resend_backoff.failures = p.attempts - 1
            delay = self._resend_backoff.next_delay_s()
            if now + delay < p.deadline:
                p.not_before = now + delay
                self.delayed.append(p)
                return
            self.settle(p, None, Unavailable(err.message or "the server is unavailable"))
            return
        self.settle(p, None, error_for_number(err.code, err.message, err.field,
                                              err.retry_after_ms))

    def requeue_in_flight(self) -> None:
        """The stream broke: what was sent and not answered goes first on the next one."""
        if not self.in_flight:
            return
        resend = sorted(self.in_flight.values(), key=lambda p: p.id)
        self.in_flight.clear()
        self.queue.extendleft(reversed(resend))

    def stream_ended(self, error: Any, unreadable: bool = False) -> Unavailable | None:
        """The stream ended (`error`: the gRPC error, None for a clean end, or a stream
        dropped for an `unreadable` answer). Either what it carried is queued again and
        the Unavailable to report while reconnecting is returned, or the callers are told
        why not and None is returned."""
        code = error.code() if error is not None else None
        if error is None or code in RESEND_CODES:
            self.requeue_in_flight()
            if unreadable:
                detail = "the server sent an answer that could not be read"
            else:
                detail = error.details() if error is not None else "the server ended the stream"
            return Unavailable(f"the Session stream broke: {detail}")
        self.fail_all(error_from_rpc(error), in_flight_only=code not in FAIL_ALL_CODES)
        return None

    def fail_all(self, error: StockgateError, *, in_flight_only: bool = False) -> None:
        victims = list(self.in_flight.values())
        self.in_flight.clear()
        if not in_flight_only:
            victims += list(self.queue) + self.delayed
            self.queue.clear()
            self.delayed = []
        for p in victims:
            if not p.done:
                self.settle(p, None, error)

    def forget(self, p: Pending) -> None:
        """Its caller stopped waiting: never send it, ignore its answer."""
        p.done = True
        self.in_flight.pop(p.id, None)

    @staticmethod
    def settle(p: Pending, result: Result | None, error: BaseException | None) -> None:
        if p.done:
            return
        p.done = True
        p.settle(result, error)

