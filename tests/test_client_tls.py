"""TLS and mTLS through both clients and the command: certificates made for the test (a
throw-away CA, a server certificate for 127.0.0.1, a client certificate, another CA)."""

from __future__ import annotations

import datetime as dt
import io
import ipaddress

import client_harness
import pytest
from client_harness import ADMIN, connect, run, running_server, stock_book
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stockgate.clients import Unavailable
from stockgate.server import cli

# Calls retry a refused handshake until their deadline and are then told Unavailable;
# a loaded machine once took longer than 0.4 s for the first handshake, so it gets 1 s.
REFUSED_CALL_TIMEOUT_S = 1.0

kind = client_harness.kind  # fixture


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(cn: str, issuer: tuple | None, *, server: bool = False):
    """A key and a certificate for cn, signed by issuer (key, cert) or by itself (a CA)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    signer_key, signer_name = (issuer[0], issuer[1].subject) if issuer else (key, _name(cn))
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(signer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(days=1)))
    if issuer is None:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    elif server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    else:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                            critical=False)
    return key, b.sign(signer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = _issue("test-ca", None)
    made = {"ca": ca, "other-ca": _issue("other-ca", None),
            "server": _issue("localhost", ca, server=True), "client": _issue("checkout", ca)}
    for who, (key, cert) in made.items():
        (d / f"{who}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (d / f"{who}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    return d


@pytest.fixture
def mtls_server(tmp_path, pki):
    with running_server(tmp_path / "data", tls_cert=str(pki / "server.pem"),
                        tls_key=str(pki / "server.key"),
                        tls_client_ca=str(pki / "ca.pem")) as server:
        stock_book(server.engine)
        yield server


def test_mtls_with_the_right_certificates(mtls_server, pki, kind):
    async def scenario():
        async with connect(kind, mtls_server.address, root_cert=str(pki / "ca.pem"),
                           client_cert=str(pki / "client.pem"),
                           client_key=(pki / "client.key").read_bytes()) as c:
            assert (await c.reserve("t-1", "tmall", [("SKU-1", 1)])).ok
            assert (await c.availability("tmall", ["SKU-1"])) == {"SKU-1": 79}
    run(scenario())


def test_mtls_refuses_a_client_without_a_certificate_or_trusting_another_ca(
        mtls_server, pki, kind):
    async def scenario():
        async with connect(kind, mtls_server.address, root_cert=str(pki / "ca.pem"),
                           timeout=REFUSED_CALL_TIMEOUT_S) as c:
            with pytest.raises(Unavailable):
                await c.stock("SKU-1")
            with pytest.raises(Unavailable):
                await c.reserve("t-2", "tmall", [("SKU-1", 1)])
        async with connect(kind, mtls_server.address, root_cert=str(pki / "other-ca.pem"),
                           client_cert=str(pki / "client.pem"),
                           client_key=str(pki / "client.key"), timeout=REFUSED_CALL_TIMEOUT_S) as c:
            with pytest.raises(Unavailable):
                await c.stock("SKU-1")
    run(scenario())


def test_the_command_speaks_mtls(mtls_server, pki):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["--address", mtls_server.address, "--token", ADMIN, "--ca",
                     str(pki / "ca.pem"), "--cert", str(pki / "client.pem"), "--key",
                     str(pki / "client.key"), "--json", "availability", "--channel", "tmall",
                     "SKU-1"], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().strip() == '{"SKU-1": 80}'


def test_certificate_settings_are_checked(pki):
    from stockgate.clients import Client

    with pytest.raises(ValueError, match="both client_cert and client_key"):
        Client("127.0.0.1:1", client_cert=str(pki / "client.pem"))
    with pytest.raises(ValueError, match="cannot read"):
        Client("127.0.0.1:1", root_cert="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="contradicts"):
        Client("127.0.0.1:1", tls=False, root_cert=str(pki / "ca.pem"))
