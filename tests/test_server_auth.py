"""Who may do what: bearer tokens bound to channels or to admin."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from server_calls import (
    ADMIN,
    POS,
    TMALL,
    I,
    R,
    T,
    W,
    bearer,
    connect,
    details,
    reserve,
    run,
    seed_book,
)

UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED
DENIED = grpc.StatusCode.PERMISSION_DENIED


def _code(server, fn) -> grpc.StatusCode | None:
    async def main():
        async with connect(server.address) as s:
            try:
                await fn(s)
            except grpc.aio.AioRpcError as e:
                return e
            return None

    err = run(main())
    return None if err is None else err.code()


@pytest.mark.parametrize("metadata, code", [
    ((), UNAUTHENTICATED),
    (bearer("not-a-token-of-this-server"), UNAUTHENTICATED),
    ((("authorization", "Basic dXNlcjpwYXNz"),), UNAUTHENTICATED),
    (TMALL, None),
    (ADMIN, None),
])
def test_tokens(server, metadata, code):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    assert _code(server, lambda s: s.reservations.Reserve(
        reserve("o-1", "tmall", ("SKU-1", 1)), metadata=metadata, timeout=10)) == code


@pytest.mark.parametrize("call", [
    lambda s, md: s.reservations.Reserve(reserve("o-1", "tmall", ("SKU-1", 1)), metadata=md,
                                         timeout=10),
    lambda s, md: s.reservations.ReserveBatch(R.ReserveBatchRequest(requests=[
        reserve("o-2", "pos-12", ("SKU-1", 1)), reserve("o-3", "tmall", ("SKU-1", 1))]),
        metadata=md, timeout=10),
    lambda s, md: s.inventory.GetAvailability(I.GetAvailabilityRequest(
        channel="tmall", skus=["SKU-1"]), metadata=md, timeout=10),
    lambda s, md: s.watch.Subscribe(W.WatchRequest(channel="tmall"), metadata=md,
                                    timeout=10).read(),
], ids=["reserve", "reserve-batch", "availability", "watch"])
def test_a_channel_token_acts_for_its_channels_only(server, call):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")
    assert _code(server, lambda s: call(s, POS)) == DENIED
    assert server.engine.reservation("o-1") is None and server.engine.reservation("o-2") is None


def test_batch_denial_names_the_request(server):
    async def main():
        async with connect(server.address) as s:
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await s.reservations.ReserveBatch(R.ReserveBatchRequest(requests=[
                    reserve("o-2", "tmall", ("SKU-1", 1)), reserve("o-3", "pos-12", ("SKU-1", 1))]),
                    metadata=TMALL, timeout=10)
            return e.value

    err = run(main())
    assert err.code() == DENIED
    assert details(err)["bad_request"][0][0] == "requests[1].channel"


@pytest.mark.parametrize("call", [
    lambda s, md: s.inventory.AddLocation(I.AddLocationRequest(location="X"), metadata=md,
                                          timeout=10),
    lambda s, md: s.inventory.Receive(I.ReceiveRequest(sku="S", location="WH-EAST", qty=1),
                                      metadata=md, timeout=10),
    lambda s, md: s.inventory.Check(T.Empty(), metadata=md, timeout=10),
    lambda s, md: s.inventory.GetStock(I.GetStockRequest(sku="S"), metadata=md, timeout=10),
    lambda s, md: s.inventory.ReadJournal(I.ReadJournalRequest(), metadata=md, timeout=10),
], ids=["add-location", "receive", "check", "stock", "journal"])
def test_a_channel_token_cannot_call_admin_rpcs(server, call):
    assert _code(server, lambda s: call(s, TMALL)) == DENIED
    assert _code(server, lambda s: call(s, ())) == UNAUTHENTICATED
    assert "X" not in server.engine.locations()


def test_another_channels_reservation_is_not_found_to_a_channel_token(server):
    eng = server.engine
    eng.receive("SKU-1", "STORE-12", 10)
    eng.reserve("p-1", "pos-12", [("SKU-1", 2)])

    async def main():
        async with connect(server.address) as s:
            rs = s.reservations
            unary = [await rs.Commit(R.CommitRequest(reservation_id="p-1"), metadata=TMALL,
                                     timeout=10),
                     await rs.Release(R.ReleaseRequest(reservation_id="p-1"), metadata=TMALL,
                                      timeout=10),
                     await rs.Extend(R.ExtendRequest(reservation_id="p-1", ttl_ms=5_000),
                                     metadata=TMALL, timeout=10),
                     await rs.Amend(R.AmendRequest(reservation_id="p-1", lines=[
                         T.Line(sku="SKU-1", qty=1)]), metadata=TMALL, timeout=10)]
            batch = await rs.ReleaseBatch(R.ReleaseBatchRequest(requests=[
                R.ReleaseRequest(reservation_id="p-1")]), metadata=TMALL, timeout=10)
            session = rs.Session(metadata=TMALL, timeout=10)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=1, commit=R.CommitRequest(reservation_id="p-1")),
                R.Operation(id=2, reserve=reserve("x", "pos-12", ("SKU-1", 1)))]))
            await session.done_writing()
            answers = {r.id: r async for resp in session for r in resp.results}
            own = await rs.Commit(R.CommitRequest(reservation_id="p-1"), metadata=POS,
                                  timeout=10)
            return unary, batch, answers, own

    unary, batch, answers, own = run(main())
    assert [r.outcome for r in unary] == [T.OUTCOME_NOT_FOUND] * 4
    assert [r.outcome for r in batch.results] == [T.OUTCOME_NOT_FOUND]
    assert answers[1].result.outcome == T.OUTCOME_NOT_FOUND
    assert (answers[2].error.code, answers[2].error.field) == (7, "channel")
    assert own.outcome == T.OUTCOME_OK  # untouched until its own channel committed it


def test_health_and_reflection_need_no_token(server):
    from grpc_health.v1 import health_pb2

    async def main():
        async with connect(server.address) as s:
            return await s.health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    assert run(main()).status == health_pb2.HealthCheckResponse.SERVING


def test_without_tokens_auth_is_off_on_loopback_only(server_config, start_server):
    from stockgate.server import ConfigError

    open_cfg = dataclasses.replace(server_config, tokens={})
    st = start_server(open_cfg)
    seed_book(st.engine)
    st.engine.receive("SKU-1", "WH-EAST", 1, pool="online")
    assert _code(st, lambda s: s.reservations.Reserve(
        reserve("o-1", "tmall", ("SKU-1", 1)), timeout=10)) is None
    with pytest.raises(ConfigError, match="auth is off"):
        start_server(dataclasses.replace(open_cfg, listen="0.0.0.0:0"))


def test_a_conflict_with_another_channels_id_carries_nothing_of_that_reservation(server):
    # Ids are one namespace: a channel token reserving with an id another channel uses
    # learns that the id is taken, and nothing else (channel, customer, lines, where from).
    eng = server.engine
    eng.receive("SKU-1", "STORE-12", 10)
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    eng.reserve("p-1", "pos-12", [("SKU-1", 2)], customer="alice@example.com")
    eng.reserve("t-1", "tmall", [("SKU-1", 2)])
    tmall_again = reserve("t-1", "tmall", ("SKU-1", 3))  # its own id, other content
    foreign = reserve("p-1", "tmall", ("SKU-1", 1))

    async def main():
        async with connect(server.address) as s:
            rs = s.reservations
            got = [await rs.Reserve(foreign, metadata=TMALL, timeout=10),
                   (await rs.ReserveBatch(R.ReserveBatchRequest(requests=[foreign]),
                                          metadata=TMALL, timeout=10)).results[0]]
            session = rs.Session(metadata=TMALL, timeout=10)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=1, reserve=foreign), R.Operation(id=2, reserve=tmall_again)]))
            await session.done_writing()
            answers = {r.id: r.result async for resp in session for r in resp.results}
            own = await rs.Reserve(tmall_again, metadata=TMALL, timeout=10)
            admin = await rs.Reserve(foreign, metadata=ADMIN, timeout=10)
            return got + [answers[1]], [answers[2], own], admin

    hidden, own, admin = run(main())
    for r in hidden:
        assert r.outcome == T.OUTCOME_ID_CONFLICT
        assert r == T.Result(outcome=T.OUTCOME_ID_CONFLICT)  # nothing else in it
    # A conflict with one's own reservation, or as admin, shows the reservation.
    for r in own:
        assert r.outcome == T.OUTCOME_ID_CONFLICT and r.reservation.reservation_id == "t-1"
    assert admin.outcome == T.OUTCOME_ID_CONFLICT
    assert (admin.reservation.channel, admin.reservation.customer) == (
        "pos-12", "alice@example.com")
    assert sum(b.held for b in eng.stock("SKU-1")) == 4  # nothing more was held


def test_secrets_are_compared_as_digests_of_one_length():
    # Comparing fixed-length digests: the time taken tells nothing of a secret's length.
    from stockgate.server.auth import Authenticator
    from stockgate.server.config import TokenGrant

    auth = Authenticator({"a": TokenGrant(secret="s" * 16, admin=True),
                          "b": TokenGrant(secret="t" * 1_000, channels=("tmall",))})
    assert {len(secret) for secret, _ in auth._tokens} == {32}

    class Call:
        def __init__(self, token):
            self.token = token

        def invocation_metadata(self):
            return (("authorization", f"Bearer {self.token}"),)

    assert auth.caller(Call("t" * 1_000)).name == "b"
    from stockgate.server.status import CallError

    for wrong in ("s" * 15, "s" * 17, "t" * 999):
        with pytest.raises(CallError):
            auth.caller(Call(wrong))
