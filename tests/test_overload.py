"""Overload: the in-flight bound follows the server's speed, a flood is refused at once with
a retry hint and changes nothing, and the server takes work again as soon as it ends.

The bound's arithmetic runs on clocks the tests move by hand, so nothing here depends on
this machine's speed; how fast a real flood is refused is measured by
`python bench/run.py overload` (bench/README.md), never in a test.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from server_calls import ADMIN, R, T, connect, op_results, reserve, run, seed_book

from stockgate.server.admission import (
    INFLIGHT_OPS_FLOOR,
    RATE_HALF_LIFE_S,
    RATE_WINDOW_S,
    SHED_RETRY_AFTER_MS_MIN,
    SQUEEZE_MIN,
    Admission,
)
from stockgate.server.status import CallError

QUEUE_MS = 50
SHED = grpc.StatusCode.RESOURCE_EXHAUSTED


class Clocks:
    """Wall and loop-thread CPU clocks that move only when told."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def window(self, busy_share: float) -> None:
        """One rate window passes, the loop thread busy for busy_share of it."""
        self.wall += RATE_WINDOW_S
        self.cpu += RATE_WINDOW_S * busy_share


def admission(clocks: Clocks, ops_max: int = 10_000_000) -> Admission:
    return Admission(ops_max, QUEUE_MS, clock=lambda: clocks.wall, cpu_clock=lambda: clocks.cpu)


def answer(adm: Admission, clocks: Clocks, ops: int, busy_share: float = 0.3) -> None:
    """A window in which `ops` operations are admitted and answered."""
    assert adm.refusal(ops) is None
    clocks.window(busy_share)
    adm.leave(ops)


class Call:
    def time_remaining(self):
        return None


def test_the_bound_is_what_the_server_answers_in_queue_ms():
    c = Clocks()
    adm = admission(c)
    assert adm.limit == INFLIGHT_OPS_FLOOR  # nothing measured yet
    answer(adm, c, 10_000)  # 10,000 in one 50 ms window: 200,000 a second
    assert adm.rate_best == pytest.approx(200_000)
    assert adm.limit == 200_000 * QUEUE_MS // 1000


def test_the_bound_never_passes_ops_max_nor_falls_below_the_floor():
    c = Clocks()
    adm = admission(c, ops_max=5_000)
    answer(adm, c, 10_000)
    assert adm.limit == 5_000
    quiet = admission(c)
    answer(quiet, c, 1)  # 20 a second: the floor, so a burst after quiet is admitted
    assert quiet.limit == INFLIGHT_OPS_FLOOR


def test_the_best_rate_fades_so_a_slower_server_lowers_its_bound():
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    high = adm.limit
    for _ in range(int(6 * RATE_HALF_LIFE_S / RATE_WINDOW_S)):  # at a quarter of that speed
        answer(adm, c, 2_500)
    assert adm.limit == pytest.approx(high / 4, rel=0.05)


def test_a_call_is_admitted_while_below_the_bound_whatever_its_size_and_shed_past_it():
    c = Clocks()
    adm = admission(c)
    assert adm.refusal(INFLIGHT_OPS_FLOOR - 1) is None
    assert adm.refusal(5_000) is None  # below the bound when it came: the overshoot is one call
    shed_before = adm.shed_total
    refusal = adm.refusal(1)
    assert isinstance(refusal, CallError) and refusal.code == SHED
    assert refusal.retry_after_ms >= SHED_RETRY_AFTER_MS_MIN
    assert "in flight" in refusal.message and str(adm.limit) in refusal.message
    assert adm.ops == INFLIGHT_OPS_FLOOR - 1 + 5_000  # nothing counted in for the refusal
    assert adm.shed_total == shed_before + 1
    with pytest.raises(CallError) as e:
        adm.admit(Call(), 3)
    assert e.value.code == SHED


def test_a_lone_call_is_never_shed_for_speed():
    c = Clocks()
    adm = admission(c)
    adm.limit = 1  # as low as a squeeze can take it
    assert adm.refusal(100) is None  # nothing else in flight: it runs
    assert adm.refusal(1) is not None


def test_a_saturated_loop_that_sheds_squeezes_admitted_work_then_recovers_quickly():
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    full = adm.limit
    for _ in range(20):  # a flood: the loop past its share, and shedding
        assert adm.refusal(adm.limit) is None
        assert adm.refusal(1) is not None
        c.window(0.95)
        adm.leave(adm.ops)
    assert adm.squeeze == SQUEEZE_MIN and adm.limit < full * 0.05
    windows = 0
    while adm.squeeze < 1.0:  # the flood ends: the loop has time again
        answer(adm, c, 1_000, busy_share=0.3)
        windows += 1
    assert windows <= 6  # back within a third of a second,
    assert adm.limit >= full * 0.9  # to the bound of the best rate (faded by 1.3 s only)


def test_a_busy_loop_that_sheds_nothing_is_not_squeezed():
    # At capacity with well-behaved callers the loop is busy but nothing is refused:
    # squeezing then would only cost throughput.
    c = Clocks()
    adm = admission(c)
    for _ in range(20):
        answer(adm, c, 10_000, busy_share=0.95)
    assert adm.squeeze == 1.0


# ------------------------------------------------------------------ through a server

FLOOD_MESSAGES = 30
OPS_PER_MESSAGE = 100
TIGHT_OPS_MAX = 150  # the hard bound of the flooded server: most of a flood is shed


def _message(n: int) -> R.SessionRequest:
    return R.SessionRequest(ops=[
        R.Operation(id=n * OPS_PER_MESSAGE + k,
                    reserve=reserve(f"fl-{n}-{k}", "tmall", ("SKU-1", 1)))
        for k in range(OPS_PER_MESSAGE)])


async def _flood(address: str, messages: int) -> dict[int, R.OperationResult]:
    """Write every message at once on one Session stream, then read every answer."""
    async with connect(address) as s:
        call = s.reservations.Session(metadata=ADMIN, timeout=60)
        for n in range(messages):
            await call.write(_message(n))
        await call.done_writing()
        answers: dict[int, R.OperationResult] = {}
        async for resp in call:
            for r in op_results(resp):
                assert r.id not in answers, f"operation {r.id} answered twice"
                answers[r.id] = r
        return answers


def test_a_flood_is_shed_with_a_retry_hint_changes_nothing_and_the_server_recovers(
        server_config, start_server):
    st = start_server(dataclasses.replace(server_config, inflight_ops_max=TIGHT_OPS_MAX))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 1_000_000, pool="online")

    answers = run(_flood(st.address, FLOOD_MESSAGES))
    assert len(answers) == FLOOD_MESSAGES * OPS_PER_MESSAGE  # every op answered, once
    granted = [r for r in answers.values() if r.HasField("result")]
    shed = [r for r in answers.values() if not r.HasField("result")]
    assert granted and shed
    assert all(r.result.outcome == T.OUTCOME_OK for r in granted)
    assert all(r.error.code == SHED.value[0] and r.error.retry_after_ms > 0 for r in shed)
    eng.flush()
    for r in shed:  # a shed operation did nothing
        n, k = divmod(r.id, OPS_PER_MESSAGE)
        assert eng.reservation(f"fl-{n}-{k}") is None
    held = sum(b.held for b in eng.stock("SKU-1"))
    assert held == len(granted)
    assert not eng.check().drifts

    # The flood is over: paced work, one message at a time, is admitted whole.
    async def paced():
        async with connect(st.address) as s:
            call = s.reservations.Session(metadata=ADMIN, timeout=60)
            got = []
            for n in range(1_000, 1_005):
                await call.write(_message(n))
                while sum(len(op_results(m)) for m in got) < (n - 999) * OPS_PER_MESSAGE:
                    got.append(await call.read())
            await call.done_writing()
            return [r for m in got for r in op_results(m)]

    after = run(paced())
    assert len(after) == 5 * OPS_PER_MESSAGE
    assert all(r.HasField("result") and r.result.outcome == T.OUTCOME_OK for r in after)


def test_a_client_told_to_back_off_gets_overloaded_with_the_hint_and_nothing_was_done(
        server_config, start_server):
    from stockgate.clients import AsyncClient, Overloaded

    st = start_server(dataclasses.replace(server_config, inflight_ops_max=5))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 10_000, pool="online")
    calls = 2_000

    async def main():
        async with AsyncClient(st.address, token=ADMIN[0][1].split()[1], timeout=30) as c:
            return await asyncio.gather(*(c.reserve(f"c-{i}", "tmall", [("SKU-1", 1)])
                                          for i in range(calls)), return_exceptions=True)

    outcomes = run(main())
    ok = [i for i, r in enumerate(outcomes) if not isinstance(r, BaseException) and r.ok]
    backed_off = [i for i, r in enumerate(outcomes) if isinstance(r, Overloaded)]
    assert len(ok) + len(backed_off) == calls and ok and backed_off
    assert all(outcomes[i].retry_after_ms > 0 for i in backed_off)
    eng.flush()
    assert all(eng.reservation(f"c-{i}") is None for i in backed_off)
    assert sum(b.held for b in eng.stock("SKU-1")) == len(ok)
