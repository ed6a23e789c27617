"""The Reservations service: Reserve, Commit, Release, Extend, Amend, their batch forms,
and Session (the stream itself: session.py; unary group commit: turns.py).

Every path feeds the engine's group commit: unary reserves of one loop are coalesced by
engine.aio.reserve() into one decision pass, batches and Session messages go through
engine.aio.apply() in one call each, so concurrent callers share fsyncs. Nothing awaits
between a decision and its staging into the open batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from stockgate.engine import Conflict, Engine, InvalidArgument, limits
from stockgate.engine.limits import check_count, check_id, check_int, check_qty
from stockgate.v1 import reservations_pb2, reservations_pb2_grpc, types_pb2

from . import wire
from .admission import Admission
from .auth import NOT_FOUND_RESULT, Authenticator, Caller, denied_channel, own
from .session import SessionStream, read_message
from .status import CallError, abort, prefixed
from .turns import Turns

BATCH_OPS_MAX = limits.BATCH_OPS_MAX  # requests per batch call


def _single_reserve_field(exc: BaseException) -> BaseException:
    """engine.reserve_many() names a lone request's fields without requests[0]."""
    field = getattr(exc, "field", None)
    if field is not None and not field.startswith("requests"):
        return prefixed(exc, "requests[0].")
    return exc


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


class ReservationsService(reservations_pb2_grpc.ReservationsServicer):
    """The hot path. `on_failure` hears of store failures (health goes NOT_SERVING).

    Each method named like an RPC is that RPC of proto/stockgate/v1/reservations.proto,
    which documents it (fields, units, limits)."""

    def __init__(self, engine: Engine, auth: Authenticator, admission: Admission, *,
                 session_inflight_ops_max: int, message_bytes_max: int,
                 unary_group_wait_ms: int,
                 on_failure: Callable[[BaseException], None] = lambda exc: None) -> None:
        self._engine = engine
        self._aio = engine.aio
        self._auth = auth
        self._admission = admission
        self._session_ops_max = session_inflight_ops_max
        self._message_bytes_max = message_bytes_max
        self._answer_bytes = wire.answer_bytes_target(message_bytes_max)
        self._on_failure = on_failure
        self._sessions: set[SessionStream] = set()
        self._turns = Turns(unary_group_wait_ms / 1000)
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

    async def _start(self, context: grpc.aio.ServicerContext, caller: Caller,
                     n: int = 1) -> None:
        """Admit n operations of `caller` (raises when refused) and wait out a
        consistency check."""
        adm = self._admission
        adm.admit(context, n, caller.rate)
        if adm.paused:
            try:
                await adm.resumed()
                adm.check_deadline(context)
            except BaseException:
                adm.leave(n)
                raise

    async def _turn(self, context: grpc.aio.ServicerContext, caller: Caller) -> None:
        """Admit one unary call and wait for its group's turn (see Turns); on return the
        caller holds a turn and an admission, both given back by _done()."""
        await self._start(context, caller)
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

    def _check_ops_max(self, caller: Caller, n: int) -> None:
        """A batch larger than the server's in-flight bound, or than the caller's burst,
        could never be admitted: refuse it as malformed instead of shedding it forever."""
        ops_max = self._admission.ops_max
        if n > ops_max:
            raise InvalidArgument("requests", f"has {n} items; this server takes at most "
                                  f"{ops_max} operations in flight (inflight_ops_max), "
                                  "so one call may carry at most that many")
        rate = caller.rate
        if rate is not None and n > rate.burst_ops:
            raise InvalidArgument("requests", f"has {n} items; token {caller.name!r} may "
                                  f"start at most {rate.burst_ops} operations at once (its "
                                  "burst_ops), so one call may carry at most that many")

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
            raise Conflict("requests", f"were done (each as its answer would have said), "
                           f"but their answer is {size} bytes, past the limit of one "
                           f"message (message_bytes_max, {self._message_bytes_max} bytes); "
                           "send them again in smaller batches, with the same ids, to read "
                           "their answers")
        return resp

    # ------------------------------------------------------------------ unary

    async def Reserve(self, request, context):
        try:
            caller = self._auth.caller(context)
            if not caller.may_use(request.channel):
                raise denied_channel(caller, request.channel)
            await self._turn(context, caller)
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
            await self._turn(context, caller)
            try:
                # The ownership check and the decision run in one step of the loop.
                if self.foreign(caller, request.reservation_id):
                    r = NOT_FOUND_RESULT
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
            self._check_ops_max(caller, len(reqs))
            if caller.channels is not None:
                for i, m in enumerate(reqs):
                    if m.channel not in caller.channels:
                        raise denied_channel(caller, m.channel, f"requests[{i}].channel")
            converted = [wire.reserve_request(m) for m in reqs]
            await self._start(context, caller, len(reqs))
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
            self._check_ops_max(caller, n)
            for i, m in enumerate(reqs):
                try:
                    check_op(kind, m)
                except InvalidArgument as exc:
                    raise prefixed(exc, f"requests[{i}].") from None
            await self._start(context, caller, n)
            try:
                slots: list[Any] = [None] * n
                ops, where = [], []
                for i, m in enumerate(reqs):
                    if self.foreign(caller, m.reservation_id):
                        slots[i] = NOT_FOUND_RESULT
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

    # Session messages of reserves are read in C (server/decode.py calls it first).
    stream_readers = {"Session": read_message}

    async def Session(self, request_iterator, context):
        try:
            caller = self._auth.caller(context)
        except CallError as exc:
            await abort(context, exc)
        session = SessionStream(self, caller, context)
        self._sessions.add(session)
        try:
            await session.serve(request_iterator)
        finally:
            self._sessions.discard(session)

    def shutdown(self) -> None:
        """Stop reading every Session (each answers what it started and ends); unary
        calls waiting out a group window go now."""
        self._turns.flush()
        for s in self._sessions:
            s.stop()


def _batch_response(results) -> reservations_pb2.BatchResponse:
    resp = reservations_pb2.BatchResponse()
    out = resp.results
    for r in results:
        wire.fill_result(out.add(), r)
    return resp
