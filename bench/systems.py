"""The systems under test, started on loopback in a work dir with the bench's book:
stockgate (its server over the book of book.py, durability fsync), Redis + Lua at
appendfsync always or everysec (and at always keeping stockgate's records of each
reservation: redis_peer.RESERVE_RECORDS_LUA), and PostgreSQL. One call starts any of them; what the
driver needs (its target name and address, the server's pid for CpuMeter) comes back.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import book
import postgres_peer
import redis_peer
from processes import Served

SYSTEMS = ("stockgate", "redis-always", "redis-everysec", "redis-records", "postgres")
PEERS = SYSTEMS[1:]
# Each Redis system: its appendfsync, and whether its script keeps the records.
REDIS = {"redis-always": ("always", False), "redis-everysec": ("everysec", False),
         "redis-records": ("always", True)}


@dataclass
class Running:
    """A started system."""

    name: str
    driver_system: str  # the driver's target (targets.open_target)
    target: str  # host:port, or a DSN
    pid: int
    info: dict[str, Any] = field(default_factory=dict)
    server: Any = None
    store: Path | None = None  # stockgate's store, to verify once stopped
    options: dict[str, Any] = field(default_factory=dict)  # the driver's, for its target

    def levels(self, skus: list[str]) -> list[int] | None:
        """The peers' counters of these SKUs (None for stockgate: its store is checked)."""
        return None if self.name == "stockgate" else self.server.levels(skus)

    def stop(self) -> None:
        self.server.stop()


def missing(system: str) -> str | None:
    """Why a system cannot run here (with how to install it), or None."""
    if system.startswith("redis") and not redis_peer.find():
        return redis_peer.INSTALL_HINT
    if system == "postgres" and not postgres_peer.find():
        return postgres_peer.INSTALL_HINT
    return None


def start(system: str, work: Path, *, skus: int, sellout_units: int,
          flash: tuple[str, dict[str, int]] | None = None) -> Running:
    """Start `system` with its data under `work` (which it may create), load the book
    (`skus` SKUs, the hot SKU, the sell-out SKU with `sellout_units`), and, for
    stockgate, open the flash sale `flash` = (campaign id, quotas)."""
    if system == "stockgate":
        return _stockgate(work / "stockgate-store", skus, sellout_units, flash)
    options: dict[str, Any] = {}
    if system in REDIS:
        binary = redis_peer.find()
        mode, records = REDIS[system]
        srv = redis_peer.RedisServer(binary, work / system, mode)
        script = redis_peer.RESERVE_RECORDS_LUA if records else redis_peer.RESERVE_LUA
        info = {"version": redis_peer.version(binary), "appendfsync": mode,
                "client": f"redis-py + hiredis, {redis_peer.POOL_CONNECTIONS} connections, "
                          f"auto-pipelined (≤ {redis_peer.PIPELINE_OPS_MAX} per pipeline)",
                "script": script.strip()}
        options["records"] = records
        target = srv.address
    elif system == "postgres":
        bindir = postgres_peer.find()
        srv = postgres_peer.PostgresServer(bindir, work / "postgres")
        info = {"version": postgres_peer.version(bindir),
                "client": f"asyncpg pool of {postgres_peer.POOL_CONNECTIONS}",
                "statement": postgres_peer.RESERVE_SQL,
                "runs": postgres_peer.environment_note()}
        target = srv.dsn
    else:
        raise ValueError(f"unknown system {system!r}; one of {', '.join(SYSTEMS)}")
    try:
        srv.seed(skus)
        srv.set_units(book.SELLOUT_SKU, sellout_units)
        if system == "postgres":
            info["settings"] = srv.settings()
    except BaseException:
        srv.stop()
        raise
    return Running(system, system.split("-")[0], target, srv.pid, info, srv,
                   options=options)


def _stockgate(store: Path, skus: int, sellout_units: int,
               flash: tuple[str, dict[str, int]] | None) -> Running:
    from stockgate.engine import Engine

    with Engine(store, map_size_bytes=1 << 32) as eng:
        if not book.has_catalogue(eng):
            book.load_catalogue(eng, skus)
        book.set_sellout_stock(eng, sellout_units)
        if flash:
            book.start_flash_sale(eng, flash[0], flash[1], eng.clock.now_ms())
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    srv = Served([sys.executable, "-m", "stockgate.server", "--data-dir", str(store),
                  "--listen", "127.0.0.1:0", "--durability", "fsync"], env)
    info = {"durability": "fsync", "client": "AsyncClient (client-coalesced Session)"}
    return Running("stockgate", "coalesced", srv.address, srv.pid, info, srv, store)
