"""Failures through both clients against a real server: auth denials, malformed and
oversized input naming the field, unknown objects and contradictions, deadlines."""

from __future__ import annotations

import asyncio

import client_harness
import pytest
from client_harness import ADMIN, POS, TMALL, connect, run

from stockgate.clients import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Outcome,
    PermissionDenied,
    Unauthenticated,
)

stocked, kind = client_harness.stocked, client_harness.kind  # fixtures


def test_auth_denials_are_typed(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address, token=None) as c:
            with pytest.raises(Unauthenticated):
                await c.reserve("a-1", "tmall", [("SKU-1", 1)])
            with pytest.raises(Unauthenticated):
                await c.stock("SKU-1")
        async with connect(kind, stocked.address, token="not-a-token-we-know-of") as c:
            with pytest.raises(Unauthenticated):
                await c.availability("tmall", ["SKU-1"])
        async with connect(kind, stocked.address, token=TMALL) as c:
            assert (await c.reserve("a-2", "tmall", [("SKU-1", 1)])).ok
            with pytest.raises(PermissionDenied) as e:  # another channel's reservation
                await c.reserve("a-3", "pos-12", [("SKU-3", 1)])
            assert e.value.hint
            with pytest.raises(PermissionDenied):  # an admin call
                await c.receive("SKU-1", "WH-EAST", 5)
            with pytest.raises(PermissionDenied):
                await c.check()
            assert (await c.availability("tmall", ["SKU-1"])) == {"SKU-1": 79}
        async with connect(kind, stocked.address, token=POS) as c:
            assert (await c.reserve("p-1", "pos-12", [("SKU-3", 1)])).ok
            # Another channel's reservation does not exist for this token.
            assert (await c.commit("a-2")).outcome is Outcome.NOT_FOUND
            assert await c.reservation("a-2") is None
        async with connect(kind, stocked.address, token=ADMIN) as c:
            assert (await c.reservation("a-2")).state.name == "HELD"
    run(scenario())


@pytest.mark.parametrize("call, field", [
    (lambda c: c.reserve("m-1", "tmall", [("SKU-1", 0)]), "lines[0].qty"),
    (lambda c: c.reserve("m-1", "tmall", [("SKU-1", 1_000_000_001)]), "lines[0].qty"),
    (lambda c: c.reserve("m-1", "tmall", [("SKU-1", 1)] * 101), "lines"),
    (lambda c: c.reserve("m-1", "tmall", []), "lines"),
    (lambda c: c.reserve("x" * 129, "tmall", [("SKU-1", 1)]), "reservation_id"),
    (lambda c: c.reserve("m-1", "tmall", [("SKU\x00-1", 1)]), "lines[0].sku"),
    (lambda c: c.reserve("m-1", "tmall", [("SKU-1", 1)], ttl_ms=10), "ttl_ms"),
    (lambda c: c.reserve("", "tmall", [("SKU-1", 1)]), "reservation_id"),
    (lambda c: c.extend("m-1", 0), "ttl_ms"),
    (lambda c: c.commit("m-1", [("SKU-1", -1)]), "lines[0].qty"),
    (lambda c: c.reserve("m-1", "tmall", [("S" * 300_000, 1)]), "request"),  # oversized
    (lambda c: c.availability("tmall", [f"SKU-{i}" for i in range(1_001)]), "skus"),
    (lambda c: c.receive("SKU-1", "WH-EAST", 0), "qty"),
    (lambda c: c.set_allocation_rule("WH-EAST", {"online": 60}), "shares"),
])
def test_malformed_and_oversized_input_names_the_field(stocked, kind, call, field):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            with pytest.raises(InvalidArgument) as e:
                await call(c)
            assert e.value.field == field, e.value
            assert e.value.problem
            assert isinstance(e.value, ValueError)
            # The stream and the connection are still good after a refusal.
            assert (await c.reserve("after", "tmall", [("SKU-1", 1)])).ok
    run(scenario())


def test_a_reserve_many_with_one_bad_request_names_it(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            with pytest.raises(InvalidArgument) as e:
                await c.reserve_many([("b-1", "tmall", [("SKU-1", 1)]),
                                      ("b-2", "tmall", [("SKU-1", 1)], None, None, 5)])
            assert e.value.field == "requests[1].ttl_ms"
            assert await c.reservation("b-1") is None  # nothing of it was done
    run(scenario())


def test_unknown_objects_and_contradictions(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            with pytest.raises(NotFound) as e:
                await c.receive("SKU-1", "WH-NOWHERE", 5)
            assert e.value.field == "location" and "WH-NOWHERE" in str(e.value)
            with pytest.raises(NotFound):
                await c.start_campaign("no-such-campaign")
            with pytest.raises(FailedPrecondition):
                await c.move("SKU-1", "WH-EAST", "online", "offline", 81)
    run(scenario())


def test_a_tiny_deadline_then_a_retry_with_the_same_id_answers_consistently(stocked, kind):
    async def scenario():
        async with connect(kind, stocked.address) as c:
            await c.stock("SKU-1")  # connected, so the deadline is all that is short
            with pytest.raises(DeadlineExceeded) as e:
                await c.reserve("d-1", "tmall", [("SKU-1", 7)], timeout=0.000_1)
            assert isinstance(e.value, TimeoutError)
            again = await c.reserve("d-1", "tmall", [("SKU-1", 7)])
            assert again.ok and again.reservation.units == 7
            third = await c.reserve("d-1", "tmall", [("SKU-1", 7)])
            assert third.replayed and third.reservation == again.reservation
            with pytest.raises(DeadlineExceeded):
                await c.check(timeout=1e-9)
            with pytest.raises(ValueError, match="timeout"):
                await c.stock("SKU-1", timeout=0)
            for huge in (float("inf"), float("nan"), 10**16):
                with pytest.raises(ValueError, match="at most 604,800"):
                    await c.reserve("d-2", "tmall", [("SKU-1", 1)], timeout=huge)
            # A refused timeout changed nothing: the client's other calls go on.
            assert (await c.reserve("d-2", "tmall", [("SKU-1", 1)])).ok
    run(scenario())
    assert sum(b.held for b in stocked.engine.stock("SKU-1")) == 7 + 1  # each held once


def test_overload_is_an_exception_with_a_retry_hint_never_an_outcome(tmp_path, kind):
    from stockgate.clients import InvalidArgument, Overloaded, ReserveRequest

    with client_harness.running_server(tmp_path / "data", inflight_ops_max=5) as server:
        client_harness.stock_book(server.engine)

        async def scenario():
            async with connect(kind, server.address) as c:
                got = await asyncio.gather(*(
                    c.reserve(f"o-{i}", "tmall", [("SKU-1", 1)]) for i in range(200)),
                    return_exceptions=True)
                shed = [g for g in got if isinstance(g, Overloaded)]
                done = [g for g in got if not isinstance(g, BaseException)]
                assert len(shed) + len(done) == 200
                assert shed and all(e.retry_after_ms > 0 for e in shed)
                assert all(r.outcome in (Outcome.OK, Outcome.INSUFFICIENT_STOCK) for r in done)
                # A batch larger than the bound is not overload (it could never be
                # admitted): it is refused as malformed, naming the limit.
                with pytest.raises(InvalidArgument, match="inflight_ops_max"):
                    await c.reserve_many([ReserveRequest(f"m-{i}", "tmall", [("SKU-2", 1)])
                                          for i in range(6)])
                return sum(r.ok for r in done)

        granted = run(scenario())
        assert sum(b.held for b in server.engine.stock("SKU-1")) == granted


def test_a_deadline_cut_while_retrying_unavailable_is_told_as_unavailable():
    # Whichever attempt the deadline happens to cut, a call that was retrying because the
    # server was unavailable tells the caller why, not a bare deadline.
    from stockgate.clients import DeadlineExceeded, Unavailable
    from stockgate.clients.errors import after_retries

    down = Unavailable("the store is full")
    told = after_retries(DeadlineExceeded("deadline"), down)
    assert isinstance(told, Unavailable) and "the store is full" in told.message
    assert after_retries(DeadlineExceeded("deadline"), None).code == "DEADLINE_EXCEEDED"
    bad = after_retries(Unavailable("x"), down)
    assert bad.message == "x"


def test_the_longest_client_timeout_is_the_longest_hold() -> None:
    """limits.TIMEOUT_S_MAX says it is the engine's longest TTL: they must not drift."""
    from stockgate.clients import limits
    from stockgate.engine import limits as engine_limits

    assert limits.TIMEOUT_S_MAX * 1000 == engine_limits.TTL_MS_MAX
