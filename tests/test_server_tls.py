"""TLS and mTLS with certificates made here: a CA, a server certificate for 127.0.0.1 and
a client certificate."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2
from server_calls import ADMIN, T, connect, run

CERT_DAYS = 2


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5))
         .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("stockgate test CA", ca_key, _name("stockgate test CA"), ca_key, ca=True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = _cert("127.0.0.1", srv_key, ca.subject, ca_key, server=True)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = _cert("checkout-service", cli_key, ca.subject, ca_key)
    files = {"ca": _pem(ca), "server_cert": _pem(srv), "server_key": _pem_key(srv_key),
             "client_cert": _pem(cli), "client_key": _pem_key(cli_key)}
    paths = {}
    for name, data in files.items():
        (d / f"{name}.pem").write_bytes(data)
        paths[name] = str(d / f"{name}.pem")
    return files, paths


def _check(address, credentials) -> grpc.StatusCode | None:
    async def main():
        async with connect(address, credentials) as s:
            try:
                await s.health.Check(health_pb2.HealthCheckRequest(), timeout=3)
                await s.inventory.ListLocations(T.Empty(), metadata=ADMIN, timeout=3)
            except grpc.aio.AioRpcError as e:
                return e.code()
            return None

    return run(main())


def test_tls(pki, server_config, start_server):
    files, paths = pki
    st = start_server(dataclasses.replace(server_config, tls_cert=paths["server_cert"],
                                          tls_key=paths["server_key"]))
    assert _check(st.address, grpc.ssl_channel_credentials(files["ca"])) is None
    assert _check(st.address, None) == grpc.StatusCode.UNAVAILABLE  # plaintext is refused
    # A client that does not trust the CA refuses the server.
    assert _check(st.address, grpc.ssl_channel_credentials(files["client_cert"])) == \
        grpc.StatusCode.UNAVAILABLE


def test_mtls_requires_a_client_certificate(pki, server_config, start_server):
    files, paths = pki
    st = start_server(dataclasses.replace(
        server_config, tls_cert=paths["server_cert"], tls_key=paths["server_key"],
        tls_client_ca=paths["ca"]))
    with_cert = grpc.ssl_channel_credentials(files["ca"], files["client_key"],
                                             files["client_cert"])
    assert _check(st.address, with_cert) is None
    assert _check(st.address, grpc.ssl_channel_credentials(files["ca"])) == \
        grpc.StatusCode.UNAVAILABLE


def test_unreadable_certificate_files_are_named(server_config, start_server, tmp_path):
    from stockgate.server import ConfigError

    with pytest.raises(ConfigError, match="tls_key .*missing.pem: cannot read it"):
        start_server(dataclasses.replace(server_config, tls_cert=str(tmp_path / "c.pem"),
                                         tls_key=str(tmp_path / "missing.pem")))
