"""The floor of a unary call in Python gRPC: a grpc.aio server on uvloop that answers
stockgate's Reserve with a Result of the same shape, without any engine behind it.

    python bench/echo_server.py --listen 127.0.0.1:0     # prints "listening on ADDR"

It parses the same ReserveRequest and serializes the same Result that stockgate does, so
the difference between the two servers' CPU per call is stockgate's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import grpc

from stockgate.v1 import reservations_pb2_grpc, types_pb2


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


async def serve(listen: str) -> None:
    server = grpc.aio.server()
    reservations_pb2_grpc.add_ReservationsServicer_to_server(Echo(), server)
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
