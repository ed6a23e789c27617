"""Time-sortable reservation ids: 48 bits of milliseconds and 80 random bits, ULID-style.

An id is 26 characters of Crockford base32 (0-9 and A-Z without I, L, O, U): the first
10 encode the Unix time in milliseconds, the last 16 are random. Ids made later sort
after ids made earlier, as strings and as bytes, so a log or a database index of them
stays in time order. Within one millisecond the random part of the previous id is
incremented instead of drawn anew, so the ids of one process are strictly increasing.

Make the id before the first attempt and keep it for every retry: that is what makes a
retry safe (the server answers a repeated id with the first answer, `replayed`).
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_reservation_id", "reservation_id_time_ms"]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_DECODE = {ch: i for i, ch in enumerate(ALPHABET)}
TIME_BITS = 48
RANDOM_BITS = 80
ID_CHARS = 26  # 130 bits of base32 carry the 128 bits; the first char is 0..7
_TIME_MAX_MS = (1 << TIME_BITS) - 1
_RANDOM_MAX = (1 << RANDOM_BITS) - 1


class _Generator:
    """The last (ms, random) handed out, so ids of one millisecond keep increasing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def reset(self) -> None:
        # A forked child must not continue its parent's sequence: both would count up
        # from the same random part and hand out the same ids.
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def next(self, now_ms: int | None = None) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
            if not 0 <= ms <= _TIME_MAX_MS:
                raise ValueError(f"now_ms is {ms}; it must be between 0 and {_TIME_MAX_MS}")
            if ms <= self._last_ms:
                # Same millisecond (or the wall clock stepped back): stay in the last
                # millisecond and count up, so order survives a clock adjustment.
                ms = self._last_ms
                rnd = self._last_random + 1
                if rnd > _RANDOM_MAX:  # 2**80 ids in one ms: move to the next ms
                    ms += 1
                    rnd = int.from_bytes(os.urandom(10), "big")
            else:
                rnd = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_random = ms, rnd
        return _encode((ms << RANDOM_BITS) | rnd)


def _encode(value: int) -> str:
    out = []
    for _ in range(ID_CHARS):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


_generator = _Generator()
os.register_at_fork(after_in_child=_generator.reset)


def new_reservation_id() -> str:
    """A new id, e.g. '01JDQ8Z6M4X7G2KQ4V5N8R3T6W': unique, and sortable by creation time.

    Thread-safe and safe across fork. Strictly increasing within one process (even when
    the wall clock steps back, the ids stay in order)."""
    return _generator.next()


def reservation_id_time_ms(reservation_id: str) -> int:
    """The creation time (ms since the Unix epoch) written into an id made here.

    Raises ValueError when reservation_id is not 26 Crockford base32 characters."""
    if len(reservation_id) != ID_CHARS:
        raise ValueError(f"reservation_id has {len(reservation_id)} characters; "
                         f"an id made here has {ID_CHARS}")
    value = 0
    for ch in reservation_id.upper():
        if ch not in _DECODE:
            raise ValueError(f"reservation_id contains {ch!r}, not Crockford base32")
        value = (value << 5) | _DECODE[ch]
    return value >> RANDOM_BITS
