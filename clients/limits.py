"""Every limit and default of the clients, with its unit last in the name.

The server's own limits (ids, lines per reservation, batch sizes) are in
proto/stockgate/v1/types.proto; the ones repeated here are those the clients must respect
to shape their messages.
"""

from __future__ import annotations

# Deadlines, in seconds (gRPC's `timeout=` unit).
TIMEOUT_S_DEFAULT = 5.0  # every call has a deadline; this one unless the caller sets another
CHECK_TIMEOUT_S_MIN = 120.0  # the consistency check reads the whole book
IMPORT_TIMEOUT_S_MIN = 600.0  # a bulk import of millions of rows
TIMEOUT_S_MAX = 7 * 24 * 3_600.0  # a week, the longest hold: its ms fit the wire's int64

# The wire's int64 fields (quantities, TTLs, timeouts) hold these at most.
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Messages. The server refuses more than BATCH_OPS_MAX operations in one message, and
# gRPC refuses a message over its size limit (4 MiB by default) by killing the call, so
# the clients cut well below both.
BATCH_OPS_MAX = 10_000  # requests in one batch call or Session message
SESSION_MESSAGE_BYTES_MAX = 1 << 20  # a Session message is cut at about this size
# The server decides, commits and answers a Session message as one unit. Concurrent calls
# are cut into messages of at most this many operations, so the server decides one while
# the client reads the answers of another: a thousand calls in one message left each side
# idle half the time (`bench/run.py server --quick`, coalesced: 42k/s in messages of up
# to 10,000 operations, 65-71k at 500, 75-76k at 250, 69-74k at 100).
SESSION_OPS_PER_MESSAGE_MAX = 250
OPERATION_BYTES_MAX = 256 * 1024  # one operation larger than this is refused here
IMPORT_CHUNK_ROWS = 10_000  # rows per Import message
MESSAGE_BYTES_MAX = 4 * 1024 * 1024  # what the channel accepts in one message

# Reconnecting (Session and Watch streams, retries of idempotent calls on UNAVAILABLE):
# capped exponential backoff with jitter.
BACKOFF_INITIAL_MS = 50
BACKOFF_MAX_MS = 1_000
BACKOFF_MULTIPLIER = 2
# gRPC's own reconnection of a channel's connection, which the above waits on. Its
# defaults (1 s growing to 120 s) leave a client away for up to two minutes after a
# server that restarted several times in a row is back; capped like the streams'.
RECONNECT_BACKOFF_INITIAL_MS = 100
RECONNECT_BACKOFF_MAX_MS = BACKOFF_MAX_MS

# Keepalive: below the server's minimum ping interval, a client would be sent away
# ("too_many_pings"); these match gRPC's defaults for servers.
KEEPALIVE_TIME_MS = 60_000
KEEPALIVE_TIMEOUT_MS = 20_000

assert SESSION_MESSAGE_BYTES_MAX + OPERATION_BYTES_MAX < MESSAGE_BYTES_MAX
assert BACKOFF_INITIAL_MS <= BACKOFF_MAX_MS
assert RECONNECT_BACKOFF_INITIAL_MS <= RECONNECT_BACKOFF_MAX_MS
