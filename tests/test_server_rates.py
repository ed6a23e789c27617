"""Per-token rates: a token past its rate is refused at once, with a retry hint and nothing
done, while the other tokens go on being served.

The buckets run on a clock the tests hold still (and step by hand), so no outcome here
depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import urllib.request

import grpc
import pytest
from server_calls import (
    ADMIN,
    POS,
    POS_SECRET,
    TMALL,
    I,
    R,
    T,
    connect,
    details,
    op_results,
    reserve,
    run,
)

from stockgate.server import Config, ConfigError, TokenGrant
from stockgate.server.config import TOKEN_BURST_OPS_MAX, TOKEN_OPS_PER_S_MAX, load
from stockgate.server.rates import Bucket, buckets, token_rate

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
SECRET = "s" * 16


class StillClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


# ---------------------------------------------------------------------- the bucket

def test_a_bucket_starts_full_and_refuses_past_its_burst():
    clock = StillClock()
    b = Bucket("tmall", ops_per_s=2, burst_ops=3, clock=clock)
    assert [b.take(1) for _ in range(3)] == [None] * 3
    refusal = b.take(1)
    assert refusal.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refusal.retry_after_ms == 500  # one operation at 2 per second
    assert "token 'tmall' is past its rate of 2 operations per second (burst 3)" in \
        refusal.message
    assert b.refused_ops == 1
    assert b.take(1) is not None  # a refused call spent nothing, and earned nothing either


def test_a_bucket_refills_at_its_rate_up_to_its_burst():
    clock = StillClock()
    b = Bucket("tmall", ops_per_s=4, burst_ops=8, clock=clock)
    assert b.take(8) is None and b.take(1) is not None
    clock.advance(0.25)  # one operation's worth
    assert b.take(1) is None and b.take(1) is not None
    clock.advance(3_600)  # an hour idle fills the bucket, no more
    assert b.take(8) is None and b.take(1) is not None


def test_a_batch_is_all_or_nothing_and_told_when_it_would_fit():
    clock = StillClock()
    b = Bucket("tmall", ops_per_s=10, burst_ops=10, clock=clock)
    assert b.take(7) is None
    refusal = b.take(5)  # 3 left: 2 more needed, 0.2 s at 10 per second
    assert refusal.retry_after_ms == 200
    assert b.take(3) is None  # the refused batch took nothing
    assert b.refused_ops == 5


def test_take_upto_grants_what_the_bucket_holds():
    clock = StillClock()
    b = Bucket("tmall", ops_per_s=100, burst_ops=10, clock=clock)
    assert b.take_upto(4) == 4
    assert b.take_upto(10) == 6
    assert b.refused_ops == 4
    assert b.refusal(4).retry_after_ms == 40
    assert b.refusal(1_000).retry_after_ms == 100  # never more than a full burst away


def test_operations_given_back_never_overfill_the_bucket():
    clock = StillClock()
    b = Bucket("tmall", ops_per_s=1, burst_ops=5, clock=clock)
    assert b.take(2) is None
    b.give_back(2)
    b.give_back(2)
    assert b.take(5) is None and b.take(1) is not None


def test_each_token_gets_its_own_rate_or_the_servers():
    c = Config(token_ops_per_s=100, token_burst_ops=0, tokens={
        "default": TokenGrant(secret="a" * 16, admin=True),
        "own": TokenGrant(secret="b" * 16, channels=("tmall",), ops_per_s=5, burst_ops=20),
        "rate-only": TokenGrant(secret="c" * 16, channels=("tmall",), ops_per_s=7),
        "unlimited": TokenGrant(secret="d" * 16, admin=True, ops_per_s=0)})
    assert token_rate(c, "default") == (100, 100)  # burst 0: one second at the rate
    assert token_rate(c, "own") == (5, 20)
    assert token_rate(c, "rate-only") == (7, 7)
    assert token_rate(c, "unlimited") == (0, 0)
    assert sorted(buckets(c)) == ["default", "own", "rate-only"]
    with_burst = dataclasses.replace(c, token_burst_ops=50)
    assert token_rate(with_burst, "default") == (100, 50)
    assert token_rate(with_burst, "own") == (5, 20)


def test_with_auth_off_there_is_no_rate():
    # No tokens means one caller (loopback only): there is nobody to starve.
    assert buckets(Config(token_ops_per_s=1)) == {}


def test_operations_the_server_sheds_are_not_charged_to_the_token():
    from stockgate.server.admission import Admission
    from stockgate.server.status import CallError

    class Call:
        def time_remaining(self):
            return None

    b = Bucket("tmall", ops_per_s=1, burst_ops=3, clock=StillClock())
    adm = Admission(ops_max=2, queue_ms=50)
    adm.admit(Call(), 2, b)
    with pytest.raises(CallError) as e:
        adm.admit(Call(), 1, b)  # past the in-flight bound: shed, not the rate
    assert "in flight" in e.value.message
    assert b.take(1) is None and b.take(1) is not None  # 1 of 3 left, not 0
    assert b.refused_ops == 1


# ---------------------------------------------------------------------- settings

@pytest.mark.parametrize("argv, toml, message", [
    (["--token-ops-per-s", str(TOKEN_OPS_PER_S_MAX + 1)], "",
     f"token_ops_per_s is {TOKEN_OPS_PER_S_MAX + 1}; it must be between 0 and "
     f"{TOKEN_OPS_PER_S_MAX}"),
    (["--token-ops-per-s", "-1"], "", "token_ops_per_s is -1; it must be between 0"),
    (["--token-burst-ops", str(TOKEN_BURST_OPS_MAX + 1)], "",
     f"token_burst_ops is {TOKEN_BURST_OPS_MAX + 1}; it must be between 0 and "
     f"{TOKEN_BURST_OPS_MAX}"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\n"
         f"ops_per_s = {TOKEN_OPS_PER_S_MAX + 1}\n",
     f"tokens.t.ops_per_s is {TOKEN_OPS_PER_S_MAX + 1}; it must be between 0 and "
     f"{TOKEN_OPS_PER_S_MAX}"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nops_per_s = -1\n",
     "tokens.t.ops_per_s is -1; it must be between 0"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nops_per_s = 10\n"
         f"burst_ops = {TOKEN_BURST_OPS_MAX + 1}\n",
     f"tokens.t.burst_ops is {TOKEN_BURST_OPS_MAX + 1}; it must be between 0 and "
     f"{TOKEN_BURST_OPS_MAX}"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nops_per_s = 'fast'\n",
     "tokens.t.ops_per_s must be an integer, got 'fast'"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nops_per_s = 2.5\n",
     "tokens.t.ops_per_s must be an integer, got 2.5"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nburst_ops = 100\n",
     "tokens.t.burst_ops is 100 but the token has no rate"),
    ([], f"[tokens.t]\nsecret = '{SECRET}'\nadmin = true\nrate = 5\n",
     "tokens.t has unknown keys ['rate']; use secret, secret_env, admin, channels, "
     "ops_per_s, burst_ops"),
])
def test_bad_rates_name_the_setting_and_the_limit(tmp_path, argv, toml, message):
    if toml:
        path = tmp_path / "stockgate.toml"
        path.write_text(toml)
        argv = [*argv, "--config", str(path)]
    with pytest.raises(ConfigError) as e:
        load(argv, environ={})
    assert message in str(e.value)


def test_rates_at_their_limits_are_taken(tmp_path):
    path = tmp_path / "stockgate.toml"
    path.write_text(f"""
token_burst_ops = {TOKEN_BURST_OPS_MAX}

[tokens.fast]
secret = "{SECRET}"
channels = ["tmall"]
ops_per_s = {TOKEN_OPS_PER_S_MAX}
burst_ops = {TOKEN_BURST_OPS_MAX}

[tokens.free]
secret = "{"f" * 16}"
admin = true
ops_per_s = 0
""")
    c = load(["--config", str(path), "--token-ops-per-s", str(TOKEN_OPS_PER_S_MAX)],
             environ={"STOCKGATE_TOKEN_BURST_OPS": "0"})
    assert (c.token_ops_per_s, c.token_burst_ops) == (TOKEN_OPS_PER_S_MAX, 0)  # flag, env
    assert c.tokens["fast"] == TokenGrant(secret=SECRET, channels=("tmall",),
                                          ops_per_s=TOKEN_OPS_PER_S_MAX,
                                          burst_ops=TOKEN_BURST_OPS_MAX)
    assert c.tokens["free"].ops_per_s == 0 and c.tokens["free"].burst_ops is None
    assert Config().token_ops_per_s == 0  # unlimited unless configured


def test_a_rate_set_in_code_is_checked_too():
    with pytest.raises(ConfigError, match="tokens.t.burst_ops is -5"):
        Config(tokens={"t": TokenGrant(secret=SECRET, admin=True, ops_per_s=1, burst_ops=-5)})
    with pytest.raises(ConfigError, match="tokens.t.ops_per_s must be an integer, got True"):
        Config(tokens={"t": TokenGrant(secret=SECRET, admin=True, ops_per_s=True)})


def test_a_server_wide_burst_without_a_rate_is_refused_not_ignored():
    with pytest.raises(ConfigError, match="token_burst_ops is 10 but token_ops_per_s is 0"):
        Config(token_burst_ops=10)
    assert Config(token_burst_ops=10, token_ops_per_s=5).token_burst_ops == 10


# ---------------------------------------------------------------------- through the server

def _limited(server_config, *, ops_per_s=1, burst_ops=3, **changes):
    """The test tokens, with tmall held to a rate."""
    tokens = dict(server_config.tokens)
    tokens["tmall"] = dataclasses.replace(tokens["tmall"], ops_per_s=ops_per_s,
                                          burst_ops=burst_ops)
    return dataclasses.replace(server_config, tokens=tokens, **changes)


@pytest.fixture
def still():
    return StillClock()


def _seeded(st, units=100):
    from server_calls import seed_book

    eng = seed_book(st.engine)
    eng.receive("SKU-1", "WH-EAST", units, pool="online")
    return eng


def _held(eng) -> int:
    return sum(b.held for b in eng.stock("SKU-1"))


def test_a_token_past_its_rate_is_refused_with_retry_info_and_nothing_done(
        server_config, start_server, still):
    st = start_server(_limited(server_config, ops_per_s=1, burst_ops=3), rate_clock=still)
    eng = _seeded(st)

    async def main():
        async with connect(st.address) as s:
            rs = s.reservations
            ok = [await rs.Reserve(reserve("t-1", "tmall", ("SKU-1", 1)), metadata=TMALL,
                                   timeout=10),
                  await rs.Commit(R.CommitRequest(reservation_id="t-1"), metadata=TMALL,
                                  timeout=10),
                  # Reads count too: an availability poll costs the server as much.
                  await s.inventory.GetAvailability(I.GetAvailabilityRequest(
                      channel="tmall", skus=["SKU-1"]), metadata=TMALL, timeout=10)]
            refused = []
            for call in (
                    lambda: rs.Reserve(reserve("t-2", "tmall", ("SKU-1", 1)), metadata=TMALL,
                                       timeout=10),
                    lambda: rs.ReserveBatch(R.ReserveBatchRequest(requests=[
                        reserve("t-3", "tmall", ("SKU-1", 1))]), metadata=TMALL, timeout=10),
                    lambda: s.inventory.GetReservation(I.GetReservationRequest(
                        reservation_id="t-1"), metadata=TMALL, timeout=10)):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await call()
                refused.append(e.value)
            return ok, refused

    ok, refused = run(main())
    assert ok[0].outcome == T.OUTCOME_OK and ok[1].outcome == T.OUTCOME_OK
    for err in refused:
        assert err.code() == EXHAUSTED
        assert "token 'tmall' is past its rate of 1 operations per second (burst 3)" in \
            err.details()
        assert details(err)["retry_after_ms"] == 1_000  # one operation at 1 per second
    assert eng.reservation("t-2") is None and eng.reservation("t-3") is None
    assert _held(eng) == 0
    assert sum(b.on_hand for b in eng.stock("SKU-1")) == 99  # only t-1, committed
    assert st.server.rates["tmall"].refused_ops == 3


def test_another_token_is_served_while_one_floods(server_config, start_server, still):
    config = _limited(server_config, ops_per_s=1, burst_ops=5)
    tokens = dict(config.tokens)
    tokens["pos"] = dataclasses.replace(tokens["pos"], ops_per_s=1, burst_ops=30)
    st = start_server(dataclasses.replace(config, tokens=tokens), rate_clock=still)
    eng = _seeded(st, units=1_000)
    eng.receive("SKU-1", "STORE-12", 1_000)

    async def flood(s):
        calls = [s.reservations.Reserve(reserve(f"t-{i}", "tmall", ("SKU-1", 1)),
                                        metadata=TMALL, timeout=10) for i in range(200)]
        return await asyncio.gather(*calls, return_exceptions=True)

    async def serve_pos(s):
        out = []
        for i in range(30):
            out.append(await s.reservations.Reserve(reserve(f"p-{i}", "pos-12", ("SKU-1", 1)),
                                                    metadata=POS, timeout=10))
            await asyncio.sleep(0)
        return out

    async def main():
        async with connect(st.address) as flooder, connect(st.address) as pos:
            return await asyncio.gather(flood(flooder), serve_pos(pos))

    flooded, served = run(main())
    granted = [r for r in flooded if not isinstance(r, BaseException)]
    refused = [r for r in flooded if isinstance(r, BaseException)]
    assert len(granted) == 5 and all(r.outcome == T.OUTCOME_OK for r in granted)
    assert len(refused) == 195 and all(e.code() == EXHAUSTED for e in refused)
    # The flood spent only its own token's rate: every pos call was served.
    assert [r.outcome for r in served] == [T.OUTCOME_OK] * 30
    assert all(eng.reservation(f"p-{i}") is not None for i in range(30))
    assert sum(eng.reservation(f"t-{i}") is not None for i in range(200)) == 5
    # Admin is not limited here (no server-wide default): the flood does not touch it.
    async def admin_call():
        async with connect(st.address) as s:
            return await s.reservations.Reserve(reserve("a-1", "tmall", ("SKU-1", 1)),
                                                metadata=ADMIN, timeout=10)

    assert run(admin_call()).outcome == T.OUTCOME_OK


def test_the_rate_refills(server_config, start_server, still):
    st = start_server(_limited(server_config, ops_per_s=2, burst_ops=2), rate_clock=still)
    eng = _seeded(st)

    async def attempt(s, rid):
        try:
            r = await s.reservations.Reserve(reserve(rid, "tmall", ("SKU-1", 1)),
                                             metadata=TMALL, timeout=10)
        except grpc.aio.AioRpcError as e:
            return e.code()
        return r.outcome

    async def main():
        async with connect(st.address) as s:
            first = [await attempt(s, f"a-{i}") for i in range(3)]
            still.advance(0.5)  # one operation's worth at 2 per second
            second = [await attempt(s, f"b-{i}") for i in range(2)]
            still.advance(60)  # a long pause fills the bucket to its burst, no more
            third = [await attempt(s, f"c-{i}") for i in range(3)]
            return first, second, third

    first, second, third = run(main())
    ok = T.OUTCOME_OK
    assert first == [ok, ok, EXHAUSTED]
    assert second == [ok, EXHAUSTED]
    assert third == [ok, ok, EXHAUSTED]
    assert _held(eng) == 5


def test_batches_and_session_messages_count_their_operations(server_config, start_server,
                                                              still):
    st = start_server(_limited(server_config, ops_per_s=1, burst_ops=10), rate_clock=still)
    eng = _seeded(st)

    async def main():
        async with connect(st.address) as s:
            rs = s.reservations
            batch = await rs.ReserveBatch(R.ReserveBatchRequest(requests=[
                reserve(f"b-{i}", "tmall", ("SKU-1", 1)) for i in range(4)]),
                metadata=TMALL, timeout=10)
            errors = {}
            # 6 left: 7 is refused whole; 11 could never pass the burst of 10.
            for n in (7, 11):
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await rs.ReserveBatch(R.ReserveBatchRequest(requests=[
                        reserve(f"x{n}-{i}", "tmall", ("SKU-1", 1)) for i in range(n)]),
                        metadata=TMALL, timeout=10)
                errors[n] = e.value
            session = rs.Session(metadata=TMALL, timeout=10)
            await session.write(R.SessionRequest(ops=[
                R.Operation(id=i, reserve=reserve(f"s-{i}", "tmall", ("SKU-1", 1)))
                for i in range(10)]))
            await session.done_writing()
            answers = {r.id: r async for resp in session for r in op_results(resp)}
            return batch, errors, answers

    batch, errors, answers = run(main())
    assert [r.outcome for r in batch.results] == [T.OUTCOME_OK] * 4
    assert errors[7].code() == EXHAUSTED
    assert details(errors[7])["retry_after_ms"] == 1_000  # 7 - 6 left, at 1 per second
    assert errors[11].code() == grpc.StatusCode.INVALID_ARGUMENT
    assert details(errors[11])["bad_request"][0][0] == "requests"
    assert "burst_ops" in details(errors[11])["bad_request"][0][1]
    assert not any(eng.reservation(f"x{n}-{i}") for n in (7, 11) for i in range(n))
    # The Session message of 10 found 6 left: those 6 are decided, the other 4 answered
    # RESOURCE_EXHAUSTED each, with the time until the bucket holds 4.
    assert sorted(answers) == list(range(10))
    done = [a for a in answers.values() if a.WhichOneof("answer") == "result"]
    shed = [a for a in answers.values() if a.WhichOneof("answer") == "error"]
    assert len(done) == 6 and all(a.result.outcome == T.OUTCOME_OK for a in done)
    assert len(shed) == 4
    for a in shed:
        assert a.error.code == EXHAUSTED.value[0] and a.error.retry_after_ms == 4_000
        assert eng.reservation(f"s-{a.id}") is None
    assert _held(eng) == 10


def test_without_tokens_no_rate_applies(server_config, start_server, still):
    st = start_server(dataclasses.replace(server_config, tokens={}, token_ops_per_s=1,
                                          token_burst_ops=1), rate_clock=still)
    _seeded(st)

    async def main():
        async with connect(st.address) as s:
            return [await s.reservations.Reserve(reserve(f"o-{i}", "tmall", ("SKU-1", 1)),
                                                 timeout=10) for i in range(5)]

    assert [r.outcome for r in run(main())] == [T.OUTCOME_OK] * 5


def test_refusals_per_token_are_on_metrics(server_config, start_server, still):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    st = start_server(_limited(server_config, ops_per_s=1, burst_ops=1, metrics_port=port),
                      rate_clock=still)
    _seeded(st)

    async def main():
        async with connect(st.address) as s:
            for i in range(4):
                try:
                    await s.reservations.Reserve(reserve(f"o-{i}", "tmall", ("SKU-1", 1)),
                                                 metadata=TMALL, timeout=10)
                except grpc.aio.AioRpcError:
                    pass

    run(main())
    # Counted before the refusal is sent, so the scrape sees every one.
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=10).read().decode()
    assert 'stockgate_operations_rate_limited_total{token="tmall"} 3.0' in text
    assert 'token="pos"' not in text  # unlimited: no bucket, no series
    assert POS_SECRET not in text and "tmall-secret" not in text
