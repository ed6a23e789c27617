"""The Inventory service over the wire: every RPC, driven as an operator would."""

from __future__ import annotations

import grpc
import msgpack
import pytest
from server_calls import ADMIN, TMALL, I, T, connect, details, reserve, run


@pytest.fixture
def empty_server(server_config, start_server):
    return start_server(server_config)


async def _catalogue_from_nothing(s):
    inv = s.inventory
    kw = {"metadata": ADMIN, "timeout": 10}
    await inv.AddLocation(I.AddLocationRequest(location="WH-EAST"), **kw)
    await inv.AddLocation(I.AddLocationRequest(location="STORE-12", kind="store"), **kw)
    await inv.SetAllocationRule(I.SetAllocationRuleRequest(
        location="WH-EAST", shares={"online": 80, "offline": 20}), **kw)
    await inv.SetAllocationRule(I.SetAllocationRuleRequest(
        location="WH-EAST", sku="SKU-9", shares={"online": 50, "offline": 50}), **kw)
    await inv.SetChannel(I.SetChannelRequest(channel="tmall", sources=[
        I.Source(location="WH-EAST", pool="online")]), **kw)
    await inv.SetChannel(I.SetChannelRequest(channel="presale", allow_presale=True, sources=[
        I.Source(location="WH-EAST", pool="online")]), **kw)
    locs = await inv.ListLocations(T.Empty(), **kw)
    chans = await inv.ListChannels(T.Empty(), **kw)
    added = await inv.Receive(I.ReceiveRequest(sku="SKU-1", location="WH-EAST", qty=10,
                                               ref="PO-1"), **kw)
    added9 = await inv.Receive(I.ReceiveRequest(sku="SKU-9", location="WH-EAST", qty=10), **kw)
    into = await inv.Receive(I.ReceiveRequest(sku="SKU-2", location="WH-EAST", qty=4,
                                              pool="online"), **kw)
    return locs, chans, added, added9, into


def test_catalogue_and_receive(empty_server):
    async def main():
        async with connect(empty_server.address) as s:
            return await _catalogue_from_nothing(s)

    locs, chans, added, added9, into = run(main())
    assert dict(locs.locations) == {"WH-EAST": "warehouse", "STORE-12": "store"}
    by_name = {c.channel: c for c in chans.channels}
    assert [(x.location, x.pool) for x in by_name["tmall"].sources] == [("WH-EAST", "online")]
    assert by_name["presale"].allow_presale and not by_name["tmall"].allow_presale
    assert dict(added.added) == {"online": 8, "offline": 2}
    assert dict(added9.added) == {"online": 5, "offline": 5}
    assert dict(into.added) == {"online": 4}
    assert empty_server.engine.check().ok


def test_movements_safety_and_presale(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 100)  # 80 online, 20 offline

    async def main():
        kw = {"metadata": ADMIN, "timeout": 10}
        async with connect(server.address) as s:
            inv = s.inventory
            adj = await inv.Adjust(I.AdjustRequest(sku="SKU-1", location="WH-EAST",
                                                   pool="offline", on_hand=15, ref="count-7"),
                                   **kw)
            await inv.Move(I.MoveRequest(sku="SKU-1", location="WH-EAST", from_pool="online",
                                         to_pool="offline", qty=10), **kw)
            out = await inv.TransferOut(I.TransferOutRequest(
                transfer_id="T-1", sku="SKU-1", from_location="WH-EAST", from_pool="online",
                to_location="WH-WEST", to_pool="online", qty=5), **kw)
            again = await inv.TransferOut(I.TransferOutRequest(
                transfer_id="T-1", sku="SKU-1", from_location="WH-EAST", from_pool="online",
                to_location="WH-WEST", to_pool="online", qty=5), **kw)
            arrived = await inv.TransferIn(I.TransferInRequest(transfer_id="T-1"), **kw)
            await inv.SetSafetyStock(I.SetSafetyStockRequest(
                sku="SKU-1", location="WH-EAST", pool="online", units=50), **kw)
            await inv.SetSafetyStock(I.SetSafetyStockRequest(
                sku="SKU-1", channel="tmall", units=40), **kw)
            await inv.SetPresaleAllowance(I.SetPresaleAllowanceRequest(
                sku="SKU-1", location="WH-EAST", pool="online", units=7), **kw)
            stock = await inv.GetStock(I.GetStockRequest(sku="SKU-1"), **kw)
            with pytest.raises(grpc.aio.AioRpcError) as too_much:
                await inv.Move(I.MoveRequest(sku="SKU-1", location="WH-EAST",
                                             from_pool="online", to_pool="offline",
                                             qty=1_000), **kw)
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await inv.TransferIn(I.TransferInRequest(transfer_id="T-404"), **kw)
            with pytest.raises(grpc.aio.AioRpcError) as both:
                await inv.SetSafetyStock(I.SetSafetyStockRequest(
                    sku="SKU-1", channel="tmall", location="WH-EAST", units=1), **kw)
            return adj, out, again, arrived, stock, too_much.value, unknown.value, both.value

    adj, out, again, arrived, stock, too_much, unknown, both = run(main())
    assert adj.variance == -5
    assert (out.state, again.state, arrived.state) == ("in_transit", "in_transit", "arrived")
    rows = {(b.location, b.pool): b for b in stock.buckets}
    east = rows[("WH-EAST", "online")]
    assert (east.on_hand, east.held, east.available) == (65, 0, 65)
    assert (east.presale_units, east.safety_stock) == (7, 50)
    assert rows[("WH-WEST", "online")].on_hand == 5
    assert rows[("WH-EAST", "offline")].on_hand == 25
    assert too_much.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert details(too_much)["bad_request"][0][0] == "qty"
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    assert details(unknown)["bad_request"][0][0] == "transfer_id"
    assert both.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert eng.check().ok


def test_availability_and_reservation_reads(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 10, pool="online")
    eng.reserve("o-1", "tmall", [("SKU-1", 3)])
    eng.receive("SKU-2", "STORE-12", 4)
    eng.reserve("p-1", "pos-12", [("SKU-2", 1)])

    async def main():
        async with connect(server.address) as s:
            inv = s.inventory
            avail = await inv.GetAvailability(I.GetAvailabilityRequest(
                channel="tmall", skus=["SKU-1", "SKU-2", "SKU-none"]), metadata=TMALL,
                timeout=10)
            res = await inv.GetReservation(I.GetReservationRequest(reservation_id="o-1"),
                                           metadata=TMALL, timeout=10)
            errors = []
            for req in (I.GetReservationRequest(reservation_id="p-1"),  # pos-12's
                        I.GetReservationRequest(reservation_id="nope")):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await inv.GetReservation(req, metadata=TMALL, timeout=10)
                errors.append(e.value.code())
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await inv.GetAvailability(I.GetAvailabilityRequest(channel="tmall"),
                                          metadata=TMALL, timeout=10)
            return avail, res, errors, bad.value

    avail, res, errors, bad = run(main())
    assert dict(avail.available) == {"SKU-1": 7, "SKU-2": 0, "SKU-none": 0}
    assert res.reservation_id == "o-1" and res.lines[0].granted == 3
    assert errors == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND]
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(bad)["bad_request"][0][0] == "skus"


def test_campaign_lifecycle(server):
    eng = server.engine
    eng.receive("SKU-1", "WH-EAST", 100, pool="online")
    now = eng.clock.now_ms()

    async def main():
        kw = {"metadata": ADMIN, "timeout": 10}
        async with connect(server.address) as s:
            inv = s.inventory
            created = await inv.CreateCampaign(I.CreateCampaignRequest(
                campaign_id="d11", channels=["tmall"], start_ms=now + 3_600_000,
                end_ms=now + 7_200_000, location="WH-EAST", source_pool="online",
                quotas={"SKU-1": 30}, customer_limit=2), **kw)
            started = await inv.StartCampaign(I.CampaignRequest(campaign_id="d11"), **kw)
            got = await s.reservations.Reserve(reserve(
                "f-1", "tmall", ("SKU-1", 3), campaign="d11", customer="c-1"), **kw)
            got2 = await s.reservations.Reserve(reserve(
                "f-2", "tmall", ("SKU-1", 2), campaign="d11", customer="c-1"), **kw)
            shown = await inv.GetCampaign(I.CampaignRequest(campaign_id="d11"), **kw)
            stopped = await inv.StopCampaign(I.CampaignRequest(campaign_id="d11"), **kw)
            listed = await inv.ListCampaigns(T.Empty(), **kw)
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await inv.GetCampaign(I.CampaignRequest(campaign_id="nope"), **kw)
            with pytest.raises(grpc.aio.AioRpcError) as dup:
                await inv.CreateCampaign(I.CreateCampaignRequest(
                    campaign_id="d11", channels=["tmall"], start_ms=now, end_ms=now + 1000,
                    location="WH-EAST", source_pool="online", quotas={"SKU-1": 1}), **kw)
            return created, started, got, got2, shown, stopped, listed, missing.value, dup.value

    created, started, got, got2, shown, stopped, listed, missing, dup = run(main())
    assert created.state == "scheduled" and created.pool == "campaign:d11"
    assert started.state == "active" and dict(started.carved) == {"SKU-1": 30}
    assert got.outcome == T.OUTCOME_CUSTOMER_LIMIT
    assert got2.outcome == T.OUTCOME_OK and got2.reservation.campaign == "d11"
    assert shown.customer_limit == 2 and list(shown.channels) == ["tmall"]
    assert stopped.state == "ended" and dict(stopped.returned) == {"SKU-1": 28}
    assert [c.campaign_id for c in listed.campaigns] == ["d11"]
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert dup.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert eng.check().ok


def test_import_stream_journal_and_check(server):
    eng = server.engine

    async def rows(chunks):
        for chunk in chunks:
            yield I.ImportChunk(rows=chunk)

    good = [[I.StockRow(sku=f"SKU-{i}", location="WH-EAST", pool="online", on_hand=i)
             for i in range(c * 100, c * 100 + 100)] for c in range(3)]
    bad = [good[0], [I.StockRow(sku="SKU-x", location="WH-EAST", pool="online", on_hand=1),
                     I.StockRow(sku="", location="WH-EAST", pool="online", on_hand=1)]]
    nowhere = [[I.StockRow(sku="SKU-y", location="NOWHERE", pool="online", on_hand=1)]]

    async def main():
        kw = {"metadata": ADMIN, "timeout": 10}
        async with connect(server.address) as s:
            inv = s.inventory
            done = await inv.Import(rows(good), **kw)
            errs = []
            for chunks in (bad, nowhere):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await inv.Import(rows(chunks), **kw)
                errs.append(e.value)
            journal = await inv.ReadJournal(I.ReadJournalRequest(from_seq=0, limit=5), **kw)
            tail = await inv.ReadJournal(I.ReadJournalRequest(from_seq=journal.last_seq),
                                         **kw)
            check = await inv.Check(T.Empty(), **kw)
            return done, errs, journal, tail, check

    done, (bad_err, nowhere_err), journal, tail, check = run(main())
    assert done.rows == 300
    assert eng.stock("SKU-250")[0].on_hand == 250
    assert bad_err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(bad_err)["bad_request"][0][0] == "rows[101].sku"
    assert nowhere_err.code() == grpc.StatusCode.NOT_FOUND
    assert details(nowhere_err)["bad_request"][0][0] == "rows[0].location"
    assert eng.stock("SKU-x") == []
    assert [e.seq for e in journal.events] == [1, 2, 3, 4, 5]
    assert journal.events[0].kind == "location_set"
    assert msgpack.unpackb(journal.events[0].body)["location"] == "WH-EAST"
    assert [e.kind for e in tail.events] == ["imported"]
    assert check.ok and not check.drifts and check.buckets >= 300
    assert check.totals["adjusted"] == sum(range(300))


def test_reservations_read_as_admin(server):
    server.engine.receive("SKU-1", "WH-EAST", 10, pool="online")

    async def main():
        async with connect(server.address) as s:
            await s.reservations.Reserve(reserve("o-9", "tmall", ("SKU-1", 1)),
                                         metadata=ADMIN, timeout=10)
            return await s.inventory.GetReservation(
                I.GetReservationRequest(reservation_id="o-9"), metadata=ADMIN, timeout=10)

    assert run(main()).state == T.STATE_HELD

