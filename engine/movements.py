"""Stock movements besides reservations: receive, stocktake, move between pools, transfer
between locations, bulk import. Methods of Engine, kept here by concept."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import limits, records
from .campaigns import _check_pool
from .errors import Conflict, InvalidArgument, NotFound
from .limits import check_id, check_int, check_qty


class Movements:
    """Stock that arrives, is counted, or moves; never held units."""

    def _split(self, location: str, sku: str, qty: int) -> list[tuple[str, int]]:
        rule = self._rules.get((location, sku)) or self._rules.get((location, None))
        if rule is None:
            raise InvalidArgument(
                "pool", f"is required: location {location!r} has no allocation rule"
            )
        total = limits.PERCENT_TOTAL
        shares = [(pool, qty * pct // total, (qty * pct) % total, i)
                  for i, (pool, pct) in enumerate(rule)]
        left = qty - sum(s[1] for s in shares)
        order = sorted(range(len(shares)), key=lambda i: (-shares[i][2], shares[i][3]))
        out = [[pool, units] for pool, units, _, _ in shares]
        for i in order[:left]:
            out[i][1] += 1
        return [(p, u) for p, u in out if u > 0]

    def _add_on_hand(self, b: int, delta: int, field: str = "qty") -> None:
        after = self._counters.on_hand_of(b) + delta
        if after > limits.ON_HAND_MAX:
            raise InvalidArgument(
                field, f"would bring on_hand to {after}; the limit is {limits.ON_HAND_MAX}"
            )
        self._touch(b)
        self._counters.add_on_hand(b, delta)

    def _shift(self, src: int, dst: int, units: int, field: str = "qty") -> list[list[int]]:
        """Move available units from one bucket to another; both sides are checked before
        either changes. Returns the on_hand deltas for the journal."""
        after = self._counters.on_hand_of(dst) + units
        if after > limits.ON_HAND_MAX:
            raise InvalidArgument(
                field, f"would bring on_hand to {after}; the limit is {limits.ON_HAND_MAX}"
            )
        self._add_on_hand(src, -units)
        self._add_on_hand(dst, units)
        return [[src, -units], [dst, units]]

    def receive(self, sku: str, location: str, qty: int, *, pool: str | None = None,
                ref: str | None = None) -> dict[str, int]:
        """Stock arrives (purchase receipt, customer return). Without `pool` it splits by
        the location's allocation rule. Returns units added per pool."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        check_qty("qty", qty)
        if pool is not None:
            _check_pool("pool", pool)
        if ref is not None:
            check_id("ref", ref, limits.REF_BYTES_MAX)
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            split = [(pool, qty)] if pool is not None else self._split(location, sku, qty)
            for p, u in split:  # validate all before changing any
                b = self._index.get(sku, location, p)
                if b >= 0 and self._counters.on_hand_of(b) + u > limits.ON_HAND_MAX:
                    raise InvalidArgument("qty", f"would bring on_hand over {limits.ON_HAND_MAX}")
            deltas = []
            for p, u in split:
                b = self._bucket(sku, location, p)
                self._add_on_hand(b, u)
                deltas.append([b, u])
            self._emit(now, "received", sku=sku, location=location, ref=ref, on_hand=deltas)
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)
        return dict(split)

    def adjust(self, sku: str, location: str, pool: str, on_hand: int,
               *, ref: str | None = None) -> int:
        """Stocktake: set a bucket's on_hand and journal the variance, which is returned.
        Existing holds stay; if on_hand falls below them, new reservations are blocked."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        _check_pool("pool", pool)
        check_int("on_hand", on_hand, 0, limits.ON_HAND_MAX)
        if ref is not None:
            check_id("ref", ref, limits.REF_BYTES_MAX)
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            b = self._bucket(sku, location, pool)
            variance = on_hand - self._counters.on_hand_of(b)
            if variance:
                self._add_on_hand(b, variance, "on_hand")
            self._emit(now, "adjusted", sku=sku, location=location, pool=pool, ref=ref,
                       variance=variance, on_hand=[[b, variance]])
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)
        return variance

    def _movable(self, sku: str, loc: str, pool: str, qty: int) -> int:
        b = self._index.get(sku, loc, pool)
        avail = 0 if b < 0 else self._counters.available(b)
        if avail < qty:
            raise Conflict("qty", f"is {qty}; only {max(avail, 0)} available in "
                                  f"({sku}, {loc}, {pool})")
        return b

    def move(self, sku: str, location: str, from_pool: str, to_pool: str, qty: int) -> None:
        """Rebalance available (never held) units between two pools of one location."""
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("location", location, limits.LOCATION_BYTES_MAX)
        _check_pool("from_pool", from_pool)
        _check_pool("to_pool", to_pool)
        check_qty("qty", qty)
        if from_pool == to_pool:
            raise InvalidArgument("to_pool", "must differ from from_pool")
        with self._lock:
            now = self._begin()
            self._require_location("location", location)
            src = self._movable(sku, location, from_pool, qty)
            dst = self._bucket(sku, location, to_pool)
            deltas = self._shift(src, dst, qty)
            self._emit(now, "moved", sku=sku, location=location, from_pool=from_pool,
                       to_pool=to_pool, on_hand=deltas)
            self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)

    def transfer_out(self, transfer_id: str, sku: str, from_location: str, from_pool: str,
                     to_location: str, to_pool: str, qty: int) -> str:
        """Ship available units to another location: they leave on_hand and are in transit
        until transfer_in(). Repeating the same transfer_id returns its state."""
        check_id("transfer_id", transfer_id, limits.TRANSFER_ID_BYTES_MAX)
        check_id("sku", sku, limits.SKU_BYTES_MAX)
        check_id("from_location", from_location, limits.LOCATION_BYTES_MAX)
        _check_pool("from_pool", from_pool)
        check_id("to_location", to_location, limits.LOCATION_BYTES_MAX)
        _check_pool("to_pool", to_pool)
        check_qty("qty", qty)
        body = [sku, from_location, from_pool, to_location, to_pool, qty]
        with self._lock:
            now = self._begin()
            old = self._transfers.get(transfer_id)
            if old is not None:
                if old[:6] != body:
                    raise Conflict("transfer_id", f"{transfer_id!r} was used for another transfer")
                ticket = self._staged()  # a replay: answered once the first is durable
            else:
                self._require_location("from_location", from_location)
                self._require_location("to_location", to_location)
                src = self._movable(sku, from_location, from_pool, qty)
                self._add_on_hand(src, -qty)
                rec = body + ["in_transit", now, None]
                self._transfers[transfer_id] = rec
                self._batch.put("transfers", transfer_id.encode(), records.pack(rec))
                self._emit(now, "transfer_out", transfer_id=transfer_id, sku=sku,
                           qty=qty, on_hand=[[src, -qty]])
                self._alerts(now)
                ticket = self._staged()
            state = self._transfers[transfer_id][6]
        self._wait(ticket)
        return state

    def transfer_in(self, transfer_id: str) -> str:
        """The transfer arrived: its units join the destination bucket. Idempotent."""
        check_id("transfer_id", transfer_id, limits.TRANSFER_ID_BYTES_MAX)
        with self._lock:
            now = self._begin()
            rec = self._transfers.get(transfer_id)
            if rec is None:
                raise NotFound("transfer_id", transfer_id)
            if rec[6] == "in_transit":
                sku, _, _, to_loc, to_pool, qty = rec[:6]
                dst = self._bucket(sku, to_loc, to_pool)
                self._add_on_hand(dst, qty)
                rec[6], rec[8] = "received", now
                self._batch.put("transfers", transfer_id.encode(), records.pack(rec))
                self._emit(now, "transfer_in", transfer_id=transfer_id, sku=sku, qty=qty,
                           on_hand=[[dst, qty]])
                self._alerts(now)
            ticket = self._staged()
        self._wait(ticket)
        return "received"

    def in_transit(self) -> dict[str, int]:
        """Units in transit per SKU."""
        with self._lock:
            out: dict[str, int] = {}
            for rec in self._transfers.values():
                if rec[6] == "in_transit":
                    out[rec[0]] = out.get(rec[0], 0) + rec[5]
            return out

    def import_rows(self, rows: Iterable[Sequence[Any]],
                    chunk_rows: int = limits.IMPORT_CHUNK_ROWS) -> int:
        """Bulk-load (sku, location, pool, on_hand) rows: each sets a bucket's on_hand, as a
        stocktake would. Every row is checked before anything changes; then the rows are
        written in transactions of chunk_rows. Returns the number of rows."""
        check_int("chunk_rows", chunk_rows, 1, limits.IMPORT_CHUNK_ROWS)
        clean: list[tuple[str, str, str, int]] = []
        for i, row in enumerate(rows):
            if len(clean) >= limits.IMPORT_ROWS_MAX:
                raise InvalidArgument("rows", f"exceed the limit of {limits.IMPORT_ROWS_MAX}")
            if not isinstance(row, (list, tuple)) or len(row) != 4:
                raise InvalidArgument(f"rows[{i}]", "must be (sku, location, pool, on_hand)")
            sku, loc, pool, on_hand = row
            if isinstance(on_hand, str) and on_hand.strip().lstrip("-").isdigit():
                on_hand = int(on_hand)
            clean.append((
                check_id(f"rows[{i}].sku", sku, limits.SKU_BYTES_MAX),
                check_id(f"rows[{i}].location", loc, limits.LOCATION_BYTES_MAX),
                _check_pool(f"rows[{i}].pool", pool),
                check_int(f"rows[{i}].on_hand", on_hand, 0, limits.ON_HAND_MAX),
            ))
        with self._lock:
            for i, (_, loc, _, _) in enumerate(clean):
                self._require_location(f"rows[{i}].location", loc)
        for start in range(0, len(clean), chunk_rows):
            chunk = clean[start:start + chunk_rows]
            with self._lock:
                now = self._begin()
                deltas = []
                for sku, loc, pool, on_hand in chunk:
                    b = self._bucket(sku, loc, pool)
                    variance = on_hand - self._counters.on_hand_of(b)
                    if variance:
                        self._add_on_hand(b, variance)
                        deltas.append([b, variance])
                self._emit(now, "imported", rows=len(chunk), on_hand=deltas)
                # A bulk load would raise an alert per bucket; its deltas say it all.
                self._touched.clear()
                ticket = self._staged()
            if ticket is not None:  # one transaction per chunk, even in async mode
                ticket.wait()
        return len(clean)
