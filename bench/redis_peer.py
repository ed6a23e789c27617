"""The Redis peer: Redis 7 with a Lua check-and-decrement script, the usual flash-sale
answer, started by the bench on loopback in a temp dir, at `appendfsync always` (every
acknowledged write is in the AOF, fsync'd: durable per ack, as stockgate is) or
`everysec` (a crash may lose the last second).

The check-and-decrement keeps nothing but the counter. With `records`, the script also
keeps what stockgate keeps of each reservation, so the two do the same work: the hold's
record under the caller's id (a second call with the id changes nothing), its expiry in
a sorted set (what a sweeper would return to stock) and an entry in a journal stream
(what channels and audits read).

The driver's target pipelines as the stockgate client coalesces: concurrent calls of one
process queue up, and each of POOL_CONNECTIONS connections sends whatever is queued as
one pipeline of EVALSHA (redis-py's Pipeline, transaction=False), so Redis gets the
same batching advantage stockgate's Session stream has. Keys are `stock:<sku>`.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from book import CHANNEL, HOT_SKU, HOT_UNITS, SELLOUT_SKU, sku_name
from processes import SERVER_START_S_MAX, SERVER_STOP_S_MAX, free_port
from targets import TTL_MS  # the holds stockgate is given in the same phases

INSTALL_HINT = ("Redis 7 not found (redis-server): install it with "
                "`apt-get install -y redis-server` (Debian/Ubuntu) and run again")
MODES = ("always", "everysec")
UNITS_PER_SKU = 10**9  # the throughput cases never sell out
POOL_CONNECTIONS = 8  # pipelines in flight at once from one driver process
PIPELINE_OPS_MAX = 1_000  # calls sent in one pipeline
SEED_KEYS_PER_MSET = 10_000
KEY_PREFIX = "stock:"
LEVEL_SHORT = -1  # a script's answer: fewer units than asked, nothing taken
LEVEL_REPLAYED = -2  # the records script's answer: the id is held already, nothing changed
# Take qty units if there are that many: the new level, or LEVEL_SHORT.
RESERVE_LUA = f"""
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local qty = tonumber(ARGV[1])
if stock >= qty then
  redis.call('DECRBY', KEYS[1], qty)
  return stock - qty
end
return {LEVEL_SHORT}
"""
# The same decision, keeping the records: KEYS = stock, the hold, the expiry set, the
# journal; ARGV = qty, the hold's record, its expiry (ms), the reservation id, the SKU.
# LEVEL_REPLAYED: the id is held already (a replay: nothing changes).
RESERVE_RECORDS_LUA = f"""
if redis.call('EXISTS', KEYS[2]) == 1 then return {LEVEL_REPLAYED} end
local stock = tonumber(redis.call('GET', KEYS[1]) or '0')
local qty = tonumber(ARGV[1])
if stock < qty then return {LEVEL_SHORT} end
redis.call('DECRBY', KEYS[1], qty)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('XADD', KEYS[4], '*', 'reserved', ARGV[4], 'sku', ARGV[5], 'qty', ARGV[1])
return stock - qty
"""
HOLD_PREFIX = "hold:"
EXPIRY_KEY = "holds:expiry"
JOURNAL_KEY = "journal"


def find() -> str | None:
    """The redis-server binary, or None."""
    return shutil.which("redis-server")


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip()


def key(sku: str) -> str:
    return KEY_PREFIX + sku


class RedisServer:
    """redis-server on 127.0.0.1 with its AOF in `directory`."""

    def __init__(self, binary: str, directory: Path, appendfsync: str) -> None:
        if appendfsync not in MODES:
            raise ValueError(f"appendfsync {appendfsync!r}; one of {MODES}")
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.appendfsync = appendfsync
        self.directory = directory
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--appendonly", "yes", "--appendfsync", appendfsync, "--save", "",
             "--daemonize", "no", "--logfile", str(directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)

    def _wait_ready(self) -> None:
        import redis

        deadline = time.monotonic() + SERVER_START_S_MAX
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}); see "
                                   f"{self.directory / 'redis.log'}")
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer in time")

    def seed(self, skus: int) -> None:
        """stock:<sku> for the uniform SKUs, the hot one and the sell-out one (0)."""
        r = self.client()
        names = [sku_name(i) for i in range(skus)]
        for i in range(0, len(names), SEED_KEYS_PER_MSET):
            r.mset({key(s): UNITS_PER_SKU for s in names[i:i + SEED_KEYS_PER_MSET]})
        r.mset({key(HOT_SKU): HOT_UNITS, key(SELLOUT_SKU): 0})

    def set_units(self, sku: str, units: int) -> None:
        self.client().set(key(sku), units)

    def levels(self, skus: list[str]) -> list[int]:
        r = self.client()
        out: list[int] = []
        for i in range(0, len(skus), SEED_KEYS_PER_MSET):
            out.extend(int(v) for v in r.mget([key(s) for s in skus[i:i + SEED_KEYS_PER_MSET]]))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis fsyncs the AOF and exits
            try:
                self.proc.wait(SERVER_STOP_S_MAX)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class RedisTarget:
    """The driver's Redis target: EVALSHA of RESERVE_LUA (or, with the option `records`,
    RESERVE_RECORDS_LUA), auto-pipelined."""

    name = "redis"

    def __init__(self, client: Any, sha: str, connections: int, records: bool) -> None:
        self.client = client
        self.sha = sha
        self.connections = connections
        self.records = records
        self.pending: list[tuple[str, str, asyncio.Future]] = []
        self.flushing = 0

    @classmethod
    async def open(cls, address: str, options: dict[str, Any]) -> RedisTarget:
        import redis.asyncio as aioredis

        host, port = address.rsplit(":", 1)
        connections = int(options.get("connections", POOL_CONNECTIONS))
        client = aioredis.Redis(host=host, port=int(port), max_connections=connections,
                                socket_timeout=60)
        records = bool(options.get("records"))
        sha = await client.script_load(RESERVE_RECORDS_LUA if records else RESERVE_LUA)
        return cls(client, sha, connections, records)

    async def reserve(self, rid: str, sku: str) -> tuple[str, int, int]:
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((rid, sku, fut))
        if self.flushing < self.connections:
            self.flushing += 1
            asyncio.ensure_future(self._flush())
        level = await fut
        if level >= 0:
            return ("ok", 1, 1)
        return ("replayed", 0, 1) if level == LEVEL_REPLAYED else ("sold_out", 0, 1)

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch = self.pending[:PIPELINE_OPS_MAX]
                del self.pending[:PIPELINE_OPS_MAX]
                pipe = self.client.pipeline(transaction=False)
                if self.records:
                    now = int(time.time() * 1000)
                    expires = now + TTL_MS
                    for rid, sku, _ in batch:
                        # The record as stockgate keeps it: channel, lines, times.
                        pipe.evalsha(self.sha, 4, KEY_PREFIX + sku, HOLD_PREFIX + rid,
                                     EXPIRY_KEY, JOURNAL_KEY, 1,
                                     f"{CHANNEL}|{sku}:1|{now}|{expires}", expires, rid, sku)
                else:
                    for _, sku, _ in batch:
                        pipe.evalsha(self.sha, 1, KEY_PREFIX + sku, 1)
                try:
                    answers = await pipe.execute(raise_on_error=False)
                except Exception as exc:  # noqa: BLE001 - each caller gets the failure
                    answers = [exc] * len(batch)
                for (_, _, fut), a in zip(batch, answers):
                    if isinstance(a, Exception):
                        fut.set_exception(a)
                    else:
                        fut.set_result(int(a))
        finally:
            self.flushing -= 1

    async def close(self) -> None:
        await self.client.aclose()
