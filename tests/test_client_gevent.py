"""The sync Client under gevent, as locust runs it: monkey-patched, gRPC's gevent mode on,
greenlets sharing one Client. In a subprocess, since patching is for a whole process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from client_harness import ADMIN, running_server, stock_book

pytest.importorskip("gevent")

SCRIPT = r"""
from gevent import monkey
monkey.patch_all()
import grpc.experimental.gevent
grpc.experimental.gevent.init_gevent()

import collections, json, sys
import gevent
from stockgate.clients import Client, new_reservation_id

address, token = sys.argv[1], sys.argv[2]
with Client(address, token, timeout=20) as client:
    outcomes = collections.Counter()
    levels = []

    def buy(i):
        res = client.reserve(new_reservation_id(), "tmall", [("SKU-1", 1)])
        outcomes[res.outcome.name] += 1

    def watch():
        for update in client.watch("tmall", skus=["SKU-1"]):
            levels.append(update.available["SKU-1"])
            if levels[-1] == 0:
                return

    watcher = gevent.spawn(watch)
    gevent.sleep(0.2)
    gevent.joinall([gevent.spawn(buy, i) for i in range(200)], timeout=30, raise_error=True)
    watcher.join(timeout=10)
    print(json.dumps({"outcomes": outcomes, "messages": client.session_messages,
                      "last_level": levels[-1] if levels else None}))
"""


def test_greenlets_share_one_client_and_their_calls_coalesce(tmp_path):
    with running_server(tmp_path / "data") as server:
        stock_book(server.engine)
        script = tmp_path / "gevent_buyers.py"
        script.write_text(SCRIPT)
        done = subprocess.run([sys.executable, str(script), server.address, ADMIN],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["outcomes"] == {"OK": 80, "INSUFFICIENT_STOCK": 120}
        assert report["messages"] < 200  # the greenlets' calls shared messages
        assert report["last_level"] == 0  # the watch greenlet saw the sell-out
        assert sum(b.held for b in server.engine.stock("SKU-1")) == 80
