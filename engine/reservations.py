"""Reservations: reserve, commit, release, extend, amend, and the bookkeeping of a hold.
Methods of Engine, kept here by concept; the decision itself is the core's."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any

from . import _core, limits, records
from .errors import InvalidArgument, NotFound, StockgateError
from .group_commit import Batch
from .lifecycle import State, transition
from .limits import check_count, check_id, check_int, check_qty
from .outcomes import Outcome
from .results import Allocation, LineResult, Reservation, Result

_OUTCOMES = tuple(Outcome(i) for i in range(max(Outcome) + 1))  # the core gives codes
# The limits _core.check_plain_reserve() applies, in its order.
_PLAIN_LIMITS = (
    limits.RESERVATION_ID_BYTES_MAX, limits.CHANNEL_BYTES_MAX, limits.SKU_BYTES_MAX,
    limits.CUSTOMER_BYTES_MAX, limits.CAMPAIGN_BYTES_MAX, limits.LOCATION_BYTES_MAX,
    limits.QTY_MAX, limits.LINES_PER_RESERVATION_MAX, limits.TTL_MS_MIN, limits.TTL_MS_MAX,
    limits.SOURCES_PER_CHANNEL_MAX,
)


def _check_prefer(prefer: object) -> tuple[str, ...]:
    """Preferred locations (nearest warehouse first), checked."""
    if isinstance(prefer, str) or not isinstance(prefer, (list, tuple)):
        raise InvalidArgument("prefer_locations", "must be a list of locations")
    check_count("prefer_locations", len(prefer), 0, limits.SOURCES_PER_CHANNEL_MAX)
    for i, loc in enumerate(prefer):
        check_id(f"prefer_locations[{i}]", loc, limits.LOCATION_BYTES_MAX)
    return tuple(prefer)


ReserveRequest = _core.ReserveRequest  # built in C: see _core


class _Res:
    """A reservation as the engine keeps it in memory (mutable, compact)."""

    __slots__ = (
        "rid", "channel", "customer", "campaign", "state", "partial", "created_ms",
        "expires_ms", "resolved_ms", "lines", "committed", "commit_req", "req", "outcome",
        "amend_outcome",
        "ticket",
    )

    def __init__(self, rid, channel, customer, campaign, partial, created_ms, expires_ms,
                 lines, req, outcome):
        self.rid = rid
        self.channel = channel
        self.customer = customer
        self.campaign = campaign
        self.state = State.HELD
        self.partial = partial
        self.created_ms = created_ms
        self.expires_ms = expires_ms
        self.resolved_ms = None
        # (sku, qty asked, granted, (bucket, units, bucket, units, ...), line outcome)
        self.lines: list[tuple] = lines
        self.committed: list[list[Any]] | None = None
        self.commit_req: tuple | None = None
        self.req = req  # the reserve request's content, to tell a replay from a conflict
        self.outcome = outcome  # the reserve's first answer, which its replays repeat
        self.amend_outcome: Outcome | None = None  # the last amend's, for its replays
        self.ticket: Batch | None = None

    def encode(self) -> bytes:
        return records.pack([
            self.rid, self.channel, self.customer, self.campaign, int(self.state),
            self.partial, self.created_ms, self.expires_ms, self.resolved_ms, self.lines,
            self.committed, self.commit_req, int(self.outcome), self.req[4],
            None if self.amend_outcome is None else int(self.amend_outcome),
        ])

    @classmethod
    def decode(cls, value: bytes) -> _Res:
        (rid, channel, customer, campaign, state, partial, created, expires, resolved, lines,
         committed, commit_req, outcome, req_lines, amend_outcome) = records.unpack(
            value, "reservation")
        req_lines = tuple((s, q) for s, q in req_lines)
        lines = [(s, q, g, tuple(alloc), lo) for s, q, g, alloc, lo in lines]
        r = cls(rid, channel, customer, campaign, partial, created, expires, lines,
                (channel, customer, campaign, partial, req_lines), Outcome(outcome))
        r.state = State(state)
        r.resolved_ms = resolved
        r.committed = committed
        r.commit_req = None if commit_req is None else tuple(tuple(x) for x in commit_req)
        r.amend_outcome = None if amend_outcome is None else Outcome(amend_outcome)
        return r


class Ledger(dict):
    """Reservation id -> _Res, the engine's memory of every reservation.

    A hold that nothing has read since it was made stays as its stored record (the bytes
    written to LMDB): no Python objects per hold for the cyclic GC to walk (that walking
    was a third of the CPU of a durable reservation, measured here) and about a third of
    the memory. The first read turns it into a _Res for good. Use get() or [], which do that;
    dict's own methods see the bytes.
    """

    __slots__ = ("_ticket_of",)

    def __init__(self, ticket_of: Callable[[str], Batch | None]) -> None:
        super().__init__()
        # rid -> the batch whose write still carries its record (a replay waits for it)
        self._ticket_of = ticket_of

    def get(self, rid: str, default: Any = None) -> Any:
        r = dict.get(self, rid, default)
        if type(r) is bytes:
            r = _Res.decode(r)
            r.ticket = self._ticket_of(rid)
            dict.__setitem__(self, rid, r)
        return r

    def channel_of(self, rid: str) -> str | None:
        """The channel of a reservation (None when unknown), without the engine's lock:
        it never stores a decoded form (one stored outside the lock could replace a _Res
        being changed under it) and reads only the record's fields (an authorization
        check runs on every commit of a channel token)."""
        r = dict.get(self, rid)
        if type(r) is bytes:
            return records.unpack(r, "reservation")[1]  # [rid, channel, ...]
        return None if r is None else r.channel

    def __getitem__(self, rid: str) -> _Res:
        r = self.get(rid)
        if r is None:
            raise KeyError(rid)
        return r

    def values(self):  # type: ignore[override]
        """Every reservation, decoded on the way without keeping the decoded form (a
        check over millions of holds must not grow memory tenfold)."""
        for r in dict.values(self):
            yield _Res.decode(r) if type(r) is bytes else r


class Reservations:
    """Holds for channels: decided by the core, recorded here."""

    def _check_lines(self, lines: object, field: str = "lines") -> tuple[tuple[str, int], ...]:
        if not isinstance(lines, (list, tuple)):
            raise InvalidArgument(field, "must be a list of (sku, qty) pairs")
        check_count(field, len(lines), 1, limits.LINES_PER_RESERVATION_MAX)
        out = []
        for i, line in enumerate(lines):
            if not isinstance(line, (list, tuple)) or len(line) != 2:
                raise InvalidArgument(f"{field}[{i}]", "must be a (sku, qty) pair")
            out.append((check_id(f"{field}[{i}].sku", line[0], limits.SKU_BYTES_MAX),
                        check_qty(f"{field}[{i}].qty", line[1])))
        return tuple(out)

    def _check_request(self, req: ReserveRequest) -> tuple:
        rid = check_id("reservation_id", req.reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        channel = check_id("channel", req.channel, limits.CHANNEL_BYTES_MAX)
        lines = self._check_lines(req.lines)
        if req.customer is not None:
            check_id("customer", req.customer, limits.CUSTOMER_BYTES_MAX)
        if req.campaign is not None:
            check_id("campaign", req.campaign, limits.CAMPAIGN_BYTES_MAX)
        check_int("ttl_ms", req.ttl_ms, limits.TTL_MS_MIN, limits.TTL_MS_MAX)
        if not isinstance(req.partial, bool):
            raise InvalidArgument("partial", "must be a boolean")
        key = (channel, req.customer, req.campaign, req.partial, lines)
        return rid, key, req.ttl_ms, _check_prefer(req.prefer_locations)

    def reserve(
        self,
        reservation_id: str,
        channel: str,
        lines: Sequence[tuple[str, int]],
        *,
        customer: str | None = None,
        campaign: str | None = None,
        ttl_ms: int = limits.TTL_MS_DEFAULT,
        partial: bool = False,
        prefer_locations: Sequence[str] = (),
    ) -> Result:
        """Hold stock of `lines` ((sku, qty) pairs) for `channel`.

        Walks the channel's sources in order (locations named in prefer_locations first)
        and splits a line across sources when one is short. All lines or none, unless
        `partial`. With `campaign`, draws only from the campaign's pool, within its window
        and the customer's per-SKU limit. The hold expires after ttl_ms unless committed,
        released or extended. Repeating the call with the same reservation_id and content
        returns the first outcome (replayed=True); other content gives ID_CONFLICT.
        A rejection changes nothing and is not remembered.
        """
        return self.reserve_many([ReserveRequest(
            reservation_id, channel, lines, customer, campaign, ttl_ms, partial,
            prefer_locations)])[0]

    def reserve_many(self, requests: Sequence[ReserveRequest]) -> list[Result]:
        """Decide up to BATCH_OPS_MAX reservations in one call into the core and one
        durable batch. Results come in request order; see reserve() for each."""
        results, tickets = self._reserve_many(requests)
        for t in tickets:
            self._wait(t)
        return results

    def _reserve_many(self, requests: Sequence[ReserveRequest], *, isolate: bool = False
                      ) -> tuple[list[Result | StockgateError], list[Batch]]:
        """Decide requests; return their results and the batches to wait for.

        A malformed request raises before anything is decided, naming requests[i] and the
        field; with `isolate` its slot holds the exception instead and the others go on.
        """
        if not isinstance(requests, (list, tuple)):
            raise InvalidArgument("requests", "must be a list of ReserveRequest")
        check_count("requests", len(requests), 1, limits.BATCH_OPS_MAX)
        single = len(requests) == 1 or isolate  # isolated errors name the caller's field
        slots: list[Any] = [None] * len(requests)
        # The common request is checked in C; the others (None) get the full check.
        checked: list[tuple | None] = _core.check_plain_reserves(list(requests), _PLAIN_LIMITS)
        if None in checked:
            for i, req in enumerate(requests):
                if checked[i] is not None:
                    continue
                try:
                    if not isinstance(req, ReserveRequest):
                        raise InvalidArgument("", "must be a ReserveRequest")
                    checked[i] = self._check_request(req)
                except InvalidArgument as exc:
                    if not single or not exc.field:
                        field = f"requests[{i}]" + (f".{exc.field}" if exc.field else "")
                        exc = InvalidArgument(field, exc.problem)
                    if not isolate:
                        raise exc from None
                    slots[i] = exc
        with self._lock:
            now = self._begin()
            for i in _core.request_checks(checked, self._channels):
                exc = self._request_error(checked[i][1], "" if single else f"requests[{i}].")
                if exc is not None:
                    if not isolate:
                        raise exc
                    slots[i] = exc
                    checked[i] = None
            live = checked if None not in checked else [c for c in checked if c is not None]
            batch = self._batch
            mark = len(batch.events)  # what _begin's timers staged is not ours to wait for
            results = self._decide_reserves(live, now) if live else []
            staged = len(batch.events) > mark
            if staged:
                batch.ops += len(results)
                if batch.ops == len(results):
                    self._writer.wake()
        # Wait for our own batch, and for the batch of a replayed reservation that is
        # still on its way to disk (or whose write failed: that error is the answer).
        # A refusal that staged nothing waits for nothing.
        tickets = {id(t): t for _, t in results
                   if t is not None and (not t.done or t.error is not None)}
        if staged:
            tickets[id(batch)] = batch
        it = iter(results)
        for i, c in enumerate(checked):
            if c is not None:
                slots[i] = next(it)[0]
        return slots, list(tickets.values())

    def _request_error(self, key: tuple, prefix: str) -> StockgateError | None:
        """What makes a well-formed request unusable against the current catalogue."""
        channel, customer, campaign, _, _ = key
        if channel not in self._channels:
            return NotFound(prefix + "channel", channel)
        if campaign is not None and customer is None:
            c = self._campaigns.get(campaign)
            if c is not None and c.customer_limit:
                return InvalidArgument(prefix + "customer", f"is required: campaign "
                                       f"{campaign!r} has a per-customer limit")
        return None

    def _sources(self, key: tuple, prefer: tuple[str, ...], sku: str):
        """(bucket ids to walk for one line, or an Outcome refusing it)."""
        channel, _, campaign, _, _ = key
        if campaign is not None:
            c = self._campaigns[campaign]
            if sku not in c.quotas:
                return Outcome.UNKNOWN_SKU
            b = self._index.get(sku, c.location, c.pool)
            return [] if b < 0 else [b]
        found = self._index.find(sku, self._place_codes(channel, prefer))
        return Outcome.UNKNOWN_SKU if found is None else found

    def _place_codes(self, channel: str, prefer: tuple[str, ...]) -> tuple[int, ...]:
        """The channel's sources (preferred locations first) as the index's place codes,
        cached until the channel changes or the index learns a new name."""
        index = self._index
        if self._codes_names != index.names_count:
            self._codes.clear()
            self._codes_names = index.names_count
        codes = self._codes.get((channel, prefer))
        if codes is None:
            sources = self._channels[channel][0]
            if prefer:
                rank = {loc: i for i, loc in enumerate(prefer)}
                sources = sorted(sources, key=lambda s: rank.get(s[0], len(rank)))
            codes = tuple(index.place_code(loc, pool) for loc, pool in sources)
            if len(self._codes) >= limits.PLACE_CODES_CACHED_MAX:
                self._codes.clear()
            self._codes[(channel, prefer)] = codes
        return codes

    def _decide_reserves(self, checked: list[tuple], now: int) -> list[tuple[Result, Any]]:
        """Decide the checked requests, answering exactly as the same calls one by one
        would: refusals in Python, stock in one core call per run of distinct ids. A
        repeated id ends the run, so it sees what the first one made (a replay) or, if the
        first was refused (and so is not remembered), is decided in its turn."""
        out: list[Any] = [None] * len(checked)
        todo: list[tuple[int, list, tuple]] = []  # (request index, per-line sources, key)
        ops: list[tuple] = []  # the core's op of each todo entry (see _core_op)
        seen: set[str] = set()
        res, index, channels = self._res, self._index, self._channels
        codes: dict[tuple[str, tuple[str, ...]], tuple[int, ...]] = {}  # this call's sources
        i, n = 0, len(checked)
        while True:
            # The common request (fresh id, no campaign, known SKUs) is planned in C, up to
            # the first one that needs what follows.
            i = _core.plan_reserves(checked, i, seen, res, index, codes, self._place_codes,
                                    channels, todo, ops)
            if i == n:
                break
            rid, key, _, prefer = checked[i]
            if rid in seen:
                self._record_holds(todo, ops, checked, out, now)
                todo, ops, seen = [], [], set()
                continue
            seen.add(rid)
            per_line = self._plan(rid, key, prefer, now, out, i)
            if per_line is not None:
                todo.append((i, per_line, key))
                ops.append(self._core_op(per_line, key))
            i += 1
        self._record_holds(todo, ops, checked, out, now)
        self._alerts(now)
        return out

    def _plan(self, rid: str, key: tuple, prefer: tuple[str, ...], now: int, out: list,
              i: int) -> list | None:
        """The per-line sources of request i, or None with its answer put in out[i] (a
        replay, or a refusal that needs no stock)."""
        kept = dict.get(self._res, rid)  # dict's own get: a fresh id is the rule
        if kept is not None:
            out[i] = self._replay(self._res.get(rid), key)
            return None
        if key[2] is not None:  # a campaign
            refusal = self._campaign_refusal(key, now)
            if refusal is not None:
                out[i] = (self._refused(key, refusal), None)
                return None
            per_line = [self._sources(key, prefer, sku) for sku, _ in key[4]]
        else:
            places = self._place_codes(key[0], prefer)
            per_line = []
            for sku, _ in key[4]:
                found = self._index.find(sku, places)
                per_line.append(Outcome.UNKNOWN_SKU if found is None else found)
        if not key[3] and Outcome.UNKNOWN_SKU in per_line:
            unknown = [isinstance(s, Outcome) for s in per_line]
            out[i] = (self._refused(key, Outcome.UNKNOWN_SKU, unknown), None)
            return None
        return per_line

    def _record_holds(self, todo: list, ops: list, checked: list[tuple], out: list,
                      now: int) -> None:
        """Run the core over `ops` (one per `todo` entry) and record each granted hold."""
        if not todo:
            return
        # The one call every granted reservation passes through, in C: what _put_res()
        # and _emit() do for it, its record written as _Res.encode() would (see Ledger).
        events = self._batch.events
        staged, seq = len(events), self._seq
        try:
            self._seq = _core.hold_and_record(
                self._counters, self._limits, self._index, ops, self._touched, LineResult,
                Allocation, _OUTCOMES, todo, checked, out, self._res, self._expiry,
                self._batch.puts.setdefault("reservations", {}), events, seq, now,
                self._steady_now, Result, Reservation, State.HELD)
        except BaseException:
            # What was staged stands (and is written): never number an event twice.
            self._seq = seq + len(events) - staged
            raise
        assert self._seq == seq + len(events) - staged, "one event per recorded hold"

    def _refused(self, key: tuple, outcome: Outcome, unknown: list[bool] | None = None) -> Result:
        lines = tuple(
            LineResult(sku, qty, 0, Outcome.UNKNOWN_SKU if unknown and unknown[j] else outcome)
            for j, (sku, qty) in enumerate(key[4])
        )
        return Result(outcome, None, False, lines)

    def _replay(self, r: _Res, key: tuple) -> tuple[Result, Batch | None]:
        if r.req != key:
            return Result(Outcome.ID_CONFLICT, self._public(r), False), None
        pub = self._public(r)
        return Result(r.outcome, pub, True, pub.lines), r.ticket

    def _hold(self, ops: list[tuple[list, tuple]]) -> list[tuple[int, Any, tuple, list]]:
        """Take stock for many operations in one core call.

        Each op is (per-line sources, request key). Returns per op (outcome code, lines
        to store or None when refused, line results, [bucket, units] taken). Granted units
        are taken from the counters; nothing is staged (held is not stored per bucket).
        """
        return _core.hold(self._counters, self._limits, self._index,
                          [self._core_op(per_line, key) for per_line, key in ops],
                          self._touched, LineResult, Allocation, _OUTCOMES)

    def _core_op(self, per_line: list, key: tuple) -> tuple:
        """The core's op for one request: (per_line, lines, flags, limit counters)."""
        channel, customer, campaign, partial, lines = key
        presale = self._channels[channel][1] and campaign is None
        flags = ((_core.FLAG_PARTIAL if partial else 0)
                 | (_core.FLAG_PRESALE if presale else 0))
        lims = None
        if campaign is not None:
            c = self._campaigns.get(campaign)
            if c is not None and c.customer_limit:
                lims = [self._limit_counter(campaign, customer, sku)
                        if not isinstance(src, Outcome) else -1
                        for (sku, _), src in zip(lines, per_line)]
        return (per_line, lines, flags, lims)

    def _put_res(self, r: _Res) -> None:
        self._batch.put("reservations", r.rid.encode(), r.encode())
        r.ticket = self._batch

    def _allocs(self, alloc: list[int]) -> tuple[Allocation, ...]:
        out = []
        for x in range(0, len(alloc), 2):
            loc, pool = self._index.place(alloc[x])
            out.append(Allocation(loc, pool, alloc[x + 1]))
        return tuple(out)

    def _public(self, r: _Res, lines: tuple[LineResult, ...] | None = None) -> Reservation:
        if lines is None:
            lines = tuple(
                LineResult(sku, q, g, Outcome(lo), self._allocs(alloc))
                for sku, q, g, alloc, lo in r.lines
            )
        return Reservation(
            r.rid, r.channel, r.state, lines, r.customer, r.campaign, r.created_ms,
            r.expires_ms, r.resolved_ms,
            tuple(map(tuple, r.committed)) if r.committed else (),
        )

    def _give_back(self, r: _Res, keep: dict[int, int] | None = None) -> list[list[int]]:
        """Return a reservation's held units to their buckets (and customer allowance),
        except `keep` units per line index, which are committed. Returns held deltas."""
        held = []
        lim = None
        if r.campaign is not None and r.customer is not None:
            c = self._campaigns.get(r.campaign)
            if c is not None and c.customer_limit:
                lim = c
        for li, (sku, _, _, alloc, _) in enumerate(r.lines):
            commit_left = keep.get(li, 0) if keep else 0
            released_line = 0
            for x in range(0, len(alloc), 2):
                b, units = alloc[x], alloc[x + 1]
                c_units = min(units, commit_left)
                commit_left -= c_units
                self._touch(b)
                if c_units:
                    self._counters.settle(b, c_units)
                if units - c_units:
                    self._counters.credit(b, units - c_units)
                    released_line += units - c_units
                held.append([b, -units])
                if b in self._ended_pools:
                    self._return_to_source(b)
            if lim is not None and released_line:
                self._limits.credit(self._limit_counter(r.campaign, r.customer, sku),
                                    released_line)
        return held

    def _resolve(self, r: _Res, to: State, now: int, kind: str,
                 keep: dict[int, int] | None = None) -> None:
        r.state = transition(r.state, to)
        held = self._give_back(r, keep)
        on_hand = []
        if keep:
            commit_left = dict(keep)
            for li, (_, _, _, alloc, _) in enumerate(r.lines):
                left = commit_left.get(li, 0)
                for x in range(0, len(alloc), 2):
                    c_units = min(alloc[x + 1], left)
                    left -= c_units
                    if c_units:
                        on_hand.append([alloc[x], -c_units])
        r.resolved_ms = now
        self._put_res(r)
        self._emit(now, kind, id=r.rid, channel=r.channel, held=held, on_hand=on_hand)
        self._alerts(now)

    def _held(self, reservation_id: str, replays: Callable[[_Res], bool] | None = None
              ) -> tuple[_Res | None, tuple[Result, Batch | None] | None]:
        """(the reservation, None) when it is held; else (None, the answer): NOT_FOUND, the
        first outcome of an identical earlier call (`replays` says which), or NOT_HELD.
        An answer about a state still on its way to disk waits for that batch."""
        r = self._res.get(reservation_id)
        if r is None:
            return None, (Result(Outcome.NOT_FOUND), None)
        if replays is not None and replays(r):
            return None, (Result(Outcome.OK, self._public(r), True), r.ticket)
        if r.state != State.HELD:
            return None, (Result(Outcome.NOT_HELD, self._public(r)), r.ticket)
        return r, None

    def commit(self, reservation_id: str, lines: Sequence[tuple[str, int]] | None = None) -> Result:
        """The order is paid: held units leave on_hand. With `lines` ((sku, qty) pairs),
        commit only those units and release the rest (partial shipment). Repeating the
        same commit returns its first outcome; a different commit of a resolved
        reservation gets NOT_HELD with the reservation's state."""
        result, ticket = self._commit(reservation_id, lines)
        self._wait(ticket)
        return result

    def _commit(self, reservation_id, lines):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        want = None
        if lines is not None:
            merged: dict[str, int] = {}
            for sku, q in self._check_lines(lines):
                merged[sku] = merged.get(sku, 0) + q
            want = tuple(sorted(merged.items()))
        with self._lock:
            now = self._begin()
            r, answer = self._held(reservation_id, lambda r: r.state == State.COMMITTED
                                   and r.commit_req == want)
            if answer is not None:
                return answer
            keep: dict[int, int] = {}
            if want is None:
                keep = {li: ln[2] for li, ln in enumerate(r.lines)}
            else:
                held_per_sku: dict[str, int] = {}
                for ln in r.lines:
                    held_per_sku[ln[0]] = held_per_sku.get(ln[0], 0) + ln[2]
                for sku, q in want:
                    if q > held_per_sku.get(sku, 0):
                        raise InvalidArgument(
                            "lines.qty", f"commits {q} of {sku!r}; the reservation holds "
                                         f"{held_per_sku.get(sku, 0)}")
                left = dict(want)
                for li, ln in enumerate(r.lines):
                    take = min(ln[2], left.get(ln[0], 0))
                    if take:
                        keep[li] = take
                        left[ln[0]] -= take
            committed: dict[str, int] = {}
            for li, units in keep.items():
                sku = r.lines[li][0]
                committed[sku] = committed.get(sku, 0) + units
            r.committed = [[s, u] for s, u in committed.items()]
            r.commit_req = want
            self._resolve(r, State.COMMITTED, now, "committed", keep)
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def release(self, reservation_id: str) -> Result:
        """Cancel a hold: its units return to the buckets they came from. Releasing a
        released reservation again is OK (replayed); a committed or expired one gives
        NOT_HELD with its state."""
        result, ticket = self._release(reservation_id)
        self._wait(ticket)
        return result

    def _release(self, reservation_id):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            r, answer = self._held(reservation_id, lambda r: r.state == State.RELEASED)
            if answer is not None:
                return answer
            self._resolve(r, State.RELEASED, now, "released")
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def extend(self, reservation_id: str, ttl_ms: int) -> Result:
        """Keep a hold for ttl_ms from now (checkout needs more time)."""
        result, ticket = self._extend(reservation_id, ttl_ms)
        self._wait(ticket)
        return result

    def _extend(self, reservation_id, ttl_ms):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        check_int("ttl_ms", ttl_ms, limits.TTL_MS_MIN, limits.TTL_MS_MAX)
        with self._lock:
            now = self._begin()
            r, answer = self._held(reservation_id)
            if answer is not None:
                return answer
            r.state = transition(r.state, State.HELD)
            r.expires_ms = self._steady_now + ttl_ms
            heapq.heappush(self._expiry, (r.expires_ms, r.rid))
            self._put_res(r)
            self._emit(now, "extended", id=r.rid, expires_ms=r.expires_ms)
            ticket = self._staged()
            return Result(Outcome.OK, self._public(r)), ticket

    def amend(self, reservation_id: str, lines: Sequence[tuple[str, int]]) -> Result:
        """Replace the lines of a held reservation in one step. The old hold is counted as
        free for the new lines, so the holder never blocks itself; if the new lines cannot
        be held, the old hold stays exactly as it was and the outcome says why. The new
        lines walk the channel's sources in their own order (the first call's
        prefer_locations are not kept); the expiry stays as it was."""
        result, ticket = self._amend(reservation_id, lines)
        self._wait(ticket)
        return result

    def _amend(self, reservation_id, lines):
        check_id("reservation_id", reservation_id, limits.RESERVATION_ID_BYTES_MAX)
        new_lines = self._check_lines(lines)
        with self._lock:
            now = self._begin()
            r, answer = self._held(reservation_id)
            if answer is not None:
                return answer
            if tuple((ln[0], ln[1]) for ln in r.lines) == new_lines:
                pub = self._public(r)
                return Result(r.outcome if r.amend_outcome is None else r.amend_outcome, pub, True,
                              pub.lines), r.ticket
            key = (r.channel, r.customer, r.campaign, r.partial, new_lines)
            refusal = self._campaign_refusal(key, now)
            if refusal is not None:
                return self._refused(key, refusal), None
            per_line = [self._sources(key, (), sku) for sku, _ in new_lines]
            unknown = [isinstance(s, Outcome) for s in per_line]
            if any(unknown) and not r.partial:
                return self._refused(key, Outcome.UNKNOWN_SKU, unknown), None
            old_lines = r.lines
            # The old hold counts as free for the new lines; if they cannot be held, the
            # old hold is taken again exactly (nobody else decides while we hold the lock).
            self._credit_lines(r, old_lines, +1)
            (code, lines_out, line_results, held), = self._hold([(per_line, key)])
            outcome = _OUTCOMES[code]
            if lines_out is None:
                self._credit_lines(r, old_lines, -1)
                self._touched.clear()
                return Result(outcome, None, False, line_results), None
            r.state = transition(r.state, State.HELD)
            r.lines, r.amend_outcome = lines_out, outcome
            self._put_res(r)
            self._emit(now, "amended", id=r.rid, channel=r.channel,
                       held=[[b, -u] for b, u in self._pairs(old_lines)] + held)
            self._alerts(now)
            ticket = self._staged()
            return Result(outcome, self._public(r), False, line_results), ticket

    @staticmethod
    def _pairs(lines: list) -> list[tuple[int, int]]:
        out = []
        for _, _, _, alloc, _ in lines:
            for x in range(0, len(alloc), 2):
                out.append((alloc[x], alloc[x + 1]))
        return out

    def _credit_lines(self, r: _Res, lines: list, sign: int) -> None:
        """sign +1: give a hold's units back (buckets and allowance); -1: take them again."""
        lim = None
        if r.campaign is not None and r.customer is not None:
            c = self._campaigns.get(r.campaign)
            if c is not None and c.customer_limit:
                lim = c
        for sku, _, g, alloc, _ in lines:
            for x in range(0, len(alloc), 2):
                b = alloc[x]
                self._touch(b)
                if sign > 0:
                    self._counters.credit(b, alloc[x + 1])
                else:
                    self._counters.force_take(b, alloc[x + 1])
            if lim is not None and g:
                idx = self._limit_counter(r.campaign, r.customer, sku)
                if sign > 0:
                    self._limits.credit(idx, g)
                else:
                    self._limits.force_take(idx, g)
