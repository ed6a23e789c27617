"""Shared fixtures: a real engine over a real LMDB in a temp dir, on a manual clock."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings
from server_calls import ADMIN_SECRET, POS_SECRET, TMALL_SECRET, seed_book

from stockgate.engine import Engine, ManualClock

# CI explores the same sequences every run, so a red build is reproducible and never
# flaky; a developer's run explores new ones (and keeps failures in .hypothesis/).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    """Tests marked slow (the long crash runs) run only when asked: `pytest -m slow` (or
    any -m expression), or STOCKGATE_SLOW=1; CI's plain `pytest -q` skips them."""
    if config.getoption("-m") or os.environ.get("STOCKGATE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow` or STOCKGATE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


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
    seed_book(engine)
    return engine


# ---------------------------------------------------------------------- the gRPC server
# A real server on 127.0.0.1 port 0 over a real LMDB in tmp_path, in its own thread with
# its own uvloop loop; tests talk to it through the generated stubs.

@pytest.fixture
def server_config(tmp_path):
    """Settings of a test server: loopback port 0, an admin token, a tmall token and a
    pos-12 token; tests change what they need with dataclasses.replace()."""
    from stockgate.server import Config, TokenGrant

    return Config(
        data_dir=str(tmp_path / "server-db"), listen="127.0.0.1:0", shutdown_grace_ms=5_000,
        tokens={"admin": TokenGrant(secret=ADMIN_SECRET, admin=True),
                "tmall": TokenGrant(secret=TMALL_SECRET, channels=("tmall",)),
                "pos": TokenGrant(secret=POS_SECRET, channels=("pos-12",))})


@pytest.fixture
def start_server():
    """Start (and at the end stop) ServerThreads: start_server(config, clock=None)."""
    from stockgate.server import ServerThread

    started = []

    def _start(config, **kwargs):
        st = ServerThread(config, **kwargs).start()
        started.append(st)
        return st

    yield _start
    for st in started:
        st.stop()


@pytest.fixture
def server(server_config, start_server):
    """A started server whose engine holds seed_book()'s catalogue."""
    st = start_server(server_config)
    seed_book(st.engine)
    return st
