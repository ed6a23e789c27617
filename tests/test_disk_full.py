"""When the store runs out of room: the LMDB map reaches map_size_bytes_max, or the disk
under it fills up. The call gets UNAVAILABLE saying so, health goes NOT_SERVING, reads
go on, nothing acknowledged is lost, and writes work again once there is room (a larger
map after a restart; freed disk space at once).

The full-disk test mounts a small tmpfs, so it needs root (CAP_SYS_ADMIN); elsewhere it
is skipped. The same failure, simulated, runs everywhere.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import pytest
from client_harness import ADMIN, running_server, stock_book
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stockgate.clients import Client, Outcome, ReserveRequest, Unavailable
from stockgate.engine import StoreFullError, limits

MAP_BYTES = limits.MAP_SIZE_BYTES_MIN  # 1 MiB: a few thousand reservations
TMPFS_BYTES = 3 * 1024 * 1024
FILLER_CHUNK_BYTES = 64 * 1024
CALL_TIMEOUT_S = 1.0  # long enough for a healthy call, short for a failing one
# Filling the store: a healthy batch takes tens of ms, but on a loaded CI machine it has
# taken over a second; the refused batch is resent until this passes, so it stays short.
FILL_CALL_TIMEOUT_S = 4.0
RESERVATIONS_MAX = 100_000  # a map or disk of the sizes above is full long before
FILL_BATCH = 200  # reservations per call while filling


def health(address: str) -> int:
    import grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(), timeout=10).status


def reserve_until_refused(client: Client, prefix: str) -> tuple[list[str], list[str],
                                                                 Unavailable]:
    """Reserve in batches of FILL_BATCH until the server refuses; returns (the
    acknowledged ids, the ids of the refused batch, the error)."""
    acked: list[str] = []
    for n in range(0, RESERVATIONS_MAX, FILL_BATCH):
        ids = [f"{prefix}-{i}" for i in range(n, n + FILL_BATCH)]
        try:
            results = client.reserve_many(
                [ReserveRequest(rid, "tmall", [("SKU-1", 1)]) for rid in ids],
                timeout=FILL_CALL_TIMEOUT_S)
        except Unavailable as e:
            return acked, ids, e
        assert all(r.ok for r in results)
        acked += ids
    raise AssertionError(f"{RESERVATIONS_MAX} reservations and still room")


def test_the_map_grows_when_full(tmp_path):
    with running_server(tmp_path / "db", map_size_bytes=MAP_BYTES,
                        map_size_bytes_max=64 * MAP_BYTES) as s:
        stock_book(s.engine)
        s.engine.receive("SKU-1", "WH-EAST", 100_000)
        with Client(s.address, ADMIN) as client:
            for n in range(0, 6_000, FILL_BATCH):
                assert all(r.ok for r in client.reserve_many(
                    [ReserveRequest(f"R-{i}", "tmall", [("SKU-1", 1)])
                     for i in range(n, n + FILL_BATCH)]))
        assert s.engine._store.map_size_bytes > MAP_BYTES
        assert s.engine.check().ok


def test_a_map_at_its_maximum_refuses_cleanly_and_loses_nothing(tmp_path):
    db = tmp_path / "db"
    with running_server(db, map_size_bytes=MAP_BYTES, map_size_bytes_max=MAP_BYTES) as s:
        stock_book(s.engine)
        s.engine.receive("SKU-1", "WH-EAST", 100_000)
        with Client(s.address, ADMIN) as client:
            acked, refused, error = reserve_until_refused(client, "R")
            assert "map_size_bytes_max" in str(error) and "raise it" in str(error)
            assert health(s.address) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert client.availability("tmall", ["SKU-1"])  # reads go on
            assert all(client.reservation(rid) is None for rid in refused)  # nothing kept
    # A larger map, after a restart: everything acknowledged is there, and it serves.
    with running_server(db, map_size_bytes=MAP_BYTES, map_size_bytes_max=64 * MAP_BYTES) as s:
        assert health(s.address) == health_pb2.HealthCheckResponse.SERVING
        with Client(s.address, ADMIN) as client:
            assert all(client.reservation(rid).state.name == "HELD" for rid in acked)
            again = client.reserve(refused[0], "tmall", [("SKU-1", 1)])
            assert again.ok and not again.replayed
            assert client.check().ok


def test_a_caller_whose_deadline_passes_on_a_full_store_is_told_why(tmp_path):
    # The clients send an UNAVAILABLE operation again until its deadline; when that
    # passes, the caller gets the server's reason, not a bare deadline.
    with running_server(tmp_path / "db") as s:
        stock_book(s.engine)
        real_write = s.engine._store.write

        def full(*args, **kwargs):
            raise StoreFullError("the disk holding the store is full: free space, then retry")

        s.engine._store.write = full
        try:
            with Client(s.address, ADMIN) as client:
                with pytest.raises(Unavailable, match="disk holding the store is full"):
                    client.reserve("R-1", "tmall", [("SKU-1", 1)], timeout=CALL_TIMEOUT_S)
        finally:
            s.engine._store.write = real_write

        async def aio():
            from stockgate.clients import AsyncClient

            async with AsyncClient(s.address, ADMIN) as client:
                s.engine._store.write = full
                try:
                    await client.reserve("R-2", "tmall", [("SKU-1", 1)],
                                         timeout=CALL_TIMEOUT_S)
                finally:
                    s.engine._store.write = real_write

        import asyncio

        with pytest.raises(Unavailable, match="disk holding the store is full"):
            asyncio.run(aio())


@contextlib.contextmanager
def small_tmpfs(path):
    """A tmpfs of TMPFS_BYTES at path; skips the test where mounting is not allowed."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs",
                           str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path) -> int:
    """Fill the filesystem of `path` with one file; returns its size."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    size = 0
    chunk = b"\0" * FILLER_CHUNK_BYTES
    try:
        while True:
            try:
                size += os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    return size
                chunk = chunk[:len(chunk) // 2]
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_a_full_disk_refuses_cleanly_and_recovers_when_space_returns(tmp_path):
    with small_tmpfs(tmp_path / "small") as mnt:
        db = mnt / "db"
        with running_server(db) as s:
            stock_book(s.engine)
            s.engine.receive("SKU-1", "WH-EAST", 100_000)
            filler = mnt / f"filler-{uuid.uuid4().hex}"
            fill(filler)
            with Client(s.address, ADMIN) as client:
                acked, refused, error = reserve_until_refused(client, "R")
                assert "disk" in str(error) and "full" in str(error), error
                assert health(s.address) == health_pb2.HealthCheckResponse.NOT_SERVING
                assert all(client.reservation(rid) is None for rid in refused)
                assert client.availability("tmall", ["SKU-1"])["SKU-1"] > 0  # reads go on
                # Single calls through the Session stream get the same clear answer (a
                # few may still fit in pages the failed batch left free).
                for i in range(FILL_BATCH):
                    rid = f"S-{i}"
                    try:
                        acked.append(client.reserve(rid, "tmall", [("SKU-1", 1)],
                                                    timeout=CALL_TIMEOUT_S).reservation
                                     .reservation_id)
                    except Unavailable as e:
                        assert "disk" in str(e) and "full" in str(e), e
                        break
                else:
                    raise AssertionError("single reservations still fit")
                refused = [rid, *refused]
                assert client.reservation(rid) is None
                filler.unlink()  # space returns
                again = client.reserve(refused[0], "tmall", [("SKU-1", 1)])
                assert again.outcome is Outcome.OK and not again.replayed
                assert health(s.address) == health_pb2.HealthCheckResponse.SERVING
                assert all(client.reservation(rid).state.name == "HELD" for rid in acked)
                assert client.check().ok
        with running_server(db) as s:  # and after a restart
            with Client(s.address, ADMIN) as client:
                assert all(client.reservation(rid) is not None for rid in acked)
                assert client.reservation(refused[0]) is not None
                assert client.check().ok
