"""Group commit: everything decided while the previous transaction was being fsynced goes
into the next one. One writer thread owns every LMDB write transaction.

The engine decides under its lock and stages the records of each decision into the open
Batch. The writer cuts the batch (also under the lock, so the cut is a consistent state),
writes it in one transaction, commits, and only then wakes the callers waiting on it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from . import limits, records
from .errors import StoreError

log = logging.getLogger("stockgate.engine")


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


class Batch:
    """The records of many decisions, written and committed together.

    A caller gets its batch as a ticket and waits on it: wait() from a thread,
    wait_async() from a coroutine. One event and one future per event loop serve every
    caller of the batch, so a thousand concurrent reservations cost a few wake-ups.
    """

    __slots__ = ("puts", "events", "ops", "done", "error", "_event", "_futures", "_lock")

    def __init__(self) -> None:
        self.puts: dict[str, dict[bytes, bytes]] = {}
        # journal events, numbered in order; the core's own come packed (records.pack_journal)
        self.events: list[dict[str, Any] | bytes] = []
        self.ops = 0
        self.done = False
        self.error: BaseException | None = None
        self._event: threading.Event | None = None
        self._futures: dict[asyncio.AbstractEventLoop, asyncio.Future[None]] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        # Every change journals an event, so a batch with bucket changes is never empty.
        return bool(self.puts or self.events)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.puts.setdefault(db, {})[key] = value

    def wait(self, timeout: float | None = None, *, raise_error: bool = True) -> None:
        """Block until the batch is durable; raise its error if it failed (unless told
        not to: a flush does not own the decisions of a failed batch)."""
        with self._lock:
            if not self.done:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
            else:
                event = None
        if event is not None and not event.wait(timeout):
            raise TimeoutError("the store did not commit in time")
        if self.error is not None and raise_error:
            raise self.error

    def wait_async(self) -> asyncio.Future[None]:
        """A future of the running loop that completes when the batch is durable. It is
        shared by every waiter of this loop: await it through asyncio.shield()."""
        loop = asyncio.get_running_loop()
        with self._lock:
            fut = self._futures.get(loop)
            if fut is None:
                fut = loop.create_future()
                if self.done:
                    _settle(fut, self.error)
                else:
                    self._futures[loop] = fut
        return fut

    def finish(self, error: BaseException | None = None) -> None:
        """Called by the writer once: the batch is durable (error None) or failed."""
        with self._lock:
            self.error = error
            self.done = True
            # The records are in the store now (or never will be): keep only the verdict,
            # since reservations keep their batch as a ticket for replays.
            self.puts = {}
            self.events = []
            event, futures = self._event, self._futures
            self._event = None
            self._futures = {}
        if event is not None:
            event.set()
        for loop, fut in futures.items():
            try:
                loop.call_soon_threadsafe(_settle, fut, error)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                pass


class Writer:
    """The group-commit thread.

    `cut` runs under the engine lock and returns the open batch, the records of the
    buckets it changed (key -> value) and the seq of its last event, or None when there is
    nothing to write; `tick` runs timers (expiry, campaign windows) between batches;
    `on_failure` repairs memory after a failed write and then fails the batch, so no
    caller can see the failed decisions in between.
    """

    def __init__(
        self,
        store: Any,
        lock: threading.Lock,
        cut: Callable[[], tuple[Batch, dict[bytes, bytes], int] | None],
        tick: Callable[[], float],
        on_failure: Callable[[BaseException, Batch], None],
        on_durable: Callable[[int, list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self._store = store
        self._on_durable = on_durable
        self._cut = cut
        self._tick = tick
        self._on_failure = on_failure
        self.cond = threading.Condition(lock)
        self.closing = False  # close(): write what is staged, then stop
        self.stopped = False  # the engine is broken: stop at once, write nothing more
        self.in_flight = 0  # operations of the batch being written
        self.current: Batch | None = None  # the batch being written, if any
        self.batches_written = 0
        self._thread = threading.Thread(target=self._run, name="stockgate-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                delay = self._tick()
            except Exception:  # noqa: BLE001 - a bug in a timer must not stop the commits
                log.exception("stockgate writer: timer failed; commits go on")
                delay = limits.SWEEP_INTERVAL_MS_MAX / 1000
            with self.cond:
                cut = None if self.stopped else self._cut()
                if cut is None:
                    if self.closing or self.stopped:
                        return
                    self.cond.wait(delay)
                    continue
                self.current = cut[0]
                self.in_flight = cut[0].ops
            self._write(*cut)
            with self.cond:
                self.current = None
                self.in_flight = 0

    def _write(self, batch: Batch, buckets: dict[bytes, bytes], last_seq: int) -> None:
        puts = batch.puts
        if buckets:
            puts["buckets"] = buckets
        events = batch.events
        first = last_seq - len(events) + 1
        try:
            # In the try: a batch that cannot be journalled fails like a failed write.
            journal = None
            if events:
                for i, ev in enumerate(events):
                    if type(ev) is dict:  # the core's own events come packed, without seq
                        seq = ev.pop("seq")  # implied by the chunk's first seq
                        if seq != first + i:
                            raise StoreError(f"journal event {seq} staged as {first + i}: "
                                             "the batch's events are out of order")
                journal = (records.SEQ.pack(last_seq), records.pack_journal(first, events))
            self._store.write(puts, journal)
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the callers
            error = exc if isinstance(exc, StoreError) else StoreError(f"write failed: {exc!r}")
            log.error("stockgate writer: a batch of %d operations failed: %s", batch.ops, error)
            try:
                self._on_failure(error, batch)
            except BaseException:  # noqa: BLE001 - a bug here must not strand the callers
                log.critical("stockgate writer: repairing after a failed write failed; "
                             "stopping", exc_info=True)
                self.stopped = True
                batch.finish(error)
            return
        self.batches_written += 1
        # Listeners first, so whoever is answered next can rely on their having seen it.
        if events and self._on_durable is not None:
            self._on_durable(first, events)
        batch.finish()

    def wake(self) -> None:
        """Called under the engine lock when a batch goes from empty to non-empty."""
        self.cond.notify()

    def close(self) -> None:
        """Write what is staged, then stop the thread."""
        with self.cond:
            self.closing = True
            self.cond.notify()
        self._thread.join()

