"""A damaged or truncated data file at start: the server refuses to start, says why, and
exits 1; it never serves numbers from a file it cannot trust.

liblmdb trusts its file: a truncated one makes it die of SIGBUS, a damaged page can make
it abort on an assertion or read garbage. So the store checks the file first (py-lmdb's
offline verifier, page by page, plus the file's length against the pages in use) and
refuses with CorruptRecord. What no check at start can see is a stored value changed into
another valid value (LMDB keeps no checksums): the consistency check finds the drift it
causes, since it recomputes every bucket from the journal.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import lmdb
import pytest
from client_harness import ADMIN, running_server, stock_book

from stockgate.clients import Client
from stockgate.engine import CorruptRecord, Engine, ManualClock, records
from stockgate.engine.store import DATA_FILE, MAX_DBS

PAGE_BYTES = 4096  # LMDB's page on this platform
START_TIMEOUT_S = 60
EXIT_CANNOT_START = 1


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    """A small store with every kind of record: catalogue, buckets, reservations in
    every state, a campaign, a journal."""
    path = tmp_path_factory.mktemp("good") / "db"
    clock = ManualClock()
    with Engine(path, clock=clock) as eng:
        from server_calls import seed_book

        seed_book(eng)
        for i in range(20):
            eng.receive(f"SKU-{i}", "WH-EAST", 100)
        now = clock.now_ms()
        eng.create_campaign("flash", channels=["tmall"], start_ms=now, end_ms=now + 60_000,
                            location="WH-EAST", source_pool="online", quotas={"SKU-0": 10},
                            customer_limit=1)
        for i in range(300):
            eng.reserve(f"R{i}", "tmall", [(f"SKU-{i % 20}", 1 + i % 3)])
            if i % 3 == 0:
                eng.commit(f"R{i}")
            elif i % 3 == 1:
                eng.release(f"R{i}")
    return path


EVERY_PAGE = r"""
import json, os, random, shutil, sys
from stockgate.engine import Engine, ManualClock, StockgateError
good, work, page_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])

def book(path):
    with Engine(path, clock=ManualClock()) as e:
        return ([repr(b) for i in range(20) for b in e.stock(f"SKU-{i}")],
                [repr(e.reservation(f"R{i}")) for i in range(300)],
                [repr(c) for c in e.campaigns()])

expected = book(good)
pages = os.path.getsize(os.path.join(good, "data.mdb")) // page_bytes
for page in range(pages):
    path = os.path.join(work, f"page-{page}")
    shutil.copytree(good, path)
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.seek(page * page_bytes)
        f.write(random.Random(page).randbytes(page_bytes))
    print(f"page {page}: ", end="", flush=True)  # a crash names its page
    try:
        seen = "same" if book(path) == expected else "DIFFERENT"
    except StockgateError as exc:
        seen = "refused " + type(exc).__name__
    print(seen, flush=True)
    shutil.rmtree(path)
"""


def damaged_copy(good, tmp_path, damage) -> str:
    path = tmp_path / "damaged"
    shutil.rmtree(path, ignore_errors=True)
    shutil.copytree(good, path)
    data = path / DATA_FILE
    with open(data, "r+b") as f:
        damage(f, os.path.getsize(data))
    return path


def garble(offset: int, length: int):
    def damage(f, size):
        f.seek(offset)
        f.write(random.Random(offset).randbytes(length))
    return damage


def truncate_to(fraction: float):
    def damage(f, size):
        f.truncate(int(size * fraction) // PAGE_BYTES * PAGE_BYTES)
    return damage


DAMAGES = {
    "truncated to half": truncate_to(0.5),
    "last page cut off": lambda f, size: f.truncate(size - PAGE_BYTES),
    "truncated to nothing": lambda f, size: f.truncate(0),
    "meta pages overwritten": garble(0, 2 * PAGE_BYTES),
    "a B-tree page overwritten": garble(5 * PAGE_BYTES, PAGE_BYTES),
}


@pytest.mark.parametrize("verify", ["--verify-store", "--no-verify-store"])
@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_the_server_refuses_a_damaged_data_file(good_store, tmp_path, damage, verify):
    # Without the page-by-page check, the cheap ones still catch these (a damaged page
    # in use is caught when it is read at open); liblmdb never sees a short file.
    path = damaged_copy(good_store, tmp_path, damage)
    done = subprocess.run([sys.executable, "-m", "stockgate.server", "--data-dir", str(path),
                           "--listen", "127.0.0.1:0", verify], capture_output=True,
                          text=True, timeout=START_TIMEOUT_S)
    assert done.returncode == EXIT_CANNOT_START, done.stderr
    assert done.stdout == ""  # no address printed: it never listened
    message = done.stderr.strip().splitlines()[-1]
    assert "stockgate serve:" in message and str(path) in message, message
    assert "restore it from a backup" in message or "not an LMDB file" in message, message
    assert "Traceback" not in done.stderr


def test_no_damaged_page_is_served(good_store, tmp_path):
    # Every page of the file overwritten in turn: the store opens with the same book
    # (a free page: nothing reads it) or refuses; never a different book, never a crash.
    # One child process opens them all, so that a crash would not take the test with it.
    done = subprocess.run([sys.executable, "-c", EVERY_PAGE, str(good_store), str(tmp_path),
                           str(PAGE_BYTES)], capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, f"died at {lines[-1:]}: {done.stderr[-2000:]}"
    seen = [line.split(": ", 1)[1] for line in lines]
    assert "DIFFERENT" not in seen, [line for line in lines if "DIFFERENT" in line]
    assert set(seen) <= {"same", "refused CorruptRecord", "refused StoreError"}, set(seen)
    assert seen.count("same") < len(seen) // 2  # most pages are in use, and noticed


def test_an_unknown_record_format_is_refused_by_name(good_store, tmp_path):
    path = damaged_copy(good_store, tmp_path, lambda f, size: None)
    env = lmdb.open(str(path), max_dbs=MAX_DBS)
    db = env.open_db(b"reservations")
    with env.begin(write=True) as txn:
        txn.put(b"R5", b"\x92\x63\x01", db=db)  # msgpack [99, 1]: a format never written
    env.close()
    with pytest.raises(CorruptRecord, match="unknown format"):
        Engine(path)
    done = subprocess.run([sys.executable, "-m", "stockgate.server", "--data-dir", str(path),
                           "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          timeout=START_TIMEOUT_S)
    assert done.returncode == EXIT_CANNOT_START
    assert "unknown format" in done.stderr


def test_a_counter_changed_behind_the_engines_back_is_found_by_the_check(tmp_path):
    # A valid value in place of another: no check at open can see it; the consistency
    # check recomputes the bucket from the journal and reports the drift.
    path = tmp_path / "db"
    with running_server(path) as s:
        stock_book(s.engine)
    env = lmdb.open(str(path), max_dbs=MAX_DBS)
    buckets = env.open_db(b"buckets")
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db=buckets)))
        on_hand, floor = records.decode_bucket(value)
        txn.put(key, value[:1] + records.BUCKET.pack(2, on_hand + 5, floor)[1:], db=buckets)
    env.close()
    with running_server(path) as s, Client(s.address, ADMIN) as client:
        report = client.check()
    assert not report.ok
    assert any("on_hand" in d for d in report.drifts), report.drifts
