"""The server as a whole: health, reflection, the 500-buyer flash sale, graceful stop and
restart, shedding, deadlines, message size limits."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
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

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_serving_then_not_serving_on_stop(server):
    async def main():
        async with connect(server.address) as s:
            first = await s.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            per_service = await s.health.Check(health_pb2.HealthCheckRequest(
                service="stockgate.v1.Reservations"), timeout=10)
            watch = s.health.Watch(health_pb2.HealthCheckRequest(), timeout=20)
            seen = [(await watch.read()).status]
            stopper = asyncio.get_running_loop().run_in_executor(None, server.stop)
            while True:
                msg = await watch.read()
                if msg is grpc.aio.EOF:
                    break
                seen.append(msg.status)
                if msg.status == NOT_SERVING:
                    break
            watch.cancel()  # an open health watch would hold the stop for its grace
            await stopper
            return first.status, per_service.status, seen

    first, per_service, seen = run(main())
    assert first == per_service == SERVING
    assert seen == [SERVING, NOT_SERVING]


def test_reflection_lists_the_services(server):
    async def main():
        async with connect(server.address) as s:
            stub = reflection_pb2_grpc.ServerReflectionStub(s.channel)

            async def ask():
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            async for resp in stub.ServerReflectionInfo(ask(), timeout=10):
                return {svc.name for svc in resp.list_services_response.service}

    names = run(main())
    assert {"stockgate.v1.Reservations", "stockgate.v1.Inventory", "stockgate.v1.Watch",
            "grpc.health.v1.Health"} <= names


def test_500_concurrent_reserves_of_200_units_then_restart(server_config, start_server):
    st = start_server(server_config)
    seed_book(st.engine)
    st.engine.receive("HOT-1", "WH-EAST", 200, pool="online")

    async def main():
        async with connect(st.address) as s:
            calls = [s.reservations.Reserve(reserve(f"buyer-{i}", "tmall", ("HOT-1", 1)),
                                            metadata=ADMIN, timeout=30) for i in range(500)]
            return await asyncio.gather(*calls)

    results = run(main())
    outcomes = [r.outcome for r in results]
    assert outcomes.count(T.OUTCOME_OK) == 200
    assert outcomes.count(T.OUTCOME_INSUFFICIENT_STOCK) == 300
    held = {r.reservation.reservation_id for r in results if r.outcome == T.OUTCOME_OK}
    st.stop()

    again = start_server(server_config)
    eng = again.engine
    assert eng.stock("HOT-1")[0].held == 200
    assert {rid for rid in (f"buyer-{i}" for i in range(500))
            if (r := eng.reservation(rid)) is not None and r.state == 1} == held
    assert eng.check().ok


def test_graceful_stop_answers_and_commits_calls_in_flight(server_config, start_server):
    st = start_server(server_config)
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 100, pool="online")
    disk = HeldDisk(eng)  # the disk is slow: calls stay in flight

    async def main():
        async with connect(st.address) as s:
            disk.hold()
            calls = [asyncio.ensure_future(s.reservations.Reserve(
                reserve(f"o-{i}", "tmall", ("SKU-1", 1)), metadata=ADMIN, timeout=30))
                for i in range(20)]
            while st.server._admission.ops < 20:  # all admitted, some waiting their turn
                await asyncio.sleep(0.005)
            loop = asyncio.get_running_loop()
            stopping = loop.run_in_executor(None, st.stop)
            await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError) as late:  # no new work while stopping
                await s.reservations.Reserve(reserve("late", "tmall", ("SKU-1", 1)),
                                             metadata=ADMIN, timeout=5)
            disk.release()
            results = await asyncio.gather(*calls)
            await stopping
            return results, late.value

    results, late = run(main())
    assert late.code() == grpc.StatusCode.UNAVAILABLE
    assert [r.outcome for r in results] == [T.OUTCOME_OK] * 20
    again = start_server(server_config)
    assert again.engine.stock("SKU-1")[0].held == 20
    assert again.engine.reservation("late") is None


def test_shedding_past_the_in_flight_bound(server_config, start_server):
    st = start_server(dataclasses.replace(server_config, inflight_ops_max=2))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 100, pool="online")
    disk = HeldDisk(eng)

    async def main():
        async with connect(st.address) as s:
            disk.hold()
            busy = [asyncio.ensure_future(s.reservations.Reserve(
                reserve(f"o-{i}", "tmall", ("SKU-1", 1)), metadata=ADMIN, timeout=30))
                for i in range(2)]
            while st.server._admission.ops < 2:  # both admitted (one waits for its turn)
                await asyncio.sleep(0.005)
            with pytest.raises(grpc.aio.AioRpcError) as shed:
                await s.reservations.Reserve(reserve("o-3", "tmall", ("SKU-1", 1)),
                                             metadata=ADMIN, timeout=10)
            session = s.reservations.Session(metadata=ADMIN, timeout=10)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=1, reserve=reserve("o-4", "tmall", ("SKU-1", 1)))]))
            answer = await session.read()
            disk.release()
            done = await asyncio.gather(*busy)
            await session.done_writing()
            return shed.value, answer, done

    shed, answer, done = run(main())
    assert shed.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(shed)["retry_after_ms"] == server_config.queue_ms  # the queue's wait
    (op,) = op_results(answer)
    assert op.error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert op.error.retry_after_ms == server_config.queue_ms
    assert [r.outcome for r in done] == [T.OUTCOME_OK] * 2
    assert eng.reservation("o-3") is None and eng.reservation("o-4") is None


def test_oversized_message_is_refused_by_grpc_but_sold_out_is_an_outcome(server_config,
                                                                          start_server):
    st = start_server(dataclasses.replace(server_config, message_bytes_max=1 << 20))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 1, pool="online")

    async def main():
        async with connect(st.address) as s:
            big = R.ReserveBatchRequest(requests=[
                reserve(f"order-with-a-long-id-{i:06d}" + "x" * 100, "tmall", ("SKU-1", 1))
                for i in range(8_000)])
            assert big.ByteSize() > 1 << 20
            with pytest.raises(grpc.aio.AioRpcError) as too_big:
                await s.reservations.ReserveBatch(big, metadata=ADMIN, timeout=10)
            ok = await s.reservations.Reserve(reserve("a", "tmall", ("SKU-1", 1)),
                                              metadata=ADMIN, timeout=10)
            sold_out = await s.reservations.Reserve(reserve("b", "tmall", ("SKU-1", 1)),
                                                    metadata=ADMIN, timeout=10)
            return too_big.value, ok, sold_out

    too_big, ok, sold_out = run(main())
    assert too_big.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ok.outcome == T.OUTCOME_OK
    assert sold_out.outcome == T.OUTCOME_INSUFFICIENT_STOCK
    assert eng.reservation("order-with-a-long-id-000000" + "x" * 100) is None


def test_a_call_whose_deadline_passes_before_it_starts_does_nothing(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    adm = server.server._admission

    async def hold_back():  # as a consistency check does: new work waits
        async with adm.pause():
            await asyncio.sleep(0.5)

    async def main():
        held = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hold_back(),
                                                                    server.server._loop))
        async with connect(server.address) as s:
            while not adm.paused:
                await asyncio.sleep(0.005)
            with pytest.raises(grpc.aio.AioRpcError) as late:
                await s.reservations.Reserve(reserve("late", "tmall", ("SKU-1", 1)),
                                             metadata=ADMIN, timeout=0.1)
            await held
            return late.value

    assert run(main()).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert server.engine.reservation("late") is None
    assert adm.ops == 0


def test_admission_drops_a_call_whose_deadline_passed_before_it_started():
    from stockgate.server.admission import Admission
    from stockgate.server.status import CallError

    class Late:
        def time_remaining(self):
            return 0.0

    adm = Admission(10, queue_ms=50)
    with pytest.raises(CallError) as e:
        adm.admit(Late())
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and adm.ops == 0


def test_metrics_endpoint(server_config, start_server):
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    st = start_server(dataclasses.replace(server_config, metrics_port=port))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 1, pool="online")

    async def main():
        async with connect(st.address) as s:
            for rid in ("a", "b"):
                await s.reservations.Reserve(reserve(rid, "tmall", ("SKU-1", 1)),
                                             metadata=ADMIN, timeout=10)
            with pytest.raises(grpc.aio.AioRpcError):
                await s.reservations.Reserve(reserve("c", "tmall", ("SKU-1", 0)),
                                             metadata=ADMIN, timeout=10)

    run(main())
    refused = ('stockgate_grpc_server_handled_total{grpc_code="INVALID_ARGUMENT",'
               'grpc_method="Reserve"} 1.0')
    # A refused call is counted once its handler has unwound, which may be a moment
    # after the caller got the status: scrape until it is in.
    deadline = time.monotonic() + 10
    while True:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=10).read().decode()
        if refused in text or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert 'stockgate_grpc_server_handled_total{grpc_code="OK",grpc_method="Reserve"} 2.0' in text
    assert refused in text
    assert 'stockgate_reservation_outcomes_total{outcome="OK"} 1.0' in text
    assert 'stockgate_reservation_outcomes_total{outcome="INSUFFICIENT_STOCK"} 1.0' in text
    assert "stockgate_operations_in_flight 0.0" in text
    # The in-flight bound: a quiet server's is its floor (nothing measured fast yet).
    from stockgate.server.admission import INFLIGHT_OPS_FLOOR
    assert f"stockgate_operations_limit {float(INFLIGHT_OPS_FLOOR)}" in text
    assert "stockgate_journal_last_seq" in text
    assert "stockgate_session_messages_total 0.0" in text  # as docs/server.md names it


def test_a_full_store_is_unavailable_and_not_serving_until_a_write_succeeds(server):
    from stockgate.engine import StoreFullError

    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    store_write = eng._store.write
    failing = {"on": True}

    def full_disk(*args, **kwargs):
        if failing["on"]:
            raise StoreFullError("no space left on device (test)")
        return store_write(*args, **kwargs)

    async def status(s):
        return (await s.health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status

    async def main():
        async with connect(server.address) as s:
            eng._store.write = full_disk
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await s.reservations.Reserve(reserve("o-1", "tmall", ("SKU-1", 1)),
                                             metadata=ADMIN, timeout=10)
            session = s.reservations.Session(metadata=ADMIN, timeout=10)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=1, reserve=reserve("o-2", "tmall", ("SKU-1", 1)))]))
            op_failed = (await session.read()).results[0]
            await session.done_writing()
            while await status(s) != NOT_SERVING:
                await asyncio.sleep(0.01)
            failing["on"] = False
            ok = await s.reservations.Reserve(reserve("o-3", "tmall", ("SKU-1", 1)),
                                              metadata=ADMIN, timeout=10)
            while await status(s) != SERVING:
                await asyncio.sleep(0.01)
            return failed.value, op_failed, ok

    failed, op_failed, ok = run(main())
    assert failed.code() == grpc.StatusCode.UNAVAILABLE
    assert "no space left" in failed.details() and "retry with the same ids" in failed.details()
    assert op_failed.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert ok.outcome == T.OUTCOME_OK
    assert eng.reservation("o-1") is None and eng.reservation("o-2") is None
    assert eng.check().ok


def test_a_session_is_answered_then_ended_unavailable_on_shutdown(server_config, start_server):
    st = start_server(server_config)
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        async with connect(st.address) as s:
            session = s.reservations.Session(metadata=ADMIN, timeout=20)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=1, reserve=reserve("o-1", "tmall", ("SKU-1", 1)))]))
            first = await session.read()
            stopping = asyncio.get_running_loop().run_in_executor(None, st.stop)
            with pytest.raises(grpc.aio.AioRpcError) as ended:
                while True:
                    msg = await session.read()
                    assert msg is not grpc.aio.EOF
            await stopping
            return first, ended.value

    first, ended = run(main())
    assert first.results[0].result.outcome == T.OUTCOME_OK
    assert ended.code() == grpc.StatusCode.UNAVAILABLE
    assert "with the same ids" in ended.details()
    assert start_server(server_config).engine.reservation("o-1") is not None


def test_a_port_in_use_is_a_clear_error_and_exit_code_1(server_config, start_server,
                                                        tmp_path, caplog):
    import socket
    from concurrent.futures import ThreadPoolExecutor

    from stockgate.server import ConfigError, app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        listen = f"127.0.0.1:{taken.getsockname()[1]}"
        with pytest.raises(ConfigError, match=f"listen {listen}: cannot bind"):
            start_server(dataclasses.replace(server_config, listen=listen))
        with caplog.at_level("ERROR", logger="stockgate.server"), \
                ThreadPoolExecutor(1) as pool:  # `stockgate serve`, on a loop of its own
            code = pool.submit(app.main, ["--listen", listen, "--data-dir",
                                          str(tmp_path / "cli-db")]).result(60)
    assert code == app.EXIT_FAILED
    assert any("cannot bind (the port is in use" in r.getMessage() for r in caplog.records)
