"""https:// hook servers with a self-signed certificate (issue 10, item 9).

A real HTTPS hook backend (tests/support/hookserver.py with a certificate made
here, as ``openssl req -x509`` makes one) and real ffmpeg publishers:

* by default the certificate is checked: the publisher is refused and the log
  line names the key to change (``[hook] ssl_ca_file`` / ``ssl_verify``);
* ``ssl_ca_file`` = that certificate: accepted, gate and notifications alike;
* ``ssl_verify = 0`` (per dialect): accepted.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.support.clients import needs_ffmpeg
from tests.support.hookserver import HookServer, run_publish, running_hookserver
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.interop, needs_ffmpeg]


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1/localhost, as ``openssl req -x509`` makes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "hooks-cert.pem", folder / "hooks-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def hooks(cert: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookServer]:
    with running_hookserver(tmp_path_factory.mktemp("https-backend"), tls=cert) as hs:
        yield hs


def zlm(hs: HookServer, *extra: str) -> list[str]:
    return ["hook.enable=1", f"hook.on_publish={hs.url('/zlm/on_publish')}", "hook.retry=0", "hook.timeoutSec=3",
            *extra]


def srs(hs: HookServer, *extra: str) -> list[str]:
    return ["http_hooks.enabled=1", f"http_hooks.on_publish={hs.url('/srs/on_publish')}", "http_hooks.timeoutSec=3",
            *extra]


def publish(srv: Server, stream: str) -> bool:
    r = run_publish(f"{srv.rtmp}/live/{stream}", duration=2, timeout=30)
    return r.returncode == 0


def test_refused_by_default_and_the_line_names_the_key(hooks: HookServer, tmp_path: Path) -> None:
    with running_server(tmp_path, *zlm(hooks), f"hook.outbox={tmp_path / 'ob'}") as srv:
        assert not publish(srv, "tls-default")
    assert not hooks.find("/zlm/on_publish", stream="tls-default"), "no request got through the handshake"
    lines = [x for x in srv.log().splitlines() if "on_publish" in x and "TLS" in x]
    assert lines, srv.log()
    assert f"certificate of 127.0.0.1:{hooks.port} not accepted" in lines[0]
    assert "set [hook] ssl_ca_file" in lines[0] and "[hook] ssl_verify = 0" in lines[0]


def test_srs_dialect_names_its_own_keys(hooks: HookServer, tmp_path: Path) -> None:
    with running_server(tmp_path, *srs(hooks), f"hook.outbox={tmp_path / 'ob'}") as srv:
        assert not publish(srv, "tls-srs-default")
    assert any("[http_hooks] ssl_ca_file" in x for x in srv.log().splitlines()), srv.log()


def test_allowed_with_the_ca_file_for_gates_and_notifications(hooks: HookServer, cert: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    sets = zlm(hooks, f"hook.ssl_ca_file={cert[0]}", f"hook.on_flow_report={hooks.url('/zlm/on_flow_report')}",
               "general.flowThreshold=0", f"hook.outbox={tmp_path / 'ob'}")
    with running_server(tmp_path, *sets) as srv:
        assert publish(srv, "tls-ca")
        hooks.wait("/zlm/on_publish", stream="tls-ca")
        flow = hooks.wait("/zlm/on_flow_report", stream="tls-ca", timeout=15)[0]["json"]
        assert flow["player"] is False
    assert "_HTTP11ClientFactory" not in srv.log()  # item 11: no factory lines per hook call
    assert any(x for x in srv.log().splitlines() if "hook zlm on_flow_report https://127.0.0.1" in x
               and "delivered" in x and " ms)" in x), srv.log()


def test_allowed_with_verification_off_for_that_dialect_only(hooks: HookServer, tmp_path: Path) -> None:
    with running_server(tmp_path, *srs(hooks, "http_hooks.ssl_verify=0"), f"hook.outbox={tmp_path / 'ob'}") as srv:
        assert publish(srv, "tls-srs-off")
        hooks.wait("/srs/on_publish", stream="tls-srs-off")
    (tmp_path / "both").mkdir()
    with running_server(tmp_path / "both", *srs(hooks, "http_hooks.ssl_verify=0"), *zlm(hooks),
                        f"hook.outbox={tmp_path / 'ob2'}") as srv:
        assert not publish(srv, "tls-zlm-still-checked")  # [hook] still checks its certificates
