"""A plain-Python reference model of the engine, for the stateful test.

Written from the documented semantics (DESIGN.md and the Engine docstrings), not from the
engine's code: dicts of counters, one rule per docstring sentence, no cleverness. Where
the documentation leaves a detail open, the choice made here is marked ASSUMPTION.

The model raises ModelError(kind) where the engine must raise an exception:
kind "invalid" (InvalidArgument), "conflict" (Conflict), "notfound" (NotFound).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stockgate.engine import Outcome, State

CAMPAIGN_POOL_PREFIX = "campaign:"

# Refusal reasons, most fundamental first (the order of the Outcome docstring).
PRECEDENCE = (Outcome.UNKNOWN_SKU, Outcome.CUSTOMER_LIMIT, Outcome.INSUFFICIENT_STOCK)


class ModelError(Exception):
    def __init__(self, kind: str, why: str = "") -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind


@dataclass
class Bucket:
    on_hand: int = 0
    held: int = 0
    floor: int = 0  # -presale allowance

    @property
    def available(self) -> int:
        return self.on_hand - self.held


@dataclass
class Line:
    sku: str
    qty: int
    granted: int
    outcome: Outcome
    allocs: list[tuple[str, str, int]]  # (location, pool, units), in the order taken


@dataclass
class Res:
    rid: str
    channel: str
    customer: str | None
    campaign: str | None
    partial: bool
    key: tuple  # the reserve call's content: (channel, customer, campaign, partial, lines)
    call: dict  # the full first reserve call, to replay it exactly
    first_outcome: Outcome
    first_lines: list[Line]
    outcome: Outcome  # of the last decision (reserve, or amend)
    lines: list[Line]
    created_ms: int
    expires_ms: int
    state: State = State.HELD
    resolved_ms: int | None = None
    committed: dict[str, int] = field(default_factory=dict)
    commit_req: tuple | None = None


@dataclass
class Campaign:
    cid: str
    channels: tuple[str, ...]
    start_ms: int
    end_ms: int
    location: str
    source_pool: str
    quotas: dict[str, int]
    customer_limit: int
    state: str = "scheduled"
    carved: dict[str, int] = field(default_factory=dict)
    returned: dict[str, int] = field(default_factory=dict)

    @property
    def pool(self) -> str:
        return CAMPAIGN_POOL_PREFIX + self.cid


@dataclass
class Expect:
    """What a reservation call must answer."""

    outcome: Outcome
    res: Res | None = None
    replayed: bool = False
    lines: list[Line] | None = None  # the Result's lines, when the model knows them


class Model:
    def __init__(self, now: int) -> None:
        self.now = now
        self.locations: set[str] = set()
        self.rules: dict[tuple[str, str | None], list[tuple[str, int]]] = {}
        self.channels: dict[str, tuple[list[tuple[str, str]], bool]] = {}
        self.buckets: dict[tuple[str, str, str], Bucket] = {}
        self.campaigns: dict[str, Campaign] = {}
        self.transfers: dict[str, list] = {}  # id -> [sku, fl, fp, tl, tp, qty, state]
        self.res: dict[str, Res] = {}
        self.used: dict[tuple[str, str, str], int] = {}  # (campaign, customer, sku) -> units
        # Conservation totals.
        self.received = 0
        self.committed = 0
        self.variance = 0
        # Buckets an admin action (stocktake, smaller presale allowance) put below floor.
        self.below_floor_by_admin: set[tuple[str, str, str]] = set()

    # ------------------------------------------------------------------ helpers

    def bucket(self, sku: str, loc: str, pool: str) -> Bucket:
        """The bucket, created empty if new (every movement into a bucket creates it)."""
        return self.buckets.setdefault((sku, loc, pool), Bucket())

    def known_sku(self, sku: str) -> bool:
        # ASSUMPTION: a SKU is known once any bucket of it exists.
        return any(k[0] == sku for k in self.buckets)

    def in_transit(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.transfers.values():
            if t[6] == "in_transit":
                out[t[0]] = out.get(t[0], 0) + t[5]
        return out

    def room(self, key: tuple[str, str, str], presale: bool, extra: dict | None = None) -> int:
        b = self.buckets[key]
        avail = b.available - (extra or {}).get(key, 0)
        return max(0, avail - (b.floor if presale else 0))

    def _active(self, c: Campaign) -> bool:
        return c.state == "active" and c.start_ms <= self.now < c.end_ms

    # ------------------------------------------------------------------ time

    def advance_to(self, now: int) -> None:
        """Move the clock and let every due event happen, in time order: a hold is gone
        at now >= expires_ms; a campaign starts at start_ms and ends at end_ms.
        ASSUMPTION: at equal times expiries come first, then campaigns by (time, id)."""
        assert now >= self.now
        while True:
            due: list[tuple[int, int, str, str]] = []
            for r in self.res.values():
                if r.state == State.HELD and r.expires_ms <= now:
                    due.append((r.expires_ms, 0, r.rid, "expire"))
            for c in self.campaigns.values():
                if c.state == "scheduled" and c.start_ms <= now:
                    due.append((c.start_ms, 1, c.cid, "start"))
                elif c.state == "active" and c.end_ms <= now:
                    due.append((c.end_ms, 1, c.cid, "end"))
            if not due:
                break
            _, _, ident, what = min(due)
            if what == "expire":
                r = self.res[ident]
                self._give_back(r, {})
                r.state = State.EXPIRED
                r.resolved_ms = now
            elif what == "start":
                self._start(self.campaigns[ident])
            else:
                self._end(self.campaigns[ident])
        self.now = now

    # ------------------------------------------------------------------ catalogue

    def add_location(self, loc: str) -> None:
        self.locations.add(loc)

    def set_rule(self, loc: str, shares: dict[str, int], sku: str | None = None) -> None:
        self.rules[(loc, sku)] = list(shares.items())

    def set_channel(self, ch: str, sources: list[tuple[str, str]], presale: bool = False) -> None:
        self.channels[ch] = (list(sources), presale)

    def set_presale_allowance(self, sku: str, loc: str, pool: str, units: int) -> None:
        if loc not in self.locations:
            raise ModelError("notfound", loc)
        b = self.bucket(sku, loc, pool)
        b.floor = -units
        if b.available < b.floor:
            self.below_floor_by_admin.add((sku, loc, pool))

    # ------------------------------------------------------------------ movements

    def split(self, loc: str, sku: str, qty: int) -> list[tuple[str, int]]:
        """Each pool gets the floor of its share; the left-over units go one each to the
        largest fractional remainders, ties in the rule's order."""
        rule = self.rules.get((loc, sku)) or self.rules.get((loc, None))
        if rule is None:
            raise ModelError("invalid", "no allocation rule")
        units = {pool: qty * pct // 100 for pool, pct in rule}
        left = qty - sum(units.values())
        by_remainder = sorted(rule, key=lambda pp: -((qty * pp[1]) % 100))  # stable: ties in order
        for pool, _ in by_remainder[:left]:
            units[pool] += 1
        return [(pool, units[pool]) for pool, _ in rule if units[pool] > 0]

    def receive(self, sku: str, loc: str, qty: int, pool: str | None) -> dict[str, int]:
        if loc not in self.locations:
            raise ModelError("notfound", loc)
        split = [(pool, qty)] if pool is not None else self.split(loc, sku, qty)
        for p, u in split:
            self.bucket(sku, loc, p).on_hand += u
            self.received += u
        return dict(split)

    def adjust(self, sku: str, loc: str, pool: str, on_hand: int) -> int:
        if loc not in self.locations:
            raise ModelError("notfound", loc)
        b = self.bucket(sku, loc, pool)
        variance = on_hand - b.on_hand
        b.on_hand = on_hand
        self.variance += variance
        if b.available < b.floor:
            self.below_floor_by_admin.add((sku, loc, pool))
        return variance

    def _take_available(self, key: tuple[str, str, str], qty: int) -> Bucket:
        b = self.buckets.get(key)
        if b is None or b.available < qty:
            raise ModelError("conflict", f"only {0 if b is None else b.available} available")
        return b

    def move(self, sku: str, loc: str, from_pool: str, to_pool: str, qty: int) -> None:
        if from_pool == to_pool:
            raise ModelError("invalid", "same pool")
        if loc not in self.locations:
            raise ModelError("notfound", loc)
        src = self._take_available((sku, loc, from_pool), qty)
        src.on_hand -= qty
        self.bucket(sku, loc, to_pool).on_hand += qty

    def transfer_out(self, tid: str, sku: str, fl: str, fp: str, tl: str, tp: str,
                     qty: int) -> str:
        body = [sku, fl, fp, tl, tp, qty]
        old = self.transfers.get(tid)
        if old is not None:
            if old[:6] != body:
                raise ModelError("conflict", "transfer id reused")
            return old[6]
        if fl not in self.locations or tl not in self.locations:
            raise ModelError("notfound", "location")
        src = self._take_available((sku, fl, fp), qty)
        src.on_hand -= qty
        self.transfers[tid] = body + ["in_transit"]
        return "in_transit"

    def transfer_in(self, tid: str) -> str:
        t = self.transfers.get(tid)
        if t is None:
            raise ModelError("notfound", tid)
        if t[6] == "in_transit":
            sku, _, _, tl, tp, qty = t[:6]
            self.bucket(sku, tl, tp).on_hand += qty
            t[6] = "received"
        return "received"

    # ------------------------------------------------------------------ reservations

    def _sources(self, channel: str, campaign: str | None, sku: str,
                 prefer: tuple[str, ...]) -> list[tuple[str, str, str]] | None:
        """Buckets a line walks, in order; None when the SKU is unknown there."""
        if campaign is not None:
            c = self.campaigns[campaign]
            if sku not in c.quotas:
                return None
            key = (sku, c.location, c.pool)
            return [key] if key in self.buckets else []
        if not self.known_sku(sku):
            return None
        sources = self.channels[channel][0]
        if prefer:
            # Locations named in prefer_locations first (in that order), then the rest,
            # each group in the channel's order.
            sources = ([s for p in prefer for s in sources if s[0] == p]
                       + [s for s in sources if s[0] not in prefer])
        return [(sku, loc, pool) for loc, pool in sources if (sku, loc, pool) in self.buckets]

    def _campaign_refusal(self, channel: str, customer: str | None,
                          campaign: str | None) -> Outcome | None:
        if campaign is None:
            return None
        c = self.campaigns.get(campaign)
        if c is None:
            return Outcome.UNKNOWN_CAMPAIGN
        if not self._active(c):
            return Outcome.CAMPAIGN_NOT_ACTIVE
        if channel not in c.channels:
            return Outcome.CHANNEL_NOT_IN_CAMPAIGN
        return None

    def _decide(self, channel, customer, campaign, partial, lines, prefer,
                credit_units: dict | None = None, credit_used: dict | None = None):
        """Decide the lines without changing anything. `credit_*` count a hold as free
        (amend). Returns (outcome, [Line] or None when refused, refusal line outcomes)."""
        presale = self.channels[channel][1] and campaign is None
        c = self.campaigns.get(campaign) if campaign is not None else None
        per_line = [self._sources(channel, campaign, sku, prefer) for sku, _ in lines]
        if any(s is None for s in per_line) and not partial:
            return Outcome.UNKNOWN_SKU, None
        taken: dict[tuple, int] = {k: -v for k, v in (credit_units or {}).items()}
        used_extra: dict[tuple, int] = {k: -v for k, v in (credit_used or {}).items()}
        out: list[Line] = []
        for (sku, qty), sources in zip(lines, per_line):
            if sources is None:
                out.append(Line(sku, qty, 0, Outcome.UNKNOWN_SKU, []))
                continue
            cap, limit_short = qty, False
            if c is not None and c.customer_limit and customer is not None:
                k = (campaign, customer, sku)
                left = c.customer_limit - self.used.get(k, 0) - used_extra.get(k, 0)
                if left < qty:
                    limit_short = True
                    cap = max(0, left) if partial else 0
            got, allocs = 0, []
            for key in sources:
                t = min(self.room(key, presale, taken), cap - got)
                if t > 0:
                    taken[key] = taken.get(key, 0) + t
                    got += t
                    allocs.append((key[1], key[2], t))
            if c is not None and c.customer_limit and customer is not None:
                k = (campaign, customer, sku)
                used_extra[k] = used_extra.get(k, 0) + got
            if got == qty:
                lo = Outcome.OK
            elif limit_short:
                lo = Outcome.CUSTOMER_LIMIT
            else:
                lo = Outcome.INSUFFICIENT_STOCK
            out.append(Line(sku, qty, got, lo, allocs))
            if lo != Outcome.OK and not partial:
                return lo, None  # all or nothing: the first line that cannot be held
        if sum(ln.granted for ln in out) == 0:
            # Nothing granted: the most fundamental reason among the lines.
            reasons = {ln.outcome for ln in out}
            return next(o for o in PRECEDENCE if o in reasons), None
        ok = all(ln.outcome == Outcome.OK for ln in out)
        return (Outcome.OK if ok else Outcome.PARTIAL), out

    def _hold(self, r_campaign, r_customer, lines: list[Line], sign: int) -> None:
        for ln in lines:
            for loc, pool, u in ln.allocs:
                self.buckets[(ln.sku, loc, pool)].held += sign * u
            if r_campaign is not None and r_customer is not None and ln.granted:
                k = (r_campaign, r_customer, ln.sku)
                self.used[k] = self.used.get(k, 0) + sign * ln.granted

    def reserve(self, reservation_id: str, channel: str, lines: list[tuple[str, int]], *,
                customer: str | None = None, campaign: str | None = None,
                ttl_ms: int = 900_000, partial: bool = False,
                prefer_locations: tuple[str, ...] = ()) -> Expect:
        rid = reservation_id
        if channel not in self.channels:
            raise ModelError("notfound", channel)
        c = self.campaigns.get(campaign) if campaign is not None else None
        if c is not None and c.customer_limit and customer is None:
            # ASSUMPTION: a malformed request (a limited campaign needs the customer) is
            # refused before anything else, like an unknown channel.
            raise ModelError("invalid", "customer required")
        lines = [tuple(x) for x in lines]
        key = (channel, customer, campaign, partial, tuple(lines))
        r = self.res.get(rid)
        if r is not None:
            if r.key != key:
                return Expect(Outcome.ID_CONFLICT, r)
            return Expect(r.first_outcome, r, replayed=True)
        refusal = self._campaign_refusal(channel, customer, campaign)
        if refusal is not None:
            return Expect(refusal)
        outcome, got = self._decide(channel, customer, campaign, partial, lines,
                                    tuple(prefer_locations))
        if got is None:
            return Expect(outcome)
        call = dict(reservation_id=rid, channel=channel, lines=list(lines), customer=customer,
                    campaign=campaign, ttl_ms=ttl_ms, partial=partial,
                    prefer_locations=tuple(prefer_locations))
        r = Res(rid, channel, customer, campaign, partial, key, call, outcome, got, outcome,
                got, self.now, self.now + ttl_ms)
        self._hold(campaign, customer, got, +1)
        self.res[rid] = r
        return Expect(outcome, r, lines=got)

    def _give_back(self, r: Res, commit: dict[int, int]) -> None:
        """End a hold: `commit` units per line index leave on_hand (taken from the line's
        allocations in the order they were made: ASSUMPTION), the rest return to their
        buckets; units returning into an ended campaign's pool go on to its source."""
        for li, ln in enumerate(r.lines):
            left = commit.get(li, 0)
            released = 0
            for loc, pool, u in ln.allocs:
                b = self.buckets[(ln.sku, loc, pool)]
                c_units = min(u, left)
                left -= c_units
                b.held -= u
                b.on_hand -= c_units
                self.committed += c_units
                released += u - c_units
                self._return_if_ended(ln.sku, loc, pool)
            if r.campaign is not None and r.customer is not None and released:
                k = (r.campaign, r.customer, ln.sku)
                self.used[k] -= released

    def _return_if_ended(self, sku: str, loc: str, pool: str) -> None:
        if not pool.startswith(CAMPAIGN_POOL_PREFIX):
            return
        c = self.campaigns[pool[len(CAMPAIGN_POOL_PREFIX):]]
        if c.state != "ended":
            return
        b = self.buckets[(sku, loc, pool)]
        if b.available > 0:
            back = b.available
            b.on_hand -= back
            self.bucket(sku, c.location, c.source_pool).on_hand += back
            c.returned[sku] = c.returned.get(sku, 0) + back

    def commit(self, rid: str, lines: list[tuple[str, int]] | None = None) -> Expect:
        want = None
        if lines is not None:
            merged: dict[str, int] = {}
            for sku, q in lines:
                merged[sku] = merged.get(sku, 0) + q
            want = tuple(sorted(merged.items()))
        r = self.res.get(rid)
        if r is None:
            return Expect(Outcome.NOT_FOUND)
        if r.state == State.COMMITTED and r.commit_req == want:
            return Expect(Outcome.OK, r, replayed=True)
        if r.state != State.HELD:
            return Expect(Outcome.NOT_HELD, r)
        commit: dict[int, int] = {}
        if want is None:
            commit = {li: ln.granted for li, ln in enumerate(r.lines)}
        else:
            left = dict(want)
            for sku, q in want:
                if q > sum(ln.granted for ln in r.lines if ln.sku == sku):
                    raise ModelError("invalid", "commits more than held")
            for li, ln in enumerate(r.lines):
                t = min(ln.granted, left.get(ln.sku, 0))
                if t:
                    commit[li] = t
                    left[ln.sku] -= t
        for li, u in commit.items():
            if u:
                r.committed[r.lines[li].sku] = r.committed.get(r.lines[li].sku, 0) + u
        r.commit_req = want
        self._give_back(r, commit)
        r.state = State.COMMITTED
        r.resolved_ms = self.now
        return Expect(Outcome.OK, r)

    def release(self, rid: str) -> Expect:
        r = self.res.get(rid)
        if r is None:
            return Expect(Outcome.NOT_FOUND)
        if r.state == State.RELEASED:
            return Expect(Outcome.OK, r, replayed=True)
        if r.state != State.HELD:
            return Expect(Outcome.NOT_HELD, r)
        self._give_back(r, {})
        r.state = State.RELEASED
        r.resolved_ms = self.now
        return Expect(Outcome.OK, r)

    def extend(self, rid: str, ttl_ms: int) -> Expect:
        r = self.res.get(rid)
        if r is None:
            return Expect(Outcome.NOT_FOUND)
        if r.state != State.HELD:
            return Expect(Outcome.NOT_HELD, r)
        r.expires_ms = self.now + ttl_ms
        return Expect(Outcome.OK, r)

    def amend(self, rid: str, lines: list[tuple[str, int]]) -> Expect:
        r = self.res.get(rid)
        if r is None:
            return Expect(Outcome.NOT_FOUND)
        if r.state != State.HELD:
            return Expect(Outcome.NOT_HELD, r)
        lines = [tuple(x) for x in lines]
        if [(ln.sku, ln.qty) for ln in r.lines] == lines:
            return Expect(r.outcome, r, replayed=True)
        refusal = self._campaign_refusal(r.channel, r.customer, r.campaign)
        if refusal is not None:
            return Expect(refusal)
        # The old hold counts as free for the new lines.
        credit_units: dict[tuple, int] = {}
        credit_used: dict[tuple, int] = {}
        for ln in r.lines:
            for loc, pool, u in ln.allocs:
                k = (ln.sku, loc, pool)
                credit_units[k] = credit_units.get(k, 0) + u
            if r.campaign is not None and r.customer is not None:
                k = (r.campaign, r.customer, ln.sku)
                credit_used[k] = credit_used.get(k, 0) + ln.granted
        # ASSUMPTION: amend walks the channel's sources in their own order (the first
        # call's prefer_locations is not remembered).
        outcome, got = self._decide(r.channel, r.customer, r.campaign, r.partial, lines, (),
                                    credit_units, credit_used)
        if got is None:
            return Expect(outcome)
        self._hold(r.campaign, r.customer, r.lines, -1)
        self._hold(r.campaign, r.customer, got, +1)
        r.lines, r.outcome = got, outcome
        return Expect(outcome, r, lines=got)

    # ------------------------------------------------------------------ campaigns

    def create_campaign(self, cid: str, *, channels, start_ms, end_ms, location, source_pool,
                        quotas, customer_limit=0) -> Campaign:
        if cid in self.campaigns:
            raise ModelError("conflict", "campaign exists")
        if location not in self.locations:
            raise ModelError("notfound", location)
        for ch in channels:
            if ch not in self.channels:
                raise ModelError("notfound", ch)
        if end_ms <= self.now:
            raise ModelError("conflict", "the window is already past")
        c = Campaign(cid, tuple(sorted(channels)), start_ms, end_ms, location, source_pool,
                     dict(quotas), customer_limit)
        self.campaigns[cid] = c
        self.advance_to(self.now)  # a window that is open already starts now
        return c

    def _start(self, c: Campaign) -> None:
        """Carve min(quota, what the source has available) of each SKU."""
        c.state = "active"
        for sku, quota in c.quotas.items():
            src = self.buckets.get((sku, c.location, c.source_pool))
            carve = min(quota, max(0, src.available)) if src is not None else 0
            dst = self.bucket(sku, c.location, c.pool)
            if carve:
                src.on_hand -= carve
                dst.on_hand += carve
            c.carved[sku] = carve

    def _end(self, c: Campaign) -> None:
        """The unsold rest goes back to the source; held units follow when released."""
        c.state = "ended"
        for sku in c.quotas:
            if (sku, c.location, c.pool) in self.buckets:
                self.bucket(sku, c.location, c.source_pool)
                self._return_if_ended(sku, c.location, c.pool)

    def start_campaign(self, cid: str) -> Campaign:
        c = self.campaigns.get(cid)
        if c is None:
            raise ModelError("notfound", cid)
        if c.state == "scheduled":
            if self.now >= c.end_ms:
                raise ModelError("conflict", "window ended")
            c.start_ms = min(c.start_ms, self.now)
            self._start(c)
        return c

    def stop_campaign(self, cid: str) -> Campaign:
        c = self.campaigns.get(cid)
        if c is None:
            raise ModelError("notfound", cid)
        if c.state == "scheduled":
            c.state = "ended"
        elif c.state == "active":
            c.end_ms = min(c.end_ms, self.now)
            self._end(c)
        return c

    # ------------------------------------------------------------------ queries

    def availability(self, channel: str, sku: str, campaign: str | None = None) -> int:
        if campaign is not None:
            c = self.campaigns.get(campaign)
            if c is None or not self._active(c) or channel not in c.channels:
                return 0
        sources = self._sources(channel, campaign, sku, ())
        if sources is None:
            return 0
        presale = self.channels[channel][1] and campaign is None
        return sum(self.room(k, presale) for k in sources)
