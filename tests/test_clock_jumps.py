"""The wall clock steps (NTP, an operator, a resumed VM): holds keep their TTL, campaign
windows follow the calendar.

A TTL is a duration, so expiry runs on steady time, which a wall step does not move; a
campaign's start and end are instants of the calendar, so they follow the wall clock; an
ended campaign never reopens. These tests drive the production SystemClock over time
sources they step by hand.
"""

from __future__ import annotations

import pytest
from client_harness import ADMIN, running_server, stock_book

from stockgate.clients import Client
from stockgate.engine import Outcome, State, SystemClock

HOUR_MS = 3_600_000
MINUTE_MS = 60_000
NS_PER_MS = 1_000_000


class SteppedTime:
    """Wall and monotonic nanoseconds a test moves: pass() is time passing (both move),
    step_wall() is the wall clock set forward or back (the monotonic one does not move)."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.wall = start_ms * NS_PER_MS
        self.mono = 5_000 * NS_PER_MS

    def wall_ns(self) -> int:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono

    def pass_ms(self, ms: int) -> None:
        self.wall += ms * NS_PER_MS
        self.mono += ms * NS_PER_MS

    def step_wall(self, ms: int) -> None:
        self.wall += ms * NS_PER_MS

    def clock(self) -> SystemClock:
        return SystemClock(self.wall_ns, self.monotonic_ns)


@pytest.fixture
def time_():
    return SteppedTime()


@pytest.fixture
def shop(open_engine, time_):
    eng = open_engine(clock=time_.clock())
    eng.add_location("WH-EAST")
    eng.set_allocation_rule("WH-EAST", {"online": 100})
    eng.set_channel("tmall", [("WH-EAST", "online")])
    eng.receive("SKU-1", "WH-EAST", 100)
    return eng


@pytest.mark.parametrize("step_ms", [2 * HOUR_MS, 30 * 24 * HOUR_MS])
def test_a_wall_step_forward_expires_no_hold_early(shop, time_, step_ms):
    assert shop.reserve("R1", "tmall", [("SKU-1", 5)], ttl_ms=15 * MINUTE_MS).ok
    time_.step_wall(step_ms)
    assert shop.reservation("R1").state is State.HELD
    assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": 95}
    time_.pass_ms(15 * MINUTE_MS - 1)
    assert shop.reservation("R1").state is State.HELD
    time_.pass_ms(1)
    assert shop.reservation("R1").state is State.EXPIRED
    assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": 100}
    assert shop.check().ok


def test_a_wall_step_back_keeps_no_hold_longer(shop, time_):
    assert shop.reserve("R1", "tmall", [("SKU-1", 5)], ttl_ms=MINUTE_MS).ok
    time_.step_wall(-2 * HOUR_MS)
    time_.pass_ms(MINUTE_MS)
    assert shop.reservation("R1").state is State.EXPIRED
    assert shop.availability("tmall", ["SKU-1"]) == {"SKU-1": 100}


def test_an_extension_after_a_step_counts_from_now(shop, time_):
    assert shop.reserve("R1", "tmall", [("SKU-1", 5)], ttl_ms=MINUTE_MS).ok
    time_.step_wall(HOUR_MS)
    assert shop.extend("R1", 10 * MINUTE_MS).ok
    time_.pass_ms(10 * MINUTE_MS - 1)
    assert shop.reservation("R1").state is State.HELD
    time_.pass_ms(1)
    assert shop.reservation("R1").state is State.EXPIRED


def test_timestamps_never_go_back_when_the_wall_does(shop, time_):
    first = shop.reserve("R1", "tmall", [("SKU-1", 1)]).reservation.created_ms
    time_.step_wall(-HOUR_MS)
    time_.pass_ms(10)
    second = shop.reserve("R2", "tmall", [("SKU-1", 1)]).reservation.created_ms
    assert second >= first


def _campaign(shop, time_, start_in_ms: int, length_ms: int) -> None:
    start = time_.wall // NS_PER_MS + start_in_ms
    shop.create_campaign("flash", channels=["tmall"], start_ms=start, end_ms=start + length_ms,
                         location="WH-EAST", source_pool="online", quotas={"SKU-1": 10},
                         customer_limit=2)


def test_a_campaign_window_follows_the_wall_clock(shop, time_):
    _campaign(shop, time_, start_in_ms=10 * MINUTE_MS, length_ms=HOUR_MS)
    assert shop.campaign("flash").state == "scheduled"
    time_.step_wall(30 * MINUTE_MS)  # the clock was slow: the sale has begun
    assert shop.campaign("flash").state == "active"
    sale = shop.reserve("C1", "tmall", [("SKU-1", 2)], campaign="flash", customer="ann",
                        ttl_ms=15 * MINUTE_MS)
    assert sale.ok
    time_.step_wall(HOUR_MS)  # past its end
    ended = shop.campaign("flash")
    assert ended.state == "ended" and ended.returned == {"SKU-1": 8}
    # The hold made in the sale keeps its own TTL: a wall step does not end it.
    assert shop.reservation("C1").state is State.HELD
    late = shop.reserve("C2", "tmall", [("SKU-1", 1)], campaign="flash", customer="bob")
    assert late.outcome is Outcome.CAMPAIGN_NOT_ACTIVE
    assert shop.check().ok


def test_a_wall_step_back_never_reopens_an_ended_campaign(shop, time_):
    _campaign(shop, time_, start_in_ms=0, length_ms=10 * MINUTE_MS)
    time_.pass_ms(10 * MINUTE_MS)
    assert shop.campaign("flash").state == "ended"
    time_.step_wall(-HOUR_MS)
    assert shop.campaign("flash").state == "ended"
    again = shop.reserve("C1", "tmall", [("SKU-1", 1)], campaign="flash", customer="ann")
    assert again.outcome is Outcome.CAMPAIGN_NOT_ACTIVE


def test_a_wall_step_back_holds_a_running_campaign_open_until_its_end(shop, time_):
    # The window is [start, end) of the calendar: stepped back, the wall has not reached
    # the end yet, so the sale stays open (the clamped wall time does not go back).
    _campaign(shop, time_, start_in_ms=0, length_ms=10 * MINUTE_MS)
    time_.step_wall(-HOUR_MS)
    time_.pass_ms(30 * MINUTE_MS)
    assert shop.campaign("flash").state == "active"
    time_.pass_ms(40 * MINUTE_MS)
    assert shop.campaign("flash").state == "ended"


def test_after_a_restart_a_ttl_counts_against_the_wall_clock_again(open_engine, time_):
    # Steady time starts from the wall clock when the engine opens: a hold made before
    # a step forward and reopened after it has lost the step.
    clock = time_.clock()
    eng = open_engine(clock=clock)
    eng.add_location("WH-EAST")
    eng.set_allocation_rule("WH-EAST", {"online": 100})
    eng.set_channel("tmall", [("WH-EAST", "online")])
    eng.receive("SKU-1", "WH-EAST", 100)
    assert eng.reserve("R1", "tmall", [("SKU-1", 1)], ttl_ms=15 * MINUTE_MS).ok
    time_.step_wall(HOUR_MS)
    assert eng.reservation("R1").state is State.HELD
    eng.close()
    again = open_engine(clock=time_.clock())
    assert again.reservation("R1").state is State.EXPIRED


def test_through_the_server_a_wall_step_expires_no_hold(tmp_path, time_):
    with running_server(tmp_path / "db", clock=time_.clock()) as s:
        stock_book(s.engine)
        with Client(s.address, ADMIN) as client:
            assert client.reserve("R1", "tmall", [("SKU-1", 2)], ttl_ms=5 * MINUTE_MS).ok
            time_.step_wall(24 * HOUR_MS)
            assert client.reservation("R1").state.name == "HELD"
            time_.pass_ms(5 * MINUTE_MS)
            assert client.reservation("R1").state.name == "EXPIRED"
            assert client.check().ok
