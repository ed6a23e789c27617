"""Bad input over the wire, against a real server over a real engine: every bounded field
of every request at its limit N (accepted) and one past it (INVALID_ARGUMENT with a
BadRequest naming the field and the limit, the book unchanged), the table proven complete
against the .proto files, and the values a careless or hostile client sends: negative and
huge numbers, empty and oversized lists, control characters, multi-byte Unicode at the
byte limit, duplicate lines, unknown SKUs, channels, campaigns and locations."""

from __future__ import annotations

import re
from pathlib import Path

import grpc
import pytest
from server_calls import (
    ADMIN,
    ADMIN_SECRET,
    I,
    R,
    T,
    W,
    connect,
    details,
    reserve,
    run,
    seed_book,
)
from wire_limits import NO_LIMIT, ROWS, STOCK_UNITS, Row, text

from stockgate.engine import Engine, ManualClock, limits
from stockgate.server import Config, ServerThread, TokenGrant
from stockgate.v1 import inventory_pb2, reservations_pb2, watch_pb2

SC = grpc.StatusCode
PROTO_DIR = Path(__file__).resolve().parent.parent / "proto" / "stockgate" / "v1"
CALL_TIMEOUT_S = 30  # the batches at their limit carry 10,000 operations


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """One server for the whole sweep, on a manual clock so no hold expires between a
    snapshot and the next (each row uses names of its own)."""
    cfg = Config(data_dir=str(tmp_path_factory.mktemp("bad-input") / "db"),
                 listen="127.0.0.1:0", shutdown_grace_ms=1_000,
                 tokens={"admin": TokenGrant(secret=ADMIN_SECRET, admin=True)})
    st = ServerThread(cfg, clock=ManualClock()).start()
    seed_book(st.engine)
    st.engine.receive("SKU-1", "WH-EAST", STOCK_UNITS, pool="online")
    yield st
    st.stop()


def book(engine: Engine):
    """What a refused call must leave as it was: every decision is journalled (last_seq),
    and the parts of the book a refusal could touch."""
    engine.flush()
    return (engine.last_seq, engine.live_reservations(), engine.stock("SKU-1"),
            engine.channels(), engine.locations(), engine.campaigns(), engine.in_transit())


async def _call(address: str, rpc: str, request):
    """One call of `rpc` ("Service.Method") with an admin token: the answer (a Session's:
    its OperationResults; a Watch's: its first update), or the AioRpcError."""
    service, method = rpc.split(".")
    async with connect(address) as s:
        stub = {"Reservations": s.reservations, "Inventory": s.inventory,
                "Watch": s.watch}[service]
        fn = getattr(stub, method)
        try:
            if method == "Session":
                call = fn(metadata=ADMIN, timeout=CALL_TIMEOUT_S)
                await call.write(request)
                await call.done_writing()
                return [a for resp in [m async for m in call] for a in resp.results]
            if method == "Import":
                async def chunks():
                    for c in request:
                        yield c
                return await fn(chunks(), metadata=ADMIN, timeout=CALL_TIMEOUT_S)
            if method == "Subscribe":
                call = fn(request, metadata=ADMIN, timeout=CALL_TIMEOUT_S)
                first = await call.read()
                call.cancel()
                return first
            return await fn(request, metadata=ADMIN, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as err:
            return err


def call(st: ServerThread, rpc: str, request):
    return run(_call(st.address, rpc, request))


def violation(err: grpc.aio.AioRpcError) -> tuple[str, str]:
    """The one field violation of an INVALID_ARGUMENT."""
    assert err.code() == SC.INVALID_ARGUMENT, (err.code(), err.details())
    (fv,) = details(err)["bad_request"]
    return fv


def _limit(row: Row, engine: Engine) -> int:
    return row.limit(engine) if callable(row.limit) else row.limit


@pytest.mark.parametrize("row", ROWS, ids=[r.key() for r in ROWS])
def test_every_bounded_field_at_its_limit_and_one_past_it(srv, row):
    eng = srv.engine
    tag = f"w{ROWS.index(row)}"
    n = _limit(row, eng)
    if row.setup is not None:
        row.setup(eng, n, tag)
    at = call(srv, row.rpc, row.build(n, tag))
    if row.rpc == "Reservations.Session":
        assert all(a.WhichOneof("answer") == "result" for a in at), at[:3]
    elif row.at_code is not None:
        assert at.code() == getattr(SC, row.at_code), (at.code(), at.details())
    else:
        assert not isinstance(at, grpc.aio.AioRpcError), (at.code(), at.details())
        if row.ok is not None:
            assert row.ok(at), at

    past = n - 1 if row.lower else n + 1
    before = book(eng)
    got = call(srv, row.rpc, row.build(past, tag))
    assert book(eng) == before
    if row.rpc == "Reservations.Session":
        assert got and all(a.WhichOneof("answer") == "error" for a in got)
        errors = {(a.error.code, a.error.field, a.error.message) for a in got}
        ((code, field, problem),) = errors
        assert code == SC.INVALID_ARGUMENT.value[0]
    else:
        field, problem = violation(got)
    assert field == row.names, problem
    assert str(n) in problem, problem  # the limit, spelled out
    if row.unit == "bytes":
        assert f"is {past} bytes" in problem


# ---------------------------------------------------------------- the table is complete

MESSAGE = re.compile(r"^message (\w+) \{")
FIELD = re.compile(r"^\s*(repeated\s+[\w.]+|map<[^>]+>|[\w.]+)\s+(\w+)\s*=\s*\d+;(.*)$")
NUMBER = re.compile(r"\d[\d,]*")


def proto_fields() -> dict[str, str]:
    """"Message.field" -> its comment (on its line and the lines just above), for every
    field of every .proto."""
    out = {}
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        msg, above = None, []
        for line in proto.read_text().splitlines():
            s = line.strip()
            if m := MESSAGE.match(s):
                msg, above = m.group(1), []
            elif s.startswith("//"):
                above.append(s[2:].strip())
            elif msg and (f := FIELD.match(line)):
                trailing = f.group(3).split("//", 1)
                comment = " ".join(above + ([trailing[1].strip()] if len(trailing) > 1 else []))
                out[f"{msg}.{f.group(2)}"] = comment
                above = []
            else:
                above = []
    return out


def request_fields() -> set[str]:
    """"Message.field" of every scalar, list and map field of every message a client can
    send (RPC inputs and the messages inside them); bools included, sub-messages walked
    (a list of messages is a field with a length, and its messages are walked too)."""
    files = (reservations_pb2, inventory_pb2, watch_pb2)
    todo = [m.input_type for f in files for svc in f.DESCRIPTOR.services_by_name.values()
            for m in svc.methods]
    seen, out = set(), set()
    while todo:
        d = todo.pop()
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        for f in d.fields:
            is_map = f.message_type is not None and f.message_type.GetOptions().map_entry
            if f.message_type is not None and not is_map:
                todo.append(f.message_type)
            if f.message_type is None or is_map or f.is_repeated:
                out.add(f"{d.name}.{f.name}")
    return out


def test_the_sweep_covers_every_field_a_client_sends():
    swept = {r.field for r in ROWS}
    fields = request_fields()
    assert len(fields) > 60  # the walk found the contract
    missing = sorted(fields - swept - set(NO_LIMIT))
    assert not missing, f"request fields with no sweep row and no reason: {missing}"
    assert not (set(NO_LIMIT) - fields), "NO_LIMIT names fields that are gone"
    assert not (swept - fields), "rows name fields that are not request fields"
    assert not (set(NO_LIMIT) & swept)


def test_every_limit_a_field_comment_states_is_the_one_swept():
    # A number or list field's comment must spell the limit its row sweeps, so the
    # contract and the server cannot drift apart. Ids follow the byte limits of
    # types.proto's header.
    comments = proto_fields()
    header = (PROTO_DIR / "types.proto").read_text().split("syntax", 1)[0]
    wrong = []
    for row in ROWS:
        if callable(row.limit):
            continue
        if row.unit == "bytes":
            if f"{row.limit} bytes" not in header:
                wrong.append(f"{row.key()}: types.proto's header has no {row.limit} bytes")
            continue
        comment = comments[row.field]
        said = {int(x.replace(",", "")) for x in NUMBER.findall(comment)}
        if row.limit not in said:
            wrong.append(f"{row.key()}: the comment of {row.field} says {sorted(said)}, "
                         f"the server's limit is {row.limit:,}")
    assert not wrong, "\n".join(wrong)


def test_every_field_whose_comment_names_a_limit_has_a_row():
    limit_words = re.compile(r"\d\.\.|up to|at most|\blimit\b")
    comments = proto_fields()
    fields = request_fields()
    named = {f for f in fields if limit_words.search(comments.get(f, ""))}
    assert named, "the comments were read"
    assert named <= {r.field for r in ROWS}


# ---------------------------------------------------------------- values, not sizes

def _refused(st, rpc, request, field, *said):
    before = book(st.engine)
    err = call(st, rpc, request)
    got, problem = violation(err)
    assert got == field, problem
    for s in said:
        assert s in problem, problem
    assert book(st.engine) == before
    return problem


INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)
INT32_MIN = -(1 << 31)

BAD_VALUES = [
    ("qty 0", "Reservations.Reserve", reserve("v", "tmall", ("SKU-1", 0)), "lines[0].qty"),
    ("qty -1", "Reservations.Reserve", reserve("v", "tmall", ("SKU-1", -1)), "lines[0].qty"),
    ("qty int64 min", "Reservations.Reserve", reserve("v", "tmall", ("SKU-1", INT64_MIN)),
     "lines[0].qty"),
    ("qty int64 max", "Reservations.Reserve", reserve("v", "tmall", ("SKU-1", INT64_MAX)),
     "lines[0].qty"),
    ("second line bad", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), ("SKU-1", -5)), "lines[1].qty"),
    ("no lines", "Reservations.Reserve", reserve("v", "tmall"), "lines"),
    ("ttl_ms negative", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), ttl_ms=-1), "ttl_ms"),
    ("ttl_ms int64 min", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), ttl_ms=INT64_MIN), "ttl_ms"),
    ("empty reservation_id", "Reservations.Reserve", reserve("", "tmall", ("SKU-1", 1)),
     "reservation_id"),
    ("empty channel", "Reservations.Reserve", reserve("v", "", ("SKU-1", 1)), "channel"),
    ("empty sku", "Reservations.Reserve", reserve("v", "tmall", ("", 1)), "lines[0].sku"),
    ("NUL in reservation_id", "Reservations.Reserve", reserve("v\x00", "tmall", ("SKU-1", 1)),
     "reservation_id"),
    ("newline in sku", "Reservations.Reserve", reserve("v", "tmall", ("SKU-1\n", 1)),
     "lines[0].sku"),
    ("ESC in customer", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), customer="c\x1b[31m"), "customer"),
    ("DEL in channel", "Reservations.Reserve", reserve("v", "tm\x7fall", ("SKU-1", 1)),
     "channel"),
    ("C1 control (NEL) in campaign", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), campaign="fs\x85"), "campaign"),
    ("NUL in a preferred location", "Reservations.Reserve",
     reserve("v", "tmall", ("SKU-1", 1), prefer_locations=["WH\x00"]), "prefer_locations[0]"),
    ("commit qty 0", "Reservations.Commit",
     R.CommitRequest(reservation_id="v", lines=[T.Line(sku="SKU-1", qty=0)]), "lines[0].qty"),
    ("release empty id", "Reservations.Release", R.ReleaseRequest(), "reservation_id"),
    ("extend ttl 0", "Reservations.Extend", R.ExtendRequest(reservation_id="v"), "ttl_ms"),
    ("extend ttl int64 max", "Reservations.Extend",
     R.ExtendRequest(reservation_id="v", ttl_ms=INT64_MAX), "ttl_ms"),
    ("amend to no lines", "Reservations.Amend", R.AmendRequest(reservation_id="v"), "lines"),
    ("empty reserve batch", "Reservations.ReserveBatch", R.ReserveBatchRequest(), "requests"),
    ("empty commit batch", "Reservations.CommitBatch", R.CommitBatchRequest(), "requests"),
    ("empty release batch", "Reservations.ReleaseBatch", R.ReleaseBatchRequest(), "requests"),
    ("empty extend batch", "Reservations.ExtendBatch", R.ExtendBatchRequest(), "requests"),
    ("empty amend batch", "Reservations.AmendBatch", R.AmendBatchRequest(), "requests"),
    ("a bad request in a batch names its index", "Reservations.ReserveBatch",
     R.ReserveBatchRequest(requests=[reserve("v1", "tmall", ("SKU-1", 1)),
                                     reserve("v2", "tmall", ("SKU-1", -1))]),
     "requests[1].lines[0].qty"),
    ("receive qty -1", "Inventory.Receive",
     I.ReceiveRequest(sku="SKU-1", location="WH-EAST", qty=-1), "qty"),
    ("receive qty int64 max", "Inventory.Receive",
     I.ReceiveRequest(sku="SKU-1", location="WH-EAST", qty=INT64_MAX), "qty"),
    ("adjust on_hand -1", "Inventory.Adjust",
     I.AdjustRequest(sku="SKU-1", location="WH-EAST", pool="online", on_hand=-1), "on_hand"),
    ("move qty int64 min", "Inventory.Move",
     I.MoveRequest(sku="SKU-1", location="WH-EAST", from_pool="online", to_pool="offline",
                   qty=INT64_MIN), "qty"),
    ("move to the same pool", "Inventory.Move",
     I.MoveRequest(sku="SKU-1", location="WH-EAST", from_pool="online", to_pool="online",
                   qty=1), "to_pool"),
    ("a location of an unknown kind", "Inventory.AddLocation",
     I.AddLocationRequest(location="WH-NEW", kind="depot"), "kind"),
    ("a channel with no sources", "Inventory.SetChannel", I.SetChannelRequest(channel="c"),
     "sources"),
    ("a channel naming one source twice", "Inventory.SetChannel", I.SetChannelRequest(
        channel="c", sources=[I.Source(location="WH-EAST", pool="online")] * 2), "sources[1]"),
    ("shares summing to 99", "Inventory.SetAllocationRule",
     I.SetAllocationRuleRequest(location="WH-WEST", shares={"a": 50, "b": 49}), "shares"),
    ("a negative share", "Inventory.SetAllocationRule",
     I.SetAllocationRuleRequest(location="WH-WEST", shares={"a": -1}), "shares[a]"),
    ("no shares", "Inventory.SetAllocationRule",
     I.SetAllocationRuleRequest(location="WH-WEST"), "shares"),
    ("safety stock -1", "Inventory.SetSafetyStock",
     I.SetSafetyStockRequest(sku="SKU-1", units=-1, channel="tmall"), "units"),
    ("safety stock of a channel and a bucket at once", "Inventory.SetSafetyStock",
     I.SetSafetyStockRequest(sku="SKU-1", units=1, channel="tmall", location="WH-EAST",
                             pool="online"), "channel"),
    ("presale -1", "Inventory.SetPresaleAllowance", I.SetPresaleAllowanceRequest(
        sku="SKU-1", location="WH-EAST", pool="online", units=-1), "units"),
    ("a campaign ending before it starts", "Inventory.CreateCampaign",
     I.CreateCampaignRequest(campaign_id="c", channels=["tmall"], start_ms=10, end_ms=5,
                             location="WH-EAST", source_pool="online", quotas={"SKU-1": 1}),
     "end_ms"),
    ("a campaign quota of 0", "Inventory.CreateCampaign",
     I.CreateCampaignRequest(campaign_id="c", channels=["tmall"], start_ms=10, end_ms=20,
                             location="WH-EAST", source_pool="online", quotas={"SKU-1": 0}),
     "quotas[SKU-1]"),
    ("a campaign with no channels", "Inventory.CreateCampaign",
     I.CreateCampaignRequest(campaign_id="c", start_ms=10, end_ms=20, location="WH-EAST",
                             source_pool="online", quotas={"SKU-1": 1}), "channels"),
    ("customer_limit -1", "Inventory.CreateCampaign",
     I.CreateCampaignRequest(campaign_id="c", channels=["tmall"], start_ms=10, end_ms=20,
                             location="WH-EAST", source_pool="online", quotas={"SKU-1": 1},
                             customer_limit=-1), "customer_limit"),
    ("a campaign pool as a receipt's pool", "Inventory.Receive",
     I.ReceiveRequest(sku="SKU-1", location="WH-EAST", qty=1, pool="campaign:x"), "pool"),
    ("no skus asked", "Inventory.GetAvailability", I.GetAvailabilityRequest(channel="tmall"),
     "skus"),
    ("stock of no sku", "Inventory.GetStock", I.GetStockRequest(), "sku"),
    ("journal limit int32 min", "Inventory.ReadJournal",
     I.ReadJournalRequest(limit=INT32_MIN), "limit"),
    ("watch coalesce int32 min", "Watch.Subscribe",
     W.WatchRequest(channel="tmall", coalesce_ms=INT32_MIN), "coalesce_ms"),
    ("watch from_seq uint64 max", "Watch.Subscribe",
     W.WatchRequest(channel="tmall", from_seq=(1 << 64) - 1), "from_seq"),
    ("watch an empty sku", "Watch.Subscribe", W.WatchRequest(channel="tmall", skus=[""]),
     "skus[0]"),
]


@pytest.mark.parametrize("story, rpc, request_, field", BAD_VALUES,
                         ids=[b[0] for b in BAD_VALUES])
def test_bad_values_are_invalid_argument_naming_the_field_and_change_nothing(
        srv, story, rpc, request_, field):
    # "v" is held, so a refused commit, release, extend or amend of it had something to
    # change.
    if srv.engine.reservation("v") is None:
        srv.engine.reserve("v", "tmall", [("SKU-1", 1)])
    _refused(srv, rpc, request_, field)


@pytest.mark.parametrize("unit", ["é", "货", "😀"])  # 2, 3 and 4 UTF-8 bytes
def test_multibyte_ids_count_bytes_at_the_limit(srv, unit):
    # 16 four-byte characters are 64 bytes: the limit is in bytes, whatever a character is.
    eng = srv.engine
    tag = f"u{len(unit.encode())}"
    rid = text(limits.RESERVATION_ID_BYTES_MAX, tag, unit)
    sku = text(limits.SKU_BYTES_MAX, tag, unit)
    channel = text(limits.CHANNEL_BYTES_MAX, tag, unit)
    eng.set_channel(channel, [("WH-EAST", "online")])
    eng.receive(sku, "WH-EAST", 5, pool="online")
    r = call(srv, "Reservations.Reserve", reserve(rid, channel, (sku, 2)))
    assert r.outcome == T.OUTCOME_OK and r.reservation.reservation_id == rid
    assert r.reservation.lines[0].sku == sku and r.reservation.channel == channel
    for field, req in [
            ("reservation_id", reserve(rid + "a", channel, (sku, 1))),
            ("channel", reserve(tag, channel + "a", (sku, 1))),
            ("lines[0].sku", reserve(tag, channel, (sku + "a", 1)))]:
        problem = _refused(srv, "Reservations.Reserve", req, field)
        assert "bytes" in problem
    assert call(srv, "Inventory.GetStock", I.GetStockRequest(sku=sku)).buckets[0].held == 2


# ---------------------------------------------------------------- business answers

def test_unknown_sku_channel_campaign_and_location_get_their_documented_answers(srv):
    eng = srv.engine
    r = call(srv, "Reservations.Reserve", reserve("k1", "tmall", ("SKU-NEVER", 1)))
    assert r.outcome == T.OUTCOME_UNKNOWN_SKU and not r.HasField("reservation")
    assert [ln.outcome for ln in r.lines] == [T.OUTCOME_UNKNOWN_SKU]
    r = call(srv, "Reservations.Reserve",
             reserve("k2", "tmall", ("SKU-1", 1), campaign="no-such-sale"))
    assert r.outcome == T.OUTCOME_UNKNOWN_CAMPAIGN
    # An unknown preferred location ranks nothing first: the reserve goes on.
    r = call(srv, "Reservations.Reserve",
             reserve("k3", "tmall", ("SKU-1", 1), prefer_locations=["WH-NOWHERE"]))
    assert r.outcome == T.OUTCOME_OK
    eng.release("k3")
    before = book(eng)
    for rpc, req, field in [
            ("Reservations.Reserve", reserve("k4", "no-channel", ("SKU-1", 1)), "channel"),
            ("Inventory.GetAvailability",
             I.GetAvailabilityRequest(channel="no-channel", skus=["SKU-1"]), "channel"),
            ("Inventory.GetAvailability",
             I.GetAvailabilityRequest(channel="tmall", skus=["SKU-1"], campaign="nope"),
             "campaign"),
            ("Inventory.Receive",
             I.ReceiveRequest(sku="SKU-1", location="WH-NOWHERE", qty=1), "location"),
            ("Inventory.SetChannel", I.SetChannelRequest(channel="c", sources=[
                I.Source(location="WH-NOWHERE", pool="online")]), "sources[0].location"),
            ("Inventory.GetCampaign", I.CampaignRequest(campaign_id="nope"), "campaign_id"),
            ("Inventory.StartCampaign", I.CampaignRequest(campaign_id="nope"), "campaign_id"),
            ("Inventory.TransferIn", I.TransferInRequest(transfer_id="nope"), "transfer_id"),
            ("Inventory.GetReservation", I.GetReservationRequest(reservation_id="nope"),
             "reservation_id"),
            ("Watch.Subscribe", W.WatchRequest(channel="no-channel"), "channel")]:
        err = call(srv, rpc, req)
        assert err.code() == SC.NOT_FOUND, (rpc, err.code(), err.details())
        assert details(err)["bad_request"][0][0] == field
    assert book(eng) == before
    # Unknown ids on the hot path are outcomes.
    for rpc, req in [("Reservations.Commit", R.CommitRequest(reservation_id="nope")),
                     ("Reservations.Release", R.ReleaseRequest(reservation_id="nope")),
                     ("Reservations.Extend", R.ExtendRequest(reservation_id="nope",
                                                             ttl_ms=limits.TTL_MS_MIN)),
                     ("Reservations.Amend", R.AmendRequest(
                         reservation_id="nope", lines=[T.Line(sku="SKU-1", qty=1)]))]:
        assert call(srv, rpc, req).outcome == T.OUTCOME_NOT_FOUND
    assert book(eng) == before


def test_duplicate_lines_are_held_as_sent_and_released_whole(srv):
    # Two lines of one SKU are two lines (the contract sets no rule against it): each is
    # granted, the SKU holds their sum, and a release returns all of it.
    eng = srv.engine
    eng.receive("SKU-D", "WH-EAST", 5, pool="online")
    r = call(srv, "Reservations.Reserve", reserve("d1", "tmall", ("SKU-D", 2), ("SKU-D", 3)))
    assert r.outcome == T.OUTCOME_OK
    assert [(ln.sku, ln.granted) for ln in r.reservation.lines] == [("SKU-D", 2), ("SKU-D", 3)]
    assert eng.availability("tmall", ["SKU-D"]) == {"SKU-D": 0}
    # One unit more than is there, split over duplicate lines: all or nothing.
    eng.release("d1")
    r = call(srv, "Reservations.Reserve", reserve("d2", "tmall", ("SKU-D", 3), ("SKU-D", 3)))
    assert r.outcome == T.OUTCOME_INSUFFICIENT_STOCK
    assert eng.availability("tmall", ["SKU-D"]) == {"SKU-D": 5}
    # A commit naming a SKU twice commits their sum, at most what is held.
    call(srv, "Reservations.Reserve", reserve("d3", "tmall", ("SKU-D", 4)))
    c = call(srv, "Reservations.Commit", R.CommitRequest(reservation_id="d3", lines=[
        T.Line(sku="SKU-D", qty=1), T.Line(sku="SKU-D", qty=2)]))
    assert [(ln.sku, ln.qty) for ln in c.reservation.committed] == [("SKU-D", 3)]
    assert eng.stock("SKU-D")[0].on_hand == 2 and eng.stock("SKU-D")[0].held == 0


def test_a_session_answers_each_bad_op_alone_and_goes_on(srv):
    eng = srv.engine
    ops = [R.Operation(id=1, reserve=reserve("s1", "tmall", ("SKU-1", 1))),
           R.Operation(id=2, reserve=reserve("s2", "tmall", ("SKU-1", -1))),
           R.Operation(id=3),  # no op at all
           R.Operation(id=4, timeout_ms=-5, release=R.ReleaseRequest(reservation_id="s1")),
           R.Operation(id=5, extend=R.ExtendRequest(reservation_id="s1\x00", ttl_ms=5_000)),
           R.Operation(id=6, reserve=reserve("s6", "no-channel", ("SKU-1", 1)))]
    answers = {a.id: a for a in call(srv, "Reservations.Session", R.SessionRequest(ops=ops))}
    assert answers[1].result.outcome == T.OUTCOME_OK
    bad = {i: (answers[i].error.code, answers[i].error.field) for i in (2, 3, 4, 5, 6)}
    assert bad == {2: (3, "lines[0].qty"), 3: (3, "op"), 4: (3, "timeout_ms"),
                   5: (3, "reservation_id"), 6: (5, "channel")}
    assert eng.reservation("s2") is None and eng.reservation("s6") is None
    assert eng.reservation("s1").state.name == "HELD"


def test_an_import_past_its_total_rows_is_refused_and_applies_nothing(srv, monkeypatch):
    """IMPORT_ROWS_MAX is ten million rows: shrunk here; the server reads it per call."""
    monkeypatch.setattr(limits, "IMPORT_ROWS_MAX", 3)
    rows = [I.StockRow(sku=f"SKU-T{i}", location="WH-WEST", pool="online", on_hand=1)
            for i in range(4)]
    ok = call(srv, "Inventory.Import", [I.ImportChunk(rows=rows[:2]),
                                        I.ImportChunk(rows=rows[2:3])])
    assert ok.rows == 3
    before = book(srv.engine)
    err = call(srv, "Inventory.Import", [I.ImportChunk(rows=rows[:2]),
                                         I.ImportChunk(rows=[r for r in rows[2:]])])
    field, problem = violation(err)
    assert field == "rows" and "3" in problem
    assert book(srv.engine) == before
    err = call(srv, "Inventory.Import", [])
    assert violation(err)[0] == "rows"
    err = call(srv, "Inventory.Import", [I.ImportChunk(rows=rows[:1]), I.ImportChunk()])
    assert violation(err)[0] == "chunks[1].rows"
    assert book(srv.engine) == before

