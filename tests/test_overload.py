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
from server_calls import (
    ADMIN,
    TMALL,
    HeldDisk,
    R,
    T,
    connect,
    op_results,
    reserve,
    run,
    seed_book,
)

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


def flood(adm: Admission, c: Clocks, windows: int = 20, busy_share: float = 0.95) -> None:
    """Windows of five times what is admitted: the bound filled, four times as much shed."""
    for _ in range(windows):
        assert adm.refusal(adm.limit) is None
        for _ in range(4):
            assert adm.refusal(adm.limit) is not None
        c.window(busy_share)
        adm.leave(adm.ops)


def test_a_saturated_loop_that_sheds_squeezes_admitted_work_then_recovers_quickly():
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    full = adm.limit
    flood(adm, c)
    assert adm.squeeze == SQUEEZE_MIN and adm.limit < full * 0.05
    answer(adm, c, 10, busy_share=0.3)  # the flood ends: a window sheds nothing
    assert adm.squeeze == 1.0
    assert adm.limit >= full * 0.9  # the bound of the best rate (faded by 1 s only)


def test_while_the_loop_has_time_the_squeeze_grows_back_during_a_flood():
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    flood(adm, c)
    low = adm.squeeze
    flood(adm, c, windows=3, busy_share=0.5)
    assert adm.squeeze > low * 1.9


def test_a_few_refusals_slightly_past_capacity_do_not_squeeze():
    # A busy loop refusing a few percent is the bound at work, not a loop swamped by a
    # flood: squeezing then would cost throughput for nothing.
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    for _ in range(20):
        assert adm.refusal(adm.limit) is None
        assert adm.refusal(adm.limit // 20) is not None
        c.window(0.95)
        adm.leave(adm.ops)
    assert adm.squeeze == 1.0


def test_a_burst_after_a_flood_and_a_quiet_spell_meets_the_full_bound():
    # Windows close when operations are answered; a flood that stops leaves the last
    # one open. The next sale's burst must not meet the flood's squeeze.
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    flood(adm, c)
    c.wall += 600.0  # ten quiet minutes
    c.cpu += 1.0
    admitted = sum(adm.refusal(1) is None for _ in range(INFLIGHT_OPS_FLOOR))
    assert admitted == INFLIGHT_OPS_FLOOR and adm.squeeze == 1.0


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


def test_bad_operations_in_a_message_shed_whole_get_their_own_answers(server_config,
                                                                      start_server):
    # A message arriving while the server is at its bound is refused without queueing,
    # but a mistake is still told as a mistake, not as "come back later".
    st = start_server(dataclasses.replace(server_config, inflight_ops_max=1))
    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", 100, pool="online")
    disk = HeldDisk(eng)

    async def main():
        async with connect(st.address) as s:
            disk.hold()  # one reserve stays in flight: the server is at its bound
            first = asyncio.ensure_future(s.reservations.Reserve(
                reserve("held", "tmall", ("SKU-1", 1)), metadata=ADMIN, timeout=30))
            while st.server._admission.ops == 0:
                await asyncio.sleep(0.01)
            call = s.reservations.Session(metadata=TMALL, timeout=30)
            await call.write(R.SessionRequest(ops=[
                R.Operation(id=1, reserve=reserve("other", "pos-12", ("SKU-1", 1))),
                R.Operation(id=2),  # nothing set
                R.Operation(id=3, timeout_ms=-1, reserve=reserve("neg", "tmall", ("SKU-1", 1))),
                R.Operation(id=4, reserve=reserve("good", "tmall", ("SKU-1", 1))),
            ]))
            answers: dict[int, R.OperationResult] = {}
            while len(answers) < 4:
                answers.update((r.id, r) for r in op_results(await call.read()))
            disk.release()
            await call.done_writing()
            await first
            return answers

    answers = run(main())
    codes = {i: r.error.code for i, r in answers.items()}
    assert codes == {1: grpc.StatusCode.PERMISSION_DENIED.value[0],
                     2: grpc.StatusCode.INVALID_ARGUMENT.value[0],
                     3: grpc.StatusCode.INVALID_ARGUMENT.value[0], 4: SHED.value[0]}
    assert answers[4].error.retry_after_ms > 0
    assert all(eng.reservation(r) is None for r in ("other", "neg", "good"))


def test_a_client_resends_refused_ids_answered_unavailable():
    # SessionResponse.refused_ids answer exactly as an OperationResult with that error
    # would: UNAVAILABLE means send the same operation again, within the deadline.
    from stockgate.clients import wire
    from stockgate.clients.session import Outbox, Pending

    settled = []
    box = Outbox()
    p = Pending(wire.operation("reserve", reserve("r-1", "tmall", ("SKU-1", 1))),
                deadline=100.0, settle=lambda res, err: settled.append(err))
    box.add(p)
    sent = R.SessionRequest.FromString(box.take_message(now=0.0))
    resp = R.SessionResponse(refused_ids=[sent.ops[0].id], refused_error=T.Error(
        code=grpc.StatusCode.UNAVAILABLE.value[0], message="the store is full"))
    box.answer(resp.SerializeToString(), now=0.0)
    assert settled == [] and box.delayed == [p]  # to be resent, not failed
    resent = R.SessionRequest.FromString(box.take_message(now=box.next_ready_s(0.0) + 0.001))
    assert [op.reserve.reservation_id for op in resent.ops] == ["r-1"]


def test_a_server_found_full_sheds_whatever_time_passed_meanwhile():
    # A Session message found the server full() and read its operations; however long
    # that took, the refusal is decided then and not again: nothing is counted in that
    # no one will ever count out, and no operation goes unanswered.
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    flood(adm, c)
    assert adm.refusal(adm.limit) is None
    assert adm.full()
    in_flight = adm.ops
    c.wall += 1.0  # the loop stalled while the message was read
    refusal = adm.shed(300)
    assert refusal.code == SHED and refusal.retry_after_ms > 0
    assert adm.ops == in_flight


def test_after_a_flood_a_few_refusals_do_not_keep_the_bound_squeezed():
    # Callers just above the squeezed bound, retrying: every window refuses a few, none
    # is a flood. The bound must grow back, not stay at the flood's level.
    c = Clocks()
    adm = admission(c)
    answer(adm, c, 10_000)
    flood(adm, c)
    for _ in range(25):
        assert adm.refusal(adm.limit) is None
        assert adm.refusal(max(1, adm.limit // 10)) is not None
        c.window(0.95)
        adm.leave(adm.ops)
    assert adm.squeeze == 1.0
