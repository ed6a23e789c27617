"""The Inventory service: catalogue, movements, import, campaigns, reads and the check.

Admin calls wait for an fsync inside the engine, so they run on worker threads and the
event loop keeps serving the hot path meanwhile. Reads that only look at memory
(availability, stock, a reservation) run on the loop: a thread hop would cost more.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import grpc
import msgpack

from stockgate.engine import Engine, InvalidArgument, NotFound, limits
from stockgate.engine.limits import check_count, check_id, check_int
from stockgate.v1 import inventory_pb2, inventory_pb2_grpc, types_pb2

from . import wire
from .admission import Admission
from .auth import Authenticator, Caller
from .status import abort

# The engine says a transfer "received"; the contract says "arrived".
TRANSFER_STATES = {"in_transit": "in_transit", "received": "arrived"}
JOURNAL_HEAD_FIELDS = ("seq", "kind", "t")  # carried by JournalEvent's own fields


def _opt(s: str) -> str | None:
    """Empty string means "not given"."""
    return s or None


class InventoryService(inventory_pb2_grpc.InventoryServicer):
    """Every method needs an admin token except GetAvailability and GetReservation.
    Each call counts one operation, against the in-flight bound and the token's rate.

    Each method named like an RPC is that RPC of proto/stockgate/v1/inventory.proto,
    which documents it."""

    def __init__(self, engine: Engine, auth: Authenticator, admission: Admission, *,
                 on_failure: Callable[[BaseException], None] = lambda exc: None) -> None:
        self._engine = engine
        self._auth = auth
        self._admission = admission
        self._on_failure = on_failure
        self._checks: set[asyncio.Task] = set()  # consistency checks running

    async def _call(self, context: grpc.aio.ServicerContext, fn: Callable[..., Any],
                    *args: Any, thread: bool = True, caller: Caller | None = None,
                    **kwargs: Any) -> Any:
        """Run one engine call for an admin (or for `caller`, already checked), mapping
        its errors to statuses."""
        adm = self._admission
        try:
            if caller is None:
                caller = self._auth.admin(context)
            adm.admit(context, 1, caller.rate)
            try:
                if adm.paused:
                    await adm.resumed()
                    adm.check_deadline(context)
                if thread:
                    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))
                return fn(*args, **kwargs)
            finally:
                adm.leave()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            self._on_failure(exc)
            await abort(context, exc)

    # ------------------------------------------------------------------ catalogue

    async def AddLocation(self, request, context):
        await self._call(context, self._engine.add_location, request.location,
                         request.kind or "warehouse")
        return types_pb2.Empty()

    async def ListLocations(self, request, context):
        locs = await self._call(context, self._engine.locations, thread=False)
        return inventory_pb2.ListLocationsResponse(locations=locs)

    async def SetChannel(self, request, context):
        sources = [(s.location, s.pool) for s in request.sources]
        await self._call(context, self._engine.set_channel, request.channel, sources,
                         allow_presale=request.allow_presale)
        return types_pb2.Empty()

    async def ListChannels(self, request, context):
        chans = await self._call(context, self._engine.channels, thread=False)
        return inventory_pb2.ListChannelsResponse(channels=[
            inventory_pb2.Channel(
                channel=name, allow_presale=presale,
                sources=[inventory_pb2.Source(location=lo, pool=po) for lo, po in sources])
            for name, (sources, presale) in chans.items()])

    async def SetAllocationRule(self, request, context):
        await self._call(context, self._engine.set_allocation_rule, request.location,
                         dict(request.shares), sku=_opt(request.sku))
        return types_pb2.Empty()

    async def SetSafetyStock(self, request, context):
        await self._call(context, self._set_safety_stock, request)
        return types_pb2.Empty()

    def _set_safety_stock(self, m) -> None:
        if m.channel:
            if m.location or m.pool:
                raise InvalidArgument("channel", "excludes location and pool: give one "
                                                 "bucket (location, pool) or a channel")
            self._engine.set_safety_stock(m.units, sku=m.sku, channel=m.channel)
        else:
            self._engine.set_safety_stock(m.units, sku=m.sku, location=m.location,
                                          pool=m.pool)

    async def SetPresaleAllowance(self, request, context):
        await self._call(context, self._engine.set_presale_allowance, request.sku,
                         request.location, request.pool, request.units)
        return types_pb2.Empty()

    # ------------------------------------------------------------------ movements

    async def Receive(self, request, context):
        added = await self._call(context, self._engine.receive, request.sku, request.location,
                                 request.qty, pool=_opt(request.pool), ref=_opt(request.ref))
        return inventory_pb2.ReceiveResponse(added=added)

    async def Adjust(self, request, context):
        variance = await self._call(context, self._engine.adjust, request.sku,
                                    request.location, request.pool, request.on_hand,
                                    ref=_opt(request.ref))
        return inventory_pb2.AdjustResponse(variance=variance)

    async def Move(self, request, context):
        await self._call(context, self._engine.move, request.sku, request.location,
                         request.from_pool, request.to_pool, request.qty)
        return types_pb2.Empty()

    async def TransferOut(self, request, context):
        state = await self._call(context, self._engine.transfer_out, request.transfer_id,
                                 request.sku, request.from_location, request.from_pool,
                                 request.to_location, request.to_pool, request.qty)
        return inventory_pb2.TransferResponse(state=TRANSFER_STATES.get(state, state))

    async def TransferIn(self, request, context):
        state = await self._call(context, self._engine.transfer_in, request.transfer_id)
        return inventory_pb2.TransferResponse(state=TRANSFER_STATES.get(state, state))

    async def Import(self, request_iterator, context):
        try:
            self._auth.admin(context)
            rows: list[tuple[str, str, str, int]] = []
            chunk_no = 0
            async for chunk in request_iterator:
                n = len(chunk.rows)
                check_count(f"chunks[{chunk_no}].rows", n, 1, limits.IMPORT_CHUNK_ROWS)
                if len(rows) + n > limits.IMPORT_ROWS_MAX:
                    raise InvalidArgument("rows", f"exceed the limit of {limits.IMPORT_ROWS_MAX}"
                                                  " rows per import")
                base = len(rows)
                for j, r in enumerate(chunk.rows):
                    i = base + j
                    # Checked as they arrive, so a bad row stops the upload early.
                    check_id(f"rows[{i}].sku", r.sku, limits.SKU_BYTES_MAX)
                    check_id(f"rows[{i}].location", r.location, limits.LOCATION_BYTES_MAX)
                    check_id(f"rows[{i}].pool", r.pool, limits.POOL_BYTES_MAX)
                    check_int(f"rows[{i}].on_hand", r.on_hand, 0, limits.ON_HAND_MAX)
                    rows.append((r.sku, r.location, r.pool, r.on_hand))
                chunk_no += 1
            if not rows:
                raise InvalidArgument("rows", "has 0 items; send at least one ImportChunk row")
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            await abort(context, exc)
        n = await self._call(context, self._engine.import_rows, rows)
        return inventory_pb2.ImportResponse(rows=n)

    # ------------------------------------------------------------------ campaigns

    async def CreateCampaign(self, request, context):
        c = await self._call(context, self._engine.create_campaign, request.campaign_id,
                             channels=list(request.channels), start_ms=request.start_ms,
                             end_ms=request.end_ms, location=request.location,
                             source_pool=request.source_pool, quotas=dict(request.quotas),
                             customer_limit=request.customer_limit)
        return wire.campaign(c)

    async def StartCampaign(self, request, context):
        return wire.campaign(await self._call(context, self._engine.start_campaign,
                                              request.campaign_id))

    async def StopCampaign(self, request, context):
        return wire.campaign(await self._call(context, self._engine.stop_campaign,
                                              request.campaign_id))

    async def GetCampaign(self, request, context):
        c = await self._call(context, self._campaign, request.campaign_id, thread=False)
        return wire.campaign(c)

    def _campaign(self, campaign_id: str):
        c = self._engine.campaign(campaign_id)
        if c is None:
            raise NotFound("campaign_id", campaign_id)
        return c

    async def ListCampaigns(self, request, context):
        cs = await self._call(context, self._engine.campaigns, thread=False)
        return inventory_pb2.ListCampaignsResponse(campaigns=[wire.campaign(c) for c in cs])

    # ------------------------------------------------------------------ reads

    async def GetStock(self, request, context):
        buckets = await self._call(context, self._engine.stock, request.sku, thread=False)
        return inventory_pb2.GetStockResponse(buckets=[wire.bucket_stock(b) for b in buckets])

    async def GetAvailability(self, request, context):
        try:
            caller = self._auth.for_channel(context, request.channel)
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc)
        available = await self._call(
            context, self._engine.availability, request.channel, list(request.skus),
            campaign=_opt(request.campaign), prefer_locations=tuple(request.prefer_locations),
            thread=False, caller=caller)
        return inventory_pb2.GetAvailabilityResponse(available=available)

    async def GetReservation(self, request, context):
        try:
            caller = self._auth.caller(context)
        except Exception as exc:  # noqa: BLE001
            await abort(context, exc)
        r = await self._call(context, self._engine.reservation, request.reservation_id,
                             thread=False, caller=caller)
        if r is None or not caller.may_use(r.channel):
            await abort(context, NotFound("reservation_id", request.reservation_id))
        return wire.reservation(r)

    async def ReadJournal(self, request, context):
        from_seq = max(request.from_seq, 1)
        limit = request.limit or limits.JOURNAL_READ_EVENTS_MAX
        events = await self._call(context, self._engine.journal, from_seq, limit)
        out = inventory_pb2.ReadJournalResponse(last_seq=self._engine.last_seq)
        for ev in events:
            body = {k: v for k, v in ev.items() if k not in JOURNAL_HEAD_FIELDS}
            out.events.add(seq=ev["seq"], kind=ev["kind"], t_ms=ev["t"],
                           body=msgpack.packb(body, use_bin_type=True))
        return out

    async def Check(self, request, context):
        adm = self._admission
        try:
            caller = self._auth.admin(context)
            adm.admit(context, 1, caller.rate)
            # The check runs to its end even when its caller gives up (deadline, cancel):
            # engine.check() cannot be stopped, and until it returns every engine call
            # would wait on the loop, so new work stays held back until then.
            task = asyncio.get_running_loop().create_task(self._check())
            self._checks.add(task)
            task.add_done_callback(self._checked)
            report = await asyncio.shield(task)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status
            self._on_failure(exc)
            await abort(context, exc)
        return inventory_pb2.CheckResponse(
            ok=report.ok, drifts=report.drifts, buckets=report.buckets,
            live_reservations=report.live_reservations, events=report.events,
            totals=report.totals)

    async def _check(self):
        """engine.check() on a worker thread, new engine work held back meanwhile."""
        adm = self._admission
        try:
            async with adm.pause():
                return await asyncio.to_thread(self._engine.check)
        finally:
            adm.leave()

    def _checked(self, task: asyncio.Task) -> None:
        self._checks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._on_failure(task.exception())  # also when nobody waits for it any more
