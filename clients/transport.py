"""How a client reaches the server: address, TLS or mTLS, the bearer token, channel options.

Every gRPC option is set here explicitly. Deadlines are never put in a service config
(grpcio fails every call at once when its timeout there is under about 1.3 s): each call
carries its own `timeout=`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import grpc
import grpc.aio

from . import limits

__all__ = ["Transport"]

PemSource = bytes | str | os.PathLike[str] | None


def _read_pem(what: str, source: PemSource) -> bytes | None:
    """PEM bytes from bytes, a PEM string, or a file path."""
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    text = os.fspath(source)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        with open(text, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {text!r}: {e.strerror}") from None


@dataclass(frozen=True)
class Transport:
    """The connection settings a client was made with (no secrets in its repr)."""

    address: str
    token: str | None = None
    tls: bool = False
    root_cert: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    server_name: str | None = None  # the name to check the server's certificate against

    def __repr__(self) -> str:
        return f"Transport(address={self.address!r}, tls={self.tls})"

    @classmethod
    def make(cls, address: str, token: str | None = None, *, tls: bool | None = None,
             root_cert: PemSource = None, client_cert: PemSource = None,
             client_key: PemSource = None, server_name: str | None = None) -> Transport:
        """Check and load the settings. TLS is on when asked or when any certificate is
        given; mTLS needs both client_cert and client_key. Raises ValueError."""
        if not address or not isinstance(address, str):
            raise ValueError("address must be 'host:port', e.g. '127.0.0.1:50051'")
        if (client_cert is None) != (client_key is None):
            raise ValueError("mTLS needs both client_cert and client_key")
        root = _read_pem("root_cert", root_cert)
        cert = _read_pem("client_cert", client_cert)
        key = _read_pem("client_key", client_key)
        use_tls = bool(tls) or root is not None or cert is not None
        if tls is False and (root is not None or cert is not None):
            raise ValueError("tls=False contradicts the certificates given")
        return cls(address, token or None, use_tls, root, cert, key, server_name)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call sends: the bearer token, when there is one."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token}"),)

    def options(self) -> list[tuple[str, object]]:
        opts: list[tuple[str, object]] = [
            ("grpc.max_send_message_length", limits.MESSAGE_BYTES_MAX),
            ("grpc.max_receive_message_length", limits.MESSAGE_BYTES_MAX),
            ("grpc.keepalive_time_ms", limits.KEEPALIVE_TIME_MS),
            ("grpc.keepalive_timeout_ms", limits.KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.enable_retries", 1),  # transparent retries only: no retry policy is set
            ("grpc.initial_reconnect_backoff_ms", limits.RECONNECT_BACKOFF_INITIAL_MS),
            ("grpc.max_reconnect_backoff_ms", limits.RECONNECT_BACKOFF_MAX_MS),
            # Each client gets a connection of its own, so two clients in one process
            # (or a client reopened after close) never share a closing subchannel.
            ("grpc.use_local_subchannel_pool", 1),
        ]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts

    def _credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_cert, private_key=self.client_key,
            certificate_chain=self.client_cert)

    def sync_channel(self) -> grpc.Channel:
        if self.tls:
            return grpc.secure_channel(self.address, self._credentials(), self.options())
        return grpc.insecure_channel(self.address, self.options())

    def aio_channel(self) -> grpc.aio.Channel:
        if self.tls:
            return grpc.aio.secure_channel(self.address, self._credentials(), self.options())
        return grpc.aio.insecure_channel(self.address, self.options())
