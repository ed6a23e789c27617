"""The floor of Python gRPC under stockgate's calls: a grpc.aio server on uvloop that
answers them in the same shape without any engine behind it.

    python bench/echo_server.py --listen 127.0.0.1:0     # prints "listening on ADDR"

Reserve parses the same ReserveRequest and serializes the same Result that stockgate
does. Session reads each message with stockgate's own C reader and writes its answers
with stockgate's own C writer, and does nothing else: no bookkeeping per stream, no
engine, no commit. So the difference between the two servers' CPU per reservation is
stockgate's own work, and what they share is the floor no change to stockgate's Python
could go below.

Each reserve gets its own answer (by its op id), but every answer to one message is the
same granted Result, its first reserve's: right for a client that matches answers by op
id, as stockgate's do, not for one that checks their content.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import grpc

from stockgate.engine import Allocation, LineResult, Outcome, Reservation, Result, State
from stockgate.server import _codec
from stockgate.server.config import MESSAGE_BYTES_DEFAULT
from stockgate.server.session import read_message
from stockgate.server.wire import answer_bytes_target
from stockgate.v1 import reservations_pb2_grpc, types_pb2

SERVICE = "stockgate.v1.Reservations"


class Echo(reservations_pb2_grpc.ReservationsServicer):
    async def Reserve(self, request, context):  # noqa: N802 - the generated name
        now = int(time.time() * 1000)
        lines = [types_pb2.LineResult(sku=ln.sku, qty=ln.qty, granted=ln.qty,
                                      allocations=[types_pb2.Allocation(
                                          location="WH", pool="online", qty=ln.qty)])
                 for ln in request.lines]
        return types_pb2.Result(reservation=types_pb2.Reservation(
            reservation_id=request.reservation_id, channel=request.channel,
            state=types_pb2.STATE_HELD, lines=lines, created_ms=now,
            expires_ms=now + request.ttl_ms))


def granted(request) -> Result:
    """The Result stockgate gives a reserve it grants whole from one bucket."""
    now = int(time.time() * 1000)
    lines = tuple(LineResult(sku, qty, qty, Outcome.OK, (Allocation("WH", "online", qty),))
                  for sku, qty in request.lines)
    return Result(Outcome.OK, Reservation(request.reservation_id, request.channel,
                                          State.HELD, lines, request.customer,
                                          request.campaign, now, now + request.ttl_ms),
                  False, lines)


async def session(raw_messages, context) -> None:
    """Each message's reserves answered at once, in one or more messages as stockgate
    cuts them. A message's answers share the Result of its first reserve: building one
    per reserve is the engine's work (stockgate does it in C), not the transport's."""
    target = answer_bytes_target(MESSAGE_BYTES_DEFAULT)  # as stockgate cuts its answers
    async for raw in raw_messages:
        ops = read_message(raw)
        if ops is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                                "the echo floor answers Session messages of reserves only")
        result = granted(ops[0][2])
        for resp, _ in _codec.encode_session_response(
                [(op[0], result) for op in ops], Result, _never, _no_error, target):
            await context.write(resp)


def _never(exc: BaseException) -> bool:
    return False


def _no_error(exc: BaseException) -> bytes:
    raise AssertionError("the echo floor answers no errors")


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    # Reserve through the generated code; Session in bytes, as stockgate serves it (the
    # later registration of a method wins).
    reservations_pb2_grpc.add_ReservationsServicer_to_server(Echo(), server)
    handlers = {"Session": grpc.stream_stream_rpc_method_handler(session)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    server.add_registered_method_handlers(SERVICE, handlers)
    port = server.add_insecure_port(listen)
    await server.start()
    print(f"listening on {listen.rsplit(':', 1)[0]}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    args = ap.parse_args()
    import uvloop

    uvloop.install()
    asyncio.run(serve(args.listen))


if __name__ == "__main__":
    main()
