"""The `stockgate` command: run the server, load stock, look at it, reserve by hand, watch
a channel, run campaigns and check the books.

Everything but `serve` is a thin client call (stockgate.clients.Client); `serve` hands its
arguments to stockgate.server.app, which owns the server's flags.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import enum
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from stockgate.clients import (
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    StockgateError,
    Unauthenticated,
    Unavailable,
    new_reservation_id,
)
from stockgate.clients.records import BucketStock, Campaign, CheckReport
from stockgate.clients.results import Reservation, Result
from stockgate.clients.updates import Update

ADDRESS_DEFAULT = "127.0.0.1:50051"

# Exit codes, documented in --help and docs/clients.md.
EXIT_OK = 0
EXIT_REFUSED = 1  # a business refusal (outcome), an unknown object, drift found by check
EXIT_USAGE = 2  # bad command line, or the server said INVALID_ARGUMENT
EXIT_UNAVAILABLE = 3  # server unreachable, overloaded, or the deadline passed: try again
EXIT_AUTH = 4  # no token, a wrong token, or a token without the right
EXIT_ERROR = 5  # anything else (a server error): see the message

EPILOG = """\
exit codes:
  0  done
  1  refused: a business outcome (e.g. INSUFFICIENT_STOCK), an unknown reservation,
     campaign, location or channel, a state that forbids it, or drift found by check
  2  usage: a bad command line, or the server refused an argument (the field is named)
  3  unavailable: the server cannot be reached, is overloaded, or the deadline passed;
     try again (reserve/commit/release with the same --id are safe to repeat)
  4  auth: no token, an unknown token, or a token not allowed to do this
  5  any other error

environment: STOCKGATE_ADDRESS, STOCKGATE_TOKEN, STOCKGATE_CA, STOCKGATE_CERT,
STOCKGATE_KEY stand in for --address, --token, --ca, --cert, --key.
"""


class UsageError(Exception):
    """A command line that cannot be run; the message says how to fix it."""


# ---------------------------------------------------------------------- parsing


def _line(text: str) -> tuple[str, int]:
    """'SKU-1001:2' -> ('SKU-1001', 2); the SKU may itself contain ':'."""
    sku, sep, qty = text.rpartition(":")
    if not sep or not sku or not re.fullmatch(r"[0-9]+", qty):
        raise argparse.ArgumentTypeError(f"{text!r} is not SKU:QTY (e.g. SKU-1001:2)")
    return sku, int(qty)


_DURATION = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration_ms(text: str) -> int:
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d)")
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def _when_ms(text: str, now_ms: int) -> int:
    """'now', '+30m', an ISO 8601 time ('2026-11-11T00:00:00+08:00') or epoch ms."""
    text = text.strip()
    if text == "now":
        return now_ms
    if text.startswith("+"):
        return now_ms + _duration_ms(text[1:])
    if re.fullmatch(r"[0-9]+", text):
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: use now, +30m, epoch ms or ISO 8601 "
                         "(2026-11-11T00:00:00+08:00)") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a person typing it means
    return int(when.timestamp() * 1000)


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
    """The `stockgate` command's parser, every subcommand with its flags."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="stockgate", description="stockgate: a reservation engine for multi-channel "
        "inventory. Run the server, load and read stock, reserve by hand, watch a channel, "
        "run campaigns, check the books.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)

    # Connection flags are accepted before and after the command; given after, they win.
    def connection(p: argparse.ArgumentParser, defaults: bool) -> None:
        def d(value: Any) -> Any:
            return value if defaults else argparse.SUPPRESS

        g = p.add_argument_group("connection")
        g.add_argument("--address", default=d(env("STOCKGATE_ADDRESS", ADDRESS_DEFAULT)),
                       help=f"server host:port (default {ADDRESS_DEFAULT})")
        g.add_argument("--token", default=d(env("STOCKGATE_TOKEN")),
                       help="bearer token (admin, or bound to the channel)")
        g.add_argument("--tls", action="store_true", default=d(False),
                       help="use TLS (implied by --ca or --cert)")
        g.add_argument("--ca", default=d(env("STOCKGATE_CA")), metavar="FILE",
                       help="PEM root certificate to verify the server")
        g.add_argument("--cert", default=d(env("STOCKGATE_CERT")), metavar="FILE",
                       help="PEM client certificate (mTLS)")
        g.add_argument("--key", default=d(env("STOCKGATE_KEY")), metavar="FILE",
                       help="PEM client key (mTLS)")
        g.add_argument("--server-name", default=d(None), metavar="NAME",
                       help="name to check the server certificate against")
        g.add_argument("--timeout", type=float, default=d(None), metavar="SECONDS",
                       help="deadline of each call (default 5; check and import longer)")
        g.add_argument("--json", action="store_true", default=d(False),
                       help="print JSON (one object per line for watch)")

    connection(parser, True)
    common = argparse.ArgumentParser(add_help=False)
    connection(common, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, parents=[common],
                              epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    sub.add_parser("serve", help="run the server (see: stockgate serve --help)",
                   add_help=False)

    p = command("import", "load stock from a CSV file (header: sku,location,pool,on_hand); "
                          "each row sets a bucket's on_hand; all rows or none")
    p.add_argument("file", metavar="FILE.csv", help="the CSV file, or - for stdin")

    p = command("stock", "every bucket of a SKU")
    p.add_argument("sku")

    p = command("availability", "what a channel could reserve now")
    p.add_argument("--channel", required=True)
    p.add_argument("--campaign", help="what this campaign could sell")
    p.add_argument("skus", nargs="+", metavar="SKU")

    p = command("reserve", "hold stock for a channel (a manual test of a checkout)")
    p.add_argument("--channel", required=True)
    p.add_argument("--id", dest="reservation_id",
                   help="the reservation id (default: a new time-sortable id); repeat it to "
                        "retry safely")
    p.add_argument("--customer")
    p.add_argument("--campaign")
    p.add_argument("--ttl", type=_duration_ms, default=0, metavar="DURATION",
                   help="how long the hold lasts, e.g. 90s, 15m (default 15m)")
    p.add_argument("--partial", action="store_true", help="grant what there is")
    p.add_argument("--prefer", action="append", default=[], metavar="LOCATION",
                   help="try this location first (repeatable)")
    p.add_argument("lines", nargs="+", type=_line, metavar="SKU:QTY")

    p = command("commit", "commit a held reservation (all of it, or the lines given)")
    p.add_argument("reservation_id", metavar="ID")
    p.add_argument("lines", nargs="*", type=_line, metavar="SKU:QTY")

    p = command("release", "release a held reservation")
    p.add_argument("reservation_id", metavar="ID")

    p = command("reservation", "show a reservation")
    p.add_argument("reservation_id", metavar="ID")

    p = command("watch", "print availability changes and alerts of a channel as they come")
    p.add_argument("--channel", required=True)
    p.add_argument("--sku", dest="skus", action="append", default=[], metavar="SKU",
                   help="follow only this SKU (repeatable; default: every SKU)")
    p.add_argument("--from-seq", type=int, default=0, metavar="N",
                   help="resume from journal sequence number N (default: from now on)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="stop after N updates (default: run until interrupted)")

    p = command("campaign", "create, start, stop or show flash-sale campaigns")
    csub = p.add_subparsers(dest="action", metavar="ACTION")
    csub.required = True
    c = csub.add_parser("create", help="declare a campaign", parents=[common])
    c.add_argument("campaign_id", metavar="ID")
    c.add_argument("--channel", dest="channels", action="append", required=True,
                   help="a channel that may sell it (repeatable)")
    c.add_argument("--location", required=True, help="where the quota is carved from")
    c.add_argument("--source-pool", required=True, help="the pool the quota comes from")
    c.add_argument("--quota", dest="quotas", action="append", type=_line, required=True,
                   metavar="SKU:QTY", help="units of a SKU for the campaign (repeatable)")
    c.add_argument("--start", default="now",
                   help="now (default), +30m, epoch ms, or ISO 8601 with a zone")
    c.add_argument("--end", help="like --start; or give --duration")
    c.add_argument("--duration", type=_duration_ms, default=None,
                   help="window length, e.g. 2h (default 1d)")
    c.add_argument("--customer-limit", type=int, default=0, metavar="N",
                   help="units per customer and SKU (default 0: none)")
    for action, help_ in (("start", "start a campaign now"),
                          ("stop", "end a campaign now; unsold quota goes back")):
        c = csub.add_parser(action, help=help_, parents=[common])
        c.add_argument("campaign_id", metavar="ID")
    c = csub.add_parser("show", help="show one campaign, or all", parents=[common])
    c.add_argument("campaign_id", nargs="?", metavar="ID")

    command("check", "recompute the books and report drift (exit 1 when there is any)")
    return parser


# ---------------------------------------------------------------------- output


def _plain(value: Any) -> Any:
    """Records, enums and tuples as JSON values."""
    if isinstance(value, enum.Enum):
        return value.name
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _time(ms: int | None) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


class Output:
    """Human text or JSON on stdout; errors on stderr."""

    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def json(self, value: Any) -> None:
        """Print a value as JSON (with --json)."""
        self.out.write(json.dumps(_plain(value), ensure_ascii=False, sort_keys=True) + "\n")
        self.out.flush()

    def text(self, line: str = "") -> None:
        """Print a line for people (without --json)."""
        self.out.write(line + "\n")
        self.out.flush()

    def error(self, kind: str, message: str, field: str = "", fix: str = "") -> None:
        """Report an error to stderr: what, the field at fault and the fix."""
        if self.as_json:
            body = {"error": kind, "message": message}
            if field:
                body["field"] = field
            if fix:
                body["fix"] = fix
            self.err.write(json.dumps(body, ensure_ascii=False) + "\n")
        else:
            self.err.write(f"stockgate: {kind}: {message}\n")
            if field:
                self.err.write(f"  field: {field}\n")
            if fix:
                self.err.write(f"  fix: {fix}\n")
        self.err.flush()


def _show_reservation(o: Output, r: Reservation) -> None:
    o.text(f"{r.state.name} {r.reservation_id} channel={r.channel}"
           + (f" customer={r.customer}" if r.customer else "")
           + (f" campaign={r.campaign}" if r.campaign else "")
           + f" expires={_time(r.expires_ms)}")
    for line in r.lines:
        where = ", ".join(f"{a.location}/{a.pool} {a.qty}" for a in line.allocations)
        o.text(f"  {line.sku} x{line.granted}" + (f" of {line.qty}" if line.granted != line.qty
                                                   else "") + (f"  ({where})" if where else ""))
    if r.committed:
        o.text("  committed: " + ", ".join(f"{sku} x{n}" for sku, n in r.committed))


def _show_result(o: Output, verb: str, res: Result) -> int:
    if o.as_json:
        o.json(res)
        return EXIT_OK if res.ok else EXIT_REFUSED
    replay = " (replayed: the first answer to this id)" if res.replayed else ""
    if res.ok:
        o.text(f"{verb}: {res.outcome.name}{replay}")
        if res.reservation is not None:
            _show_reservation(o, res.reservation)
        return EXIT_OK
    o.text(f"{verb} refused: {res.outcome.name}{replay}")
    for line in res.lines:
        if not line.outcome.granted:
            o.text(f"  {line.sku}: asked {line.qty}, granted {line.granted}: "
                   f"{line.outcome.name}")
    if res.reservation is not None:
        _show_reservation(o, res.reservation)
    return EXIT_REFUSED


def _show_stock(o: Output, sku: str, buckets: list[BucketStock]) -> None:
    if o.as_json:
        o.json(buckets)
        return
    if not buckets:
        o.text(f"{sku}: no stock anywhere")
        return
    rows = [("LOCATION", "POOL", "ON_HAND", "HELD", "AVAILABLE")]
    rows += [(b.location, b.pool, str(b.on_hand), str(b.held), str(b.available))
             for b in buckets]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    o.text(sku)
    for r in rows:
        o.text("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                for i, (c, w) in enumerate(zip(r, widths))).rstrip())


def _show_campaign(o: Output, c: Campaign) -> None:
    o.text(f"{c.campaign_id}: {c.state}, {_time(c.start_ms)} .. {_time(c.end_ms)}, "
           f"channels {', '.join(c.channels)}")
    o.text(f"  from {c.location}/{c.source_pool} into {c.pool or 'campaign:' + c.campaign_id}"
           + (f", at most {c.customer_limit} per customer and SKU" if c.customer_limit else ""))
    for sku, quota in sorted(c.quotas.items()):
        extra = ""
        if sku in c.carved:
            extra += f", carved {c.carved[sku]}"
        if sku in c.returned:
            extra += f", returned {c.returned[sku]}"
        o.text(f"  {sku}: quota {quota}{extra}")


def _show_check(o: Output, report: CheckReport) -> int:
    if o.as_json:
        o.json(dataclasses.asdict(report) | {"ok": report.ok})
    elif report.ok:
        o.text(f"consistency check: clean ({report.buckets} buckets, "
               f"{report.live_reservations} live reservations, {report.events} events)")
    else:
        o.text(f"consistency check: {len(report.drifts)} drift(s)")
        for d in report.drifts:
            o.text(f"  {d}")
    return EXIT_OK if report.ok else EXIT_REFUSED


def _show_update(o: Output, u: Update) -> None:
    if o.as_json:
        o.json(u)
        return
    parts = [f"seq {u.seq}"]
    parts += [f"{sku}={n}" for sku, n in sorted(u.available.items())]
    o.text("  ".join(parts))
    for a in u.alerts:
        where = f" {a.location}/{a.pool}" if a.location else ""
        who = f" campaign={a.campaign}" if a.campaign else ""
        o.text(f"  ALERT {a.kind} {a.sku}{where}{who} available={a.available} (seq {a.seq})")


# ---------------------------------------------------------------------- commands


def _csv_rows(path: str, stdin: TextIO) -> Iterator[dict[str, Any]]:
    """The CSV's rows, read as they stream; a bad line raises InvalidArgument naming it."""
    f = stdin if path == "-" else open(path, newline="", encoding="utf-8")
    try:
        reader = csv.DictReader(f)
        need = {"sku", "location", "pool", "on_hand"}
        have = {h.strip() for h in reader.fieldnames or ()}
        if not need <= have:
            missing = ", ".join(sorted(need - have))
            raise InvalidArgument(f"{path} header", f"lacks {missing}; the header must be "
                                  "sku,location,pool,on_hand")
        for row in reader:
            row = {(k or "").strip(): v for k, v in row.items()}
            value = (row.get("on_hand") or "").strip()
            if not re.fullmatch(r"-?[0-9]+", value):
                raise InvalidArgument(f"{path} line {reader.line_num}",
                                      f"on_hand {value!r} is not a whole number of units")
            yield {"sku": (row.get("sku") or "").strip(),
                   "location": (row.get("location") or "").strip(),
                   "pool": (row.get("pool") or "").strip(), "on_hand": int(value)}
    finally:
        if f is not stdin:
            f.close()


def _import(client: Client, args: argparse.Namespace, o: Output, stdin: TextIO) -> int:
    if args.file != "-" and not os.path.isfile(args.file):
        raise UsageError(f"{args.file}: no such file")
    try:
        n = client.import_rows(_csv_rows(args.file, stdin), timeout=args.timeout)
    except InvalidArgument as e:
        m = re.fullmatch(r"rows\[([0-9]+)\](.*)", e.field)
        if m:  # the server counts rows from 0; a person counts lines, header first
            raise InvalidArgument(f"{args.file} line {int(m.group(1)) + 2}"
                                  f"{' ' + m.group(2).lstrip('.') if m.group(2) else ''}",
                                  e.problem) from None
        raise
    if o.as_json:
        o.json({"rows": n, "file": args.file})
    else:
        o.text(f"imported {n} rows from {args.file}")
    return EXIT_OK


def _campaign(client: Client, args: argparse.Namespace, o: Output) -> int:
    t = args.timeout
    if args.action == "create":
        now = _now_ms()
        start = _when_ms(args.start, now)
        if args.end is not None and args.duration is not None:
            raise UsageError("give --end or --duration, not both")
        if args.end is not None:
            end = _when_ms(args.end, now)
        else:
            end = start + (args.duration if args.duration is not None else _UNIT_MS["d"])
        quotas: dict[str, int] = {}
        for sku, qty in args.quotas:
            quotas[sku] = quotas.get(sku, 0) + qty
        c = client.create_campaign(args.campaign_id, channels=args.channels, start_ms=start,
                                   end_ms=end, location=args.location,
                                   source_pool=args.source_pool, quotas=quotas,
                                   customer_limit=args.customer_limit, timeout=t)
    elif args.action == "start":
        c = client.start_campaign(args.campaign_id, timeout=t)
    elif args.action == "stop":
        c = client.stop_campaign(args.campaign_id, timeout=t)
    elif args.campaign_id is None:
        every = client.campaigns(timeout=t)
        if o.as_json:
            o.json(every)
        elif not every:
            o.text("no campaigns")
        for one in every if not o.as_json else ():
            _show_campaign(o, one)
        return EXIT_OK
    else:
        found = client.campaign(args.campaign_id, timeout=t)
        if found is None:
            raise NotFound("campaign_id", f"{args.campaign_id!r} does not exist")
        c = found
    if o.as_json:
        o.json(c)
    else:
        _show_campaign(o, c)
    return EXIT_OK


def _run(client: Client, args: argparse.Namespace, o: Output, stdin: TextIO) -> int:
    t = args.timeout
    cmd = args.command
    if cmd == "serve":
        raise UsageError("serve takes its own flags after it: stockgate serve --help")
    if cmd == "import":
        return _import(client, args, o, stdin)
    if cmd == "stock":
        _show_stock(o, args.sku, client.stock(args.sku, timeout=t))
        return EXIT_OK
    if cmd == "availability":
        avail = client.availability(args.channel, args.skus, campaign=args.campaign, timeout=t)
        if o.as_json:
            o.json(avail)
        else:
            width = max(len(s) for s in args.skus)
            for sku in args.skus:
                o.text(f"{sku.ljust(width)}  {avail.get(sku, 0)}")
        return EXIT_OK
    if cmd == "reserve":
        rid = args.reservation_id or new_reservation_id()
        res = client.reserve(rid, args.channel, args.lines, customer=args.customer,
                             campaign=args.campaign, ttl_ms=args.ttl, partial=args.partial,
                             prefer_locations=args.prefer, timeout=t)
        if not o.as_json and not res.ok and args.reservation_id is None:
            o.text(f"reservation id: {rid}")
        return _show_result(o, "reserve", res)
    if cmd == "commit":
        return _show_result(o, "commit", client.commit(args.reservation_id, args.lines or None,
                                                       timeout=t))
    if cmd == "release":
        return _show_result(o, "release", client.release(args.reservation_id, timeout=t))
    if cmd == "reservation":
        r = client.reservation(args.reservation_id, timeout=t)
        if r is None:
            raise NotFound("reservation_id", f"{args.reservation_id!r} was never reserved "
                                             "(or belongs to another channel)")
        if o.as_json:
            o.json(r)
        else:
            _show_reservation(o, r)
        return EXIT_OK
    if cmd == "watch":
        if args.count < 0:
            raise UsageError("--count must be 0 (no limit) or more")
        seen = 0
        updates = client.watch(args.channel, args.skus, args.from_seq)
        try:
            for u in updates:
                _show_update(o, u)
                seen += 1
                if args.count and seen >= args.count:
                    break
        finally:
            updates.close()
        return EXIT_OK
    if cmd == "campaign":
        return _campaign(client, args, o)
    if cmd == "check":
        return _show_check(o, client.check(timeout=t))
    raise UsageError(f"unknown command {cmd!r}")


# How each error is reported: (kind, exit code, how to fix it).
_FAILURES: tuple[tuple[type[BaseException], str, int], ...] = (
    (InvalidArgument, "invalid argument", EXIT_USAGE),
    (NotFound, "not found", EXIT_REFUSED),
    (FailedPrecondition, "refused", EXIT_REFUSED),
    (Unauthenticated, "unauthenticated", EXIT_AUTH),
    (PermissionDenied, "permission denied", EXIT_AUTH),
    (Overloaded, "overloaded", EXIT_UNAVAILABLE),
    (Unavailable, "unavailable", EXIT_UNAVAILABLE),
    (DeadlineExceeded, "deadline exceeded", EXIT_UNAVAILABLE),
)


def _report(o: Output, e: StockgateError, address: str) -> int:
    for cls, kind, code in _FAILURES:
        if isinstance(e, cls):
            fix = e.hint
            if isinstance(e, Unavailable):
                fix = (f"is `stockgate serve` running at {address}? (--address or "
                       "STOCKGATE_ADDRESS); then retry: the same --id is safe to repeat")
            elif isinstance(e, Overloaded) and e.retry_after_ms:
                fix = f"retry in {e.retry_after_ms} ms with the same id"
            o.error(kind, e.message, getattr(e, "field", ""), fix)
            return code
    o.error("error", f"{e.code}: {e.message}", "", e.hint)
    return EXIT_ERROR


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the `stockgate` command; returns its exit code (see EPILOG)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if argv[:1] == ["serve"]:
        from stockgate.server import app  # the server only when serving

        code = app.main(argv[1:])
        return int(code or 0)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed the usage and the problem
        return int(e.code or 0)
    o = Output(args.json, out, err)
    try:
        client = Client(args.address, args.token, tls=args.tls or None, root_cert=args.ca,
                        client_cert=args.cert, client_key=args.key,
                        server_name=args.server_name)
    except ValueError as e:
        o.error("usage", str(e), "", "see stockgate --help")
        return EXIT_USAGE
    try:
        return _run(client, args, o, stdin or sys.stdin)
    except UsageError as e:
        o.error("usage", str(e), "", "see stockgate " + args.command + " --help")
        return EXIT_USAGE
    except ValueError as e:  # a bad value caught before sending (e.g. timeout)
        if isinstance(e, StockgateError):
            return _report(o, e, args.address)
        o.error("usage", str(e), "", "see stockgate " + args.command + " --help")
        return EXIT_USAGE
    except StockgateError as e:
        return _report(o, e, args.address)
    except KeyboardInterrupt:
        return 130
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
