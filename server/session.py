"""Session streams: a bidirectional stream of operations with correlation ids.

Ops are read and charged to the token's rate (those past it are answered at once, never
started), held back while the stream has too many unanswered (or a consistency check
runs), started a chunk at a time through engine.aio.apply() (decided together, nothing
awaiting between a decision and its staging), and answered as they become durable, many
answers per response message, each message cut to fit message_bytes_max.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from stockgate.engine import InvalidArgument, ReserveRequest, Result, limits
from stockgate.v1 import reservations_pb2, types_pb2

from . import _codec, wire
from .auth import NOT_FOUND_RESULT, Caller, denied_channel, own
from .rates import Bucket
from .status import CallError, abort, deadline_exceeded, fill_error, unavailable

if TYPE_CHECKING:
    from .reservations import ReservationsService

log = logging.getLogger("stockgate.server")

OPS_PER_MESSAGE_MAX = limits.BATCH_OPS_MAX  # operations in one Session message
SESSION_RESULTS_PER_MESSAGE_MAX = limits.BATCH_OPS_MAX  # answers in one SessionResponse
SESSION_SWEEP_MS = 10  # how often ops held back are checked against their timeout_ms
OP_KINDS = ("reserve", "commit", "release", "extend", "amend")

_NO_OP = InvalidArgument("op", f"is not set; give one of {', '.join(OP_KINDS)}")


class SessionStream:
    """One Session stream: ops are read, held back while the stream has too many
    unanswered (or a check runs), started a message at a time through
    engine.aio.apply(), and answered as they become durable, many answers per response
    message.

    An op counts against the stream's bound (session_inflight_ops_max) from its start
    until its answer is written, so a client that writes without reading holds at most
    the bound of answers (and a message of refusals) before the stream stops being read.
    """

    def __init__(self, service: ReservationsService, caller: Caller,
                 context: grpc.aio.ServicerContext) -> None:
        self.svc = service
        self.caller = caller
        self.context = context
        self.loop = asyncio.get_running_loop()
        self.bound = service._session_ops_max
        self.waiting: collections.deque[tuple[int, str, Any, float | None]] = (
            collections.deque())
        self.answers: list[tuple[int, Any]] = []  # to write
        self.inflight = 0  # started, not decided and durable yet
        self.writing = 0  # answers taken from `answers`, their write not done yet
        self.reading = True
        self.stopping = False  # the server is shutting down
        self.closed = False  # serve() is over: nothing more starts
        self.ending: BaseException | None = None  # ends the stream once drained
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()
        self.sweep: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task] = set()

    async def serve(self, request_iterator: AsyncIterator) -> None:
        """Read, start and answer until the client half-closes (or the server stops),
        then end the stream once every op read is answered."""
        reader = self.loop.create_task(self.read(request_iterator))
        context = self.context
        target = self.svc._answer_bytes
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while self.answers:
                    chunk = self.answers[:SESSION_RESULTS_PER_MESSAGE_MAX]
                    del self.answers[:SESSION_RESULTS_PER_MESSAGE_MAX]
                    self.writing = len(chunk)
                    for resp, n in _codec.encode_session_response(
                            chunk, Result, _is_shed, _error_bytes, target):
                        try:
                            await context.write(resp)
                        except Exception:
                            if not (context.cancelled() or context.done()):
                                raise
                            # The client went away (cancelled, or its deadline passed):
                            # nobody to answer, nothing wrong with the server.
                            log.debug("stockgate: a Session stream ended by its client "
                                      "with answers unwritten", exc_info=True)
                            return
                        self.writing -= n
                    self.pump()  # their room is free again
                if (not self.reading or self.stopping) and not self.inflight \
                        and not self.waiting and not self.answers:
                    break
        finally:
            self.close()
            reader.cancel()
        if reader.done() and not reader.cancelled() and reader.exception() is not None:
            exc = reader.exception()
            if not isinstance(exc, (asyncio.CancelledError, grpc.aio.AioRpcError)) \
                    and not context.cancelled():
                await abort(context, exc)
        if self.stopping:
            await abort(context, unavailable(
                "the server is shutting down; every operation read was answered; "
                "send the others again, with the same ids, to another server or later"))
        if self.ending is not None:
            await abort(context, self.ending)

    def close(self) -> None:
        """The stream is over (answered, cancelled or failed): what still waits is
        never started; answers of ops in flight are dropped."""
        self.closed = True
        self.waiting.clear()
        self.room.set()
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None

    def _full(self) -> bool:
        """True while the stream should not be read: as many ops wait, or as many
        answers wait to be written, as the bound."""
        return (len(self.waiting) >= self.bound
                or len(self.answers) + self.writing >= self.bound)

    async def read(self, request_iterator: AsyncIterator) -> None:
        """Take in the client's messages while there is room."""
        try:
            async for req in request_iterator:
                self.svc.session_messages += 1
                self.take(req)
                while self._full() and not self.stopping and not self.closed:
                    self.room.clear()
                    await self.room.wait()
                if self.stopping or self.closed or self.ending is not None:
                    break
        finally:
            self.reading = False
            self.wake.set()
            # Close the request reader now (an async generator: server/decode.py), not
            # whenever the GC finalizes it: a stream ended early is then freed at once.
            aclose = getattr(request_iterator, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    def stop(self) -> None:
        """The server is shutting down: answer what waits UNAVAILABLE (nothing was
        done), stop reading; what is in flight is answered when durable."""
        self.stopping = True
        self.room.set()
        while self.waiting:
            self.answers.append((self.waiting.popleft()[0], _shutting_down()))
        self.wake.set()

    def take(self, req: reservations_pb2.SessionRequest | list[tuple]) -> None:
        """Queue the ops of one message, answering the malformed ones at once. A list is
        a message read_message() read: its ops as (id, "reserve", request, timeout_ms),
        the form a protobuf message's ops take here too (kind None: no op set; a reserve
        as the engine's ReserveRequest, any other kind as its request message)."""
        now = self.loop.time()
        if type(req) is list:
            ops = req
        else:
            ops = []
            for op in req.ops:
                kind = op.WhichOneof("op")
                m = getattr(op, kind) if kind else None
                if kind == "reserve":
                    m = wire.reserve_request(m)  # as read_message() reads it
                ops.append((op.id, kind, m, op.timeout_ms))
        answers = self.answers
        if not ops:
            # No op to answer: the stream ends, once what was read before is answered.
            self.ending = InvalidArgument("ops", f"has 0 items in a message; send 1 to "
                                                 f"{OPS_PER_MESSAGE_MAX} operations per message")
            self.wake.set()
            return
        if len(ops) > OPS_PER_MESSAGE_MAX:
            too_many = InvalidArgument("ops", f"has {len(ops)} items in one message; the "
                                              f"limit is {OPS_PER_MESSAGE_MAX}")
            answers.extend((op[0], too_many) for op in ops)
            self.wake.set()
            return
        if self.stopping:  # read after stop(): nothing starts any more
            answers.extend((op[0], _shutting_down()) for op in ops)
            self.wake.set()
            return
        waiting = self.waiting
        adm = self.svc._admission
        # pump() would shed every good op of it: they are answered at once, with one
        # refusal and nothing queued, since at five times the server's capacity reading
        # and refusing is most of the work. Bad ops still get their own answers.
        shed_ids: list[int] | None = [] if not waiting and adm.full() else None
        channels = self.caller.channels
        queued = len(waiting)
        for op_id, kind, m, t in ops:
            if kind is None:
                answers.append((op_id, _NO_OP))
                continue
            if channels is not None and kind == "reserve" and m.channel not in channels:
                answers.append((op_id, denied_channel(self.caller, m.channel)))
                continue
            if t < 0:
                answers.append((op_id, InvalidArgument(
                    "timeout_ms", f"is {t}; it must be 0 (no limit) or more")))
                continue
            if shed_ids is not None:
                shed_ids.append(op_id)
                continue
            waiting.append((op_id, kind, m, now + t / 1000 if t else None))
        if shed_ids:
            answers.extend(zip(shed_ids, itertools.repeat(adm.shed(len(shed_ids)))))
        rate = self.caller.rate
        if rate is not None:
            self.charge(rate, len(waiting) - queued)
        self.pump()
        if answers:
            self.wake.set()

    def charge(self, rate: Bucket, n: int) -> None:
        """Charge the n ops just queued to the token's rate; those past it are taken
        back off the queue and answered RESOURCE_EXHAUSTED at once, never started."""
        k = rate.take_upto(n)
        if k == n:
            return
        refusal = rate.refusal(n - k)
        waiting = self.waiting
        refused = [waiting.pop()[0] for _ in range(n - k)]
        self.answers.extend((op_id, refusal) for op_id in reversed(refused))

    def pump(self) -> None:
        """Start held-back ops while the stream has room, in chunks the server's
        in-flight bound can take (past it they are shed)."""
        if self.closed or self.stopping:
            return
        waiting = self.waiting
        adm = self.svc._admission
        while waiting:
            room = self.bound - self.inflight - len(self.answers) - self.writing
            if room <= 0:
                break
            k = min(len(waiting), room, OPS_PER_MESSAGE_MAX, adm.ops_max)
            refusal = adm.refusal(k)
            batch = [waiting.popleft() for _ in range(k)]
            if refusal is not None:
                if self.caller.rate is not None:
                    self.caller.rate.give_back(k)
                self.answers.extend((b[0], refusal) for b in batch)
                self.wake.set()
                continue
            self.inflight += k
            task = self.loop.create_task(self.run(batch))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if not self._full():
            self.room.set()
        if waiting and self.sweep is None and any(w[3] is not None for w in waiting):
            self.sweep = self.loop.call_later(SESSION_SWEEP_MS / 1000, self.expire)

    def expire(self) -> None:
        """Answer held-back ops whose timeout_ms passed (they are never started)."""
        self.sweep = None
        if self.closed:
            return
        now = self.loop.time()
        keep = collections.deque()
        for w in self.waiting:
            if w[3] is not None and now > w[3]:
                self.answers.append((w[0], _timed_out()))
            else:
                keep.append(w)
        if len(keep) != len(self.waiting):
            self.waiting = keep
            self.wake.set()
        self.pump()

    async def run(self, batch: list[tuple[int, str, Any, float | None]]) -> None:
        """Decide a batch of ops in one engine.aio.apply() and queue their answers."""
        svc = self.svc
        adm = svc._admission
        answers = self.answers
        try:
            if adm.paused:
                await adm.resumed()
            if self.closed:
                return  # the stream ended while a check held these back: none started
            now = self.loop.time()
            ids, ops = [], []
            check_owner = self.caller.channels is not None
            # From here to the decisions inside apply() nothing awaits.
            for op_id, kind, m, deadline in batch:
                if deadline is not None and now > deadline:
                    answers.append((op_id, _timed_out()))
                    continue
                if check_owner and kind != "reserve":
                    try:
                        if svc.foreign(self.caller, m.reservation_id):
                            answers.append((op_id, NOT_FOUND_RESULT))
                            continue
                    except InvalidArgument as exc:
                        answers.append((op_id, exc))
                        continue
                ids.append(op_id)
                ops.append(wire.op_of(kind, m))
            if ops:
                try:
                    slots = await svc._aio.apply(ops)
                except Exception as exc:  # noqa: BLE001 - the store or the engine: all fail
                    svc._on_failure(exc)
                    slots = [exc] * len(ops)
                if check_owner:
                    channels = self.caller.channels
                    slots = [own(channels, r) for r in slots]
                answers.extend(zip(ids, slots))
        finally:
            adm.leave(len(batch))
            self.inflight -= len(batch)
            self.wake.set()
            self.pump()


def _shutting_down() -> CallError:
    return unavailable("the server is shutting down; nothing was done; retry with the same id")


def _timed_out() -> CallError:
    return deadline_exceeded("waited longer than its timeout_ms before it could start; "
                             "nothing was done")


def read_message(raw: bytes) -> list[tuple] | None:
    """A Session message of reserves, read in C (server/_codec.pyx); None for anything
    else, which protobuf then parses."""
    return _codec.decode_session(raw, ReserveRequest, wire.TTL_MS_DEFAULT, OPS_PER_MESSAGE_MAX)


def _error_bytes(exc: BaseException) -> bytes:
    """An Error message's bytes, for an answer that is an error."""
    m = types_pb2.Error()
    fill_error(m, exc)
    return m.SerializeToString()


def _is_shed(exc: BaseException) -> bool:
    return type(exc) is CallError and exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED
