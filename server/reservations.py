"""The Reservations service: Reserve, Commit, Release, Extend, Amend, their batch forms,
and Session.

Every path feeds the engine's group commit: unary reserves of one loop are coalesced by
engine.aio.reserve() into one decision pass, batches and Session messages go through
engine.aio.apply() in one call each, so concurrent callers share fsyncs. Nothing awaits
between a decision and its staging into the open batch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from stockgate.engine import Conflict, Engine, InvalidArgument, Outcome, Result, limits
from stockgate.engine.limits import check_count, check_id, check_int, check_qty
from stockgate.v1 import reservations_pb2, reservations_pb2_grpc, types_pb2

from . import wire
from .admission import Admission
from .auth import Authenticator, Caller, denied_channel
from .status import CallError, abort, deadline_exceeded, fill_error, prefixed, unavailable

log = logging.getLogger("stockgate.server")

BATCH_OPS_MAX = limits.BATCH_OPS_MAX  # requests per batch call, operations per Session message
SESSION_RESULTS_PER_MESSAGE_MAX = limits.BATCH_OPS_MAX  # answers in one SessionResponse
SESSION_SWEEP_MS = 10  # how often ops held back are checked against their timeout_ms
OP_KINDS = ("reserve", "commit", "release", "extend", "amend")

_NOT_FOUND = Result(Outcome.NOT_FOUND)  # what a channel token sees of another's reservation
_CONFLICT = Result(Outcome.ID_CONFLICT)  # ... and of another's id it tried to reserve with
_NO_OP = InvalidArgument("op", f"is not set; give one of {', '.join(OP_KINDS)}")


def _single_reserve_field(exc: BaseException) -> BaseException:
    """engine.reserve_many() names a lone request's fields without requests[0]."""
    field = getattr(exc, "field", None)
    if field is not None and not field.startswith("requests"):
        return prefixed(exc, "requests[0].")
    return exc


def own(channels: frozenset[str], r: Any) -> Any:
    """What a channel token may see of an answer: an ID_CONFLICT with a reservation of
    a channel not among `channels` loses the reservation (ids are one namespace: the
    conflict tells only that the id is taken)."""
    if type(r) is Result and r.outcome == Outcome.ID_CONFLICT and r.reservation is not None \
            and r.reservation.channel not in channels:
        return _CONFLICT
    return r


def check_op(kind: str, m: Any) -> None:
    """The checks of a commit, release, extend or amend that need no state, as the
    engine makes them, so a batch can refuse a malformed request before doing any."""
    check_id("reservation_id", m.reservation_id, limits.RESERVATION_ID_BYTES_MAX)
    if kind == "extend":
        check_int("ttl_ms", m.ttl_ms, limits.TTL_MS_MIN, limits.TTL_MS_MAX)
    elif kind in ("commit", "amend") and (m.lines or kind == "amend"):
        check_count("lines", len(m.lines), 1, limits.LINES_PER_RESERVATION_MAX)
        for i, ln in enumerate(m.lines):
            check_id(f"lines[{i}].sku", ln.sku, limits.SKU_BYTES_MAX)
            check_qty(f"lines[{i}].qty", ln.qty)


class Turns:
    """Group commit for unary calls. While one group of calls is on its way to disk, the
    calls that arrive wait, and go together, in one step of the loop, when it is done:
    engine.aio.reserve() then decides them in one pass and the writer makes them
    durable in one transaction. With nothing in flight a call goes at once, so an idle
    server adds no latency; under load the groups grow with the fsync time instead of
    each call paying for its own decision pass and a share of a tiny transaction."""

    def __init__(self) -> None:
        self.running = 0  # calls of the current group not answered yet
        self._open = False  # the current group still takes calls (this loop step)
        self._next: asyncio.Future[None] | None = None

    async def enter(self) -> None:
        """Join the open group, or wait for the group in flight to be answered."""
        if self.running and not self._open:
            if self._next is None:
                self._next = asyncio.get_running_loop().create_future()
            # Shared by every waiter: one waiter's cancel must not cancel the others.
            await asyncio.shield(self._next)
        self.running += 1
        if not self._open:
            self._open = True
            asyncio.get_running_loop().call_soon(self._close)

    def _close(self) -> None:
        self._open = False

    def leave(self) -> None:
        """A call of the group is answered; the last one lets the next group go."""
        self.running -= 1
        if not self.running and self._next is not None:
            nxt, self._next = self._next, None
            nxt.set_result(None)


class ReservationsService(reservations_pb2_grpc.ReservationsServicer):
    """The hot path. `on_failure` hears of store failures (health goes NOT_SERVING).

    Each method named like an RPC is that RPC of proto/stockgate/v1/reservations.proto,
    which documents it (fields, units, limits)."""

    def __init__(self, engine: Engine, auth: Authenticator, admission: Admission, *,
                 session_inflight_ops_max: int, message_bytes_max: int,
                 on_failure: Callable[[BaseException], None] = lambda exc: None) -> None:
        self._engine = engine
        self._aio = engine.aio
        self._auth = auth
        self._admission = admission
        self._session_ops_max = session_inflight_ops_max
        self._message_bytes_max = message_bytes_max
        self._answer_bytes = wire.answer_bytes_target(message_bytes_max)
        self._on_failure = on_failure
        self._sessions: set[_Session] = set()
        self._turns = Turns()
        self.session_messages = 0  # Session request messages read, since start

    # ------------------------------------------------------------------ helpers

    def foreign(self, caller: Caller, reservation_id: str) -> bool:
        """True when a channel token names a reservation of a channel not its own."""
        if caller.channels is None:
            return False
        channel = self._engine.reservation_channel(reservation_id)
        return channel is not None and channel not in caller.channels

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        self._on_failure(exc)
        await abort(context, exc)

    async def _start(self, context: grpc.aio.ServicerContext, n: int = 1) -> None:
        """Admit n operations (raises when refused) and wait out a consistency check."""
        adm = self._admission
        adm.admit(context, n)
        if adm.paused:
            try:
                await adm.resumed()
                adm.check_deadline(context)
            except BaseException:
                adm.leave(n)
                raise

    async def _turn(self, context: grpc.aio.ServicerContext) -> None:
        """Admit one unary call and wait for its group's turn (see Turns); on return the
        caller holds a turn and an admission, both given back by _done()."""
        await self._start(context)
        turns = self._turns
        try:
            await turns.enter()
        except BaseException:
            self._admission.leave()
            raise
        try:
            if self._admission.paused:
                await self._admission.resumed()
            self._admission.check_deadline(context)
        except BaseException:
            self._done()
            raise

    def _done(self) -> None:
        self._turns.leave()
        self._admission.leave()

    def _check_ops_max(self, n: int) -> None:
        """A batch larger than the server's in-flight bound could never be admitted:
        refuse it as malformed instead of shedding it forever."""
        ops_max = self._admission.ops_max
        if n > ops_max:
            raise InvalidArgument("requests", f"has {n} items; this server takes at most "
                                  f"{ops_max} operations in flight (inflight_ops_max), "
                                  "so one call may carry at most that many")

    def _check_answer_fits(self, request: Any, converted: list) -> None:
        """Refuse (InvalidArgument, before anything is done) a ReserveBatch whose answer
        could pass message_bytes_max: each result spells its request again (ids, SKUs,
        quantities, and once more the committed lines of a replay), plus fixed fields
        and the allocations of each line, at most one per source of its channel."""
        limit = self._message_bytes_max
        est = 2 * request.ByteSize()
        if est + len(converted) * wire.RESULT_BYTES_MAX <= limit:
            return  # the common case: even the largest answers would fit
        channels = self._engine.channels()
        per_line: dict[str, int] = {}
        lines = 0
        for req in converted:
            n = len(req.lines)
            lines += n
            if req.campaign is not None:
                alloc = wire.CAMPAIGN_ALLOCATION_BYTES_MAX
            else:
                alloc = per_line.get(req.channel)
                if alloc is None:
                    found = channels.get(req.channel)
                    alloc = per_line[req.channel] = (
                        wire.allocation_bytes(found[0]) if found else 0)
            est += n * alloc
        est += len(converted) * wire.RESULT_FIXED_BYTES + lines * wire.LINE_FIXED_BYTES
        if est > limit:
            raise InvalidArgument(
                "requests", f"could take {est} bytes to answer ({len(converted)} "
                f"reservations, {lines} lines); the limit of one message "
                f"(message_bytes_max) is {limit} bytes: send fewer lines per call, or "
                "use Session, whose answers are cut to size")

    def _fits(self, resp: reservations_pb2.BatchResponse) -> reservations_pb2.BatchResponse:
        """A batch answer, or Conflict when it is past message_bytes_max (replays of
        reservations amended to more lines than their requests, conflicts with larger
        ones): what it answers was done, smaller batches with the same ids read it."""
        size = resp.ByteSize()
        if size > self._message_bytes_max:
            raise Conflict("requests", f"were done, but their answer is {size} bytes, past "
                           f"the limit of one message (message_bytes_max, "
                           f"{self._message_bytes_max} bytes); send them again in smaller "
                           "batches, with the same ids, to read their answers")
        return resp

    # ------------------------------------------------------------------ unary

    async def Reserve(self, request, context):
        try:
            caller = self._auth.caller(context)
            if not caller.may_use(request.channel):
                raise denied_channel(caller, request.channel)
            await self._turn(context)
            try:
                r = await self._aio.reserve(
                    request.reservation_id, request.channel,
                    [(ln.sku, ln.qty) for ln in request.lines],
                    customer=request.customer or None, campaign=request.campaign or None,
                    ttl_ms=request.ttl_ms or wire.TTL_MS_DEFAULT, partial=request.partial,
                    prefer_locations=tuple(request.prefer_locations)
                    if request.prefer_locations else ())
            finally:
                self._done()
            if caller.channels is not None:
                r = own(caller.channels, r)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._fail(context, exc)
        return wire.result(r)

    async def _one(self, context, kind: str, request) -> types_pb2.Result:
        try:
            caller = self._auth.caller(context)
            await self._turn(context)
            try:
                # The ownership check and the decision run in one step of the loop.
                if self.foreign(caller, request.reservation_id):
                    r = _NOT_FOUND
                elif kind == "commit":
                    r = await self._aio.commit(request.reservation_id,
                                               wire.commit_lines(request.lines))
                elif kind == "release":
                    r = await self._aio.release(request.reservation_id)
                elif kind == "extend":
                    r = await self._aio.extend(request.reservation_id, request.ttl_ms)
                else:
                    r = await self._aio.amend(request.reservation_id, wire.lines(request.lines))
            finally:
                self._done()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._fail(context, exc)
        return wire.result(r)

    async def Commit(self, request, context):
        return await self._one(context, "commit", request)

    async def Release(self, request, context):
        return await self._one(context, "release", request)

    async def Extend(self, request, context):
        return await self._one(context, "extend", request)

    async def Amend(self, request, context):
        return await self._one(context, "amend", request)

    # ------------------------------------------------------------------ batches

    async def ReserveBatch(self, request, context):
        try:
            caller = self._auth.caller(context)
            reqs = request.requests
            check_count("requests", len(reqs), 1, BATCH_OPS_MAX)
            self._check_ops_max(len(reqs))
            if caller.channels is not None:
                for i, m in enumerate(reqs):
                    if m.channel not in caller.channels:
                        raise denied_channel(caller, m.channel, f"requests[{i}].channel")
            converted = [wire.reserve_request(m) for m in reqs]
            await self._start(context, len(reqs))
            try:
                self._check_answer_fits(request, converted)
                # All or nothing: a malformed or unusable request raises before any is
                # decided.
                results = await self._aio.reserve_many(converted)
            except Exception as exc:  # noqa: BLE001
                raise _single_reserve_field(exc) if len(reqs) == 1 else exc from None
            finally:
                self._admission.leave(len(reqs))
            if caller.channels is not None:
                results = [own(caller.channels, r) for r in results]
            resp = self._fits(_batch_response(results))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._fail(context, exc)
        return resp

    async def _batch(self, context, kind: str, reqs) -> reservations_pb2.BatchResponse:
        try:
            caller = self._auth.caller(context)
            n = len(reqs)
            check_count("requests", n, 1, BATCH_OPS_MAX)
            self._check_ops_max(n)
            for i, m in enumerate(reqs):
                try:
                    check_op(kind, m)
                except InvalidArgument as exc:
                    raise prefixed(exc, f"requests[{i}].") from None
            await self._start(context, n)
            try:
                slots: list[Any] = [None] * n
                ops, where = [], []
                for i, m in enumerate(reqs):
                    if self.foreign(caller, m.reservation_id):
                        slots[i] = _NOT_FOUND
                    else:
                        ops.append(wire.op_of(kind, m))
                        where.append(i)
                if ops:
                    for i, slot in zip(where, await self._aio.apply(ops)):
                        slots[i] = slot
            finally:
                self._admission.leave(n)
            for i, slot in enumerate(slots):
                if isinstance(slot, BaseException):
                    # Only the state or the server refuses a well-formed request now
                    # (overload, shutdown, a commit over what is held); the others may
                    # be done: the same ids replay them.
                    raise prefixed(slot, f"requests[{i}].")
            resp = self._fits(_batch_response(slots))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await self._fail(context, exc)
        return resp

    async def CommitBatch(self, request, context):
        return await self._batch(context, "commit", request.requests)

    async def ReleaseBatch(self, request, context):
        return await self._batch(context, "release", request.requests)

    async def ExtendBatch(self, request, context):
        return await self._batch(context, "extend", request.requests)

    async def AmendBatch(self, request, context):
        return await self._batch(context, "amend", request.requests)

    # ------------------------------------------------------------------ Session

    async def Session(self, request_iterator, context):
        try:
            caller = self._auth.caller(context)
        except CallError as exc:
            await abort(context, exc)
        session = _Session(self, caller, context)
        self._sessions.add(session)
        try:
            await session.serve(request_iterator)
        finally:
            self._sessions.discard(session)

    def shutdown(self) -> None:
        """Stop reading every Session; each answers what it started and ends."""
        for s in self._sessions:
            s.stop()


def _batch_response(results) -> reservations_pb2.BatchResponse:
    resp = reservations_pb2.BatchResponse()
    out = resp.results
    for r in results:
        wire.fill_result(out.add(), r)
    return resp


class _Session:
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
                    for resp in _cut(_session_response(chunk), target):
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
                        self.writing -= len(resp.results)
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

    def stop(self) -> None:
        """The server is shutting down: answer what waits UNAVAILABLE (nothing was
        done), stop reading; what is in flight is answered when durable."""
        self.stopping = True
        self.room.set()
        while self.waiting:
            op_id = self.waiting.popleft()[0]
            self.answers.append((op_id, unavailable(
                "the server is shutting down; nothing was done; retry with the same id")))
        self.wake.set()

    def take(self, req: reservations_pb2.SessionRequest) -> None:
        """Queue the ops of one message, answering the malformed ones at once."""
        now = self.loop.time()
        ops = req.ops
        answers = self.answers
        if not ops:
            # No op to answer: the stream ends, once what was read before is answered.
            self.ending = InvalidArgument("ops", f"has 0 items in a message; send 1 to "
                                                 f"{BATCH_OPS_MAX} operations per message")
            self.wake.set()
            return
        if len(ops) > BATCH_OPS_MAX:
            too_many = InvalidArgument("ops", f"has {len(ops)} items in one message; the "
                                              f"limit is {BATCH_OPS_MAX}")
            answers.extend((op.id, too_many) for op in ops)
            self.wake.set()
            return
        channels = self.caller.channels
        waiting = self.waiting
        for op in ops:
            kind = op.WhichOneof("op")
            if kind is None:
                answers.append((op.id, _NO_OP))
                continue
            m = getattr(op, kind)
            if channels is not None and kind == "reserve" and m.channel not in channels:
                answers.append((op.id, denied_channel(self.caller, m.channel)))
                continue
            t = op.timeout_ms
            if t < 0:
                answers.append((op.id, InvalidArgument(
                    "timeout_ms", f"is {t}; it must be 0 (no limit) or more")))
                continue
            waiting.append((op.id, kind, m, now + t / 1000 if t else None))
        self.pump()
        if answers:
            self.wake.set()

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
            k = min(len(waiting), room, BATCH_OPS_MAX, adm.ops_max)
            refusal = adm.refusal(k)
            batch = [waiting.popleft() for _ in range(k)]
            if refusal is not None:
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
                            answers.append((op_id, _NOT_FOUND))
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


def _timed_out() -> CallError:
    return deadline_exceeded("waited longer than its timeout_ms before it could start; "
                             "nothing was done")


def _cut(resp: reservations_pb2.SessionResponse, target: int
         ) -> list[reservations_pb2.SessionResponse]:
    """The response as it is, or cut into several, each ending with the answer that took
    it past `target` bytes (so within message_bytes_max: see wire.answer_bytes_target)."""
    if resp.ByteSize() <= target:
        return [resp]
    parts, start, size = [], 0, 0
    results = resp.results
    for i, r in enumerate(results):
        size += r.ByteSize() + 4  # the field's tag and length
        if size > target:
            parts.append(reservations_pb2.SessionResponse(results=results[start:i + 1]))
            start, size = i + 1, 0
    if start < len(results):
        parts.append(reservations_pb2.SessionResponse(results=results[start:]))
    return parts


def _session_response(chunk: list[tuple[int, Any]]) -> reservations_pb2.SessionResponse:
    resp = reservations_pb2.SessionResponse()
    results = resp.results
    fill_result = wire.fill_result
    for op_id, answer in chunk:
        out = results.add(id=op_id)
        if isinstance(answer, BaseException):
            fill_error(out.error, answer)
        else:
            fill_result(out.result, answer)
    return resp
