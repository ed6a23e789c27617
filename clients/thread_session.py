"""The thread owner of a sync Client's Session stream (a greenlet under gevent).

Callers queue operations and wait on a future. gRPC's request-consuming thread pulls
messages from a generator that takes everything queued at that moment, so calls made
while a write is in flight ride together in the next message; a background thread reads
the answers, routes them, and reopens the stream when it breaks.

Under gevent (locust), call grpc.experimental.gevent.init_gevent() before the Client is
made: the threads here then become greenlets and every wait here yields to the hub.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from . import wire
from .backoff import Backoff
from .errors import ClientClosed, StockgateError
from .results import Result
from .session import Outbox, Pending

log = logging.getLogger("stockgate.clients")


class ThreadSession:
    """Coalesces the reservation calls of one Client, from any number of threads."""

    def __init__(self, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        # Session spoken in bytes: the Outbox writes and reads them (clients/_codec.pyx).
        self._open_stream = channel.stream_stream(wire.SESSION_METHOD)
        self._metadata = metadata
        self._outbox = Outbox()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._call: Any = None
        self._generation = 0  # bumped when a stream ends, so its request generator stops
        self._closed = False
        self._backoff = Backoff()
        self.last_error: StockgateError | None = None
        self.streams_opened = 0

    @property
    def messages_sent(self) -> int:
        return self._outbox.messages_sent

    def call(self, op: wire.Op, timeout: float) -> Result:
        """Send one operation (wire.operation) and wait for its answer, at most `timeout`
        seconds."""
        fut: concurrent.futures.Future[Result] = concurrent.futures.Future()

        def settle(res: Result | None, err: BaseException | None) -> None:
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(res)  # type: ignore[arg-type]

        p = Pending(op, time.monotonic() + timeout, settle)
        with self._cond:
            if self._closed:
                raise ClientClosed("the client is closed")
            self._outbox.add(p)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="stockgate-session")
                self._thread.start()
        try:
            return fut.result(timeout=max(0.0, p.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            with self._cond:
                if not p.done:
                    self._outbox.forget(p)
                    raise p.deadline_error(self.last_error) from None
            return fut.result(timeout=0)  # answered just as the deadline passed

    def _requests(self, generation: int) -> Iterator[bytes]:
        """What gRPC sends on the stream of `generation`: everything queued, as it comes."""
        while True:
            with self._cond:
                while True:
                    if self._closed or self._generation != generation:
                        return
                    message = self._outbox.take_message(time.monotonic())
                    if message is not None:
                        break
                    self._cond.wait(self._outbox.next_ready_s(time.monotonic()))
            yield message

    def _wait_for_work(self) -> bool:
        """Under the lock: wait until something is to be sent; False once closed."""
        while not self._closed and not self._outbox.has_work(time.monotonic()):
            self._cond.wait(self._outbox.next_ready_s(time.monotonic()))
        return not self._closed

    def _run(self) -> None:
        try:
            self._serve()
        except Exception as e:  # a bug here must not leave callers waiting for nothing
            log.exception("stockgate client: the Session stream owner failed")
            with self._cond:
                self._thread = None  # the next call starts another
                self._generation += 1
                self._cond.notify_all()
                self._outbox.requeue_in_flight()
                self._outbox.fail_all(StockgateError(f"the client's Session failed: {e!r}"))

    def _serve(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_work():
                    return
                generation = self._generation
                call = self._open_stream(self._requests(generation), metadata=self._metadata)
                self._call = call
                self.streams_opened += 1
            error: grpc.RpcError | None = None
            answered = unreadable = False
            try:
                for response in call:
                    with self._cond:
                        self._outbox.answer(response, time.monotonic())
                        if not answered:  # a stream that answers: reconnect at once next time
                            answered = True
                            self._backoff.reset()
                            self.last_error = None
            except grpc.RpcError as e:
                error = e
            except wire.UnreadableResponse:
                # Drop this stream: what it carried is sent again on the next, same ids,
                # after the backoff (a server that only sends garbage is not hammered).
                log.warning("stockgate client: the server sent an unreadable Session "
                            "answer; reconnecting", exc_info=True)
                unreadable = True
                call.cancel()
            with self._cond:
                self._generation += 1  # the old generator stops
                self._call = None
                self._cond.notify_all()
                if self._closed:
                    return
                self._after_stream(error, unreadable)
                if self._outbox.pending():
                    # New calls notify too: only close() cuts the backoff short.
                    until = time.monotonic() + self._backoff.next_delay_s()
                    while not self._closed and (left := until - time.monotonic()) > 0:
                        self._cond.wait(left)

    def _after_stream(self, error: grpc.RpcError | None, unreadable: bool) -> None:
        self.last_error = self._outbox.stream_ended(error, unreadable)
        if not self._outbox.pending():
            self._backoff.reset()

    def close(self) -> None:
        """Stop the stream and its thread; calls still waiting raise ClientClosed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            call = self._call
        if call is not None:
            call.cancel()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._cond:
            self._outbox.fail_all(ClientClosed("the client was closed while the call waited"))
