"""The Engine: one book of stock per SKU, split into pools, reserved through the core and
made durable by group commit. Usable embedded, with no server.

Threading: every decision runs under one lock and is staged into the open batch before
the lock is released, so the order of decisions is the order of the journal. The only
waiting happens after the lock is released: for the batch's commit (durability "fsync")
or not at all (durability "async").
"""

from __future__ import annotations

import gc
import heapq
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Literal

from . import _core, limits, records
from .campaigns import (
    ACTIVE,
    CAMPAIGN_POOL_PREFIX,
    ENDED,
    SCHEDULED,
    Campaigns,
    _Campaign,
)
from .catalogue import Catalogue
from .clock import Clock, SystemClock, clock_reader
from .errors import (
    EngineClosed,
    InvalidArgument,
    NotFound,
    Overloaded,
)
from .group_commit import Batch, Writer
from .lifecycle import State
from .limits import check_int
from .movements import Movements
from .queries import Queries
from .reservations import Ledger, Reservations, _Res
from .store import Store

# Presale floors live in the core as int32.
assert limits.PRESALE_UNITS_MAX <= -_core.FLOOR_MIN

Durability = Literal["fsync", "async"]
log = logging.getLogger("stockgate.engine")


class Engine(Catalogue, Movements, Reservations, Campaigns, Queries):
    """The reservation engine over one LMDB directory.

    Open with Engine(path); close with close() or a `with` block. Every method is
    thread-safe. Mutations return after their transaction is durable (durability
    "fsync", the default) or right after the decision (durability "async": a crash may
    lose what was acknowledged but not yet committed, the batch being written and the one
    collecting behind it, and never leaves a half-applied decision). `engine.aio` offers
    the same calls as coroutines.

    The methods live by concept in catalogue.py, movements.py, reservations.py,
    campaigns.py and queries.py; this module holds the state they share, the lock, the
    group-commit hooks, alerts and timers.

    Raises InvalidArgument for malformed input (nothing changes), NotFound for unknown
    locations/channels/campaigns in admin calls, Overloaded when too much waits for the
    disk, StoreError/StoreFullError when the disk fails (nothing acknowledged is lost).
    Opening raises CorruptRecord for a damaged or truncated data file; verify_store=False
    skips the page-by-page check of the file (about 2 s per 100 MB) and keeps only the
    cheap ones.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock | None = None,
        durability: Durability = "fsync",
        map_size_bytes: int = limits.MAP_SIZE_BYTES_DEFAULT,
        map_size_bytes_max: int = limits.MAP_SIZE_BYTES_MAX,
        verify_store: bool = True,
    ) -> None:
        if durability not in ("fsync", "async"):
            raise InvalidArgument("durability", f"is {durability!r}; use 'fsync' or 'async'")
        check_int("map_size_bytes", map_size_bytes, limits.MAP_SIZE_BYTES_MIN,
                  limits.MAP_SIZE_BYTES_MAX)
        check_int("map_size_bytes_max", map_size_bytes_max, map_size_bytes,
                  limits.MAP_SIZE_BYTES_MAX)
        self.path = os.fspath(path)
        self.durability: Durability = durability
        self._clock: Clock = clock or SystemClock()
        self._read_clock = clock_reader(self._clock)  # (wall, steady): clock.py says why
        self._steady_now = 0  # steady time of the call under way, set by _begin()
        self._store = Store(path, map_size_bytes=map_size_bytes,
                            map_size_bytes_max=map_size_bytes_max, verify_file=verify_store)
        self._lock = threading.Lock()
        self._paused = False  # check() is running: new calls wait on _resume
        self._resume = threading.Condition(self._lock)
        self._check_lock = threading.Lock()
        self._closed = False  # no new calls
        self._store_closed = False
        try:
            self._load()
        except BaseException:
            self._store.close()  # a store that cannot be read is not served
            raise
        # (callback, packed): see listen()
        self._listeners: tuple[tuple[Callable[[int, list[Any]], None], bool], ...] = ()
        self._writer = Writer(self._store, self._lock, self._cut, self._tick, self._on_failure,
                              self._durable)
        from .aio import AsyncEngine

        self.aio = AsyncEngine(self)

    # ------------------------------------------------------------------ lifecycle

    def _reset_memory(self) -> None:
        self._counters = _core.Counters()  # tracks changes once loaded: see _load_all
        self._limits = _core.Counters()
        self._index = _core.BucketIndex()  # (sku, location, pool) <-> bucket id
        self._codes: dict[tuple[str, tuple[str, ...]], tuple[int, ...]] = {}
        self._codes_names = -1  # index.names_count when _codes was filled
        self._bsafety: dict[int, int] = {}
        self._csafety: dict[str, dict[str, int]] = {}  # sku -> channel -> threshold
        self._locations: dict[str, str] = {}
        self._channels: dict[str, tuple[tuple[tuple[str, str], ...], bool]] = {}
        self._rules: dict[tuple[str, str | None], tuple[tuple[str, int], ...]] = {}
        self._campaigns: dict[str, _Campaign] = {}
        self._ended_pools: dict[int, int] = {}  # campaign bucket -> its source bucket
        self._transfers: dict[str, list[Any]] = {}
        self._res = Ledger(self._ticket_of)
        self._limit_idx: dict[tuple[str, str, str], int] = {}
        self._expiry: list[tuple[int, str]] = []
        self._timers: list[tuple[int, str]] = []  # campaign starts and ends
        self._batch = Batch()
        self._touched: dict[int, int] = {}  # bucket -> available before the current op
        self._seq = 0

    def _load(self) -> None:
        """Rebuild memory from the store alone."""
        # Millions of small objects are born here and none is garbage: a cyclic GC pass
        # in the middle would only walk them (it doubled the time to open, measured).
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            self._load_all()
        finally:
            if gc_was_on:
                gc.enable()

    def _load_all(self) -> None:
        self._reset_memory()
        st = self._store
        for key, value in st.items("bucket_keys"):
            b = records.BUCKET_ID.unpack(key)[0]
            sku, loc, pool = records.unpack(value, "bucket key")
            if b != len(self._index):
                raise records.CorruptRecord(f"bucket ids are not dense: found {b}")
            self._index.add(sku, loc, pool)
        self._counters.reserve_capacity(len(self._index))
        n = 0
        for key, value in st.items("buckets"):
            b = records.BUCKET_ID.unpack(key)[0]
            on_hand, floor = records.decode_bucket(value)
            while n < b:  # a bucket whose counters were never written is empty
                self._counters.add()
                n += 1
            self._counters.add(on_hand, 0, floor)
            n += 1
        while n < len(self._index):
            self._counters.add()
            n += 1
        for key, value in st.items("catalog"):
            kind, *parts = records.split_key(key)
            (rec,) = records.unpack(value, "catalog/" + kind)
            if kind == "location":
                self._locations[parts[0]] = rec
            elif kind == "channel":
                self._channels[parts[0]] = (tuple((lo, po) for lo, po in rec[0]), rec[1])
            elif kind == "rule":
                self._rules[(parts[0], parts[1] or None)] = tuple((p, s) for p, s in rec)
            elif kind == "bsafety":
                self._bsafety[int(parts[0])] = rec
            elif kind == "csafety":
                self._csafety.setdefault(parts[1], {})[parts[0]] = rec
        for _, value in st.items("campaigns"):
            c = _Campaign.decode(value)
            self._campaigns[c.cid] = c
            if c.state == SCHEDULED:
                heapq.heappush(self._timers, (c.start_ms, c.cid))
            elif c.state == ACTIVE:
                heapq.heappush(self._timers, (c.end_ms, c.cid))
            else:
                self._mark_ended(c)
        for key, value in st.items("transfers"):
            self._transfers[key.decode()] = records.unpack(value, "transfer")
        for _, value in st.items("reservations"):
            r = _Res.decode(value)
            dict.__setitem__(self._res, r.rid, value)  # as written: see Ledger
            if r.state == State.HELD:
                heapq.heappush(self._expiry, (r.expires_ms, r.rid))
                for _, _, _, alloc, _ in r.lines:  # held is the sum of the live holds
                    for x in range(0, len(alloc), 2):
                        self._counters.force_take(alloc[x], alloc[x + 1])
            self._count_limit(r)
        self._counters.track_changes(True)  # from here on, what changes must be written
        self._seq = st.last_seq()

    def close(self) -> None:
        """Refuse new calls, write what is staged (its callers get their answers), stop
        the writer and close the store. Idempotent."""
        with self._lock:
            self._closed = True
            leftover_possible = self._writer.stopped
        self._writer.close()
        with self._lock:
            if self._batch or leftover_possible:
                self._batch.finish(EngineClosed("the engine closed before this was written"))
                self._batch = Batch()
        if not self._store_closed:
            self._store_closed = True
            self._store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until every decision made so far is durable (or has failed: its callers
        got the error, and memory was rebuilt from the store)."""
        with self._lock:
            tickets = [t for t in (self._writer.current, self._batch) if t]
            if self._batch:
                self._writer.wake()
        for t in tickets:
            t.wait(raise_error=False)

    def listen(self, callback: Callable[[int, list[Any]], None], *,
               packed: bool = False) -> None:
        """Call callback(first_seq, events) after each durable write that journalled
        events: the journal as it grows, for watch streams. Event i has sequence number
        first_seq + i, and is the dict a journal read returns (without "seq"). It runs on
        the writer thread, before the write's callers are woken, so it must be quick and
        must not call the engine: hand the events to your own thread or loop. The events
        are shared with other listeners: do not change them.

        With `packed`, a reservation's "reserved" event may come as the msgpack bytes the
        engine wrote (records.unpack_event() makes the dict of it): a listener that looks
        at few events (or none, while nobody watches) then never pays for decoding them
        all on the writer thread."""
        with self._lock:
            self._listeners = (*self._listeners, (callback, packed))

    def unlisten(self, callback: Callable[[int, list[Any]], None]) -> None:
        """Stop calling a callback given to listen()."""
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x[0] is not callback)

    def _durable(self, first: int, events: list[dict[str, Any] | bytes]) -> None:
        # On the writer thread, after the commit: nothing here may raise, or the writer
        # would stop with the batch's callers still waiting.
        decoded: list[dict[str, Any]] | None = None
        for callback, packed in self._listeners:
            try:
                if not packed and decoded is None:
                    decoded = [records.unpack_event(ev) if type(ev) is bytes else ev
                               for ev in events]
                callback(first, events if packed else decoded)
            except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                log.exception("stockgate: a journal listener failed")

    @property
    def clock(self) -> Clock:
        return self._clock

    # ------------------------------------------------------------------ writer hooks

    def _cut(self) -> tuple[Batch, dict[bytes, bytes], int] | None:
        # Runs under the lock (the writer holds the condition), so the bucket records are
        # one consistent state. Every event staged since the last cut is in this batch, so
        # the last seq given out is its last.
        batch = self._batch
        if not batch:
            return None
        buckets = self._counters.bucket_records(self._counters.take_changed(),
                                                records.BUCKET_FORMAT_VERSION)
        self._batch = Batch()
        return batch, buckets, self._seq

    def _tick(self) -> float:
        """Expire due holds and move campaign windows; return seconds to the next timer."""
        with self._lock:
            if self._closed:
                return limits.SWEEP_INTERVAL_MS_MAX / 1000
            now, steady = self._read_clock()
            self._sweep_due(now, steady)
            wait = min(
                self._expiry[0][0] - steady if self._expiry else limits.SWEEP_INTERVAL_MS_MAX,
                self._timers[0][0] - now if self._timers else limits.SWEEP_INTERVAL_MS_MAX,
                limits.SWEEP_INTERVAL_MS_MAX,
            )
        return max(wait, 1) / 1000.0

    def _on_failure(self, error: BaseException, failed: Batch) -> None:
        # Memory ran ahead of the store with decisions that were never acknowledged.
        # Rebuild memory from what is durable first, then fail the failed batch and
        # everything staged on top of it: a caller woken by the error who retries at once
        # must find the book as the store has it, not the decisions that were lost.
        with self._lock:
            pending = self._batch
            # Their records never reached the store: a reservation read from now on must
            # not take either batch as its ticket (_ticket_of looks in their puts).
            failed.puts, pending.puts = {}, {}
            try:
                self._load()
            except Exception as exc:  # noqa: BLE001 - cannot trust memory any more
                log.critical("stockgate: cannot reload the store after a failed write; "
                             "the engine is closed: %s", exc)
                self._closed = True
                self._writer.stopped = True
                self._batch = Batch()
                error = exc
        failed.finish(error)
        pending.finish(error)

    # ------------------------------------------------------------------ plumbing

    def _begin(self) -> int:
        """Under the lock: wait out a check(), refuse when closed or overloaded, run due
        timers, return now (wall time; the steady time is left in _steady_now)."""
        while self._paused:
            self._resume.wait()
        if self._closed:
            raise EngineClosed("the engine is closed")
        pending = self._batch.ops + self._writer.in_flight
        if pending >= limits.PENDING_OPS_MAX:
            raise Overloaded(pending, limits.PENDING_OPS_MAX, limits.OVERLOAD_RETRY_AFTER_MS)
        now, self._steady_now = self._read_clock()
        self._sweep_due(now, self._steady_now)
        return now

    def _ticket_of(self, rid: str) -> Batch | None:
        """The batch still on its way to disk with this reservation's record, if any."""
        key = rid.encode()
        # The writer's first timer tick can run before Engine.__init__ has stored it.
        writer = getattr(self, "_writer", None)
        for batch in (self._batch, writer.current if writer is not None else None):
            if batch and key in batch.puts.get("reservations", ()):
                return batch
        return None

    def _staged(self) -> Batch | None:
        """Count the op into the open batch and return it as the caller's ticket. With
        nothing open, the ticket is the batch being written: an answer that repeats an
        earlier decision (a replay, a no-op) must not come before that decision is durable.
        """
        batch = self._batch
        if not batch:
            return self._writer.current
        batch.ops += 1
        if batch.ops == 1:
            self._writer.wake()
        return batch

    def _wait(self, ticket: Batch | None) -> None:
        if ticket is not None and self.durability == "fsync":
            ticket.wait()

    def _emit(self, now: int, kind: str, **fields: Any) -> None:
        self._seq += 1
        fields["seq"] = self._seq
        fields["kind"] = kind
        fields["t"] = now
        self._batch.events.append(fields)

    def _touch(self, b: int) -> None:
        """Remember a bucket's available before the op changes it, for _alerts(). (Which
        buckets the store must rewrite, the core tracks itself: Counters.take_changed.)"""
        if b not in self._touched:
            self._touched[b] = self._counters.available(b)

    def _bucket(self, sku: str, loc: str, pool: str) -> int:
        """The bucket of (sku, loc, pool), created empty if new."""
        b = self._index.get(sku, loc, pool)
        if b < 0:
            b = self._index.add(sku, loc, pool)
            self._counters.add()
            self._batch.put("bucket_keys", records.bucket_id_key(b), records.pack([sku, loc, pool]))
        return b

    def _require_location(self, field: str, loc: str) -> None:
        if loc not in self._locations:
            raise NotFound(field, loc)

    # ------------------------------------------------------------------ alerts

    def _chan_avail(self, channel: str, sku: str) -> int:
        sources, presale = self._channels[channel]
        total = 0
        for loc, pool in sources:
            b = self._index.get(sku, loc, pool)
            if b >= 0:
                total += self._room(b, presale)
        return total

    def _room(self, b: int, presale: bool) -> int:
        floor = self._counters.floor_of(b) if presale else 0
        return max(0, self._counters.available(b) - floor)

    def _alerts(self, now: int) -> None:
        """Journal the threshold crossings of the buckets the op touched."""
        touched = self._touched
        if not touched:
            return
        skus: dict[str, dict[int, int]] = {}
        key_of, csafety = self._index.key, self._csafety
        # The common case, no crossing, is sorted out in C: a batch touches thousands.
        for b, before, after, safety, crossed in _core.alert_candidates(
                self._counters, touched, self._bsafety, bool(csafety)):
            sku, loc, pool = key_of(b)
            if sku in csafety:
                skus.setdefault(sku, {})[b] = after - before
            if not crossed:
                continue
            where = {"sku": sku, "location": loc, "pool": pool, "available": after}
            if before > 0 >= after:
                if pool.startswith(CAMPAIGN_POOL_PREFIX):
                    cid = pool[len(CAMPAIGN_POOL_PREFIX):]
                    # An ended campaign's pool empties because its rest went home.
                    if self._campaigns[cid].state != ENDED:
                        self._emit(now, "campaign_sold_out", campaign=cid, **where)
                else:
                    self._emit(now, "sold_out", **where)
            elif before <= 0 < after:
                self._emit(now, "back_in_stock", **where)
            if safety and before >= safety > after:
                self._emit(now, "below_safety_stock", threshold=safety, **where)
        for sku, deltas in skus.items():
            for channel, safety in self._csafety.get(sku, {}).items():
                if channel not in self._channels:
                    continue
                after = self._chan_avail(channel, sku)
                sources, presale = self._channels[channel]
                srcs = {self._index.get(sku, lo, po) for lo, po in sources}
                moved = sum(d for b, d in deltas.items() if b in srcs)
                before = after - moved  # exact unless a floor clipped; good enough for alerts
                if before >= safety > after:
                    self._emit(now, "below_safety_stock", channel=channel, sku=sku,
                               threshold=safety, available=after)
        touched.clear()

    # ------------------------------------------------------------------ timers

    def _sweep_due(self, now: int, steady: int) -> None:
        """Expire holds whose TTL passed (steady time) and move campaign windows (wall
        time): before any decision or read, so nobody ever sees an expired hold counted."""
        # In time order across both queues (an expiry first on a tie), so waking late,
        # after a restart, gives the same book as waking on time. A campaign's instant is
        # placed on the steady timeline by the current distance between the two.
        exp, timers = self._expiry, self._timers
        shift = steady - now
        while True:
            due_exp = bool(exp) and exp[0][0] <= steady
            due_timer = bool(timers) and timers[0][0] <= now
            if due_exp and (not due_timer or exp[0][0] <= timers[0][0] + shift):
                t, rid = heapq.heappop(exp)
                r = self._res.get(rid)
                if r is not None and r.state == State.HELD and r.expires_ms == t:
                    self._resolve(r, State.EXPIRED, now, "expired")
            elif due_timer:
                t, cid = heapq.heappop(timers)
                c = self._campaigns.get(cid)
                if c is None:
                    continue
                if c.state == SCHEDULED and t == c.start_ms:
                    self._start_campaign(c, now)
                elif c.state == ACTIVE and t == c.end_ms:
                    self._end_campaign(c, now, "ended")
            else:
                return






