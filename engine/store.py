"""The durable state: one LMDB environment, its sub-databases, and the only code that
opens write transactions. A write transaction belongs to the OS thread that began it, so
write() runs on the group-commit thread alone; the readers (items(), read_journal(),
journal_chunks(), last_seq()) open short read transactions from any thread."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from typing import Any

import lmdb

from . import limits, records
from .errors import CorruptRecord, StoreError, StoreFullError

# Sub-databases, in the order they are created.
DB_NAMES = (
    "meta",
    "bucket_keys",  # bucket id -> [sku, location, pool]; written once
    "buckets",  # bucket id -> counters (records.BUCKET)
    "catalog",  # locations, channels, rules, safety stock
    "campaigns",
    "transfers",
    "reservations",
    "journal",  # last seq of a chunk -> [first_seq, [event, ...]]
)
MAX_DBS_SPARE = 2  # room for a sub-database a later format adds before migrating
MAX_DBS = len(DB_NAMES) + MAX_DBS_SPARE


class Store:
    """LMDB opened for durable acknowledgement: sync and metasync on, no writemap (a
    failed write must raise, not crash the process)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size_bytes: int = limits.MAP_SIZE_BYTES_DEFAULT,
        map_size_bytes_max: int = limits.MAP_SIZE_BYTES_MAX,
        sync: bool = True,
    ) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = os.fspath(path)
        self.map_size_bytes_max = map_size_bytes_max
        self._map_lock = threading.RLock()
        try:
            self.env = lmdb.open(
                self.path,
                map_size=map_size_bytes,
                max_dbs=MAX_DBS,
                max_readers=limits.MAX_READERS,
                subdir=True,
                sync=sync,
                metasync=sync,
                writemap=False,
                map_async=False,
                readahead=False,
                meminit=False,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open the store at {self.path}: {exc}") from exc
        # A reader slot left by a killed process would pin old pages for ever.
        self.env.reader_check()
        self.db = {name: self.env.open_db(name.encode()) for name in DB_NAMES}
        with self.env.begin(write=True) as txn:
            meta = self.db["meta"]
            found = txn.get(b"format", db=meta)
            if found is None:
                txn.put(b"format", records.pack([]), db=meta)
            else:
                records.unpack(found, "meta/format")

    def close(self) -> None:
        self.env.close()

    @property
    def map_size_bytes(self) -> int:
        return self.env.info()["map_size"]

    def write(self, puts: dict[str, dict[bytes, bytes]], journal: tuple[bytes, bytes] | None):
        """Write one batch in one transaction and commit it (fsync in durable mode).

        Grows the map and retries when it is full; raises StoreFullError when the disk or
        map_size_bytes_max is the limit, StoreError on anything else. On any error nothing
        of the batch is in the store.
        """
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    for name, items in puts.items():
                        if items:
                            txn.cursor(self.db[name]).putmulti(items.items())
                    if journal is not None:
                        txn.put(journal[0], journal[1], db=self.db["journal"])
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as exc:
                if getattr(exc, "errno", None) == errno.ENOSPC or "No space" in str(exc):
                    raise StoreFullError(
                        f"the disk holding {self.path} is full: free space, then retry "
                        "(nothing acknowledged was lost)"
                    ) from exc
                raise StoreError(f"write to {self.path} failed: {exc}") from exc
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise StoreFullError(
                        f"the disk holding {self.path} is full: free space, then retry"
                    ) from exc
                raise StoreError(f"write to {self.path} failed: {exc}") from exc

    def _grow(self) -> None:
        current = self.map_size_bytes
        if current >= self.map_size_bytes_max:
            raise StoreFullError(
                f"the store at {self.path} reached map_size_bytes_max "
                f"({self.map_size_bytes_max} bytes): raise it, then retry"
            )
        new = min(current * limits.MAP_GROWTH_FACTOR, self.map_size_bytes_max)
        try:
            # set_mapsize() invalidates every open transaction: no reader may hold one.
            with self._map_lock:
                self.env.set_mapsize(new)
        except lmdb.Error as exc:
            raise StoreFullError(f"cannot grow the store map to {new} bytes: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[lmdb.Transaction]:
        """A read transaction the map cannot be resized under (readers are short and rare:
        the journal, the check, recovery)."""
        with self._map_lock, self.env.begin(buffers=False) as txn:
            yield txn

    def items(self, name: str) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of one sub-database, in key order, from one snapshot."""
        with self._reading() as txn:
            yield from txn.cursor(self.db[name]).iternext(keys=True, values=True)

    def last_seq(self) -> int:
        with self._reading() as txn:
            cur = txn.cursor(self.db["journal"])
            if not cur.last():
                return 0
            return records.SEQ.unpack(cur.key())[0]

    def read_journal(self, from_seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` events with seq >= from_seq, in order."""
        out: list[dict[str, Any]] = []
        with self._reading() as txn:
            cur = txn.cursor(self.db["journal"])
            if not cur.set_range(records.SEQ.pack(from_seq)):
                return out
            for key, value in cur.iternext():
                first, events = records.unpack(value, f"journal/{key.hex()}")
                for i, ev in enumerate(events):
                    seq = first + i
                    if seq < from_seq:
                        continue
                    ev["seq"] = seq
                    out.append(ev)
                    if len(out) >= limit:
                        return out
        return out

    def journal_chunks(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        for key, value in self.items("journal"):
            first, events = records.unpack(value, f"journal/{key.hex()}")
            if records.SEQ.unpack(key)[0] != first + len(events) - 1:
                raise CorruptRecord(f"journal chunk {key.hex()} does not end at its key")
            yield first, events
