"""Unary group commit (server/turns.py): who goes together, and when a waiting group goes."""

from __future__ import annotations

import asyncio

import pytest

from stockgate.server.turns import Turns

WINDOW_S = 0.2  # long beside a loop step, so "not before the window" cannot pass by luck
TEST_WAIT_S = 30  # a test that hangs fails instead


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=TEST_WAIT_S))


def enter_now(turns: Turns) -> bool:
    """True when enter() returns without suspending (the call goes at once)."""
    coro = turns.enter()
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


def test_an_idle_server_lets_a_call_go_at_once():
    run(_test_an_idle_server_lets_a_call_go_at_once())


async def _test_an_idle_server_lets_a_call_go_at_once():
    turns = Turns(WINDOW_S)
    assert enter_now(turns)
    assert enter_now(turns)  # same loop step: the same group
    assert turns.running == 2


def test_a_group_formed_during_a_commit_goes_after_its_window_together():
    run(_test_a_group_formed_during_a_commit_goes_after_its_window_together())


async def _test_a_group_formed_during_a_commit_goes_after_its_window_together():
    loop = asyncio.get_running_loop()
    turns = Turns(WINDOW_S)
    await turns.enter()  # the group in flight
    await asyncio.sleep(0)  # its loop step is over: it takes no more calls
    went: list[float] = []

    async def call() -> None:
        await turns.enter()
        went.append(loop.time())

    first = loop.time()
    waiting = [asyncio.ensure_future(call()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not went, "calls joined a group already on its way to disk"
    turns.leave()  # the group in flight is answered, but the window is not over
    await asyncio.sleep(0.01)
    assert not went
    late = asyncio.ensure_future(call())  # arrives during the window: joins the group
    await asyncio.gather(*waiting, late)
    assert len(went) == 4 and min(went) >= first + WINDOW_S
    assert turns.running == 4


def test_a_window_already_over_lets_the_group_go_when_the_one_in_flight_ends():
    run(_test_a_window_already_over_lets_the_group_go_when_the_one_in_flight_ends())


async def _test_a_window_already_over_lets_the_group_go_when_the_one_in_flight_ends():
    loop = asyncio.get_running_loop()
    turns = Turns(WINDOW_S)
    await turns.enter()
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(turns.enter())
    await asyncio.sleep(WINDOW_S * 1.5)  # the window passes while the group is in flight
    assert not waiter.done()
    t = loop.time()
    turns.leave()
    await waiter
    assert loop.time() - t < WINDOW_S / 2  # no second window


@pytest.mark.parametrize("wait_s", [0.0, WINDOW_S])
def test_one_cancelled_waiter_does_not_hold_back_or_cancel_the_others(wait_s):
    run(_test_one_cancelled_waiter_does_not_hold_back_or_cancel_the_others(wait_s))


async def _test_one_cancelled_waiter_does_not_hold_back_or_cancel_the_others(wait_s):
    turns = Turns(wait_s)
    await turns.enter()
    await asyncio.sleep(0)
    a = asyncio.ensure_future(turns.enter())
    b = asyncio.ensure_future(turns.enter())
    await asyncio.sleep(0)
    a.cancel()
    turns.leave()
    await b
    assert a.cancelled() and turns.running == 1


def test_a_group_waiting_out_its_window_goes_at_once_on_shutdown():
    run(_test_a_group_waiting_out_its_window_goes_at_once_on_shutdown())


async def _test_a_group_waiting_out_its_window_goes_at_once_on_shutdown():
    turns = Turns(60.0)  # a window no test waits out
    await turns.enter()
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(turns.enter())
    await asyncio.sleep(0)
    turns.leave()  # the group in flight is done: the waiter now waits for its window
    await asyncio.sleep(0.01)
    assert not waiter.done()
    turns.flush()
    await waiter
    assert turns.running == 1


def test_a_group_still_behind_the_one_in_flight_at_shutdown_goes_when_that_ends():
    run(_test_a_group_still_behind_the_one_in_flight_at_shutdown_goes_when_that_ends())


async def _test_a_group_still_behind_the_one_in_flight_at_shutdown_goes_when_that_ends():
    turns = Turns(60.0)
    await turns.enter()
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(turns.enter())
    await asyncio.sleep(0)
    turns.flush()  # no window started yet: the group in flight is not answered
    assert not waiter.done()
    turns.leave()
    await waiter  # at once, not after a window of 60 s
    assert turns.running == 1
