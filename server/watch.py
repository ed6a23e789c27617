"""The Watch service: availability levels per (channel, SKU) and alerts, pushed as the
journal grows, coalesced per subscriber, resumable from a journal sequence number.

The hub hears every durable write through engine.listen() (on the writer thread) and
hands it to the event loop with call_soon_threadsafe, so the writer never waits for a
subscriber. Each subscriber keeps the set of SKUs that changed (a level is re-read when
the update is sent, so a burst of a thousand reservations is one entry) and the alerts
that concern its channel, both bounded. A subscriber too slow for its alert buffer is
ended with UNAVAILABLE and told the seq to resume from.

Resuming from from_seq: the subscriber is registered first (live events are kept aside),
the journal is read from from_seq on a worker thread, then the kept events are applied,
skipping the seqs already seen. Every event is durable either before the registration
(then the journal read has it) or after (then the hub delivers it), so nothing is lost;
seqs tell the overlap, so nothing is repeated.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from stockgate.engine import Engine, InvalidArgument, NotFound, limits
from stockgate.engine.limits import check_count, check_id, check_int
from stockgate.v1 import watch_pb2, watch_pb2_grpc

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
AVAILABILITY_SKUS_PER_READ = limits.SKUS_PER_QUERY_MAX

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

    def __init__(self, engine: Engine, *, streams_max: int) -> None:
        self.engine = engine
        self.streams_max = streams_max
        self.subscribers: set[Subscriber] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._keys: list[tuple[str, str, str]] = []  # bucket id -> (sku, location, pool)
        self._sources: dict[str, frozenset[tuple[str, str]]] = {}
        self._campaign_channels: dict[str, frozenset[str]] = {}

    # ------------------------------------------------------------------ plumbing

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.engine.listen(self._durable)

    def detach(self) -> None:
        self.engine.unlisten(self._durable)

    def _durable(self, first_seq: int, events: list[dict[str, Any]]) -> None:
        # The writer thread: hand over and return at once.
        try:
            self.loop.call_soon_threadsafe(self._dispatch, first_seq, events)
        except RuntimeError:  # the loop is closed: nobody is watching any more
            pass

    def shutdown(self) -> None:
        for sub in list(self.subscribers):
            sub.end(unavailable(
                f"the server is shutting down; subscribe again with "
                f"from_seq={sub.sent_seq + 1}"))

    def subscribe(self, channel: str, skus: frozenset[str] | None) -> Subscriber:
        if len(self.subscribers) >= self.streams_max:
            raise shed(f"{len(self.subscribers)} watch streams are open (limit "
                       f"{self.streams_max}); retry in {WATCH_RETRY_AFTER_MS} ms",
                       WATCH_RETRY_AFTER_MS)
        sub = Subscriber(self, channel, skus)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    # ------------------------------------------------------------------ catalogue caches

    def key(self, bucket: int) -> tuple[str, str, str]:
        """(sku, location, pool) of a bucket id; ids are dense and never reused."""
        keys = self._keys
        while len(keys) <= bucket:
            keys.append(self.engine.bucket_key(len(keys)))
        return keys[bucket]

    def sources(self, channel: str) -> frozenset[tuple[str, str]]:
        s = self._sources.get(channel)
        if s is None:
            found = self.engine.channels().get(channel)
            s = frozenset(found[0]) if found else frozenset()
            self._sources[channel] = s
        return s

    def campaign_channels(self, campaign: str) -> frozenset[str]:
        chans = self._campaign_channels.get(campaign)
        if chans is None:
            c = self.engine.campaign(campaign)
            chans = frozenset(c.channels) if c is not None else frozenset()
            self._campaign_channels[campaign] = chans
        return chans

    def skus_of(self, channel: str) -> set[str]:
        """Every SKU with a bucket in one of the channel's sources."""
        n = self.engine.bucket_count
        if n:
            self.key(n - 1)
        sources = self.sources(channel)
        return {sku for sku, loc, pool in self._keys[:n] if (loc, pool) in sources}

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
                self._sources.pop(ev["channel"], None)
                d.channels_reset.add(ev["channel"])
            elif kind == "campaign_created":
                self._campaign_channels.pop(ev["campaign"], None)
        return d

    def _dispatch(self, first_seq: int, events: list[dict[str, Any]]) -> None:
        if not self.subscribers:
            for ev in events:  # keep the caches true
                if ev["kind"] == "channel_set":
                    self._sources.pop(ev["channel"], None)
            return
        last = first_seq + len(events) - 1
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


class Subscriber:
    """One Watch stream's pending changes."""

    def __init__(self, hub: WatchHub, channel: str, skus: frozenset[str] | None) -> None:
        self.hub = hub
        self.channel = channel
        self.skus = skus  # None: every SKU the channel can sell
        self.next_seq = 1  # the next journal seq to take in
        self.sent_seq = 0  # the seq of the last update sent
        self.dirty: set[str] = set()
        self.alerts: list[AlertEvent] = []
        self.live = True
        self.backlog: list[tuple[int, list[dict[str, Any]]]] = []
        self.backlog_events = 0
        self.overflowed = False
        self.error: CallError | None = None
        self.wake = asyncio.Event()

    def end(self, error: CallError) -> None:
        if self.error is None:
            self.error = error
        self.wake.set()

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
        """Take in a digest of the events from next_seq on."""
        if d.last_seq < self.next_seq:
            return
        hub = self.hub
        changed = False
        sources = hub.sources(self.channel)
        want = self.skus
        dirty = self.dirty
        for place, skus in d.places.items():
            if place in sources:
                before = len(dirty)
                dirty.update(skus if want is None else skus & want)
                changed = changed or len(dirty) != before
        if self.channel in d.channels_reset:
            dirty.update(hub.skus_of(self.channel) if want is None else want)
            changed = True
        for a in d.alerts:
            if self._concerns(a, sources):
                if len(self.alerts) >= WATCH_ALERTS_BUFFERED_MAX:
                    self.end(unavailable(
                        f"this subscriber fell behind by {WATCH_ALERTS_BUFFERED_MAX} alerts; "
                        f"subscribe again with from_seq={self.sent_seq + 1}"))
                    return
                self.alerts.append(a)
                changed = True
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

    def update(self) -> watch_pb2.WatchUpdate:
        """The update of everything pending, levels read now; clears what it carries."""
        seq = self.next_seq - 1
        upd = watch_pb2.WatchUpdate(seq=seq)
        if self.dirty:
            skus = sorted(self.dirty)
            self.dirty = set()
            changes = upd.changes
            for i in range(0, len(skus), AVAILABILITY_SKUS_PER_READ):
                part = skus[i:i + AVAILABILITY_SKUS_PER_READ]
                for sku, n in self.hub.engine.availability(self.channel, part).items():
                    changes.add(sku=sku, available=n)
        if self.alerts:
            out = upd.alerts
            for a in self.alerts:
                out.add(seq=a.seq, kind=a.kind, t_ms=a.t_ms, sku=a.sku, location=a.location,
                        pool=a.pool, campaign=a.campaign, channel=a.channel,
                        available=a.available, threshold=a.threshold)
            self.alerts = []
        self.sent_seq = seq
        return upd


class WatchService(watch_pb2_grpc.WatchServicer):
    """Subscribe: a channel token may watch its own channels; admin any."""

    def __init__(self, hub: WatchHub, auth: Authenticator, admission: Admission, *,
                 coalesce_ms_default: int) -> None:
        self._hub = hub
        self._auth = auth
        self._admission = admission
        self._coalesce_ms_default = coalesce_ms_default

    def _check(self, request) -> tuple[frozenset[str] | None, float]:
        engine = self._hub.engine
        check_id("channel", request.channel, limits.CHANNEL_BYTES_MAX)
        check_count("skus", len(request.skus), 0, WATCH_SKUS_MAX)
        for i, sku in enumerate(request.skus):
            check_id(f"skus[{i}]", sku, limits.SKU_BYTES_MAX)
        check_int("from_seq", request.from_seq, 0, limits.SEQ_MAX)
        ms = request.coalesce_ms
        if not 0 <= ms <= WATCH_COALESCE_MS_MAX:
            raise InvalidArgument("coalesce_ms", f"is {ms}; it must be between 0 (the default, "
                                  f"{self._coalesce_ms_default} ms) and {WATCH_COALESCE_MS_MAX}")
        if request.channel not in engine.channels():
            raise NotFound("channel", request.channel)
        skus = frozenset(request.skus) if request.skus else None
        return skus, (ms or self._coalesce_ms_default) / 1000

    async def Subscribe(self, request, context):
        hub = self._hub
        adm = self._admission
        try:
            self._auth.for_channel(context, request.channel)
            if adm.closing:
                raise unavailable("the server is shutting down")
            skus, coalesce_s = self._check(request)
            sub = hub.subscribe(request.channel, skus)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await abort(context, exc)
        try:
            if request.from_seq == 0:
                sub.next_seq = hub.engine.last_seq + 1
                sub.sent_seq = sub.next_seq - 1
                if skus is not None:
                    sub.dirty.update(skus)
            else:
                await self._replay(sub, request.from_seq)
            # The first update goes at once, even empty: its seq is where the stream
            # stands, so a subscriber that loses the stream right after can resume exactly.
            await context.write(sub.update())
            while True:
                await sub.wake.wait()
                if sub.error is None:
                    await asyncio.sleep(coalesce_s)  # gather a burst into one update
                sub.wake.clear()
                if adm.paused:
                    await adm.resumed()
                if sub.dirty or sub.alerts:
                    await context.write(sub.update())
                if sub.error is not None:
                    await abort(context, sub.error)
        finally:
            hub.unsubscribe(sub)

    async def _replay(self, sub: Subscriber, from_seq: int) -> None:
        """Catch up from the journal, then go live with no gap and no repeat."""
        engine = self._hub.engine
        sub.live = False
        sub.next_seq = from_seq
        sub.sent_seq = from_seq - 1
        while True:
            if sub.error is not None:
                return
            events = await asyncio.to_thread(engine.journal, sub.next_seq, JOURNAL_READ_EVENTS)
            if events:
                sub.absorb(self._hub.digest((ev["seq"], ev) for ev in events))
            if len(events) < JOURNAL_READ_EVENTS:
                if sub.overflowed:  # live events were dropped meanwhile: read them too
                    sub.overflowed = False
                    continue
                break
        # No await from here on: the kept events and the live ones that follow meet
        # without a gap.
        backlog, sub.backlog = sub.backlog, []
        sub.live = True
        for first, events in backlog:
            last = first + len(events) - 1
            if last >= sub.next_seq:
                skip = max(0, sub.next_seq - first)
                sub.absorb(self._hub.digest(enumerate(events[skip:], first + skip)))
