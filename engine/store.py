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

try:  # py-lmdb 3.0's offline verifier: reads the file itself, never through liblmdb
    from lmdb.verify import VerifyError, verify
except ImportError:  # an older py-lmdb: only the length check below
    verify = None
    VerifyError = Exception

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
DATA_FILE = "data.mdb"  # LMDB's name for its data file in the store's directory
# LMDB errors that mean the file itself is damaged (as opposed to a full map or disk).
_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.BadTxnError, lmdb.InvalidError,
           lmdb.PanicError, lmdb.VersionMismatchError, lmdb.BadValsizeError)


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
        verify_file: bool = True,
    ) -> None:
        """Open (or create) the store in directory `path`. With verify_file, an existing
        data file is first checked page by page (py-lmdb's offline verifier, about 2 s per
        100 MB here): liblmdb trusts the file, and a damaged page can make it abort the
        process or return garbage. A damaged or truncated file raises CorruptRecord."""
        os.makedirs(path, exist_ok=True)
        self.path = os.fspath(path)
        self.map_size_bytes_max = map_size_bytes_max
        self._map_lock = threading.RLock()
        data_file = os.path.join(self.path, DATA_FILE)
        if os.path.exists(data_file) and os.path.getsize(data_file) == 0:
            # LMDB would take an empty file for a new store and serve an empty book.
            raise CorruptRecord(
                f"{data_file} is empty (0 bytes): a store truncated to nothing, or one "
                "whose creation never reached the disk; restore it from a backup, or "
                "delete it to start an empty store")
        if verify_file and verify is not None and os.path.exists(data_file):
            self._verify(data_file)
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
        try:
            self._check_length(data_file)
            # A reader slot left by a killed process would pin old pages for ever.
            self.env.reader_check()
            with self._damage_named():
                self.db = {name: self.env.open_db(name.encode()) for name in DB_NAMES}
                with self.env.begin(write=True) as txn:
                    meta = self.db["meta"]
                    found = txn.get(b"format", db=meta)
                    if found is None:
                        txn.put(b"format", records.pack([]), db=meta)
                    else:
                        records.unpack(found, "meta/format")
        except BaseException:
            self.env.close()
            raise

    def _verify(self, data_file: str) -> None:
        try:
            problems = verify(self.path)
        except (VerifyError, OSError) as exc:
            problems = [str(exc)]
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise CorruptRecord(f"{data_file} is damaged: {problems[0]}{more}; restore it "
                                "from a backup")

    def _check_length(self, data_file: str) -> None:
        """Refuse a data file shorter than the pages the store uses: LMDB maps the file
        and would die of SIGBUS on the first page past its end."""
        used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        have = os.path.getsize(data_file)
        if have < used:
            raise CorruptRecord(
                f"{data_file} is {have} bytes but the store's pages reach {used} bytes: "
                "the file was truncated (a bad copy or restore?); restore it from a "
                "backup")

    @contextlib.contextmanager
    def _damage_named(self) -> Iterator[None]:
        """LMDB errors of a damaged file become CorruptRecord naming the store; other
        LMDB errors become StoreError."""
        try:
            yield
        except _DAMAGE as exc:
            raise CorruptRecord(f"the store at {self.path} is damaged ({exc}); restore it "
                                "from a backup") from exc
        except lmdb.Error as exc:
            raise StoreError(f"reading the store at {self.path} failed: {exc}") from exc

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
        with self._map_lock, self._damage_named(), self.env.begin(buffers=False) as txn:
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
