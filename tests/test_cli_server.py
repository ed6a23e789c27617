"""The `stockgate` command end to end against a real server: every command, human and
--json output, exit codes, errors naming the field; and `stockgate serve --demo` as a
subprocess, stopped by SIGTERM."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import client_harness
import grpc
import pytest
from client_harness import ADMIN, TMALL
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stockgate.clients import Client, Outcome, new_reservation_id
from stockgate.server import cli

stocked = client_harness.stocked  # fixture


def stockgate(server, *argv: str, token: str | None = ADMIN, stdin: str = ""):
    """Run the command in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    flags = ["--address", server.address] + (["--token", token] if token else [])
    code = cli.main([*flags, *argv], stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_import_stock_and_availability(stocked, tmp_path):
    csv_file = tmp_path / "stock.csv"
    csv_file.write_text("sku,location,pool,on_hand\n"
                        "SKU-7,WH-EAST,online,12\n"
                        "SKU-7,WH-WEST,online,3\n")
    code, out, _ = stockgate(stocked, "import", str(csv_file))
    assert code == 0 and "imported 2 rows" in out
    code, out, _ = stockgate(stocked, "--json", "import", "-",
                             stdin="sku,location,pool,on_hand\nSKU-8,WH-EAST,online,4\n")
    assert code == 0 and json.loads(out) == {"rows": 1, "file": "-"}

    code, out, _ = stockgate(stocked, "stock", "SKU-7")
    assert code == 0
    assert out.splitlines()[0] == "SKU-7"
    assert "LOCATION" in out and "WH-EAST" in out and "12" in out
    code, out, _ = stockgate(stocked, "stock", "SKU-7", "--json")
    buckets = json.loads(out)
    assert {(b["location"], b["available"]) for b in buckets} == {("WH-EAST", 12),
                                                                  ("WH-WEST", 3)}
    code, out, _ = stockgate(stocked, "availability", "--channel", "tmall", "SKU-7", "SKU-8")
    assert code == 0 and out.split() == ["SKU-7", "15", "SKU-8", "4"]
    code, out, _ = stockgate(stocked, "--json", "availability", "--channel", "tmall",
                             "SKU-7")
    assert json.loads(out) == {"SKU-7": 15}


def test_a_bad_csv_line_is_named_and_nothing_is_loaded(stocked, tmp_path):
    csv_file = tmp_path / "bad.csv"
    csv_file.write_text("sku,location,pool,on_hand\nSKU-7,WH-EAST,online,12\n"
                        "SKU-7,WH-NOWHERE,online,x3\n")
    code, _, err = stockgate(stocked, "import", str(csv_file))
    assert code == cli.EXIT_USAGE
    assert "line 3" in err and "on_hand 'x3'" in err
    csv_file.write_text("sku,location,pool,on_hand\nSKU-7,WH-EAST,online,12\n"
                        "SKU-7,WH-EAST,online,-5\n")
    code, _, err = stockgate(stocked, "import", str(csv_file))
    assert code == cli.EXIT_USAGE and "line 3" in err and "field:" in err
    csv_file.write_text("sku,where,on_hand\nSKU-7,WH-EAST,12\n")
    code, _, err = stockgate(stocked, "import", str(csv_file))
    assert code == cli.EXIT_USAGE and "lacks location, pool" in err
    assert stocked.engine.stock("SKU-7") == []


def test_reserve_commit_release_by_hand(stocked):
    code, out, _ = stockgate(stocked, "reserve", "--channel", "tmall", "--id", "o-1",
                             "--ttl", "10m", "SKU-1:2", "SKU-2:1")
    assert code == 0
    assert out.startswith("reserve: OK") and "HELD o-1 channel=tmall" in out
    assert "SKU-1 x2" in out and "WH-EAST/online 2" in out

    code, out, _ = stockgate(stocked, "--json", "reserve", "--channel", "tmall", "--id",
                             "o-1", "--ttl", "10m", "SKU-1:2", "SKU-2:1")
    body = json.loads(out)
    assert code == 0 and body["replayed"] is True and body["outcome"] == "OK"
    assert body["reservation"]["state"] == "HELD"

    code, out, _ = stockgate(stocked, "reserve", "--channel", "tmall", "SKU-2:100")
    assert code == cli.EXIT_REFUSED
    assert "refused: INSUFFICIENT_STOCK" in out and "SKU-2: asked 100, granted 0" in out
    assert "reservation id: " in out

    code, out, _ = stockgate(stocked, "commit", "o-1", "SKU-1:1")
    assert code == 0 and "COMMITTED o-1" in out and "committed: SKU-1 x1" in out
    code, out, _ = stockgate(stocked, "--json", "release", "o-1")
    assert code == cli.EXIT_REFUSED and json.loads(out)["outcome"] == "NOT_HELD"
    code, out, _ = stockgate(stocked, "reservation", "o-1", "--json")
    assert code == 0 and json.loads(out)["committed"] == [["SKU-1", 1]]
    code, out, err = stockgate(stocked, "reservation", "o-404")
    assert code == cli.EXIT_REFUSED and "o-404" in err

    code, out, _ = stockgate(stocked, "reserve", "--channel", "tmall", "--id", "o-2", "SKU-1:1")
    assert code == 0
    code, out, _ = stockgate(stocked, "release", "o-2")
    assert code == 0 and "RELEASED o-2" in out


def test_errors_name_the_field_and_the_fix_with_exit_codes(stocked):
    code, _, err = stockgate(stocked, "reserve", "--channel", "tmall", "SKU-1:0")
    assert code == cli.EXIT_USAGE
    assert "invalid argument" in err and "field: lines[0].qty" in err and "fix:" in err
    code, _, err = stockgate(stocked, "--json", "reserve", "--channel", "tmall",
                             "--id", "x" * 200, "SKU-1:1")
    body = json.loads(err)
    assert code == cli.EXIT_USAGE and body["field"] == "reservation_id"

    code, _, err = stockgate(stocked, "stock", "SKU-1", token=None)
    assert code == cli.EXIT_AUTH and "unauthenticated" in err and "--token" in err
    code, _, err = stockgate(stocked, "reserve", "--channel", "pos-12", "SKU-3:1",
                             token=TMALL)
    assert code == cli.EXIT_AUTH and "permission denied" in err
    code, _, err = stockgate(stocked, "check", token=TMALL)
    assert code == cli.EXIT_AUTH


def test_campaigns_by_hand(stocked):
    code, out, _ = stockgate(stocked, "campaign", "create", "d11", "--channel", "tmall",
                             "--location", "WH-EAST", "--source-pool", "online",
                             "--quota", "SKU-1:10", "--start", "+1h", "--duration", "2h",
                             "--customer-limit", "1")
    assert code == 0 and out.startswith("d11: scheduled")
    assert "quota 10" in out and "at most 1 per customer" in out
    code, out, _ = stockgate(stocked, "campaign", "start", "d11")
    assert code == 0 and "d11: active" in out and "carved 10" in out
    code, out, _ = stockgate(stocked, "reserve", "--channel", "tmall", "--campaign", "d11",
                             "--customer", "ann", "SKU-1:2")
    assert code == cli.EXIT_REFUSED and "CUSTOMER_LIMIT" in out
    code, out, _ = stockgate(stocked, "campaign", "stop", "d11", "--json")
    body = json.loads(out)
    assert code == 0 and body["state"] == "ended" and body["returned"] == {"SKU-1": 10}
    code, out, _ = stockgate(stocked, "campaign", "show", "d11")
    assert code == 0 and "d11: ended" in out and "returned 10" in out
    code, out, _ = stockgate(stocked, "campaign", "show", "--json")
    assert code == 0 and [c["campaign_id"] for c in json.loads(out)] == ["d11"]
    code, _, err = stockgate(stocked, "campaign", "show", "nope")
    assert code == cli.EXIT_REFUSED and "nope" in err
    code, _, err = stockgate(stocked, "campaign", "start", "nope")
    assert code == cli.EXIT_REFUSED and "not found" in err


def test_check_and_drift(stocked):
    code, out, _ = stockgate(stocked, "check")
    assert code == 0 and out.startswith("consistency check: clean")
    code, out, _ = stockgate(stocked, "check", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_watch_prints_updates_and_stops_after_count(stocked):
    with Client(stocked.address, ADMIN) as c:
        before = c.journal(1, 1).last_seq
        c.reserve("w-1", "tmall", [("SKU-2", 8)])
    code, out, _ = stockgate(stocked, "watch", "--channel", "tmall", "--from-seq",
                             str(before + 1), "--count", "1")
    assert code == 0
    assert out.startswith("seq ") and "SKU-2=0" in out
    assert "ALERT sold_out SKU-2 WH-WEST/online available=0" in out
    code, out, _ = stockgate(stocked, "--json", "watch", "--channel", "tmall", "--sku",
                             "SKU-2", "--count", "1")
    update = json.loads(out)
    assert code == 0 and update["available"] == {"SKU-2": 0} and update["seq"] >= before


def test_the_console_script_runs(stocked):
    exe = shutil.which("stockgate") or os.path.join(os.path.dirname(sys.executable),
                                                    "stockgate")
    done = subprocess.run([exe, "--json", "availability", "--channel", "tmall", "SKU-1"],
                          env={**os.environ, "STOCKGATE_ADDRESS": stocked.address,
                               "STOCKGATE_TOKEN": ADMIN},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"SKU-1": 80}


def _wait_serving(address: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, "the server never became SERVING"
            time.sleep(0.1)


@pytest.mark.timeout(120)
def test_serve_demo_as_a_subprocess_reserves_and_stops_cleanly_on_sigterm(tmp_path):
    exe = shutil.which("stockgate") or os.path.join(os.path.dirname(sys.executable),
                                                    "stockgate")
    proc = subprocess.Popen(
        [exe, "serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir",
         str(tmp_path / "stockgate-data")],
        env={**os.environ, "STOCKGATE_ADMIN_TOKEN": ADMIN}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("127.0.0.1:"), proc.stderr.read() if proc.poll() else address
        _wait_serving(address)
        with Client(address, ADMIN, timeout=10) as client:
            order = new_reservation_id()
            hold = client.reserve(order, "tmall", [("SKU-1001", 2)])
            assert hold.outcome is Outcome.OK
            assert client.commit(order).ok
            assert client.check().ok
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
