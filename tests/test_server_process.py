"""`python -m stockgate.server` as an operator runs it: a real process, a real signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from server_calls import T, reserve

from stockgate.v1 import inventory_pb2, inventory_pb2_grpc, reservations_pb2_grpc

START_TIMEOUT_S = 60


def test_serve_the_demo_then_stop_cleanly_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKGATE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stockgate.server", "--demo", "--listen", "127.0.0.1:0",
         "--data-dir", str(tmp_path / "data"), "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        address = proc.stdout.readline().strip()  # the bound address comes first
        assert address.startswith("127.0.0.1:"), proc.stderr.read()
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=START_TIMEOUT_S,
                                  wait_for_ready=True).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            inv = inventory_pb2_grpc.InventoryStub(channel)
            avail = inv.GetAvailability(inventory_pb2.GetAvailabilityRequest(
                channel="tmall", skus=["SKU-1007"]), timeout=10).available["SKU-1007"]
            assert avail > 0
            r = reservations_pb2_grpc.ReservationsStub(channel).Reserve(
                reserve("demo-order-1", "tmall", ("SKU-1007", 2)), timeout=10)
            assert r.outcome == T.OUTCOME_OK
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
        assert f"stockgate serving on {address}" in err and "auth OFF" in err
        assert "demo catalogue loaded" in err and "stockgate: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_refuses_to_start_open_on_a_public_address(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKGATE_")}
    done = subprocess.run(
        [sys.executable, "-m", "stockgate.server", "--listen", "0.0.0.0:0",
         "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, env=env,
        timeout=60)
    assert done.returncode == 1
    assert "auth is off" in done.stderr and "STOCKGATE_ADMIN_TOKEN" in done.stderr


def test_a_bad_flag_exits_2_naming_it(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "stockgate.server", "--inflight-ops-max", "0"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "inflight_ops_max is 0; it must be between 1 and" in done.stderr
