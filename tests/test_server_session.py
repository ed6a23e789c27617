"""Session streams at their edges: a client that stops reading, a client that goes away,
batches against the server's in-flight bound, malformed messages."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import grpc
import pytest
from server_calls import (
    ADMIN,
    HeldDisk,
    R,
    T,
    connect,
    details,
    op_results,
    reserve,
    run,
    seed_book,
)


def _ops(first_id: int, n: int, prefix: str, lines: int = 1) -> list[R.Operation]:
    return [R.Operation(id=first_id + i, reserve=reserve(
        f"{prefix}-{i}", "tmall", *[(f"SKU-{k + 1}", 1) for k in range(lines)]))
        for i in range(n)]


async def _until(cond, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_client_that_does_not_read_holds_at_most_the_bound_of_answers(server_config,
                                                                        start_server):
    bound, per_message = 100, 1_000
    st = start_server(dataclasses.replace(server_config, session_inflight_ops_max=bound,
                                          durability="async"))
    seed_book(st.engine).import_rows([(f"SKU-{k + 1}", "WH-EAST", "online", 1_000_000)
                                      for k in range(10)])
    svc = st.server.reservations
    peak = {"queued": 0, "waiting": 0}
    loop = st.server._loop
    stop = threading.Event()

    def sample():  # the server's queues, looked at every ms from the server's own loop
        for sess in list(svc._sessions):
            queued = len(sess.answers) + getattr(sess, "writing", 0) + sess.inflight
            peak["queued"] = max(peak["queued"], queued)
            peak["waiting"] = max(peak["waiting"], len(sess.waiting))
        if not stop.is_set():
            loop.call_later(0.001, sample)

    loop.call_soon_threadsafe(sample)

    async def main():
        # Answers of 10 lines (about 1 KB each) and no window growth: the server's
        # writes soon wait for a reader that never comes.
        async with connect(st.address, options=[("grpc.http2.bdp_probe", 0)]) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=30)

            async def write_all():
                for m in range(100):
                    await call.write(R.SessionRequest(ops=_ops(m * per_message, per_message,
                                                               f"r-{m}", lines=10)))

            writer = asyncio.ensure_future(write_all())
            await asyncio.sleep(0.5)  # the client never reads
            read = svc.session_messages
            call.cancel()
            writer.cancel()
            await _until(lambda: not svc._sessions and st.server._admission.ops == 0)
            return read

    try:
        read = run(main())
    finally:
        stop.set()
    assert peak["queued"] <= bound + per_message  # one message of immediate refusals
    assert peak["waiting"] <= bound + per_message
    assert read < 20  # it stopped reading the stream; gRPC's window holds the rest


def test_a_cancelled_session_starts_nothing_it_held_back(server_config, start_server):
    st = start_server(dataclasses.replace(server_config, session_inflight_ops_max=1))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    disk = HeldDisk(eng)

    async def main():
        async with connect(st.address) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=20)
            disk.hold()
            await call.write(R.SessionRequest(ops=_ops(1, 1, "a")))
            await call.write(R.SessionRequest(ops=_ops(2, 2, "b")))
            svc = st.server.reservations
            await _until(lambda: svc.session_messages == 2)  # b-0, b-1 held back
            call.cancel()
            await _until(lambda: not svc._sessions)
            disk.release()
            await _until(lambda: st.server._admission.ops == 0)
            await asyncio.sleep(0.05)  # what would start would start now

    run(main())
    assert eng.reservation("a-0") is not None  # started before: it stands
    assert eng.reservation("b-0") is None and eng.reservation("b-1") is None


def test_a_batch_larger_than_the_in_flight_bound_is_invalid_and_a_session_goes_in_chunks(
        server_config, start_server):
    st = start_server(dataclasses.replace(server_config, inflight_ops_max=10))
    seed_book(st.engine).receive("SKU-1", "WH-EAST", 100, pool="online")

    async def main():
        async with connect(st.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.reservations.ReserveBatch(R.ReserveBatchRequest(requests=[
                    reserve(f"o-{i}", "tmall", ("SKU-1", 1)) for i in range(11)]),
                    metadata=ADMIN, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError) as e2:
                await s.reservations.ReleaseBatch(R.ReleaseBatchRequest(requests=[
                    R.ReleaseRequest(reservation_id=f"o-{i}") for i in range(11)]),
                    metadata=ADMIN, timeout=10)
            ok = await s.reservations.ReserveBatch(R.ReserveBatchRequest(requests=[
                reserve(f"o-{i}", "tmall", ("SKU-1", 1)) for i in range(10)]),
                metadata=ADMIN, timeout=10)
            call = s.reservations.Session(metadata=ADMIN, timeout=10)
            await call.write(R.SessionRequest(ops=_ops(0, 11, "s")))
            await call.done_writing()
            answers = [r for m in [m async for m in call] for r in op_results(m)]
            return e.value, e2.value, ok, answers

    err, err2, ok, answers = run(main())
    for e in (err, err2):
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
        ((field, problem),) = details(e)["bad_request"]
        assert field == "requests" and "inflight_ops_max" in problem and "10" in problem
    assert [r.outcome for r in ok.results] == [T.OUTCOME_OK] * 10
    # A message of 11 operations on a server whose bound is 10 goes in chunks of at most
    # 10: the first is admitted; the rest is shed only while that one is in flight.
    assert sorted(a.id for a in answers) == list(range(11))
    done = [a for a in answers if a.HasField("result")]
    shed = [a for a in answers if a.HasField("error")]
    assert len(done) >= 10 and all(a.result.outcome == T.OUTCOME_OK for a in done)
    assert all(a.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] for a in shed)


def test_an_empty_session_message_ends_the_stream_once_what_was_read_is_answered(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        async with connect(server.address) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=10)
            await call.write(R.SessionRequest(ops=_ops(1, 2, "a")))
            await call.write(R.SessionRequest())
            got = []
            with pytest.raises(grpc.aio.AioRpcError) as e:
                async for m in call:
                    got += m.results
            return got, e.value

    got, err = run(main())
    assert sorted(r.id for r in got) == [1, 2]
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(err)["bad_request"][0][0] == "ops"


def test_answers_for_a_client_gone_away_end_the_stream_quietly(server, caplog):
    # A write that fails because the client cancelled is nobody's error: no ERROR log,
    # no status, nothing more started.
    from stockgate.server.session import SessionStream

    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    svc = server.server.reservations

    class GoneContext:
        def __init__(self):
            self.gone = False

        async def write(self, message):
            self.gone = True
            raise grpc.aio.UsageError("the RPC is cancelled (test)")

        def cancelled(self):
            return self.gone

        def done(self):
            return self.gone

        async def abort_with_status(self, status):  # pragma: no cover - must not happen
            raise AssertionError("aborted a stream its client left")

    async def requests():
        yield R.SessionRequest(ops=_ops(1, 1, "a"))
        yield R.SessionRequest(ops=_ops(2, 1, "b"))
        await asyncio.sleep(10)

    class Admin:
        def invocation_metadata(self):
            return ADMIN

    async def main():
        session = SessionStream(svc, svc._auth.caller(Admin()), GoneContext())
        await asyncio.wait_for(session.serve(requests()), 10)
        return session

    with caplog.at_level("DEBUG", logger="stockgate.server"):
        session = server.call(main)
    assert session.closed and not session.waiting
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_a_message_read_after_shutdown_began_is_answered_unavailable(server):
    # A message already on its way when stop() came: nothing of it starts, and each op
    # is told to come back with the same id rather than left waiting until the grace ends.
    from stockgate.server.auth import ANYONE
    from stockgate.server.session import SessionStream

    async def main():
        stream = SessionStream(server.server.reservations, ANYONE, context=None)
        stream.stop()
        stream.take(R.SessionRequest(ops=_ops(0, 3, "late")))
        return stream

    stream = run(main())
    assert not stream.waiting and stream.inflight == 0
    assert [op_id for op_id, _ in stream.answers] == [0, 1, 2]
    assert all(e.code == grpc.StatusCode.UNAVAILABLE and "same id" in e.message
               for _, e in stream.answers)
    assert server.engine.reservation("late-0") is None
