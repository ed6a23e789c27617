"""The server: the engine behind grpc.aio on uvloop, with health, reflection, TLS, auth,
admission and graceful shutdown; `main()` is `stockgate serve`.

    server = Server(Config(data_dir=..., listen="127.0.0.1:0"))
    await server.start()          # opens the engine, binds; server.address, server.port
    ...
    await server.stop()           # NOT_SERVING, refuse new work, answer in-flight, close

ServerThread runs one on its own loop in a thread, for synchronous callers (tests, the
sync client's tests).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from stockgate.engine import Clock, Engine, StockgateError, gc_tick, tune_gc
from stockgate.engine.demo import load_demo
from stockgate.v1 import (
    inventory_pb2,
    reservations_pb2,
    watch_pb2,
)

from . import decode, rates
from .admission import Admission
from .auth import Authenticator
from .config import Config, ConfigError, is_loopback, load, split_listen
from .inventory import InventoryService
from .metrics import Metrics
from .reservations import ReservationsService
from .status import is_store_failure
from .watch import WatchHub, WatchService

log = logging.getLogger("stockgate.server")

RESERVATIONS_SERVICE = reservations_pb2.DESCRIPTOR.services_by_name["Reservations"]
INVENTORY_SERVICE = inventory_pb2.DESCRIPTOR.services_by_name["Inventory"]
WATCH_SERVICE = watch_pb2.DESCRIPTOR.services_by_name["Watch"]
SERVICE_NAMES = tuple(s.full_name for s in (RESERVATIONS_SERVICE, INVENTORY_SERVICE,
                                            WATCH_SERVICE))
# HTTP/2 keepalive, explicit: the server pings an idle connection every KEEPALIVE_TIME_MS
# and drops it after KEEPALIVE_TIMEOUT_MS without an answer; clients may ping as often
# as every CLIENT_PING_INTERVAL_MIN_MS without being told to calm down.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000
CLIENT_PING_INTERVAL_MIN_MS = 10_000
SERVER_START_TIMEOUT_S = 60  # ServerThread: opening a big store takes a while
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
GC_TICK_S = 1.0  # how often a sweep of the garbage collector is finished (gc_tick)


class Server:
    """The gRPC server over one engine. `engine` is there for tests and embedding, and
    `rates` (token name -> its bucket, for the tokens with a rate). `clock` is the
    engine's; `rate_clock` (monotonic seconds) the tokens' rates', which tests hold
    still."""

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 rate_clock: rates.Clock = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._rate_clock = rate_clock  # the tokens' rates run on it (tests freeze it)
        self.rates: dict[str, rates.Bucket] = {}
        self.engine: Engine | None = None
        self.port: int | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._store_failed = False
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.metrics: Metrics | None = None

    @property
    def address(self) -> str:
        """host:port the server listens on (the real port when 0 was asked)."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def _options(self) -> list[tuple[str, Any]]:
        c = self.config
        return [
            ("grpc.max_receive_message_length", c.message_bytes_max),
            ("grpc.max_send_message_length", c.message_bytes_max),
            ("grpc.max_concurrent_streams", c.streams_per_connection_max),
            # Two servers on one port would split the traffic between two books.
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.http2.min_ping_interval_without_data_ms", CLIENT_PING_INTERVAL_MIN_MS),
            ("grpc.keepalive_permit_without_calls", 1),
        ]

    def _credentials(self) -> grpc.ServerCredentials | None:
        c = self.config
        if not c.tls:
            return None

        def read(what: str, path: str) -> bytes:
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as exc:
                raise ConfigError(f"{what} {path}: cannot read it ({exc.strerror})") from None

        key, chain = read("tls_key", c.tls_key), read("tls_cert", c.tls_cert)
        ca = read("tls_client_ca", c.tls_client_ca) if c.tls_client_ca else None
        return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca,
                                           require_client_auth=ca is not None)

    async def start(self) -> None:
        """Open the engine (loading the demo if asked), bind, serve. Raises ConfigError
        for a setting that cannot work, StockgateError if the store cannot open."""
        c = self.config
        host, _ = split_listen(c.listen)
        if not c.auth:
            if not is_loopback(host):
                raise ConfigError(
                    f"no tokens are configured, so auth is off, and listen is {c.listen}, "
                    "not loopback: configure tokens ([tokens.NAME] in the TOML file, or "
                    "STOCKGATE_ADMIN_TOKEN) or listen on 127.0.0.1")
            log.warning("stockgate: no tokens configured: auth is off (loopback only)")
        creds = self._credentials()
        self._loop = asyncio.get_running_loop()
        self.engine = engine = await asyncio.to_thread(
            Engine, c.data_dir, clock=self._clock, durability=c.durability,
            map_size_bytes=c.map_size_bytes, map_size_bytes_max=c.map_size_bytes_max,
            verify_store=c.verify_store)
        try:
            if c.demo and await asyncio.to_thread(load_demo, engine):
                log.info("stockgate: demo catalogue loaded into %s", c.data_dir)
            await self._serve(engine, creds)
        except BaseException:
            if self._grpc is not None:
                await self._grpc.stop(None)
            if self.metrics is not None:
                self.metrics.close()
            self.engine.close()
            raise

    async def _serve(self, engine: Engine, creds: grpc.ServerCredentials | None) -> None:
        c = self.config
        self._admission = admission = Admission(c.inflight_ops_max, c.queue_ms)
        self.rates = rates.buckets(c, self._rate_clock)
        auth = Authenticator(c.tokens, self.rates)
        interceptors = []
        if c.metrics_port:
            self.metrics = Metrics(self._state)
            interceptors.append(self.metrics.interceptor)
        self._grpc = server = grpc.aio.server(options=self._options(),
                                              interceptors=interceptors)
        self.reservations = ReservationsService(
            engine, auth, admission, session_inflight_ops_max=c.session_inflight_ops_max,
            message_bytes_max=c.message_bytes_max,
            unary_group_wait_ms=c.unary_group_wait_ms, on_failure=self._failed)
        self.inventory = InventoryService(engine, auth, admission, on_failure=self._failed)
        self.hub = WatchHub(engine, admission, streams_max=c.watch_streams_max)
        self.watch = WatchService(self.hub, auth, admission,
                                  coalesce_ms_default=c.watch_coalesce_ms,
                                  message_bytes_max=c.message_bytes_max)
        # Not the generated add_*_to_server: see decode.py for why.
        for servicer, service in ((self.reservations, RESERVATIONS_SERVICE),
                                  (self.inventory, INVENTORY_SERVICE),
                                  (self.watch, WATCH_SERVICE)):
            decode.add_servicer(server, servicer, service)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        try:
            if creds is None:
                port = server.add_insecure_port(c.listen)
            else:
                port = server.add_secure_port(c.listen, creds)
        except RuntimeError:  # grpcio: "Failed to bind to address ..."
            port = 0
        if not port:
            raise ConfigError(f"listen {c.listen}: cannot bind (the port is in use, or the "
                              "host is not an address of this machine); free the port or "
                              "choose another, or listen on 127.0.0.1:0 for any free port")
        self.port = port
        await self.hub.attach()
        engine.listen(self._durable, packed=True)  # it reads no event
        await server.start()
        if self.metrics is not None:
            self.metrics.serve(self.config.host, c.metrics_port)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)

    def _state(self) -> dict[str, Any]:
        """The counters the metrics endpoint reads when scraped (from its own thread)."""
        adm = self._admission
        return {"ops": adm.ops, "shed": adm.shed_total, "ops_limit": adm.limit,
                "watchers": len(self.hub.subscribers), "last_seq": self.engine.last_seq,
                "session_messages": self.reservations.session_messages,
                "rate_refused": rates.refused(self.rates)}

    async def _set_health(self, status: int) -> None:
        if self._health is None or self._stopped:
            return
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    def _failed(self, exc: BaseException) -> None:
        """A call failed: if the store did, report NOT_SERVING until a write succeeds."""
        if is_store_failure(exc) and not self._store_failed:
            self._store_failed = True
            log.error("stockgate: the store failed; health is NOT_SERVING until a write "
                      "succeeds: %s", exc)
            asyncio.ensure_future(self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING))

    def _durable(self, first_seq: int, events: list) -> None:
        # On the writer thread: a durable write means the store works again.
        if self._store_failed and self._loop is not None:
            self._loop.call_soon_threadsafe(self._recovered)

    def _recovered(self) -> None:
        if self._store_failed:
            self._store_failed = False
            log.info("stockgate: the store writes again; health is SERVING")
            asyncio.ensure_future(self._set_health(health_pb2.HealthCheckResponse.SERVING))

    async def stop(self, grace_s: float | None = None) -> None:
        """Health NOT_SERVING, refuse new calls, let calls in flight finish (at most
        grace_s, the configured shutdown grace by default) and answer them, then write
        what is staged and close the store. Idempotent."""
        if self._stopped or self._grpc is None:
            return
        grace = self.config.shutdown_grace_ms / 1000 if grace_s is None else grace_s
        await self._health.enter_graceful_shutdown()
        self._stopped = True
        self._admission.closing = True
        self.reservations.shutdown()
        self.hub.shutdown()
        await self._grpc.stop(grace)
        if self.metrics is not None:
            self.metrics.close()
        self.engine.unlisten(self._durable)
        self.hub.detach()
        await asyncio.to_thread(self.engine.close)


class ServerThread:
    """A Server on its own uvloop loop in a daemon thread, for synchronous code:

        with ServerThread(config) as st:
            channel = grpc.insecure_channel(st.address)
    """

    def __init__(self, config: Config, *, clock: Clock | None = None,
                 rate_clock: rates.Clock = time.monotonic) -> None:
        self.server = Server(config, clock=clock, rate_clock=rate_clock)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace_s: float | None = None
        self._thread = threading.Thread(target=self._run, name="stockgate-server",
                                        daemon=True)

    @property
    def address(self) -> str:
        """host:port the server listens on."""
        return self.server.address

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.server.port

    @property
    def engine(self) -> Engine:
        """The server's engine (tests seed it directly)."""
        return self.server.engine

    def start(self) -> ServerThread:
        """Start the server in its thread and wait until it serves (or raise why not)."""
        self._thread.start()
        if not self._ready.wait(SERVER_START_TIMEOUT_S):
            raise TimeoutError("the server did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop(self._grace_s)

    def call(self, coro_fn, *args: Any) -> Any:
        """Run coro_fn(*args) on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro_fn(*args), self._loop).result()

    def stop(self, grace_s: float | None = None) -> None:
        """Stop the server gracefully and wait for the thread. Idempotent."""
        if self._loop is not None and self._thread.is_alive():
            self._grace_s = grace_s
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _serve(config: Config) -> int:
    server = Server(config)
    try:
        await server.start()
    except (ConfigError, StockgateError, OSError) as exc:
        log.error("stockgate serve: %s", exc)
        return EXIT_FAILED
    tune_gc()
    # The bound address on stdout, alone on its line, for scripts that asked for port 0.
    print(server.address, flush=True)
    log.info("stockgate serving on %s: data %s, durability %s, auth %s, TLS %s",
             server.address, config.data_dir, config.durability,
             "on" if config.auth else "OFF", "mTLS" if config.tls_client_ca else
             ("on" if config.tls else "off"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def tick() -> None:
        nonlocal ticker
        gc_tick()
        ticker = loop.call_later(GC_TICK_S, tick)

    ticker = loop.call_later(GC_TICK_S, tick)
    await stop.wait()
    ticker.cancel()
    log.info("stockgate: stopping (grace %d ms)", config.shutdown_grace_ms)
    await server.stop()
    log.info("stockgate: stopped")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """`stockgate serve [flags]`: serve until SIGTERM or SIGINT; exit 0 after a clean
    stop, 1 when the server cannot start, 2 for bad settings."""
    try:
        config = load(argv)
    except ConfigError as exc:
        print(f"stockgate serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=config.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return uvloop.run(_serve(config))
