"""Every limit of the engine, with its unit last in the name, and the checks that apply them.

A limit is tested at N (accepted) and N+1 (refused with an error naming the field and
the limit). Relations between limits are asserted at import, so a bad edit fails loudly.
"""

from __future__ import annotations

import unicodedata

from .errors import InvalidArgument

# Identifiers, measured in UTF-8 bytes. \x00 separates key parts in the store, so no id
# may contain a control character.
SKU_BYTES_MAX = 64
LOCATION_BYTES_MAX = 64
POOL_BYTES_MAX = 64
CHANNEL_BYTES_MAX = 64
CUSTOMER_BYTES_MAX = 128
CAMPAIGN_BYTES_MAX = 64
RESERVATION_ID_BYTES_MAX = 128
TRANSFER_ID_BYTES_MAX = 128
REF_BYTES_MAX = 128  # a receipt's or stocktake's reference (purchase order, count sheet)
LOCATION_AND_POOL_NAMES_MAX = 65_535  # distinct names, campaign pools included (C index)

# Quantities, in units.
QTY_MAX = 1_000_000_000  # one line of a reservation or movement
ON_HAND_MAX = 1_000_000_000_000  # one bucket
PRESALE_UNITS_MAX = QTY_MAX  # how far a bucket may sell below zero

# Shapes.
LINES_PER_RESERVATION_MAX = 100
BATCH_OPS_MAX = 10_000  # requests in one reserve_many() call
SOURCES_PER_CHANNEL_MAX = 32
POOLS_PER_RULE_MAX = 16
CHANNELS_PER_CAMPAIGN_MAX = 64
SKUS_PER_CAMPAIGN_MAX = 10_000
SKUS_PER_QUERY_MAX = 1_000
IMPORT_CHUNK_ROWS = 10_000  # rows per write transaction of a bulk import
IMPORT_ROWS_MAX = 10_000_000
JOURNAL_READ_EVENTS_MAX = 10_000
PLACE_CODES_CACHED_MAX = 4_096  # (channel, preferred locations) source orders kept resolved

SEQ_MAX = (1 << 63) - 1  # journal sequence numbers

# Time, in milliseconds.
TIME_MS_MAX = 1 << 62  # any timestamp a caller passes (about 146 million years)
TTL_MS_MIN = 1_000
TTL_MS_DEFAULT = 15 * 60 * 1_000
TTL_MS_MAX = 7 * 24 * 3_600 * 1_000
CAMPAIGN_WINDOW_MS_MAX = 90 * 24 * 3_600 * 1_000
SWEEP_INTERVAL_MS_MAX = 50  # the writer looks for due expiries at least this often

OVERLOAD_RETRY_AFTER_MS = 50  # the retry hint of Overloaded

# Back-pressure: operations decided but not yet durable. Past this, callers are told to
# slow down instead of queueing without end.
PENDING_OPS_MAX = 200_000

# Store.
LMDB_KEY_BYTES_MAX = 511  # LMDB's compiled-in key limit
MAP_SIZE_BYTES_MIN = 1 << 20
MAP_SIZE_BYTES_DEFAULT = 1 << 30
MAP_SIZE_BYTES_MAX = 1 << 40
MAP_GROWTH_FACTOR = 2
MAX_READERS = 512
PERCENT_TOTAL = 100

assert TTL_MS_MIN <= TTL_MS_DEFAULT <= TTL_MS_MAX
assert QTY_MAX <= ON_HAND_MAX
assert LINES_PER_RESERVATION_MAX <= BATCH_OPS_MAX
assert IMPORT_CHUNK_ROWS <= IMPORT_ROWS_MAX
assert BATCH_OPS_MAX < PENDING_OPS_MAX
assert MAP_SIZE_BYTES_MIN <= MAP_SIZE_BYTES_DEFAULT <= MAP_SIZE_BYTES_MAX
# Reservation and transfer ids go into LMDB keys as they are.
assert RESERVATION_ID_BYTES_MAX <= LMDB_KEY_BYTES_MAX
assert TRANSFER_ID_BYTES_MAX <= LMDB_KEY_BYTES_MAX


def check_id(field: str, value: object, max_bytes: int) -> str:
    """Return value if it is a usable identifier, else raise InvalidArgument.

    Any Unicode is welcome; the length counts UTF-8 bytes because that is what the store
    keeps. Control characters are refused: they would corrupt composite keys and logs.
    """
    if not isinstance(value, str):
        raise InvalidArgument(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidArgument(field, "must not be empty")
    try:
        n = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(field, "must be valid Unicode (no lone surrogates)") from None
    if n > max_bytes:
        raise InvalidArgument(field, f"is {n} bytes; the limit is {max_bytes} bytes (UTF-8)")
    # isprintable() is the fast test; it also refuses format characters (a ZWJ in an
    # emoji) and unusual spaces, which are welcome, so only then look closer.
    if not value.isprintable() and any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidArgument(field, "must not contain control characters")
    return value


def check_int(field: str, value: object, lo: int, hi: int) -> int:
    """Return value if it is an int in [lo, hi], else raise InvalidArgument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"must be an integer, got {type(value).__name__}")
    if value < lo or value > hi:
        raise InvalidArgument(field, f"is {value}; it must be between {lo} and {hi}")
    return value


def check_qty(field: str, value: object) -> int:
    """A quantity of one line: 1..QTY_MAX units."""
    return check_int(field, value, 1, QTY_MAX)


def check_count(field: str, n: int, lo: int, hi: int) -> None:
    """The number of items in a list field: lo..hi."""
    if n < lo:
        raise InvalidArgument(field, f"has {n} items; at least {lo} needed")
    if n > hi:
        raise InvalidArgument(field, f"has {n} items; the limit is {hi}")
