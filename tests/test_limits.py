"""Every limit a caller can hit, at N (accepted) and N+1 (refused, naming field and limit),
and malformed input: refused with InvalidArgument, and nothing changed."""

from __future__ import annotations

import pytest

from stockgate.engine import Conflict, Engine, InvalidArgument, Outcome, ReserveRequest, limits
from stockgate.engine.limits import (
    BATCH_OPS_MAX,
    CAMPAIGN_BYTES_MAX,
    CAMPAIGN_WINDOW_MS_MAX,
    CHANNEL_BYTES_MAX,
    CHANNELS_PER_CAMPAIGN_MAX,
    CUSTOMER_BYTES_MAX,
    IMPORT_CHUNK_ROWS,
    JOURNAL_READ_EVENTS_MAX,
    LINES_PER_RESERVATION_MAX,
    LOCATION_BYTES_MAX,
    ON_HAND_MAX,
    POOL_BYTES_MAX,
    POOLS_PER_RULE_MAX,
    PRESALE_UNITS_MAX,
    QTY_MAX,
    RESERVATION_ID_BYTES_MAX,
    SKU_BYTES_MAX,
    SKUS_PER_CAMPAIGN_MAX,
    SKUS_PER_QUERY_MAX,
    SOURCES_PER_CHANNEL_MAX,
    TRANSFER_ID_BYTES_MAX,
    TTL_MS_MAX,
    TTL_MS_MIN,
)

LATER_MS = 2_000_000_000_000  # a campaign window still to come on the test clock


def fingerprint(engine: Engine):
    """Everything a refused call must leave as it was."""
    engine.flush()
    return ({s: engine.stock(s) for s in ("SKU-1", "SKU-2")}, engine.last_seq, engine.journal(),
            engine.live_reservations(), engine.channels(), engine.locations(),
            engine.campaigns(), engine.in_transit())


@pytest.fixture
def shop(book: Engine) -> Engine:
    book.receive("SKU-1", "WH-EAST", 100, pool="online")
    return book


def refused(engine: Engine, call, field: str, limit: int | None = None) -> InvalidArgument:
    before = fingerprint(engine)
    with pytest.raises(InvalidArgument) as ei:
        call()
    assert ei.value.field == field, str(ei.value)
    assert str(ei.value).startswith(field)
    if limit is not None:
        assert str(limit) in str(ei.value), str(ei.value)
    assert fingerprint(engine) == before
    return ei.value


# ------------------------------------------------------------------ identifiers, in bytes

def _reserve_id(e, v):
    return e.reserve(v, "tmall", [("SKU-1", 1)])


def _sku(e, v):
    return e.receive(v, "WH-EAST", 1, pool="online")


def _line_sku(e, v):
    return e.reserve("R-sku", "tmall", [(v, 1)])


def _customer(e, v):
    return e.reserve("R-cust", "tmall", [("SKU-1", 1)], customer=v)


def _location(e, v):
    return e.add_location(v)


def _pool(e, v):
    return e.receive("SKU-1", "WH-EAST", 1, pool=v)


def _channel(e, v):
    return e.set_channel(v, [("WH-EAST", "online")])


def _campaign(e, v):
    return e.create_campaign(v, channels=["tmall"], start_ms=LATER_MS, end_ms=LATER_MS + 10,
                             location="WH-EAST", source_pool="online", quotas={"SKU-1": 1})


def _transfer(e, v):
    return e.transfer_out(v, "SKU-1", "WH-EAST", "online", "STORE-12", "offline", 1)


ID_LIMITS = [
    ("reservation_id", RESERVATION_ID_BYTES_MAX, _reserve_id, "reservation_id"),
    ("sku (receive)", SKU_BYTES_MAX, _sku, "sku"),
    ("sku (a reservation line)", SKU_BYTES_MAX, _line_sku, "lines[0].sku"),
    ("customer", CUSTOMER_BYTES_MAX, _customer, "customer"),
    ("location", LOCATION_BYTES_MAX, _location, "location"),
    ("pool", POOL_BYTES_MAX, _pool, "pool"),
    ("channel", CHANNEL_BYTES_MAX, _channel, "channel"),
    ("campaign_id", CAMPAIGN_BYTES_MAX, _campaign, "campaign_id"),
    ("transfer_id", TRANSFER_ID_BYTES_MAX, _transfer, "transfer_id"),
]


@pytest.mark.parametrize("name, limit, call, field", ID_LIMITS, ids=[x[0] for x in ID_LIMITS])
@pytest.mark.parametrize("unit", ["a", "é", "货", "😀"])  # 1, 2, 3 and 4 UTF-8 bytes
def test_id_bytes_limit(shop, name, limit, call, field, unit):
    width = len(unit.encode())
    n = limit // width
    at = unit * n + "a" * (limit - n * width)  # exactly `limit` bytes
    assert len(at.encode()) == limit
    call(shop, at)  # accepted
    over = unit * n + "a" * (limit - n * width + 1)
    err = refused(shop, lambda: call(shop, over), field, limit)
    assert f"is {limit + 1} bytes" in str(err)


# ------------------------------------------------------------------ quantities

def test_qty_max_receive(book):
    assert book.receive("SKU-1", "WH-EAST", QTY_MAX, pool="online") == {"online": QTY_MAX}
    refused(book, lambda: book.receive("SKU-1", "WH-EAST", QTY_MAX + 1, pool="online"),
            "qty", QTY_MAX)


def test_qty_max_reserve_line(book):
    book.receive("SKU-1", "WH-EAST", QTY_MAX, pool="online")
    assert book.reserve("R1", "tmall", [("SKU-1", QTY_MAX)]).outcome == Outcome.OK
    refused(book, lambda: book.reserve("R2", "tmall", [("SKU-1", QTY_MAX + 1)]),
            "lines[0].qty", QTY_MAX)


def test_on_hand_max(book):
    assert book.adjust("SKU-1", "WH-EAST", "online", ON_HAND_MAX) == ON_HAND_MAX
    refused(book, lambda: book.adjust("SKU-1", "WH-EAST", "online", ON_HAND_MAX + 1),
            "on_hand", ON_HAND_MAX)
    # a receipt that would carry the bucket over the limit is refused too
    refused(book, lambda: book.receive("SKU-1", "WH-EAST", 1, pool="online"), "qty",
            ON_HAND_MAX)


def test_on_hand_max_by_rule_split(book):
    book.adjust("SKU-1", "WH-EAST", "offline", ON_HAND_MAX - 1)
    refused(book, lambda: book.receive("SKU-1", "WH-EAST", 10), "qty", ON_HAND_MAX)


def test_presale_units_max(book):
    book.set_presale_allowance("SKU-1", "WH-EAST", "online", PRESALE_UNITS_MAX)
    refused(book, lambda: book.set_presale_allowance("SKU-1", "WH-EAST", "online",
                                                     PRESALE_UNITS_MAX + 1),
            "units", PRESALE_UNITS_MAX)


def test_import_on_hand_max(book):
    assert book.import_rows([("SKU-1", "WH-EAST", "online", ON_HAND_MAX)]) == 1
    refused(book, lambda: book.import_rows([("SKU-2", "WH-EAST", "online", ON_HAND_MAX + 1)]),
            "rows[0].on_hand", ON_HAND_MAX)


# ------------------------------------------------------------------ shapes

def test_lines_per_reservation_max(shop):
    lines = [("SKU-1", 1)] * LINES_PER_RESERVATION_MAX
    assert shop.reserve("R1", "tmall", lines).outcome == Outcome.OK
    assert shop.reservation("R1").units == LINES_PER_RESERVATION_MAX
    refused(shop, lambda: shop.reserve("R2", "tmall", lines + [("SKU-1", 1)]), "lines",
            LINES_PER_RESERVATION_MAX)


def test_batch_ops_max(book):
    book.receive("SKU-1", "WH-EAST", 5_000, pool="online")
    reqs = [ReserveRequest(f"R{i}", "tmall", [("SKU-1", 1)]) for i in range(BATCH_OPS_MAX)]
    out = book.reserve_many(reqs)
    assert len(out) == BATCH_OPS_MAX
    assert sum(r.outcome == Outcome.OK for r in out) == 5_000
    reqs.append(ReserveRequest("R-over", "tmall", [("SKU-1", 1)]))
    refused(book, lambda: book.reserve_many(reqs), "requests", BATCH_OPS_MAX)


def test_bad_request_in_a_batch_names_its_index(shop):
    reqs = [ReserveRequest("R1", "tmall", [("SKU-1", 1)]),
            ReserveRequest("R2", "tmall", [("SKU-1", 0)])]
    refused(shop, lambda: shop.reserve_many(reqs), "requests[1].lines[0].qty")
    refused(shop, lambda: shop.reserve_many([]), "requests")
    refused(shop, lambda: shop.reserve_many([reqs[0], ("R3", "tmall")]), "requests[1]")


def test_sources_per_channel_max(book):
    pools = [("WH-EAST", f"p{i}") for i in range(SOURCES_PER_CHANNEL_MAX)]
    book.set_channel("wide", pools)
    assert len(book.channels()["wide"][0]) == SOURCES_PER_CHANNEL_MAX
    refused(book, lambda: book.set_channel("wider", pools + [("WH-EAST", "extra")]),
            "sources", SOURCES_PER_CHANNEL_MAX)


def test_prefer_locations_max(shop):
    prefer = ["WH-EAST"] * SOURCES_PER_CHANNEL_MAX
    assert shop.reserve("R1", "tmall", [("SKU-1", 1)], prefer_locations=prefer).ok
    refused(shop, lambda: shop.reserve("R2", "tmall", [("SKU-1", 1)],
                                       prefer_locations=prefer + ["WH-WEST"]),
            "prefer_locations", SOURCES_PER_CHANNEL_MAX)


def test_pools_per_rule_max(book):
    rule = {f"p{i}": 6 for i in range(POOLS_PER_RULE_MAX - 1)}
    rule["last"] = 100 - 6 * (POOLS_PER_RULE_MAX - 1)
    book.set_allocation_rule("WH-EAST", rule)
    over = {f"p{i}": 5 for i in range(POOLS_PER_RULE_MAX)}
    over["last"] = 100 - 5 * POOLS_PER_RULE_MAX
    refused(book, lambda: book.set_allocation_rule("WH-WEST", over), "shares",
            POOLS_PER_RULE_MAX)


def test_channels_per_campaign_max(book):
    chans = [f"ch{i}" for i in range(CHANNELS_PER_CAMPAIGN_MAX + 1)]
    for c in chans:
        book.set_channel(c, [("WH-EAST", "online")])
    args = dict(start_ms=LATER_MS, end_ms=LATER_MS + 10, location="WH-EAST", source_pool="online",
                quotas={"SKU-1": 1})
    book.create_campaign("C1", channels=chans[:-1], **args)
    refused(book, lambda: book.create_campaign("C2", channels=chans, **args), "channels",
            CHANNELS_PER_CAMPAIGN_MAX)


def test_skus_per_campaign_max(book, clock):
    quotas = {f"S{i}": 1 for i in range(SKUS_PER_CAMPAIGN_MAX)}
    t = clock.now_ms() + 60_000
    args = dict(channels=["tmall"], start_ms=t, end_ms=t + 1, location="WH-EAST",
                source_pool="online")
    book.create_campaign("C1", quotas=quotas, **args)
    quotas["one-more"] = 1
    refused(book, lambda: book.create_campaign("C2", quotas=quotas, **args), "quotas",
            SKUS_PER_CAMPAIGN_MAX)


def test_skus_per_query_max(shop):
    skus = ["SKU-1"] + [f"S{i}" for i in range(SKUS_PER_QUERY_MAX - 1)]
    got = shop.availability("tmall", skus)
    assert got["SKU-1"] == 100 and len(got) == SKUS_PER_QUERY_MAX
    refused(shop, lambda: shop.availability("tmall", skus + ["S-over"]), "skus",
            SKUS_PER_QUERY_MAX)


def test_import_chunk_rows(book):
    assert book.import_rows([("SKU-1", "WH-EAST", "online", 1)],
                            chunk_rows=IMPORT_CHUNK_ROWS) == 1
    refused(book, lambda: book.import_rows([("SKU-1", "WH-EAST", "online", 2)],
                                           chunk_rows=IMPORT_CHUNK_ROWS + 1),
            "chunk_rows", IMPORT_CHUNK_ROWS)


def test_import_rows_max(book, monkeypatch):
    """IMPORT_ROWS_MAX is ten million rows: shrunk here, read by the engine at call time."""
    monkeypatch.setattr(limits, "IMPORT_ROWS_MAX", 5)
    rows = [(f"S{i}", "WH-EAST", "online", 1) for i in range(5)]
    assert book.import_rows(rows) == 5
    refused(book, lambda: book.import_rows(rows + [("S-over", "WH-EAST", "online", 1)]),
            "rows", 5)


def test_journal_read_events_max(shop):
    assert len(shop.journal(1, JOURNAL_READ_EVENTS_MAX)) == shop.last_seq
    refused(shop, lambda: shop.journal(1, JOURNAL_READ_EVENTS_MAX + 1), "limit",
            JOURNAL_READ_EVENTS_MAX)


# ------------------------------------------------------------------ time

@pytest.mark.parametrize("ttl_ms, ok", [
    (TTL_MS_MIN - 1, False), (TTL_MS_MIN, True), (TTL_MS_MAX, True), (TTL_MS_MAX + 1, False),
])
def test_ttl_limits(shop, ttl_ms, ok):
    if ok:
        r = shop.reserve("R1", "tmall", [("SKU-1", 1)], ttl_ms=ttl_ms)
        assert r.reservation.expires_ms - r.reservation.created_ms == ttl_ms
        assert shop.extend("R1", ttl_ms).outcome == Outcome.OK
    else:
        bound = TTL_MS_MIN if ttl_ms < TTL_MS_MIN else TTL_MS_MAX
        refused(shop, lambda: shop.reserve("R1", "tmall", [("SKU-1", 1)], ttl_ms=ttl_ms),
                "ttl_ms", bound)
        shop.reserve("R2", "tmall", [("SKU-1", 1)])
        refused(shop, lambda: shop.extend("R2", ttl_ms), "ttl_ms", bound)


def test_campaign_window_max(book):
    args = dict(channels=["tmall"], location="WH-EAST", source_pool="online",
                quotas={"SKU-1": 1})
    book.create_campaign("C1", start_ms=LATER_MS, end_ms=LATER_MS + CAMPAIGN_WINDOW_MS_MAX,
                         **args)
    refused(book, lambda: book.create_campaign(
        "C2", start_ms=LATER_MS, end_ms=LATER_MS + 1 + CAMPAIGN_WINDOW_MS_MAX, **args), "end_ms",
        CAMPAIGN_WINDOW_MS_MAX)


def test_map_size_bytes(tmp_path, clock):
    with pytest.raises(InvalidArgument) as ei:
        Engine(tmp_path / "a", clock=clock, map_size_bytes=limits.MAP_SIZE_BYTES_MAX + 1)
    assert ei.value.field == "map_size_bytes"
    assert str(limits.MAP_SIZE_BYTES_MAX) in str(ei.value)
    with pytest.raises(InvalidArgument):
        Engine(tmp_path / "b", clock=clock, map_size_bytes=(1 << 20) - 1)
    with Engine(tmp_path / "c", clock=clock, map_size_bytes=1 << 20) as e:
        e.add_location("WH")
    with pytest.raises(InvalidArgument) as ei:
        Engine(tmp_path / "d", clock=clock, durability="sometimes")
    assert ei.value.field == "durability"


# ------------------------------------------------------------------ malformed reservations

BAD_RESERVES = [
    ("qty as text '5'", dict(lines=[("SKU-1", "5")]), "lines[0].qty"),
    ("qty as float 5.0", dict(lines=[("SKU-1", 5.0)]), "lines[0].qty"),
    ("qty True (a bool is not a count)", dict(lines=[("SKU-1", True)]), "lines[0].qty"),
    ("qty None", dict(lines=[("SKU-1", None)]), "lines[0].qty"),
    ("qty 0", dict(lines=[("SKU-1", 0)]), "lines[0].qty"),
    ("qty -1", dict(lines=[("SKU-1", -1)]), "lines[0].qty"),
    ("qty 10**30", dict(lines=[("SKU-1", 10**30)]), "lines[0].qty"),
    ("second line bad", dict(lines=[("SKU-1", 1), ("SKU-1", -5)]), "lines[1].qty"),
    ("no lines", dict(lines=[]), "lines"),
    ("lines as a string", dict(lines="SKU-1"), "lines"),
    ("lines as a dict", dict(lines={"SKU-1": 1}), "lines"),
    ("a line of one field", dict(lines=[("SKU-1",)]), "lines[0]"),
    ("a line of three fields", dict(lines=[("SKU-1", 1, 2)]), "lines[0]"),
    ("sku as int", dict(lines=[(1, 1)]), "lines[0].sku"),
    ("empty sku", dict(lines=[("", 1)]), "lines[0].sku"),
    ("NUL in sku", dict(lines=[("SKU\x001", 1)]), "lines[0].sku"),
    ("newline in sku", dict(lines=[("SKU-1\n", 1)]), "lines[0].sku"),
    ("DEL in sku", dict(lines=[("SKU\x7f", 1)]), "lines[0].sku"),
    ("lone surrogate in sku", dict(lines=[("SKU\ud800", 1)]), "lines[0].sku"),
    ("reservation_id None", dict(reservation_id=None), "reservation_id"),
    ("reservation_id bytes", dict(reservation_id=b"R1"), "reservation_id"),
    ("empty reservation_id", dict(reservation_id=""), "reservation_id"),
    ("tab in reservation_id", dict(reservation_id="R\t1"), "reservation_id"),
    ("ESC in reservation_id", dict(reservation_id="R\x1b[31m"), "reservation_id"),
    ("empty channel", dict(channel=""), "channel"),
    ("customer as int", dict(customer=42), "customer"),
    ("CR in customer", dict(customer="alice\r"), "customer"),
    ("campaign empty", dict(campaign=""), "campaign"),
    ("ttl_ms as float", dict(ttl_ms=60_000.0), "ttl_ms"),
    ("ttl_ms as bool", dict(ttl_ms=True), "ttl_ms"),
    ("ttl_ms 0", dict(ttl_ms=0), "ttl_ms"),
    ("ttl_ms negative", dict(ttl_ms=-1), "ttl_ms"),
    ("partial as text", dict(partial="yes"), "partial"),
    ("partial as 1", dict(partial=1), "partial"),
    ("prefer_locations as a string", dict(prefer_locations="WH-EAST"), "prefer_locations"),
    ("prefer_locations with None", dict(prefer_locations=[None]), "prefer_locations[0]"),
]


@pytest.mark.parametrize("story, kwargs, field", BAD_RESERVES, ids=[x[0] for x in BAD_RESERVES])
def test_malformed_reserve_is_refused_and_changes_nothing(shop, story, kwargs, field):
    args = dict(reservation_id="R1", channel="tmall", lines=[("SKU-1", 1)])
    args.update(kwargs)
    rid, channel, lines = args.pop("reservation_id"), args.pop("channel"), args.pop("lines")
    refused(shop, lambda: shop.reserve(rid, channel, lines, **args), field)
    assert shop.reservation("R1") is None


BAD_MUTATIONS = [
    ("receive qty 0", lambda e: e.receive("SKU-1", "WH-EAST", 0, pool="online"), "qty"),
    ("receive qty -3", lambda e: e.receive("SKU-1", "WH-EAST", -3, pool="online"), "qty"),
    ("receive qty True", lambda e: e.receive("SKU-1", "WH-EAST", True, pool="online"), "qty"),
    ("receive qty 2.5", lambda e: e.receive("SKU-1", "WH-EAST", 2.5, pool="online"), "qty"),
    ("receive ref with newline", lambda e: e.receive("SKU-1", "WH-EAST", 1, pool="online",
                                                     ref="PO\n1"), "ref"),
    ("adjust on_hand -1", lambda e: e.adjust("SKU-1", "WH-EAST", "online", -1), "on_hand"),
    ("adjust on_hand '7'", lambda e: e.adjust("SKU-1", "WH-EAST", "online", "7"), "on_hand"),
    ("move qty 0", lambda e: e.move("SKU-1", "WH-EAST", "online", "offline", 0), "qty"),
    ("commit lines qty 0", lambda e: e.commit("HELD-1", [("SKU-1", 0)]), "lines[0].qty"),
    ("commit lines empty", lambda e: e.commit("HELD-1", []), "lines"),
    ("commit id with NUL", lambda e: e.commit("HELD\x00", None), "reservation_id"),
    ("amend to no lines", lambda e: e.amend("HELD-1", []), "lines"),
    ("amend qty bool", lambda e: e.amend("HELD-1", [("SKU-1", False)]), "lines[0].qty"),
    ("extend ttl as text", lambda e: e.extend("HELD-1", "60000"), "ttl_ms"),
    ("release id as int", lambda e: e.release(7), "reservation_id"),
    ("availability skus as a string", lambda e: e.availability("tmall", "SKU-1"), "skus"),
    ("availability no skus", lambda e: e.availability("tmall", []), "skus"),
    ("availability control char", lambda e: e.availability("tmall", ["S\x02"]), "skus[0]"),
    ("stock of an empty sku", lambda e: e.stock(""), "sku"),
    ("safety stock negative", lambda e: e.set_safety_stock(-1, sku="SKU-1", channel="tmall"),
     "units"),
    ("import a row that is a string", lambda e: e.import_rows(["SKU-1,WH-EAST,online,5"]),
     "rows[0]"),
    ("import chunk_rows 0", lambda e: e.import_rows([], chunk_rows=0), "chunk_rows"),
]


@pytest.mark.parametrize("story, call, field", BAD_MUTATIONS, ids=[x[0] for x in BAD_MUTATIONS])
def test_malformed_calls_are_refused_and_change_nothing(shop, story, call, field):
    shop.reserve("HELD-1", "tmall", [("SKU-1", 3)])
    refused(shop, lambda: call(shop), field)
    assert shop.reservation("HELD-1").state.name == "HELD"


# ------------------------------------------------------------------ unicode is welcome

UNICODE_IDS = [
    ("Chinese order id", "订单-2024-双十一-000123"),
    ("accents", "commande-été-№5"),
    ("emoji", "🛒🎁-order"),
    ("emoji with ZWJ (a family)", "fam-👨\u200d👩\u200d👧"),
    ("ideographic space (common in CJK text)", "订单\u3000001"),
    ("right-to-left script", "طلب-١٢٣"),
]


@pytest.mark.parametrize("story, rid", UNICODE_IDS, ids=[x[0] for x in UNICODE_IDS])
def test_unicode_ids_are_accepted_and_survive_restart(book, open_engine, story, rid):
    sku = "商品-" + rid[:8]
    book.add_location("仓库-东")
    book.set_channel("天猫", [("仓库-东", "线上")])
    book.receive(sku, "仓库-东", 5, pool="线上")
    r = book.reserve(rid, "天猫", [(sku, 2)], customer="顾客-" + rid[:4])
    assert r.outcome == Outcome.OK, story
    book.close()
    eng = open_engine()
    again = eng.reserve(rid, "天猫", [(sku, 2)], customer="顾客-" + rid[:4])
    assert again.replayed and again.outcome == Outcome.OK
    assert eng.availability("天猫", [sku]) == {sku: 3}
    assert eng.check().ok


@pytest.mark.parametrize("call", [
    lambda e: e.receive("SKU-1", "WH-EAST", 1, pool="campaign:FS1"),
    lambda e: e.adjust("SKU-1", "WH-EAST", "campaign:FS1", 5),
    lambda e: e.move("SKU-1", "WH-EAST", "online", "campaign:FS1", 1),
    lambda e: e.import_rows([("SKU-1", "WH-EAST", "campaign:FS1", 5)]),
    lambda e: e.set_channel("sneaky", [("WH-EAST", "campaign:FS1")]),
], ids=["receive", "adjust", "move", "import", "channel source"])
def test_campaign_pools_are_moved_by_their_campaign_only(book, call):
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    before = (book.stock("SKU-1"), book.last_seq)
    with pytest.raises(InvalidArgument, match="campaign pool") as err:
        call(book)
    assert "pool" in err.value.field or "sources" in err.value.field
    assert (book.stock("SKU-1"), book.last_seq) == before


# ------------------------------------------------------------------ limits added by review


def test_ref_bytes_limit(book):
    ok = "P" * limits.REF_BYTES_MAX
    assert book.receive("SKU-1", "WH-EAST", 1, pool="online", ref=ok) == {"online": 1}
    refused(book, lambda: book.receive("SKU-1", "WH-EAST", 1, pool="online", ref=ok + "P"),
            "ref", limits.REF_BYTES_MAX)
    refused(book, lambda: book.adjust("SKU-1", "WH-EAST", "online", 3, ref=ok + "P"),
            "ref", limits.REF_BYTES_MAX)


def test_map_size_bytes_min(tmp_path):
    Engine(tmp_path / "a", map_size_bytes=limits.MAP_SIZE_BYTES_MIN).close()
    with pytest.raises(InvalidArgument, match=str(limits.MAP_SIZE_BYTES_MIN)) as ei:
        Engine(tmp_path / "b", map_size_bytes=limits.MAP_SIZE_BYTES_MIN - 1)
    assert ei.value.field == "map_size_bytes"


def test_location_and_pool_names_limit(book, monkeypatch):
    """Every campaign adds a pool name to the C index; past the limit a new campaign is
    refused up front instead of failing when its window opens."""
    args = dict(channels=["tmall"], start_ms=LATER_MS, end_ms=LATER_MS + 10,
                location="WH-EAST", source_pool="online", quotas={"SKU-1": 1})
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    names_now = book._index.names_count
    monkeypatch.setattr(limits, "LOCATION_AND_POOL_NAMES_MAX", names_now + 1)
    book.create_campaign("C1", **args)
    clock = book.clock
    clock.set(LATER_MS)
    assert book.campaign("C1").state == "active"  # its pool name is the last one allowed
    with pytest.raises(Conflict, match=str(names_now + 1)) as ei:
        book.create_campaign("C2", **{**args, "start_ms": LATER_MS + 20,
                                      "end_ms": LATER_MS + 30})
    assert ei.value.field == "campaign_id"


def test_place_codes_cache_stays_bounded(book, monkeypatch):
    monkeypatch.setattr(limits, "PLACE_CODES_CACHED_MAX", 4)
    book.receive("SKU-1", "WH-EAST", 10, pool="online")
    orders = [["WH-EAST"], ["WH-WEST"], ["WH-EAST", "WH-WEST"], ["WH-WEST", "WH-EAST"],
              ["STORE-12"], ["STORE-12", "WH-EAST"]]
    for prefer in orders * 2:
        assert book.availability("tmall", ["SKU-1"], prefer_locations=prefer) == {"SKU-1": 10}
        assert len(book._codes) <= 4
