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
from server_calls import seed_book

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
    """The server tests' book (server_calls.seed_book), stocked:

    SKU-1: 100 units at WH-EAST (80 online, 20 offline). SKU-2: 10 at WH-WEST (8 online,
    2 offline). SKU-3: 5 at STORE-12 (5 offline)."""
    seed_book(engine)
    engine.receive("SKU-1", "WH-EAST", 100)
    engine.receive("SKU-2", "WH-WEST", 10)
    engine.receive("SKU-3", "STORE-12", 5)


class SyncAsAsync:
    """A sync Client seen through AsyncClient's face: each call runs in a worker thread,
    so a scenario written once with `await` drives both clients."""

    THREADS = 64  # concurrent calls a scenario may make, as many threads would

    def __init__(self, client: Client) -> None:
        import concurrent.futures

        self.client = client
        self.pool = concurrent.futures.ThreadPoolExecutor(self.THREADS)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, lambda: attr(*args, **kwargs))

        return call

    async def watch(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        updates = self.client.watch(*args, **kwargs)
        done = object()
        try:
            while True:
                item = await asyncio.get_running_loop().run_in_executor(
                    self.pool, next, updates, done)
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
        face = SyncAsAsync(client)
        try:
            yield face
        finally:
            await asyncio.to_thread(client.close)
            face.pool.shutdown(wait=True)


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


class WireProxy:
    """A TCP proxy between a client and the server, on its own thread and loop, to see and
    break what travels: it counts the gRPC messages the client sends (parsing HTTP/2 DATA
    frames), can swallow the server's answers, and can cut every connection.

    It knows nothing of stockgate: it moves bytes."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, upstream: str) -> None:
        import threading

        self.upstream = upstream
        self.client_messages = 0  # gRPC messages the clients sent, all streams
        self.swallow_answers = False  # drop what the server sends
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="wire-proxy")
        self.address = ""

    def __enter__(self) -> WireProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()  # or the server's graceful stop would wait for these connections
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.address = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        self._loop.run_forever()
        server.close()
        for w in self._writers:
            w.close()

    def cut(self) -> None:
        """Close every connection now (the client sees its streams fail UNAVAILABLE);
        connections made after it pass answers again."""
        import threading

        done = threading.Event()

        def close_all() -> None:
            self.swallow_answers = False
            for w in self._writers:
                w.transport.abort()
            self._writers.clear()
            done.set()

        self._loop.call_soon_threadsafe(close_all)
        done.wait(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.upstream.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.transport.abort()
            return
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer, count=True),
                             self._pump(up_reader, writer, count=False),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    count: bool) -> None:
        frames = _Http2Messages() if count else None
        try:
            while data := await reader.read(65536):
                if frames is not None:
                    self.client_messages += frames.feed(data)
                elif self.swallow_answers:
                    continue
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


class _Http2Messages:
    """Counts the gRPC messages in a client's HTTP/2 byte stream (DATA frames, reassembled
    per stream: a message may span frames, and a frame may hold several messages)."""

    def __init__(self) -> None:
        self.buf = b""
        self.preface_left = len(WireProxy.PREFACE)
        self.streams: dict[int, bytes] = {}

    def feed(self, data: bytes) -> int:
        if self.preface_left:
            skip = min(self.preface_left, len(data))
            self.preface_left -= skip
            data = data[skip:]
        self.buf += data
        found = 0
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                break
            kind, flags = self.buf[3], self.buf[4]
            stream = int.from_bytes(self.buf[5:9], "big") & 0x7FFF_FFFF
            payload = self.buf[9:9 + length]
            self.buf = self.buf[9 + length:]
            if kind != 0:  # not DATA
                continue
            if flags & 0x8:  # PADDED
                payload = payload[1:len(payload) - payload[0]]
            body = self.streams.get(stream, b"") + payload
            while len(body) >= 5:
                n = int.from_bytes(body[1:5], "big")
                if len(body) < 5 + n:
                    break
                found += 1
                body = body[5 + n:]
            self.streams[stream] = body
        return found
