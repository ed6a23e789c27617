"""`python bench/run.py overload --out DIR`: stockgate flooded at five times its capacity.

One server (durability fsync, its own process), one run, four phases side by side:

  capacity   closed-loop: MESSAGES_IN_FLIGHT Session messages of OPS_PER_MESSAGE reserves
             always in flight; what the server answers per second is its capacity
  unloaded   open-loop at UNLOADED_SHARE of that capacity: the reference latency
  flood      open-loop at FLOOD_FACTOR x capacity: the server must admit what it can
             answer in time and refuse the rest at once (RESOURCE_EXHAUSTED + retry hint)
  recovery   open-loop at UNLOADED_SHARE again, right after the flood

Latency counts from when a message was due, not when it went out (no coordinated
omission), per message of OPS_PER_MESSAGE reserves: "admitted" messages had every
reserve decided, "shed" ones were refused for overload. The messages are built before
each phase from one template (only the ids change), so the generator spends its CPU on
the wire and not on protobuf; even so, on a 2-core machine it competes with the server,
which bench/README.md discusses.

Afterwards the server is stopped and its store opened: the units the answers granted
must be exactly the units held (nothing shed changed anything), and check() clean.
Printed and written to DIR/results.json: ops/s, admitted and shed p50/p99, refusals/s,
retry hints, server CPU per operation, the server's peak RSS, and the targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from book import sku_name  # noqa: E402
from histogram import LatencyHistogram  # noqa: E402
from machine import machine_info  # noqa: E402
from processes import CpuMeter, Served, status_kb  # noqa: E402
from targets import OPS_PER_MESSAGE, SHED_CODE  # noqa: E402

from server import CHANNEL, seed_store  # noqa: E402

MESSAGES_IN_FLIGHT = 8  # the capacity phase's closed loop
UNLOADED_SHARE = 0.5
FLOOD_FACTOR = 5.0
PHASE_S = 10.0
QUICK_PHASE_S = 3.0
TICK_S = 0.002
CLOSED_LOOP_MESSAGES_PER_S_MAX = 2_000  # 6x the fastest closed loop measured here
BUILD_SLACK = 1.2  # messages built past the phase's need
TIMELINE_BIN_S = 0.1  # how often the open loop sends the messages that came due
TTL_MS = 7 * 24 * 3_600 * 1_000
ID_DIGITS = 9  # message numbers in ids: fixed width, so one template serves every message
OP_ID_BASE = 1 << 56  # operation ids: a fixed varint width for the same reason
ANSWER_SLACK_S = 30.0  # a phase's last answers may come this long after its end
TARGETS = {
    "flood_admitted_p99_over_unloaded": ("<=", 2.0),
    "recovery_admitted_p99_over_unloaded": ("<=", 2.0),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- messages

class Messages:
    """Serialized SessionRequests of OPS_PER_MESSAGE one-unit reserves, uniform over the
    SKUs, each message with its own reservation and operation ids. The wire bytes are
    put together by hand from pieces protobuf serialized once: a message costs the
    generator a few varints and one replace instead of a hundred protobuf objects."""

    def __init__(self, skus: int, tag: str) -> None:
        from stockgate.v1 import reservations_pb2 as R
        from stockgate.v1 import types_pb2 as T

        marker = "#" * ID_DIGITS
        self._marker = marker.encode()
        head = b"\x08" + _varint(OP_ID_BASE)  # Operation.id, field 1, a varint
        self._ops = []  # per operation: (its frame in SessionRequest.ops, the rest after id)
        for k in range(OPS_PER_MESSAGE):
            op = R.Operation(id=OP_ID_BASE, reserve=R.ReserveRequest(
                reservation_id=f"{tag}-{marker}-{k:03d}", channel=CHANNEL, ttl_ms=TTL_MS,
                lines=[T.Line(sku=sku_name(k * 7919 % skus), qty=1)])).SerializeToString()
            assert op.startswith(head)
            self._ops.append((b"\x0a" + _varint(len(op)) + b"\x08", op[len(head):]))
        self.next = 0

    def build(self, n: int) -> list[bytes]:
        """The next n messages; message m's operation ids are OP_ID_BASE + m * OPS + k."""
        out = []
        for _ in range(n):
            self.next += 1
            m = self.next
            base = OP_ID_BASE + m * OPS_PER_MESSAGE
            parts = []
            for k, (frame, rest) in enumerate(self._ops):
                parts += (frame, _varint(base + k), rest)
            out.append(b"".join(parts).replace(self._marker, b"%0*d" % (ID_DIGITS, m)))
        return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def message_of(op_id: int) -> int:
    """The message number an operation id belongs to (see Messages.build)."""
    return (op_id - OP_ID_BASE) // OPS_PER_MESSAGE


class Stream:
    """One Session stream sending raw messages and timing each message's answers."""

    def __init__(self, address: str) -> None:
        import grpc

        self._channel = grpc.aio.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)])
        self._outbox: asyncio.Queue = asyncio.Queue()
        method = self._channel.stream_stream("/stockgate.v1.Reservations/Session",
                                             request_serializer=None,
                                             response_deserializer=None)
        self._call = method(self._requests())
        # message number -> [t_due, answered, granted, shed, retry_after_ms]
        self._open: dict[int, list] = {}
        self.errors: list[str] = []
        # Who hears of each message answered: the phase running now (run_phase sets it).
        self.on_done = lambda t_due, t_done, granted, shed, retry: None
        self._reader = asyncio.ensure_future(self._read())

    async def _requests(self):
        while True:
            yield await self._outbox.get()

    def send(self, number: int, payload: bytes, t_due: float) -> None:
        self._open[number] = [t_due, 0, 0, False, 0]
        self._outbox.put_nowait(payload)

    async def _read(self) -> None:
        """Read answers until the stream ends; self.on_done(t_due, t_done, granted, shed,
        retry_ms) per message fully answered."""
        from stockgate.v1 import reservations_pb2 as R
        from stockgate.v1 import types_pb2 as T

        ok = T.OUTCOME_OK
        parse = R.SessionResponse.FromString
        perf = time.perf_counter
        try:
            async for raw in self._call:
                now = perf()
                resp = parse(raw)
                for r in resp.results:
                    if r.HasField("result"):
                        self._answered(r.id, now, r.result.outcome == ok, None)
                    else:
                        self._answered(r.id, now, False, r.error)
                for op_id in resp.refused_ids:
                    self._answered(op_id, now, False, resp.refused_error)
        except asyncio.CancelledError:
            pass

    def _answered(self, op_id: int, now: float, granted: bool, error: Any) -> None:
        """One operation's answer; on_done() once its message is answered whole."""
        n = message_of(op_id)
        m = self._open[n]
        m[1] += 1
        m[2] += granted
        if error is not None:
            if error.code == SHED_CODE:
                m[3] = True
                m[4] = error.retry_after_ms
            else:
                self.errors.append(f"{error.code}: {error.message}")
        if m[1] == OPS_PER_MESSAGE:
            del self._open[n]
            self.on_done(m[0], now, m[2], m[3], m[4])

    async def close(self) -> None:
        self._reader.cancel()
        self._call.cancel()
        await self._channel.close()


# ---------------------------------------------------------------------------- phases

class Tally:
    """One phase's answers: admitted and shed messages, their latencies, retry hints."""

    def __init__(self, start: float) -> None:
        self.start = start
        # Per TIMELINE_BIN_S of due time: [admitted, shed, slowest answer in ms].
        self.timeline: list[list[float]] = []
        self.admitted = LatencyHistogram()
        self.shed = LatencyHistogram()
        self.granted_units = 0
        self.partial = 0  # messages partly admitted (chunks cut across a message)
        self.retry_ms_min = None
        self.no_retry_hint = 0
        self.answered = 0

    def done(self, t_due: float, t_done: float, granted: int, shed: bool, retry: int) -> None:
        self.answered += 1
        self.granted_units += granted
        b = max(0, int((t_due - self.start) / TIMELINE_BIN_S))
        if b >= len(self.timeline):
            self.timeline.extend([0, 0, 0.0] for _ in range(b + 1 - len(self.timeline)))
        row = self.timeline[b]
        row[1 if shed else 0] += 1
        row[2] = max(row[2], (t_done - t_due) * 1e3)
        if shed:
            self.shed.record(t_done - t_due)
            if retry <= 0:
                self.no_retry_hint += 1
            elif self.retry_ms_min is None or retry < self.retry_ms_min:
                self.retry_ms_min = retry
            if granted:
                self.partial += 1
        else:
            self.admitted.record(t_done - t_due)


async def run_phase(stream: Stream, msgs: Messages, *, duration_s: float,
                    rate: float = 0.0, in_flight: int = 0) -> dict[str, Any]:
    """Closed-loop (in_flight messages always out) or open-loop (rate messages/s)."""
    perf = time.perf_counter
    tally = Tally(0.0)  # its start is set when the phase starts, below
    # Messages are built before the phase, so it never waits on building: enough for the
    # rate (or the fastest closed loop seen), with slack.
    per_s = rate or CLOSED_LOOP_MESSAGES_PER_S_MAX
    budget = int(per_s * duration_s * BUILD_SLACK) + in_flight
    first = msgs.next + 1  # the number of payloads[0]
    payloads = msgs.build(budget)
    sent = 0
    finished = asyncio.Event()
    state = {"closed": False}

    def on_done(t_due, t_done, granted, shed, retry):
        nonlocal sent
        tally.done(t_due, t_done, granted, shed, retry)
        if in_flight and not state["closed"] and sent < len(payloads):
            stream.send(first + sent, payloads[sent], perf())
            sent += 1
        if tally.answered == sent and state["closed"]:
            finished.set()

    stream.on_done = on_done
    cpu0 = time.process_time()
    start = tally.start = perf()
    end = start + duration_s
    if in_flight:
        for _ in range(in_flight):
            stream.send(first + sent, payloads[sent], perf())
            sent += 1
        await asyncio.sleep(duration_s)
    else:
        while (now := perf()) < end:
            due = min(int((now - start) * rate), len(payloads))
            while sent < due:
                stream.send(first + sent, payloads[sent], start + sent / rate)
                sent += 1
            await asyncio.sleep(TICK_S)
    state["closed"] = True
    if tally.answered < sent:
        try:
            await asyncio.wait_for(finished.wait(), ANSWER_SLACK_S)
        except TimeoutError:
            pass
    wall = perf() - start
    return {"messages_sent": sent, "messages_answered": tally.answered,
            "wall_s": wall, "tally": tally, "generator_cpu_s": time.process_time() - cpu0}


def summary(ph: dict[str, Any], server_ns: int, rss_kb: int) -> dict[str, Any]:
    t: Tally = ph["tally"]
    wall = ph["wall_s"]
    adm, shed = t.admitted, t.shed
    out = {
        "messages_sent": ph["messages_sent"], "messages_answered": ph["messages_answered"],
        "admitted_messages": adm.total, "shed_messages": shed.total,
        "partly_admitted_messages": t.partial,
        "admitted_ops_per_s": adm.total * OPS_PER_MESSAGE / wall,
        "refusals_per_s": shed.total * OPS_PER_MESSAGE / wall,
        "granted_units": t.granted_units,
        "admitted_p50_ms": adm.percentile_s(50) * 1e3,
        "admitted_p99_ms": adm.percentile_s(99) * 1e3,
        "shed_p50_ms": shed.percentile_s(50) * 1e3 if shed.total else None,
        "shed_p99_ms": shed.percentile_s(99) * 1e3 if shed.total else None,
        "retry_after_ms_min": t.retry_ms_min, "shed_without_retry_hint": t.no_retry_hint,
        "server_cpu_us_per_op": server_ns / 1e3 / max(1, t.answered * OPS_PER_MESSAGE),
        "server_rss_kb": rss_kb, "wall_s": wall, "timeline_bin_s": TIMELINE_BIN_S,
        "timeline": [[a, s, round(ms, 1)] for a, s, ms in t.timeline],
        # The generator's CPU share of one core: near 1.0 it, not the server, set the pace.
        "generator_cpu_share": ph["generator_cpu_s"] / wall,
    }
    return out


async def phases(address: str, pid: int, skus: int, duration_s: float) -> dict[str, Any]:
    meter = CpuMeter(pid)
    stream = Stream(address)
    msgs = Messages(skus, f"ov{os.getpid()}")
    out: dict[str, Any] = {}
    try:
        # Warm-up: the stream, the server's caches, the rate the admission learns.
        warm = await run_phase(stream, msgs, duration_s=1.0, in_flight=MESSAGES_IN_FLIGHT)
        granted = warm["tally"].granted_units
        plan = [("capacity", {"in_flight": MESSAGES_IN_FLIGHT}), ("unloaded", UNLOADED_SHARE),
                ("flood", FLOOD_FACTOR), ("recovery", UNLOADED_SHARE)]
        capacity_msgs_s = 0.0
        for name, how in plan:
            kw = how if isinstance(how, dict) else {"rate": how * capacity_msgs_s}
            log(f"{name}: " + (f"{kw['rate'] * OPS_PER_MESSAGE:,.0f} ops/s offered"
                               if "rate" in kw else f"{MESSAGES_IN_FLIGHT} messages in flight"))
            meter.start()
            rss_before = status_kb(pid, "VmRSS")
            ph = await run_phase(stream, msgs, duration_s=duration_s, **kw)
            s = summary(ph, meter.stop_ns(), status_kb(pid, "VmRSS"))
            s["server_rss_growth_kb"] = s["server_rss_kb"] - rss_before
            s["offered_ops_per_s"] = kw.get("rate", 0.0) * OPS_PER_MESSAGE
            granted += s["granted_units"]
            if name == "capacity":
                capacity_msgs_s = ph["tally"].admitted.total / ph["wall_s"]
            out[name] = s
        out["server_peak_rss_kb"] = status_kb(pid, "VmHWM")
        out["granted_units_total"] = granted
        out["errors"] = stream.errors[:20]
        out["errors_total"] = len(stream.errors)
    finally:
        await stream.close()
    return out


def audit(store: Path, granted_units: int, skus: int) -> dict[str, Any]:
    """The store after the run: units held by the bench's reservations must be exactly
    what the answers granted (warm-up included), and check() clean."""
    from stockgate.engine import Engine

    with Engine(store) as eng:
        report = eng.check()
        held = 0
        for i in range(skus):
            for b in eng.stock(sku_name(i)):
                held += b.held
    return {"units_held": held, "check_clean": not report.drifts}


# ---------------------------------------------------------------------------- command

def cmd_overload(args: argparse.Namespace) -> int:
    import uvloop

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    duration = args.duration or (QUICK_PHASE_S if args.quick else PHASE_S)
    skus = 2_000 if args.quick else args.skus
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    results: dict[str, Any] = {"machine": machine_info(), "duration_s": duration, "skus": skus,
                               "ops_per_message": OPS_PER_MESSAGE,
                               "flood_factor": FLOOD_FACTOR, "unloaded_share": UNLOADED_SHARE}
    with tempfile.TemporaryDirectory(dir=args.store_dir) as tmp:
        store = Path(tmp) / "store"
        log(f"seeding {skus:,} SKUs")
        seed_store(store, skus)
        argv = [sys.executable, "-m", "stockgate.server", "--data-dir", str(store),
                "--listen", "127.0.0.1:0", "--durability", "fsync"]
        if args.queue_ms:
            argv += ["--queue-ms", str(args.queue_ms)]
        sg = Served(argv, env)
        try:
            results.update(uvloop.run(phases(sg.address, sg.pid, skus, duration)))
        finally:
            results["server_exit_code"] = sg.stop()
        log("auditing the store")
        results["audit"] = audit(store, results.get("granted_units_total", 0), skus)
    u = results["unloaded"]["admitted_p99_ms"]
    results["summary"] = {
        "flood_admitted_p99_over_unloaded": results["flood"]["admitted_p99_ms"] / u,
        "recovery_admitted_p99_over_unloaded": results["recovery"]["admitted_p99_ms"] / u,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = "\n".join(table_lines(results)) + "\n"
    (out_dir / "SUMMARY.txt").write_text(table)
    print(table, end="")
    return 0 if correct(results) else 1


def correct(r: dict[str, Any]) -> bool:
    """What must hold whatever the machine's speed."""
    a = r["audit"]
    return (a["check_clean"] and a["units_held"] == r["granted_units_total"]
            and r["errors_total"] == 0 and r["flood"]["shed_without_retry_hint"] == 0
            and r["server_exit_code"] == 0)


def table_lines(r: dict[str, Any]) -> list[str]:
    """The run as the table and lines the command prints (and writes to SUMMARY.txt)."""
    m = r["machine"]
    out = [f"{m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, commit "
           f"{m.get('git_commit', '?')}, load average at start "
           f"{m['loadavg_at_start'][0]:.2f}; {r['duration_s']:g} s per phase, "
           f"{r['skus']:,} SKUs, {r['ops_per_message']} reserves per message", ""]
    rows = [("phase", "offered ops/s", "admitted ops/s", "refused/s", "admitted p50 ms",
             "admitted p99 ms", "shed p99 ms", "server µs/op", "generator CPU")]
    for k in ("capacity", "unloaded", "flood", "recovery"):
        x = r[k]
        shed99 = x["shed_p99_ms"]
        rows.append((k, f"{x['offered_ops_per_s']:,.0f}" if x["offered_ops_per_s"] else "closed",
                     f"{x['admitted_ops_per_s']:,.0f}", f"{x['refusals_per_s']:,.0f}",
                     f"{x['admitted_p50_ms']:.1f}", f"{x['admitted_p99_ms']:.1f}",
                     "-" if shed99 is None else f"{shed99:.1f}",
                     f"{x['server_cpu_us_per_op']:.1f}", f"{x['generator_cpu_share']:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    out.append("")
    f = r["flood"]
    out.append(f"server RSS grew {f['server_rss_growth_kb'] / 1024:,.0f} MiB during the "
               f"flood, {f['server_rss_growth_kb'] * 1024 / max(1, f['granted_units']):,.0f} "
               "bytes per reservation it granted (the book keeps every reservation: "
               "bench/README.md)")
    out.append(f"server peak RSS {r['server_peak_rss_kb'] / 1024:,.0f} MiB; retry hint "
               f"{r['flood']['retry_after_ms_min']} ms; units granted "
               f"{r['granted_units_total']:,}, held after {r['audit']['units_held']:,}; "
               f"check clean {r['audit']['check_clean']}")
    for key, (op, target) in TARGETS.items():
        got = r["summary"][key]
        ok = got <= target if op == "<=" else got >= target
        out.append(f"{key:40s} {got:8.2f}  target {op} {target}  {'PASS' if ok else 'MISS'}")
    out.append(f"correctness (audit, retry hints, no errors): {'PASS' if correct(r) else 'FAIL'}")
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--out", required=True, help="directory for results.json")
    ap.add_argument("--quick", action="store_true", help="3 s per phase, 2,000 SKUs")
    ap.add_argument("--duration", type=float, default=0.0,
                    help=f"seconds per phase (default {PHASE_S:g}; quick {QUICK_PHASE_S:g})")
    ap.add_argument("--skus", type=int, default=100_000, help="SKUs the reserves spread over")
    ap.add_argument("--queue-ms", type=int, default=0,
                    help="the server's queue_ms (default: the server's default)")
    ap.add_argument("--store-dir", default=None, help="where the store is built (a disk)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return cmd_overload(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
