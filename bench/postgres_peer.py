"""The PostgreSQL peer: a row per SKU and the guarded decrement

    UPDATE stock SET available = available - $1 WHERE sku = $2 AND available >= $1

in autocommit with `synchronous_commit = on` (each acknowledged UPDATE is in the fsync'd
WAL: durable per ack). On one hot SKU the row lock serialises every buyer: each waits
for the previous transaction's commit, fsync included.

The bench starts PostgreSQL itself on loopback in a temp dir: initdb, then pg_ctl, as the
`postgres` user when it runs as root (PostgreSQL refuses to run as root), in a directory
that user owns. The driver's target is an asyncpg pool of POOL_CONNECTIONS connections,
each statement prepared once per connection.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from book import HOT_SKU, HOT_UNITS, SELLOUT_SKU, sku_name
from processes import SERVER_START_S_MAX, SERVER_STOP_S_MAX, free_port, is_root

INSTALL_HINT = ("PostgreSQL 15 not found (initdb, pg_ctl): install it with "
                "`apt-get install -y postgresql` (Debian/Ubuntu) and run again")
OS_USER = "postgres"  # who runs the server when the bench runs as root
UNITS_PER_SKU = 10**9
POOL_CONNECTIONS = 32  # PostgreSQL backends serving the driver (one process each)
CONNECTIONS_MAX = 100  # max_connections of the bench's server
RESERVE_SQL = ("UPDATE stock SET available = available - $1 "
               "WHERE sku = $2 AND available >= $1")


def find() -> Path | None:
    """The bin directory holding initdb and pg_ctl (the newest version), or None."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                        key=lambda p: [int(x) for x in Path(p).parent.name.split(".")
                                       if x.isdigit()])
    for d in reversed(candidates):
        if (Path(d) / "initdb").exists() and (Path(d) / "pg_ctl").exists():
            return Path(d)
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    postgres = shutil.which("postgres")
    if postgres and (Path(postgres).resolve().parent / "initdb").exists():
        return Path(postgres).resolve().parent
    return None


def version(bindir: Path) -> str:
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"\d+(\.\d+)+", out)
    return m.group(0) if m else out.strip()


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", OS_USER, "--"] + argv if is_root() else argv


def _reachable_by_owner(directory: Path) -> bool:
    """Can OS_USER enter every folder down to `directory`?"""
    return subprocess.run(_as_owner(["test", "-x", str(directory.parent)]),
                          capture_output=True).returncode == 0


class PostgresServer:
    """A PostgreSQL cluster in `directory` (made and owned by OS_USER when root),
    listening on 127.0.0.1 only."""

    def __init__(self, bindir: Path, directory: Path) -> None:
        self.bindir = bindir
        directory.mkdir(parents=True, exist_ok=True)
        self.own_dir = False
        if is_root():
            if not _reachable_by_owner(directory):
                # A private parent (pytest's tmp dirs are 0700): a dir of its own in the
                # system temp dir instead, removed when the server stops.
                directory = Path(tempfile.mkdtemp(prefix="stockgate-pg-"))
                self.own_dir = True
            shutil.chown(directory, OS_USER)
        self.directory = directory
        self.data = directory / "data"
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dsn = f"postgresql://{OS_USER}@127.0.0.1:{self.port}/postgres"
        run = dict(capture_output=True, text=True, cwd=directory)
        done = subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(self.data),
                                         "-A", "trust", "-U", OS_USER, "-E", "UTF8",
                                         "--no-sync"]), **run)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        opts = (f"-p {self.port} -k {directory} -c listen_addresses=127.0.0.1 "
                f"-c synchronous_commit=on -c fsync=on -c max_connections={CONNECTIONS_MAX}")
        done = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(self.data), "-o",
                                         opts, "-l", str(directory / "postgres.log"), "-w",
                                         "-t", str(SERVER_START_S_MAX), "start"]), **run)
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} "
                               f"{done.stdout.strip()}")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def _sql(self, fn) -> Any:
        import asyncio

        import asyncpg

        async def go():
            conn = await asyncpg.connect(self.dsn)
            try:
                return await fn(conn)
            finally:
                await conn.close()

        return asyncio.run(go())

    def seed(self, skus: int) -> None:
        """The stock table: the uniform SKUs, the hot one and the sell-out one (0)."""
        records = [(sku_name(i), UNITS_PER_SKU) for i in range(skus)]
        records += [(HOT_SKU, HOT_UNITS), (SELLOUT_SKU, 0)]

        async def go(conn):
            await conn.execute("CREATE TABLE stock (sku text PRIMARY KEY, "
                               "available bigint NOT NULL)")
            await conn.copy_records_to_table("stock", records=records)
            await conn.execute("VACUUM ANALYZE stock")

        self._sql(go)

    def set_units(self, sku: str, units: int) -> None:
        self._sql(lambda c: c.execute("UPDATE stock SET available = $1 WHERE sku = $2",
                                      units, sku))

    def levels(self, skus: list[str]) -> list[int]:
        async def go(conn):
            rows = await conn.fetch("SELECT sku, available FROM stock WHERE sku = ANY($1)",
                                    skus)
            got = {r["sku"]: r["available"] for r in rows}
            return [got[s] for s in skus]

        return self._sql(go)

    def settings(self) -> dict[str, str]:
        async def go(conn):
            return {n: await conn.fetchval(f"SHOW {n}") for n in
                    ("synchronous_commit", "fsync", "wal_sync_method", "server_version")}

        return self._sql(go)

    def stop(self) -> None:
        subprocess.run(_as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m",
                                  "fast", "-w", "-t", str(SERVER_STOP_S_MAX), "stop"]),
                       capture_output=True, cwd=self.directory)
        if self.own_dir:
            self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class PostgresTarget:
    """The driver's PostgreSQL target: RESERVE_SQL on an asyncpg pool."""

    name = "postgres"

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    @classmethod
    async def open(cls, dsn: str, options: dict[str, Any]) -> PostgresTarget:
        import asyncpg

        size = int(options.get("connections", POOL_CONNECTIONS))
        pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size)
        return cls(pool)

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        status = await self.pool.execute(RESERVE_SQL, 1, sku)
        return ("ok", 1, 1) if status == "UPDATE 1" else ("sold_out", 0, 1)

    async def close(self) -> None:
        await self.pool.close()


def environment_note() -> str:
    return "as root: runs as the postgres user" if is_root() else f"as uid {os.getuid()}"
