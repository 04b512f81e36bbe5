"""Transport security: personal data leaves only over verified TLS (or to loopback).

Real TLS servers on loopback (an HTTPS webhook receiver and an SMTPS server), with a CA and
server certificate this test makes; nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lifecycle.channels.mailer import Mailer, MessageBuilder, parse_smtp_url
from lifecycle.channels.webhooks import deliver_webhook, validate_url
from lifecycle.core.errors import SettingsError, UserError
from lifecycle.core.settings import reset_settings_cache
from tests.helpers import free_port

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost signed by it."""
    d = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("lifecycle test CA"))
        .issuer_name(_name("lifecycle test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _server_context(pki: dict[str, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["cert"], pki["key"])
    return ctx


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for k in ("LIFECYCLE_CA_FILE", "LIFECYCLE_ALLOW_PLAIN_SMTP", "LIFECYCLE_SMTP_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path / "var"))
    reset_settings_cache()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings_cache()


@pytest.fixture
def https_receiver(pki: dict[str, Path]) -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["content-length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.socket = _server_context(pki).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{port}/pipa", bodies
    server.shutdown()
    server.server_close()


def test_webhook_over_tls_is_verified_against_the_configured_ca(
    settings_env: pytest.MonkeyPatch, pki: dict[str, Path], https_receiver: tuple[str, list[bytes]]
) -> None:
    url, bodies = https_receiver
    # The system trust store does not know the test CA: the delivery must not go out.
    out = deliver_webhook(url, SECRET, "msg_1", {"event": "correction"}, timeout=5)
    assert out.outcome == "retry" and out.status_code is None
    assert bodies == []
    settings_env.setenv("LIFECYCLE_CA_FILE", str(pki["ca"]))
    reset_settings_cache()
    out = deliver_webhook(url, SECRET, "msg_2", {"event": "correction"}, timeout=5)
    assert out.outcome == "delivered", out
    assert len(bodies) == 1 and b'"event":"correction"' in bodies[0]


def test_plain_webhooks_only_to_loopback() -> None:
    with pytest.raises(UserError, match="must use https"):
        validate_url("http://hooks.example.com/pipa")
    assert validate_url("http://127.0.0.1:9/x") == "http://127.0.0.1:9/x"


def test_missing_ca_file_is_a_one_line_settings_error(
    settings_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lifecycle.core.settings import get_settings

    settings_env.setenv("LIFECYCLE_CA_FILE", str(tmp_path / "nope.pem"))
    reset_settings_cache()
    with pytest.raises(SettingsError, match=r"^LIFECYCLE_CA_FILE: .* is not a readable file"):
        get_settings()


def test_plain_smtp_to_another_host_needs_the_operator_flag(
    settings_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(SettingsError, match="personal data unencrypted"):
        parse_smtp_url("smtp://mail.example.com:25")
    assert parse_smtp_url("smtp://127.0.0.1:2525").security == "plain"
    assert parse_smtp_url("smtps://mail.example.com").security == "ssl"
    settings_env.setenv("LIFECYCLE_ALLOW_PLAIN_SMTP", "true")
    reset_settings_cache()
    with caplog.at_level("WARNING"):
        cfg = parse_smtp_url("smtp://mail.example.com:25")
    assert cfg.security == "plain"
    assert "LIFECYCLE_ALLOW_PLAIN_SMTP" in caplog.text


class _Collect:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.messages.append(envelope.content)
        return "250 OK"


def test_smtps_delivery_verifies_the_server(
    settings_env: pytest.MonkeyPatch, pki: dict[str, Path]
) -> None:
    handler = _Collect()
    port = free_port()
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, ssl_context=_server_context(pki)
    )
    controller.start()
    try:
        builder = MessageBuilder("privacy@maumteo.example", "안내", "본문")
        raw = builder.build("member@example.com", "<t1@maumteo.example>")
        cfg = parse_smtp_url(f"smtps://localhost:{port}")
        with Mailer(cfg) as m:
            first = m.send("privacy@maumteo.example", "member@example.com", raw)
        assert first.status != "sent" and handler.messages == []
        settings_env.setenv("LIFECYCLE_CA_FILE", str(pki["ca"]))
        reset_settings_cache()
        with Mailer(cfg) as m:
            second = m.send("privacy@maumteo.example", "member@example.com", raw)
        assert second.status == "sent", second
        assert len(handler.messages) == 1
    finally:
        controller.stop()
