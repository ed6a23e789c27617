"""What the client tests share: a real server over a real engine in a temp dir on
127.0.0.1 (port 0, or a given port to restart on), a small book, the tokens, and both
clients behind one async face, so each scenario is written once and run through both.

No mock of the engine or of the server anywhere: the tests drive stockgate.server's
ServerThread, the same code `stockgate serve` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from stockgate.clients import AsyncClient, Client

ADMIN = "admin-secret-for-client-tests"
TMALL = "tmall-secret-for-client-tests"  # bound to the channel tmall
POS = "pos12-secret-for-client-tests"  # bound to the channel pos-12
KINDS = ("async", "sync")


def server_config(data_dir: Any, port: int = 0, **overrides: Any) -> Any:
    """The server's configuration for a test: loopback, the given port, three tokens."""
    from stockgate.server import Config, TokenGrant

    settings: dict[str, Any] = dict(
        data_dir=str(data_dir), listen=f"127.0.0.1:{port}", shutdown_grace_ms=5_000,
        tokens={"admin": TokenGrant(secret=ADMIN, admin=True),
                "tmall": TokenGrant(secret=TMALL, channels=("tmall",)),
                "pos": TokenGrant(secret=POS, channels=("pos-12",))})
    settings.update(overrides)
    return Config(**settings)


@contextlib.contextmanager
def running_server(data_dir: Any, port: int = 0, clock: Any = None,
                   **overrides: Any) -> Iterator[Any]:
    """A ServerThread over data_dir; stopped (gracefully) on leaving."""
    from stockgate.server import ServerThread

    with ServerThread(server_config(data_dir, port, **overrides), clock=clock) as server:
        yield server


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def stock_book(engine: Any) -> None:
    """Two warehouses and a store; tmall sells online stock, pos-12 the store's.

    SKU-1: 100 units at WH-EAST (80 online, 20 offline). SKU-2: 10 at WH-WEST (8 online,
    2 offline). SKU-3: 5 at STORE-12 (5 offline)."""
    engine.add_location("WH-EAST")
    engine.add_location("WH-WEST")
    engine.add_location("STORE-12", "store")
    engine.set_allocation_rule("WH-EAST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("WH-WEST", {"online": 80, "offline": 20})
    engine.set_allocation_rule("STORE-12", {"offline": 100})
    engine.set_channel("tmall", [("WH-EAST", "online"), ("WH-WEST", "online")])
    engine.set_channel("pos-12", [("STORE-12", "offline"), ("WH-EAST", "offline")])
    engine.receive("SKU-1", "WH-EAST", 100)
    engine.receive("SKU-2", "WH-WEST", 10)
    engine.receive("SKU-3", "STORE-12", 5)


class SyncAsAsync:
    """A sync Client seen through AsyncClient's face: each call runs in a worker thread,
    so a scenario written once with `await` drives both clients."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return call

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        updates = self.client.watch(*args, **kwargs)
        done = object()
        try:
            while True:
                item = await asyncio.to_thread(next, updates, done)
                if item is done:
                    return
                yield item
        finally:
            # The generator may be inside next() on a worker thread; closing the client
            # (at the end of the scenario) ends it.
            with contextlib.suppress(ValueError):
                updates.close()


@contextlib.asynccontextmanager
async def connect(kind: str, address: str, token: str | None = ADMIN,
                  **kwargs: Any) -> AsyncIterator[Any]:
    """An AsyncClient, or a sync Client behind SyncAsAsync, connected to address."""
    if kind == "async":
        async with AsyncClient(address, token, **kwargs) as client:
            yield client
    else:
        client = Client(address, token, **kwargs)
        try:
            yield SyncAsAsync(client)
        finally:
            await asyncio.to_thread(client.close)


def run(coro: Any, timeout_s: float = 60.0) -> Any:
    """Run a scenario on a fresh event loop, with a timeout so a hang fails the test."""
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout_s)

    return asyncio.run(bounded())


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """Which client a scenario runs through: both, one after the other."""
    return request.param


@pytest.fixture
def stocked(tmp_path: Any) -> Iterator[Any]:
    """A running server over a stocked book (see stock_book)."""
    with running_server(tmp_path / "data") as s:
        stock_book(s.engine)
        yield s
