"""The admin and read calls through both clients against a real server: catalogue,
movements, transfers, bulk import (streamed in chunks), journal and check."""

from __future__ import annotations

import client_harness
import pytest
from client_harness import connect, run, running_server

from stockgate.clients import BucketStock, Channel, InvalidArgument

kind = client_harness.kind  # fixture


@pytest.fixture
def empty(tmp_path):
    with running_server(tmp_path / "data") as s:
        yield s


def test_catalogue_movements_and_reads(empty, kind):
    async def scenario():
        async with connect(kind, empty.address) as c:
            await c.add_location("WH-EAST")
            await c.add_location("STORE-12", "store")
            assert await c.locations() == {"WH-EAST": "warehouse", "STORE-12": "store"}
            await c.set_allocation_rule("WH-EAST", {"online": 80, "offline": 20})
            await c.set_allocation_rule("STORE-12", {"offline": 100})
            await c.set_allocation_rule("WH-EAST", {"online": 50, "offline": 50}, sku="SKU-B")
            await c.set_channel("tmall", [("WH-EAST", "online")])
            await c.set_channel("pos-12", [("STORE-12", "offline"), ("WH-EAST", "offline")],
                                allow_presale=False)
            channels = {ch.channel: ch for ch in await c.channels()}
            assert channels["pos-12"] == Channel(
                "pos-12", (("STORE-12", "offline"), ("WH-EAST", "offline")), False)

            assert await c.receive("SKU-A", "WH-EAST", 10, ref="PO-1") == {
                "online": 8, "offline": 2}
            assert await c.receive("SKU-B", "WH-EAST", 10) == {"online": 5, "offline": 5}
            assert await c.receive("SKU-A", "STORE-12", 3, pool="offline") == {"offline": 3}
            assert await c.adjust("SKU-A", "WH-EAST", "online", 6, ref="count-7") == -2
            await c.move("SKU-A", "WH-EAST", "offline", "online", 1)
            assert await c.availability("tmall", ["SKU-A", "SKU-B", "SKU-X"]) == {
                "SKU-A": 7, "SKU-B": 5, "SKU-X": 0}

            assert await c.transfer_out("t-1", "SKU-A", "WH-EAST", "online", "STORE-12",
                                        "offline", 2) == "in_transit"
            assert await c.transfer_out("t-1", "SKU-A", "WH-EAST", "online", "STORE-12",
                                        "offline", 2) == "in_transit"  # repeated: same
            assert await c.transfer_in("t-1") == "arrived"
            stock = {(b.location, b.pool): b for b in await c.stock("SKU-A")}
            assert stock["WH-EAST", "online"] == BucketStock("SKU-A", "WH-EAST", "online",
                                                             5, 0, 5, 0, 0)
            assert stock["STORE-12", "offline"].on_hand == 5
            assert await c.stock("SKU-NONE") == []

            await c.set_safety_stock("SKU-A", 4, location="WH-EAST", pool="online")
            await c.set_presale_allowance("SKU-A", "WH-EAST", "online", 3)
            stock = {(b.location, b.pool): b for b in await c.stock("SKU-A")}
            assert stock["WH-EAST", "online"].safety_stock == 4
            assert stock["WH-EAST", "online"].presale_units == 3

            page = await c.journal(1, 5)
            assert len(page.events) == 5 and page.last_seq >= 5
            assert [e.seq for e in page.events] == [1, 2, 3, 4, 5]
            assert all(isinstance(e.fields, dict) and e.kind for e in page.events)
            report = await c.check()
            assert report.ok and report.drifts == () and report.buckets >= 5
    run(scenario())


def test_import_streams_rows_in_chunks_and_is_all_or_nothing(empty, kind):
    async def scenario():
        async with connect(kind, empty.address) as c:
            await c.add_location("WH-EAST")
            rows = ((f"SKU-{i}", "WH-EAST", "online", i % 7) for i in range(12_345))
            assert await c.import_rows(rows) == 12_345
            assert [b.on_hand for b in await c.stock("SKU-12344")] == [12_344 % 7]

            mapping_rows = [{"sku": "SKU-M", "location": "WH-EAST", "pool": "online",
                             "on_hand": 9}]
            assert await c.import_rows(mapping_rows) == 1

            def with_a_bad_row():
                for i in range(10_005):
                    yield ("SKU-N", "WH-EAST", "online", -1 if i == 10_003 else 5)

            with pytest.raises(InvalidArgument) as e:
                await c.import_rows(with_a_bad_row())
            assert e.value.field.startswith("rows[10003]")
            assert await c.stock("SKU-N") == []  # nothing of it was applied

            with pytest.raises(InvalidArgument) as e:  # refused before sending
                await c.import_rows([("SKU-P", "WH-EAST", "online", 1), ("SKU-Q", 3)])
            assert e.value.field == "rows[1]"
            assert await c.stock("SKU-P") == []
    run(scenario())


def test_import_takes_an_async_iterable_too(empty):
    from stockgate.clients import AsyncClient

    async def scenario():
        async with AsyncClient(empty.address, client_harness.ADMIN) as c:
            await c.add_location("WH-EAST")

            async def rows():
                for i in range(10_001):
                    yield (f"SKU-{i}", "WH-EAST", "online", 1)

            assert await c.import_rows(rows()) == 10_001
    run(scenario())
