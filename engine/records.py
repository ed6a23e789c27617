"""How each record is laid out in the store. Every record starts with its format version,
so a reader refuses what it does not understand instead of guessing."""

from __future__ import annotations

import struct
import threading
from typing import Any

import msgpack

from .errors import CorruptRecord

FORMAT_VERSION = 1

# Bucket counters: version byte, then on_hand and floor (the core's snapshot layout).
# Held is not stored: opening the store sums it from the live reservations. Version 1
# records also carried held, which is read past.
BUCKET_FORMAT_VERSION = 2
BUCKET = struct.Struct("<Bqq")
_BUCKET_V1 = struct.Struct("<Bqqq")
_BUCKET_VERSION_BYTE = bytes([BUCKET_FORMAT_VERSION])
BUCKET_ID = struct.Struct(">I")  # big-endian, so LMDB keeps buckets in id order
SEQ = struct.Struct(">Q")  # journal keys: the last sequence number of a chunk
_VERSION_BYTE = bytes([FORMAT_VERSION])


def bucket_id_key(bucket: int) -> bytes:
    return BUCKET_ID.pack(bucket)


def bucket_value(snapshot: bytes) -> bytes:
    """One 16-byte core snapshot -> a stored bucket record."""
    return _BUCKET_VERSION_BYTE + snapshot


def decode_bucket(value: bytes) -> tuple[int, int]:
    """A stored bucket record -> (on_hand, floor)."""
    if len(value) == BUCKET.size and value[0] == BUCKET_FORMAT_VERSION:
        _, on_hand, floor = BUCKET.unpack(value)
        return on_hand, floor
    if len(value) == _BUCKET_V1.size and value[0] == 1:
        _, on_hand, _, floor = _BUCKET_V1.unpack(value)
        return on_hand, floor
    raise CorruptRecord(
        f"bucket record of {len(value)} bytes, version {value[:1]!r}: expected "
        f"{BUCKET.size} bytes of version {BUCKET_FORMAT_VERSION}"
    )


_packers = threading.local()  # a Packer is not thread-safe; making one per record is slow


def _packer() -> msgpack.Packer:
    try:
        return _packers.packer
    except AttributeError:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
        return packer


def pack(fields: list[Any]) -> bytes:
    """A msgpack record: [FORMAT_VERSION, *fields]."""
    return _packer().pack([FORMAT_VERSION, *fields])


def pack_journal(first: int, events: list[dict[str, Any] | bytes]) -> bytes:
    """A journal chunk, pack([first, events]), where an event may already be packed
    (bytes: the core writes a reservation's event itself, see _records.pxi)."""
    packer = _packer()
    parts = [packer.pack_array_header(3), packer.pack(FORMAT_VERSION), packer.pack(first),
             packer.pack_array_header(len(events))]
    for ev in events:
        parts.append(ev if type(ev) is bytes else packer.pack(ev))
    return b"".join(parts)


def unpack_event(value: bytes) -> dict[str, Any]:
    """An event packed by the core, as a journal read would return it (without seq)."""
    return _loads(value)


def _loads(value: bytes) -> Any:
    return msgpack.unpackb(value, raw=False, use_list=True, strict_map_key=False)


def unpack(value: bytes, what: str) -> list[Any]:
    """Inverse of pack(); raises CorruptRecord naming `what` on anything unexpected."""
    try:
        rec = _loads(value)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptRecord(f"{what}: undecodable record ({exc})") from None
    if not isinstance(rec, list) or not rec or rec[0] != FORMAT_VERSION:
        raise CorruptRecord(f"{what}: unknown format (expected version {FORMAT_VERSION})")
    return rec[1:]


def text_key(*parts: str) -> bytes:
    """A composite key; limits.check_id keeps control characters out of every part."""
    return "\x00".join(parts).encode("utf-8")


def split_key(key: bytes) -> list[str]:
    return key.decode("utf-8").split("\x00")
