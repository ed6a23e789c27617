"""TLS and mTLS through both clients and the command: certificates made for the test by
openssl (a throw-away CA, a server certificate for 127.0.0.1, a client certificate)."""

from __future__ import annotations

import io
import shutil
import subprocess

import client_harness
import pytest
from client_harness import ADMIN, connect, run, running_server, stock_book

from stockgate.clients import Unavailable
from stockgate.server import cli

kind = client_harness.kind  # fixture

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "2", "-subj", f"/CN={ca}", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who, subject in (("server", "/CN=localhost"), ("client", "/CN=checkout-svc")):
        _openssl("req", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr",
                 "-subj", subject, cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{who}.pem", "-days", "2", "-extfile",
                 f"{who}.ext", cwd=d)
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
                           timeout=0.4) as c:
            with pytest.raises(Unavailable):
                await c.stock("SKU-1")
            with pytest.raises(Unavailable):
                await c.reserve("t-2", "tmall", [("SKU-1", 1)])
        async with connect(kind, mtls_server.address, root_cert=str(pki / "other-ca.pem"),
                           client_cert=str(pki / "client.pem"),
                           client_key=str(pki / "client.key"), timeout=0.4) as c:
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
