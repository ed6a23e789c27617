"""The Watch service: availability levels per (channel, SKU) and alerts, pushed as the
journal grows, coalesced per subscriber, resumable from a journal sequence number.

The hub hears every durable write through engine.listen() (on the writer thread) and
hands it to the event loop with call_soon_threadsafe, so the writer never waits for a
subscriber. Each subscriber keeps the set of SKUs that changed (a level is re-read when
the update is sent, so a burst of a thousand reservations is one entry) and the alerts
that concern its channel, both bounded. A subscriber too slow for its alert buffer is
ended with UNAVAILABLE and told the seq to resume from.

Resuming from from_seq: the subscriber is registered first (live events are kept aside),
the journal is read from from_seq on a worker thread, a chunk at a time, each chunk sent
as it is read; then the kept events are taken in, skipping the seqs already seen. Every
event is durable either before the registration (then the journal read has it) or after
(then the hub delivers it), so nothing is lost; seqs tell the overlap, so nothing is
repeated. A stream that starts "now" (from_seq 0) starts after the last event the hub
has seen durable, never after one merely decided: a decision whose write fails gives its
seqs to later events.

The hub and the streams call the engine on the event loop only when no consistency check
holds it (admission's pause): a check holds the engine's lock, and a loop waiting for it
would stall every call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from stockgate.engine import Engine, InvalidArgument, NotFound, limits
from stockgate.engine.limits import check_count, check_id, check_int
from stockgate.engine.records import unpack_event
from stockgate.v1 import watch_pb2, watch_pb2_grpc

from . import wire
from .admission import Admission
from .auth import Authenticator
from .config import WATCH_COALESCE_MS_MAX
from .status import CallError, abort, shed, unavailable

log = logging.getLogger("stockgate.server")

WATCH_SKUS_MAX = limits.SKUS_PER_QUERY_MAX  # SKUs one subscription may name
WATCH_ALERTS_BUFFERED_MAX = 10_000  # alerts waiting for a slow subscriber before it is ended
WATCH_BACKLOG_EVENTS_MAX = 200_000  # live events kept aside while a subscriber reads the journal
WATCH_RETRY_AFTER_MS = 1_000  # retry hint when the subscriber limit is reached
JOURNAL_READ_EVENTS = limits.JOURNAL_READ_EVENTS_MAX
AVAILABILITY_SKUS_PER_READ = limits.SKUS_PER_QUERY_MAX  # levels read in one engine call
SCAN_BUCKETS_PER_STEP = 5_000  # buckets looked at in one step of the loop

BUCKET_ALERTS = frozenset({"sold_out", "back_in_stock", "below_safety_stock"})
CAMPAIGN_ALERTS = frozenset({"campaign_sold_out", "campaign_ended"})
ALERT_KINDS = BUCKET_ALERTS | CAMPAIGN_ALERTS


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """An alert as journalled, before it becomes a watch_pb2.Alert."""

    seq: int
    kind: str
    t_ms: int
    sku: str
    location: str
    pool: str
    campaign: str
    channel: str
    available: int
    threshold: int


class Digest:
    """What a run of events changed: SKUs per (location, pool), alerts, channels whose
    sources changed (every SKU of theirs may have), and the last seq covered."""

    __slots__ = ("places", "alerts", "channels_reset", "last_seq")

    def __init__(self) -> None:
        self.places: dict[tuple[str, str], set[str]] = {}
        self.alerts: list[AlertEvent] = []
        self.channels_reset: set[str] = set()
        self.last_seq = 0


class WatchHub:
    """Fans the journal out to subscribers. Lives on one event loop."""

    def __init__(self, engine: Engine, admission: Admission, *, streams_max: int) -> None:
        self.engine = engine
        self.admission = admission
        self.streams_max = streams_max
        self.subscribers: set[Subscriber] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.durable_seq = 0  # the last journal seq the hub has seen durable
        self._deferred: list[tuple[int, list[dict[str, Any]]]] = []  # while a check runs
        self._drain: asyncio.Task | None = None
        self._keys: list[tuple[str, str, str]] = []  # bucket id -> (sku, location, pool)
        self._sources: dict[str, frozenset[tuple[str, str]]] = {}
        self._campaign_channels: dict[str, frozenset[str]] = {}
        # channel -> (bucket count, its SKUs as a set and in order, being worked out):
        # shared by the subscribers of a channel whose sources changed.
        self._channel_skus: dict[str, tuple[int, asyncio.Task]] = {}

    # ------------------------------------------------------------------ plumbing

    async def attach(self) -> None:
        """Listen to the engine's durable writes, and learn where the durable journal
        ends now (what is decided is made durable first)."""
        self.loop = asyncio.get_running_loop()
        self.engine.listen(self._durable, packed=True)  # decoded in _apply, if watched
        decided = self.engine.last_seq
        await asyncio.to_thread(self.engine.flush)
        # A write that failed meanwhile rebuilt the engine from the store: its seqs are
        # not durable, and last_seq went back below them.
        self.durable_seq = max(self.durable_seq, min(decided, self.engine.last_seq))

    def detach(self) -> None:
        """Stop listening (the server is stopping)."""
        self.engine.unlisten(self._durable)
        if self._drain is not None:
            self._drain.cancel()
        for _, scan in self._channel_skus.values():
            scan.cancel()

    def _durable(self, first_seq: int, events: list[dict[str, Any] | bytes]) -> None:
        # The writer thread: hand over and return at once.
        try:
            self.loop.call_soon_threadsafe(self._dispatch, first_seq, events)
        except RuntimeError:  # the loop is closed: nobody is watching any more
            pass

    def shutdown(self) -> None:
        """End every subscriber UNAVAILABLE, each told where to resume."""
        for sub in list(self.subscribers):
            sub.end("the server is shutting down")

    def subscribe(self, channel: str, skus: frozenset[str] | None) -> Subscriber:
        """Register a subscriber, or refuse (RESOURCE_EXHAUSTED) past streams_max."""
        if len(self.subscribers) >= self.streams_max:
            raise shed(f"{len(self.subscribers)} watch streams are open (limit "
                       f"{self.streams_max}); retry in {WATCH_RETRY_AFTER_MS} ms",
                       WATCH_RETRY_AFTER_MS)
        sub = Subscriber(self, channel, skus)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a subscriber whose stream ended."""
        self.subscribers.discard(sub)

    # ------------------------------------------------------------------ catalogue caches

    def key(self, bucket: int) -> tuple[str, str, str]:
        """(sku, location, pool) of a bucket id; ids are dense and never reused."""
        keys = self._keys
        while len(keys) <= bucket:
            keys.append(self.engine.bucket_key(len(keys)))
        return keys[bucket]

    def sources(self, channel: str) -> frozenset[tuple[str, str]]:
        """The (location, pool) sources of a channel (empty for an unknown one)."""
        s = self._sources.get(channel)
        if s is None:
            found = self.engine.channels().get(channel)
            s = frozenset(found[0]) if found else frozenset()
            self._sources[channel] = s
        return s

    def campaign_channels(self, campaign: str) -> frozenset[str]:
        """The channels a campaign sells in (empty for an unknown one)."""
        chans = self._campaign_channels.get(campaign)
        if chans is None:
            c = self.engine.campaign(campaign)
            chans = frozenset(c.channels) if c is not None else frozenset()
            self._campaign_channels[campaign] = chans
        return chans

    async def channel_skus(self, channel: str) -> tuple[frozenset[str], tuple[str, ...]]:
        """Every SKU with a bucket in one of the channel's sources, as a set and in bucket
        order: worked out once for all the subscribers of the channel whose sources
        changed, a step at a time (a big catalogue would stall the loop in one)."""
        n = self.engine.bucket_count
        got = self._channel_skus.get(channel)
        if got is None or got[0] != n:
            got = (n, self.loop.create_task(self._scan(channel, n)))
            self._channel_skus[channel] = got
        return await asyncio.shield(got[1])

    async def _scan(self, channel: str, n: int) -> tuple[frozenset[str], tuple[str, ...]]:
        adm = self.admission
        keys = self._keys
        while len(keys) < n:  # learn the bucket keys not seen yet
            await asyncio.sleep(0)
            if adm.paused:
                await adm.resumed()
            self.key(min(len(keys) + SCAN_BUCKETS_PER_STEP, n) - 1)
        if adm.paused:
            await adm.resumed()
        sources = self.sources(channel)
        found: dict[str, None] = {}  # an ordered set
        for start in range(0, n, SCAN_BUCKETS_PER_STEP):
            if start:
                await asyncio.sleep(0)
            for sku, loc, pool in keys[start:min(start + SCAN_BUCKETS_PER_STEP, n)]:
                if (loc, pool) in sources:
                    found[sku] = None
        return frozenset(found), tuple(found)

    def _channel_changed(self, channel: str) -> None:
        self._sources.pop(channel, None)
        self._channel_skus.pop(channel, None)

    # ------------------------------------------------------------------ events

    def digest(self, events: Iterable[tuple[int, dict[str, Any]]]) -> Digest:
        """Sum up (seq, event) pairs, in seq order."""
        d = Digest()
        places = d.places
        key = self.key
        for seq, ev in events:
            d.last_seq = seq
            kind = ev["kind"]
            for field in ("held", "on_hand"):
                deltas = ev.get(field)
                if deltas:
                    for b, _ in deltas:
                        sku, loc, pool = key(b)
                        got = places.get((loc, pool))
                        if got is None:
                            places[(loc, pool)] = {sku}
                        else:
                            got.add(sku)
            if kind in ALERT_KINDS:
                d.alerts.append(AlertEvent(
                    seq, kind, ev.get("t", 0), ev.get("sku") or "", ev.get("location") or "",
                    ev.get("pool") or "", ev.get("campaign") or "", ev.get("channel") or "",
                    ev.get("available") or 0, ev.get("threshold") or 0))
            elif kind == "presale_set":
                places.setdefault((ev["location"], ev["pool"]), set()).add(ev["sku"])
            elif kind == "channel_set":
                self._channel_changed(ev["channel"])
                d.channels_reset.add(ev["channel"])
            elif kind == "campaign_created":
                self._campaign_channels.pop(ev["campaign"], None)
        return d

    def _dispatch(self, first_seq: int, events: list[dict[str, Any] | bytes]) -> None:
        # While a check holds the engine, taking events in (which reads bucket keys,
        # channels and campaigns from it) waits, in order, without blocking the loop.
        if self._deferred or (self.admission.paused and self.subscribers):
            self._deferred.append((first_seq, events))
            if self._drain is None:
                self._drain = self.loop.create_task(self._drain_deferred())
            return
        self._apply(first_seq, events)

    async def _drain_deferred(self) -> None:
        try:
            while self._deferred:
                if self.admission.paused:
                    await self.admission.resumed()
                    continue
                self._apply(*self._deferred.pop(0))
        finally:
            self._drain = None

    def _apply(self, first_seq: int, events: list[dict[str, Any] | bytes]) -> None:
        last = first_seq + len(events) - 1
        self.durable_seq = max(self.durable_seq, last)
        if not self.subscribers:
            for ev in events:  # keep the caches true (a packed event is a reservation's)
                if type(ev) is dict and ev["kind"] == "channel_set":
                    self._channel_changed(ev["channel"])
            return
        events = [unpack_event(ev) if type(ev) is bytes else ev for ev in events]
        try:
            whole: Digest | None = None
            for sub in list(self.subscribers):
                if not sub.live:
                    sub.keep(first_seq, events)
                elif sub.next_seq <= first_seq:
                    if whole is None:
                        whole = self.digest(enumerate(events, first_seq))
                    sub.absorb(whole)
                elif sub.next_seq <= last:  # just switched to live: skip what it has seen
                    skip = sub.next_seq - first_seq
                    sub.absorb(self.digest(enumerate(events[skip:], sub.next_seq)))
        except Exception as exc:  # noqa: BLE001 - the subscribers cannot follow: end them
            log.error("stockgate: watch streams cannot follow the journal: %s", exc)
            for sub in list(self.subscribers):
                if sub.live:
                    sub.end(f"the server could not follow the journal ({exc})")


class Subscriber:
    """One Watch stream's pending changes."""

    def __init__(self, hub: WatchHub, channel: str, skus: frozenset[str] | None) -> None:
        self.hub = hub
        self.channel = channel
        self.skus = skus  # None: every SKU the channel can sell
        self.next_seq = 1  # the next journal seq to take in
        self.sent_seq = 0  # the seq of the last update written
        self.sent = 0  # updates written
        self.dirty: set[str] = set()
        self.reset = False  # the channel's sources changed: every SKU of it is dirty
        self.alerts: list[AlertEvent] = []
        self.live = True
        self.backlog: list[tuple[int, list[dict[str, Any]]]] = []
        self.backlog_events = 0
        self.overflowed = False
        self.ending: str | None = None  # why the stream ends, once set
        self.ended = asyncio.get_running_loop().create_future()  # done once ending is set
        self.wake = asyncio.Event()

    def end(self, reason: str) -> None:
        """End the stream UNAVAILABLE once what it took in is written."""
        if self.ending is None:
            self.ending = reason
            self.ended.set_result(None)
        self.wake.set()

    def error(self) -> CallError:
        """The status ending the stream, with the resume point as it is now: after the
        last update written."""
        return unavailable(f"{self.ending}; subscribe again with "
                           f"from_seq={self.sent_seq + 1}")

    def keep(self, first_seq: int, events: list[dict[str, Any]]) -> None:
        """While reading the journal: keep live events aside, within bounds (past them,
        drop them and read the journal once more: it has them too)."""
        if self.overflowed:
            return
        self.backlog.append((first_seq, events))
        self.backlog_events += len(events)
        if self.backlog_events > WATCH_BACKLOG_EVENTS_MAX:
            self.backlog.clear()
            self.backlog_events = 0
            self.overflowed = True

    def absorb(self, d: Digest) -> None:
        """Take in a digest of the events from next_seq on: all of it, or, when its
        alerts would pass the buffer, none of it (the stream then ends, its resume point
        just before the digest)."""
        if self.ending is not None or d.last_seq < self.next_seq:
            return
        hub = self.hub
        sources = hub.sources(self.channel)
        alerts = [a for a in d.alerts if self._concerns(a, sources)]
        if len(self.alerts) + len(alerts) > WATCH_ALERTS_BUFFERED_MAX:
            self.end(f"this subscriber fell behind by {WATCH_ALERTS_BUFFERED_MAX} alerts")
            return
        want = self.skus
        dirty = self.dirty
        changed = bool(alerts)
        for place, skus in d.places.items():
            if place in sources:
                before = len(dirty)
                dirty.update(skus if want is None else skus & want)
                changed = changed or len(dirty) != before
        if self.channel in d.channels_reset:
            if want is None:
                self.reset = True
            else:
                dirty.update(want)
            changed = True
        self.alerts.extend(alerts)
        self.next_seq = d.last_seq + 1
        if changed:
            self.wake.set()

    def _concerns(self, a: AlertEvent, sources: frozenset[tuple[str, str]]) -> bool:
        if a.sku and self.skus is not None and a.sku not in self.skus:
            return False
        if a.kind in CAMPAIGN_ALERTS:
            return self.channel in self.hub.campaign_channels(a.campaign)
        if a.channel:
            return a.channel == self.channel
        return (a.location, a.pool) in sources

    @property
    def pending(self) -> bool:
        """True when something waits to be sent."""
        return bool(self.dirty or self.alerts or self.reset)

    async def take(self) -> tuple[int, Sequence[str], list[AlertEvent]]:
        """(the seq it reflects, the SKUs whose level changed, the alerts) of everything
        pending; what comes in from now on goes in the next update."""
        seq = self.next_seq - 1
        dirty, self.dirty = self.dirty, set()
        alerts, self.alerts = self.alerts, []
        if self.reset:
            self.reset = False
            every, ordered = await self.hub.channel_skus(self.channel)
            skus: Sequence[str] = ordered + tuple(sorted(dirty - every))
        else:
            skus = sorted(dirty)
        return seq, skus, alerts


class WatchService(watch_pb2_grpc.WatchServicer):
    """Subscribe: a channel token may watch its own channels; admin any."""

    def __init__(self, hub: WatchHub, auth: Authenticator, admission: Admission, *,
                 coalesce_ms_default: int, message_bytes_max: int) -> None:
        self._hub = hub
        self._auth = auth
        self._admission = admission
        self._coalesce_ms_default = coalesce_ms_default
        # An update larger than this is cut into several messages (within
        # message_bytes_max), counting each change and alert at its largest.
        self.update_bytes = wire.answer_bytes_target(message_bytes_max)

    async def _ready(self) -> None:
        """Return when the engine may be called on the loop (no check holds it)."""
        if self._admission.paused:
            await self._admission.resumed()

    def _check(self, request) -> tuple[frozenset[str] | None, float]:
        engine = self._hub.engine
        check_id("channel", request.channel, limits.CHANNEL_BYTES_MAX)
        check_count("skus", len(request.skus), 0, WATCH_SKUS_MAX)
        for i, sku in enumerate(request.skus):
            check_id(f"skus[{i}]", sku, limits.SKU_BYTES_MAX)
        check_int("from_seq", request.from_seq, 0, limits.SEQ_MAX)
        end = engine.last_seq
        if request.from_seq > end + 1:
            raise InvalidArgument("from_seq", f"is {request.from_seq}, past the end of the "
                                  f"journal ({end}): resume from at most {end + 1}, or 0 "
                                  "for from now on")
        ms = request.coalesce_ms
        if not 0 <= ms <= WATCH_COALESCE_MS_MAX:
            raise InvalidArgument("coalesce_ms", f"is {ms}; it must be between 0 (the default, "
                                  f"{self._coalesce_ms_default} ms) and {WATCH_COALESCE_MS_MAX}")
        if request.channel not in engine.channels():
            raise NotFound("channel", request.channel)
        skus = frozenset(request.skus) if request.skus else None
        return skus, (ms or self._coalesce_ms_default) / 1000

    async def Subscribe(self, request, context):
        """Stream updates of a channel's availability and alerts (see watch.proto)."""
        hub = self._hub
        adm = self._admission
        try:
            self._auth.for_channel(context, request.channel)
            if adm.closing:
                raise unavailable("the server is shutting down")
            await self._ready()
            skus, coalesce_s = self._check(request)
            sub = hub.subscribe(request.channel, skus)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await abort(context, exc)
        try:
            try:
                await self._follow(sub, context, request.from_seq, skus, coalesce_s)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure becomes a status
                if context.cancelled() or context.done():
                    return  # the client left: nobody to tell
                await abort(context, exc)
            await abort(context, sub.error())
        finally:
            hub.unsubscribe(sub)

    async def _follow(self, sub: Subscriber, context, from_seq: int,
                      skus: frozenset[str] | None, coalesce_s: float) -> None:
        """Send updates until the subscriber is ended (then what it took in is sent)."""
        hub = self._hub
        if from_seq == 0:
            # From the last event known durable: later ones reach the hub as they are.
            sub.next_seq = hub.durable_seq + 1
            sub.sent_seq = hub.durable_seq
            if skus is not None:
                sub.dirty.update(skus)
        else:
            await self._replay(sub, context, from_seq)
        if not sub.sent:
            # The first update goes at once, even empty: its seq is where the stream
            # stands, so a subscriber that loses the stream right after can resume exactly.
            await self._send(sub, context, always=True)
        while sub.ending is None:
            await sub.wake.wait()
            if sub.ending is None:  # gather a burst into one update (unless it ends)
                await asyncio.wait((sub.ended,), timeout=coalesce_s)
            sub.wake.clear()
            await self._send(sub, context)
        await self._send(sub, context)

    def _cut(self, changes: int, alerts: int) -> list[tuple[int, int, int, int]]:
        """(first change, end, first alert, end) of each message of an update of that
        many level changes and alerts: changes first, each message within update_bytes."""
        c_size, a_size = wire.CHANGE_BYTES_MAX, wire.ALERT_BYTES_MAX
        parts = []
        ci = ai = 0
        while True:
            room = self.update_bytes
            c_end = min(changes, ci + room // c_size)
            room -= (c_end - ci) * c_size
            a_end = min(alerts, ai + room // a_size) if c_end == changes else ai
            parts.append((ci, c_end, ai, a_end))
            ci, ai = c_end, a_end
            if ci == changes and ai == alerts:
                return parts

    async def _send(self, sub: Subscriber, context, *, always: bool = False) -> None:
        """Write what is pending, cut into messages within the size limit: level changes
        first, then alerts in seq order. Only the last message carries the seq of all of
        it; one before carries the seq of its last alert (every level change came before
        it) or, with levels only, the seq sent before."""
        if not (sub.pending or always):
            return
        await self._ready()
        seq, skus, alerts = await sub.take()
        engine = self._hub.engine
        channel = sub.channel
        parts = self._cut(len(skus), len(alerts))
        for n, (c_lo, c_hi, a_lo, a_hi) in enumerate(parts):
            if n == len(parts) - 1:
                upd = watch_pb2.WatchUpdate(seq=seq)
            else:
                upd = watch_pb2.WatchUpdate(seq=alerts[a_hi - 1].seq if a_hi > a_lo
                                            else sub.sent_seq)
            changes = upd.changes
            for i in range(c_lo, c_hi, AVAILABILITY_SKUS_PER_READ):
                if i > c_lo:
                    await asyncio.sleep(0)  # the loop serves others between reads
                await self._ready()
                part = list(skus[i:min(i + AVAILABILITY_SKUS_PER_READ, c_hi)])
                for sku, level in engine.availability(channel, part).items():
                    changes.add(sku=sku, available=level)
            out = upd.alerts
            for a in alerts[a_lo:a_hi]:
                out.add(seq=a.seq, kind=a.kind, t_ms=a.t_ms, sku=a.sku, location=a.location,
                        pool=a.pool, campaign=a.campaign, channel=a.channel,
                        available=a.available, threshold=a.threshold)
            await context.write(upd)
            sub.sent_seq = upd.seq
            sub.sent += 1

    async def _catch_up(self, sub: Subscriber, context,
                        pairs: list[tuple[int, dict[str, Any]]]) -> None:
        """Take in (seq, event) pairs read back, in runs whose alerts fit the
        subscriber's buffer, writing what is pending whenever it is full and at the end:
        a gap of any length makes progress."""
        hub = self._hub
        i, n = 0, len(pairs)
        while i < n and sub.ending is None:
            room = WATCH_ALERTS_BUFFERED_MAX - len(sub.alerts)
            j, alerts = i, 0
            while j < n:
                if pairs[j][1]["kind"] in ALERT_KINDS:
                    if alerts == room:
                        break
                    alerts += 1
                j += 1
            if j > i:
                await self._ready()  # digest and absorb read the catalogue
                sub.absorb(hub.digest(pairs[i:j]))
                i = j
            if i < n:
                await self._send(sub, context)  # the buffer is full: make room
        await self._send(sub, context)

    async def _replay(self, sub: Subscriber, context, from_seq: int) -> None:
        """Catch up from the journal, then go live with no gap and no repeat."""
        engine = self._hub.engine
        sub.live = False
        sub.next_seq = from_seq
        sub.sent_seq = from_seq - 1
        journal = True
        while sub.ending is None:
            if journal:
                sub.overflowed = False  # what it dropped is durable: this read has it
                events = await asyncio.to_thread(engine.journal, sub.next_seq,
                                                 JOURNAL_READ_EVENTS)
                await self._catch_up(sub, context, [(ev["seq"], ev) for ev in events])
                journal = len(events) == JOURNAL_READ_EVENTS
                continue
            if sub.overflowed:  # live events were dropped while catching up
                journal = True
                continue
            backlog, sub.backlog, sub.backlog_events = sub.backlog, [], 0
            if not backlog:
                # No await since the backlog was seen empty: the kept events and the live
                # ones that follow meet without a gap.
                sub.live = True
                return
            await self._catch_up(sub, context, [
                (first + k, ev) for first, events in backlog
                for k, ev in enumerate(events) if first + k >= sub.next_seq])
