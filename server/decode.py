"""Requests the server cannot parse are INVALID_ARGUMENT naming the message, like any other
malformed input.

Left to grpc.aio, a request that is not a valid protobuf message of its type (random
bytes, a cut message, a string that is not UTF-8) is answered UNKNOWN ("Unexpected
<class 'DecodeError'>") on a unary call, and inside a stream it surfaces in the servicer
as an unexpected exception: INTERNAL, logged as a server bug. So the services are
registered with raw-bytes handlers here, and each request is parsed where its failure can
be answered as what it is: the caller's mistake, with a BadRequest detail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message, message_factory
from google.protobuf.descriptor import ServiceDescriptor

from stockgate.engine import InvalidArgument

from .status import abort

UNARY_FIELD = "request"  # the field a unary call's unparsable request is reported as
# A stream's unparsable message is reported as <name>[i], counted from 0 across the stream;
# Import already names its messages chunks[i].
STREAM_FIELDS = {"stockgate.v1.ImportChunk": "chunks"}
STREAM_FIELD_DEFAULT = "messages"


def _problem(cls: type, exc: message.DecodeError) -> str:
    # protobuf says "Error parsing message with type 'X': <why>"; the type is named here.
    why = str(exc).rsplit(": ", 1)[-1]
    return f"is not a valid {cls.DESCRIPTOR.full_name} message ({why}); nothing of it was done"


def _unary_in(fn: Callable, cls: type) -> Callable:
    parse = cls.FromString

    async def behavior(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
        try:
            request = parse(raw)
        except message.DecodeError as exc:
            await abort(context, InvalidArgument(UNARY_FIELD, _problem(cls, exc)))
        return await fn(request, context)

    return behavior


async def _parsed(raw_messages: AsyncIterator[bytes], cls: type,
                  fast: Callable[[bytes], Any] | None = None) -> AsyncIterator[Any]:
    """The stream's messages, parsed; the first that does not parse ends it with
    InvalidArgument naming it (the servicer answers that as it answers any bad message).
    With `fast`, a message it reads (anything but None) is yielded as it read it."""
    parse = cls.FromString
    name = STREAM_FIELDS.get(cls.DESCRIPTOR.full_name, STREAM_FIELD_DEFAULT)
    i = 0
    async for raw in raw_messages:
        if fast is not None:
            got = fast(raw)
            if got is not None:
                yield got
                i += 1
                continue
        try:
            yield parse(raw)
        except message.DecodeError as exc:
            raise InvalidArgument(f"{name}[{i}]", _problem(cls, exc)) from None
        i += 1


def _stream_in(fn: Callable, cls: type, fast: Callable[[bytes], Any] | None = None
               ) -> Callable:
    async def behavior(raw_messages: AsyncIterator[bytes],
                       context: grpc.aio.ServicerContext) -> Any:
        return await fn(_parsed(raw_messages, cls, fast), context)

    return behavior


def _bytes_or(serialize: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def serializer(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serializer


def add_servicer(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Register every method of `service` on `server`, served by the servicer's method of
    the same name, parsing requests as described above (responses as generated code
    would serialize them, or as they are when the servicer writes bytes).

    A servicer's `stream_readers` ({method name: fn(raw) -> message or None}) read a
    stream's messages before protobuf does; what they leave (None) protobuf parses."""
    handlers = {}
    readers = getattr(servicer, "stream_readers", {})
    for m in service.methods:
        cls = message_factory.GetMessageClass(m.input_type)
        out = _bytes_or(message_factory.GetMessageClass(m.output_type).SerializeToString)
        fn = getattr(servicer, m.name)
        if m.client_streaming and m.server_streaming:
            h = grpc.stream_stream_rpc_method_handler(_stream_in(fn, cls, readers.get(m.name)),
                                                      response_serializer=out)
        elif m.client_streaming:
            h = grpc.stream_unary_rpc_method_handler(_stream_in(fn, cls, readers.get(m.name)),
                                                     response_serializer=out)
        elif m.server_streaming:
            h = grpc.unary_stream_rpc_method_handler(_unary_in(fn, cls),
                                                     response_serializer=out)
        else:
            h = grpc.unary_unary_rpc_method_handler(_unary_in(fn, cls),
                                                    response_serializer=out)
        handlers[m.name] = h
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
