"""Where a watch subscription stands, so that a broken stream resumes with no alert lost
or repeated: the next journal sequence number wanted and the last alert delivered.

Both clients drive a Cursor the same way: subscribe with `request()`, pass every update
through `advance()`, and after the stream ends call `broke()`, which raises when the end
is final (a refused token, a malformed request) or when no stream could be opened for
too long, and otherwise lets the caller reconnect after a backoff.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from stockgate.v1 import watch_pb2

from . import wire
from .errors import InvalidArgument, Unavailable, error_from_rpc
from .updates import Update

# Stream endings after which a subscription resumes.
RESUME_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
                          grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED})


class Cursor:
    """The resume point of one subscription."""

    def __init__(self, channel: str, skus: Iterable[str], from_seq: int,
                 coalesce_ms: int) -> None:
        if isinstance(from_seq, bool) or not isinstance(from_seq, int) or from_seq < 0:
            raise InvalidArgument("from_seq", f"is {from_seq!r}; it must be an integer >= 0")
        self.channel = wire._str("channel", channel)
        self.skus = wire._strings("skus", skus)
        self.coalesce_ms = wire._int("coalesce_ms", coalesce_ms)
        self.next_seq = from_seq  # 0 until the first update: "from now on"
        self.last_alert_seq = max(from_seq - 1, 0)
        self.failing_since: float | None = None
        self.reconnects = 0

    def request(self) -> watch_pb2.WatchRequest:
        return watch_pb2.WatchRequest(channel=self.channel, skus=self.skus,
                                      from_seq=self.next_seq, coalesce_ms=self.coalesce_ms)

    def advance(self, pb: watch_pb2.WatchUpdate) -> Update:
        """The Update to hand out for a received message; moves the resume point."""
        self.failing_since = None
        alerts = [a for a in pb.alerts if a.seq > self.last_alert_seq]
        if alerts:
            self.last_alert_seq = max(a.seq for a in alerts)
        if pb.seq + 1 > self.next_seq:
            self.next_seq = pb.seq + 1
        return wire.update(pb, alerts)

    def broke(self, error: grpc.RpcError | None, now: float,
              reconnect_for_s: float | None) -> None:
        """The stream ended: raise if it must not be resumed, else return (reconnect)."""
        if error is not None and error.code() not in RESUME_CODES:
            raise error_from_rpc(error) from None
        self.reconnects += 1
        if self.failing_since is None:
            self.failing_since = now
        elif reconnect_for_s is not None and now - self.failing_since > reconnect_for_s:
            detail = error.details() if error is not None else "the stream kept ending"
            raise Unavailable(f"watch of {self.channel!r} could not resume for "
                              f"{reconnect_for_s:g} s: {detail}")

