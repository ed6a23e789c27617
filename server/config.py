"""The server's settings: command-line flags > STOCKGATE_* environment variables > a TOML
file > defaults, each setting declared once in SETTINGS with its limits.

Tokens live only in the TOML file (a table per token) or, for one admin token, in
STOCKGATE_ADMIN_TOKEN: a secret on the command line would show in `ps`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from stockgate.engine import limits

ENV_PREFIX = "STOCKGATE_"
ADMIN_TOKEN_ENV = "STOCKGATE_ADMIN_TOKEN"  # one admin token, named "admin", from the environment
ADMIN_TOKEN_NAME = "admin"

# Every setting's limits, units last.
MESSAGE_BYTES_DEFAULT = 4 * 1024 * 1024  # a Session message of 10,000 reserves fits twice
# One answer at every limit (wire.RESULT_BYTES_MAX, about 460 KiB: 100 lines drawn from 32
# sources each) must fit in half a message, so a response can always be cut to size.
MESSAGE_BYTES_MIN = 1024 * 1024
MESSAGE_BYTES_MAX = 256 * 1024 * 1024
INFLIGHT_OPS_DEFAULT = 100_000  # operations started and not answered yet, server-wide
INFLIGHT_OPS_MAX = 10_000_000
QUEUE_MS_DEFAULT = 30  # work admitted may wait about this long at the server's speed
QUEUE_MS_MAX = 60_000
SESSION_INFLIGHT_OPS_DEFAULT = 20_000  # per Session stream; past it the stream is not read
SESSION_INFLIGHT_OPS_MAX = 1_000_000
STREAMS_PER_CONNECTION_DEFAULT = 1_000  # grpc.max_concurrent_streams (HTTP/2, per connection)
STREAMS_PER_CONNECTION_MAX = 100_000
WATCH_STREAMS_DEFAULT = 1_000  # Watch subscribers at once, server-wide
WATCH_STREAMS_MAX = 100_000
WATCH_COALESCE_MS_DEFAULT = 10
WATCH_COALESCE_MS_MAX = 1_000
# A few fsyncs' time on a virtual disk (1-2 ms each here): long enough that unary groups
# grow past what arrives during one commit.
UNARY_GROUP_WAIT_MS_DEFAULT = 4
UNARY_GROUP_WAIT_MS_MAX = 1_000
SHUTDOWN_GRACE_MS_DEFAULT = 10_000
SHUTDOWN_GRACE_MS_MAX = 600_000
PORT_MAX = 65_535
TOKENS_MAX = 1_000
TOKEN_SECRET_BYTES_MIN = 16  # shorter secrets are guessable
TOKEN_SECRET_BYTES_MAX = 1_024
TOKEN_CHANNELS_MAX = 1_000
# A token's rate (server/rates.py); 0 is unlimited. The most a server does is a few hundred
# thousand operations per second, so the maxima only catch typing slips.
TOKEN_OPS_PER_S_DEFAULT = 0
TOKEN_OPS_PER_S_MAX = 10_000_000
TOKEN_BURST_OPS_DEFAULT = 0  # one second at the token's rate
TOKEN_BURST_OPS_MAX = 10_000_000
TOKEN_KEYS = ("secret", "secret_env", "admin", "channels", "ops_per_s", "burst_ops")

DURABILITIES = ("fsync", "async")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting is malformed or out of its limits; the message names it and the fix."""


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What one bearer token may do: everything (admin) or act for `channels` only, at
    most `ops_per_s` operations per second with bursts of `burst_ops` (None: the
    server's token_ops_per_s and token_burst_ops)."""

    secret: str = field(repr=False)
    admin: bool = False
    channels: tuple[str, ...] = ()
    ops_per_s: int | None = None
    burst_ops: int | None = None


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting as flags, environment and TOML know it."""

    name: str  # the Config field and the TOML key
    kind: type  # str, int or bool
    meaning: str
    lo: int | None = None
    hi: int | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. --listen."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. STOCKGATE_LISTEN."""
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "directory of the LMDB store (created if missing)"),
    Setting("listen", str, "host:port to listen on; port 0 picks a free port"),
    Setting("durability", str, "fsync: answer after the commit is on disk; async: answer "
            "after the decision (a crash may lose the last moments)", choices=DURABILITIES),
    Setting("map_size_bytes", int, "initial LMDB map size; it doubles when full",
            limits.MAP_SIZE_BYTES_MIN, limits.MAP_SIZE_BYTES_MAX),
    Setting("map_size_bytes_max", int, "the LMDB map never grows past this",
            limits.MAP_SIZE_BYTES_MIN, limits.MAP_SIZE_BYTES_MAX),
    Setting("message_bytes_max", int, "largest request or response message; a larger "
            "request is refused by gRPC with RESOURCE_EXHAUSTED; Session and Watch answers "
            "are cut to fit, a batch call whose answer could not fit is refused",
            MESSAGE_BYTES_MIN, MESSAGE_BYTES_MAX),
    Setting("inflight_ops_max", int, "operations started and not yet answered, across the "
            "server; past it calls are shed with RESOURCE_EXHAUSTED and a retry hint; a "
            "batch call of more requests is INVALID_ARGUMENT", 1, INFLIGHT_OPS_MAX),
    Setting("queue_ms", int, "how long admitted work may wait: operations in flight may "
            "reach what the server answers in this time at its best recent rate (at least "
            "1,000, at most inflight_ops_max; fewer while a flood keeps the event loop "
            "busy, so it keeps reading); past it calls are shed at once with "
            "RESOURCE_EXHAUSTED and a retry hint", 1, QUEUE_MS_MAX),
    Setting("session_inflight_ops_max", int, "operations of one Session stream started "
            "and not yet answered on the stream; past it the server stops reading that "
            "stream until answers are written", 1, SESSION_INFLIGHT_OPS_MAX),
    Setting("streams_per_connection_max", int, "concurrent streams of one HTTP/2 connection "
            "(grpc.max_concurrent_streams)", 1, STREAMS_PER_CONNECTION_MAX),
    Setting("unary_group_wait_ms", int, "under load, unary calls that arrive while a group "
            "of them is being committed go together once it is done and the first of them "
            "has waited this long, sharing one decision pass and one fsync: less CPU per "
            "call for up to this much more latency, and none while the server is idle; 0: "
            "as soon as the group in flight is done", 0, UNARY_GROUP_WAIT_MS_MAX),
    Setting("watch_streams_max", int, "Watch subscriptions open at once; past it Subscribe "
            "answers RESOURCE_EXHAUSTED", 1, WATCH_STREAMS_MAX),
    Setting("watch_coalesce_ms", int, "default gathering time of a Watch update, when the "
            "subscriber gives none", 1, WATCH_COALESCE_MS_MAX),
    Setting("token_ops_per_s", int, "operations per second each token may start, on "
            "average (a unary call is one, a batch or Session message counts its "
            "operations), unless its table sets ops_per_s; past it its calls are refused "
            "with RESOURCE_EXHAUSTED and a retry hint; 0: unlimited", 0, TOKEN_OPS_PER_S_MAX),
    Setting("token_burst_ops", int, "operations a token may start at once after a quiet "
            "spell, unless its table sets burst_ops; a batch call of more is "
            "INVALID_ARGUMENT; 0: one second at the token's rate", 0, TOKEN_BURST_OPS_MAX),
    Setting("shutdown_grace_ms", int, "on SIGTERM/SIGINT, how long calls in flight may take "
            "to finish before they are cancelled", 0, SHUTDOWN_GRACE_MS_MAX),
    Setting("tls_cert", str, "PEM certificate chain of the server; with tls_key, TLS is on"),
    Setting("tls_key", str, "PEM private key of the server"),
    Setting("tls_client_ca", str, "PEM CA bundle; when set, clients must present a "
            "certificate it signed (mTLS)"),
    Setting("metrics_port", int, "port of the Prometheus /metrics endpoint on the listen "
            "host; 0: off", 0, PORT_MAX),
    Setting("log_level", str, "logging threshold", choices=LOG_LEVELS),
    Setting("demo", bool, "load the demo catalogue (2 warehouses, 2 stores, 3 channels, "
            "1,000 SKUs, one campaign) into an empty store"),
    Setting("verify_store", bool, "check the data file page by page before opening it "
            "(about 2 s per 100 MB); a damaged or truncated file stops the start"),
)


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of the server. Build one directly (tests) or with load()."""

    data_dir: str = "./stockgate-data"
    listen: str = "127.0.0.1:50051"
    durability: str = "fsync"
    map_size_bytes: int = limits.MAP_SIZE_BYTES_DEFAULT
    map_size_bytes_max: int = limits.MAP_SIZE_BYTES_MAX
    message_bytes_max: int = MESSAGE_BYTES_DEFAULT
    inflight_ops_max: int = INFLIGHT_OPS_DEFAULT
    queue_ms: int = QUEUE_MS_DEFAULT
    session_inflight_ops_max: int = SESSION_INFLIGHT_OPS_DEFAULT
    streams_per_connection_max: int = STREAMS_PER_CONNECTION_DEFAULT
    unary_group_wait_ms: int = UNARY_GROUP_WAIT_MS_DEFAULT
    watch_streams_max: int = WATCH_STREAMS_DEFAULT
    watch_coalesce_ms: int = WATCH_COALESCE_MS_DEFAULT
    token_ops_per_s: int = TOKEN_OPS_PER_S_DEFAULT
    token_burst_ops: int = TOKEN_BURST_OPS_DEFAULT
    shutdown_grace_ms: int = SHUTDOWN_GRACE_MS_DEFAULT
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    metrics_port: int = 0
    log_level: str = "info"
    demo: bool = False
    verify_store: bool = True
    tokens: Mapping[str, TokenGrant] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate(self)

    @property
    def auth(self) -> bool:
        """True when calls must carry a token."""
        return bool(self.tokens)

    @property
    def tls(self) -> bool:
        """True when the server speaks TLS (tls_cert and tls_key are set)."""
        return self.tls_cert is not None

    @property
    def host(self) -> str:
        """The host part of listen, without IPv6 brackets."""
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        """The port part of listen (0: any free port)."""
        return split_listen(self.listen)[1]


def split_listen(listen: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > PORT_MAX:
        raise ConfigError(f"listen is {listen!r}; use host:port, e.g. 127.0.0.1:50051 "
                          f"(port 0..{PORT_MAX}, 0 picks a free one)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate(config: Config) -> None:
    """Raise ConfigError naming the first bad setting."""
    for s in SETTINGS:
        value = getattr(config, s.name)
        if value is None:
            continue
        if s.kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{s.name} must be an integer, got {value!r}")
        if s.kind is bool and not isinstance(value, bool):
            raise ConfigError(f"{s.name} must be true or false, got {value!r}")
        if s.kind is str and not isinstance(value, str):
            raise ConfigError(f"{s.name} must be a string, got {value!r}")
        if s.lo is not None and not s.lo <= value <= s.hi:
            raise ConfigError(f"{s.name} is {value}; it must be between {s.lo} and {s.hi}")
        if s.choices and value not in s.choices:
            raise ConfigError(f"{s.name} is {value!r}; use one of {', '.join(s.choices)}")
    split_listen(config.listen)
    if config.map_size_bytes_max < config.map_size_bytes:
        raise ConfigError(f"map_size_bytes_max ({config.map_size_bytes_max}) must be at least "
                          f"map_size_bytes ({config.map_size_bytes})")
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError("tls_cert and tls_key go together: set both or neither")
    if config.tls_client_ca is not None and config.tls_cert is None:
        raise ConfigError("tls_client_ca (mTLS) needs tls_cert and tls_key")
    if config.token_burst_ops and not config.token_ops_per_s:
        # As for a token's own burst_ops: a burst above no rate would mean nothing.
        raise ConfigError(f"token_burst_ops is {config.token_burst_ops} but token_ops_per_s "
                          "is 0 (unlimited): set token_ops_per_s too, or drop token_burst_ops")
    if len(config.tokens) > TOKENS_MAX:
        raise ConfigError(f"tokens has {len(config.tokens)} entries; the limit is {TOKENS_MAX}")
    seen: dict[str, str] = {}
    for name, grant in config.tokens.items():
        where = f"tokens.{name}"
        if not isinstance(grant, TokenGrant):
            raise ConfigError(f"{where} must be a TokenGrant")
        if not grant.secret.isascii():
            raise ConfigError(f"{where}.secret must be ASCII: gRPC metadata carries ASCII "
                              "only, so no client could send it")
        n = len(grant.secret.encode())
        if not TOKEN_SECRET_BYTES_MIN <= n <= TOKEN_SECRET_BYTES_MAX:
            raise ConfigError(f"{where}.secret is {n} bytes; it must be between "
                              f"{TOKEN_SECRET_BYTES_MIN} and {TOKEN_SECRET_BYTES_MAX} bytes")
        if not grant.secret.isprintable() or " " in grant.secret:
            raise ConfigError(f"{where}.secret must be printable, without spaces")
        if grant.admin == bool(grant.channels):
            raise ConfigError(f"{where} must be either admin = true or name channels "
                              "(not both, not neither)")
        if len(grant.channels) > TOKEN_CHANNELS_MAX:
            raise ConfigError(f"{where}.channels has {len(grant.channels)} entries; the "
                              f"limit is {TOKEN_CHANNELS_MAX}")
        for i, ch in enumerate(grant.channels):
            try:
                limits.check_id(f"{where}.channels[{i}]", ch, limits.CHANNEL_BYTES_MAX)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        _check_rate(where, grant, config.token_ops_per_s)
        if grant.secret in seen:
            raise ConfigError(f"{where}.secret is the same as tokens.{seen[grant.secret]}'s")
        seen[grant.secret] = name


def _check_rate(where: str, grant: TokenGrant, ops_per_s_default: int) -> None:
    for key, hi in (("ops_per_s", TOKEN_OPS_PER_S_MAX), ("burst_ops", TOKEN_BURST_OPS_MAX)):
        value = getattr(grant, key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}.{key} must be an integer, got {value!r}")
        if not 0 <= value <= hi:
            raise ConfigError(f"{where}.{key} is {value}; it must be between 0 and {hi}")
    ops_per_s = ops_per_s_default if grant.ops_per_s is None else grant.ops_per_s
    if grant.burst_ops and not ops_per_s:
        # A burst above no rate at all would mean nothing: say so rather than ignore it.
        raise ConfigError(f"{where}.burst_ops is {grant.burst_ops} but the token has no "
                          f"rate ({where}.ops_per_s, else token_ops_per_s, is 0: "
                          "unlimited): set ops_per_s too, or drop burst_ops")


def _parse(s: Setting, raw: str, source: str) -> Any:
    if s.kind is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{source} is {raw!r}; it must be an integer") from None
    if s.kind is bool:
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{source} is {raw!r}; use true or false")
    return raw


def _tokens_from_toml(table: object, environ: Mapping[str, str]) -> dict[str, TokenGrant]:
    if not isinstance(table, dict):
        raise ConfigError("tokens must be a table of tables: [tokens.NAME]")
    out = {}
    for name, t in table.items():
        where = f"tokens.{name}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where} must be a table with secret or secret_env")
        unknown = set(t) - set(TOKEN_KEYS)
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}; use "
                              f"{', '.join(TOKEN_KEYS)}")
        if ("secret" in t) == ("secret_env" in t):
            raise ConfigError(f"{where} needs exactly one of secret and secret_env")
        if "secret_env" in t:
            var = t["secret_env"]
            if not isinstance(var, str) or var not in environ:
                raise ConfigError(f"{where}.secret_env names {var!r}, which is not set")
            secret = environ[var]
        else:
            secret = t["secret"]
            if not isinstance(secret, str):
                raise ConfigError(f"{where}.secret must be a string")
        admin = t.get("admin", False)
        if not isinstance(admin, bool):
            raise ConfigError(f"{where}.admin must be true or false")
        channels = t.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise ConfigError(f"{where}.channels must be a list of channel names")
        out[name] = TokenGrant(secret=secret, admin=admin, channels=tuple(channels),
                               ops_per_s=t.get("ops_per_s"), burst_ops=t.get("burst_ops"))
    return out


def parser() -> argparse.ArgumentParser:
    """The `stockgate serve` flags; every default is None so precedence can tell."""
    p = argparse.ArgumentParser(
        prog="stockgate serve", description="Serve the stockgate gRPC API.",
        epilog="Every flag has an environment variable (STOCKGATE_<NAME>) and a TOML key "
               "(<name>); flags win over the environment, which wins over the file. "
               "Tokens: [tokens.NAME] tables in the file, or STOCKGATE_ADMIN_TOKEN.")
    p.add_argument("--config", metavar="FILE", help="TOML file of settings and tokens")
    for s in SETTINGS:
        if s.kind is bool:
            p.add_argument(s.flag, action=argparse.BooleanOptionalAction, default=None,
                           help=s.meaning)
        else:
            p.add_argument(s.flag, dest=s.name, default=None, help=s.meaning,
                           choices=s.choices or None)
    return p


def load(argv: Sequence[str] | None = None,
         environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config of `stockgate serve ARGV`: flags > environment > TOML > defaults.

    Raises ConfigError naming the setting, its source and the fix.
    """
    environ = os.environ if environ is None else environ
    args = parser().parse_args(list(argv) if argv is not None else None)
    values: dict[str, Any] = {}
    tokens: dict[str, TokenGrant] = {}
    path = args.config or environ.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"--config {path}: cannot read it ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"--config {path}: not valid TOML ({exc})") from None
        known = {s.name: s for s in SETTINGS}
        for key, value in doc.items():
            if key == "tokens":
                tokens = _tokens_from_toml(value, environ)
            elif key not in known:
                raise ConfigError(f"{path}: unknown setting {key!r}; see docs/server.md")
            else:
                values[key] = value
    for s in SETTINGS:
        if s.env in environ:
            values[s.name] = _parse(s, environ[s.env], s.env)
        flag_value = getattr(args, s.name, None)
        if flag_value is not None:
            values[s.name] = flag_value if s.kind is bool else _parse(s, flag_value, s.flag)
    if ADMIN_TOKEN_ENV in environ:
        tokens[ADMIN_TOKEN_NAME] = TokenGrant(secret=environ[ADMIN_TOKEN_ENV], admin=True)
    return Config(**values, tokens=tokens)


def with_overrides(config: Config, **changes: Any) -> Config:
    """A copy of config with some settings changed (validated again)."""
    return replace(config, **changes)


__all__ = ["Config", "ConfigError", "SETTINGS", "Setting", "TokenGrant", "load", "parser",
           "with_overrides", "is_loopback", "split_listen"]
