"""Shared fixtures: a real engine over a real LMDB in a temp dir, on a manual clock."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from stockgate.engine import Engine, ManualClock

# CI explores the same sequences every run, so a red build is reproducible and never
# flaky; a developer's run explores new ones (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def open_engine(tmp_path, clock):
    """Open (and reopen) an engine on one directory; every engine is closed at the end."""
    opened: list[Engine] = []

    def _open(**kwargs) -> Engine:
        kwargs.setdefault("clock", clock)
        eng = Engine(tmp_path / "db", **kwargs)
        opened.append(eng)
        return eng

    yield _open
    for eng in opened:
        eng.close()


@pytest.fixture
def engine(open_engine) -> Engine:
    return open_engine()


@pytest.fixture
def book(engine: Engine) -> Engine:
    """A small book: two warehouses and a store, three channels.

    WH-EAST and WH-WEST split receipts online 80 / offline 20; STORE-12 keeps everything
    in 'offline'. tmall sells from WH-EAST online then WH-WEST online; pos-12 from
    STORE-12 offline then WH-EAST offline; presale-shop like tmall, with presale.
    """
    engine.add_location("WH-EAST")
    engine.add_location("WH-WEST")
    engine.add_location("STORE-12", "store")
    engine.set_allocation_rule("WH-EAST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("WH-WEST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("STORE-12", {"offline": 100})
    engine.set_channel("tmall", [("WH-EAST", "online"), ("WH-WEST", "online")])
    engine.set_channel("pos-12", [("STORE-12", "offline"), ("WH-EAST", "offline")])
    engine.set_channel("presale-shop", [("WH-EAST", "online")], allow_presale=True)
    return engine
