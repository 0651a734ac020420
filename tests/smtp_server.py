"""A real SMTP server for the tests (aiosmtpd), on a free loopback port: STARTTLS with
a certificate made for the run (its CA file is handed to the client through
TAHOE_SMTP_URL's `ca_file`), AUTH LOGIN/PLAIN with one user, and the messages it
accepted, parsed. `refuse_next(code)` makes it answer the next messages' DATA with a
temporary (4xx) or permanent (5xx) refusal, as a real server may."""

from __future__ import annotations

import contextlib
import datetime as dt
import email
import email.policy
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import harness

USER, PASSWORD = "mailer", "s3cret-pass"
# aiosmtpd logs every command and DATA line (and goes on logging from its thread after
# a test's log capture closed): only its warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    condition: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.condition:
            if self.refusals:
                return self.refusals.pop(0)
            parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed))
            self.condition.notify_all()
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


@dataclass
class SmtpServer:
    port: int
    ca_file: Path
    handler: _Handler

    @property
    def url(self) -> str:
        """TAHOE_SMTP_URL for this server: STARTTLS, authenticated, trusting its CA."""
        return f"smtp://{USER}:{PASSWORD}@localhost:{self.port}?ca_file={self.ca_file}&timeout=5"

    @property
    def messages(self) -> list[Received]:
        with self.handler.condition:
            return list(self.handler.received)

    def refuse_next(self, *replies: str) -> None:
        """The next DATA commands get these replies ("451 4.3.0 try later", "550 5.1.1 no such user")."""
        with self.handler.condition:
            self.handler.refusals.extend(replies)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.handler.condition:
            while len(self.handler.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} messages, got {len(self.handler.received)}")
                self.handler.condition.wait(left)
            return list(self.handler.received)

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.recipients]


@contextlib.contextmanager
def smtp_server(directory: Path) -> Iterator[SmtpServer]:
    cert, key = self_signed_certificate(directory)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    handler = _Handler()
    port = harness.free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        server_hostname="localhost",
        tls_context=tls,
        require_starttls=True,
        authenticator=_authenticator,
        auth_require_tls=True,
        auth_required=True,
    )
    controller.start()
    try:
        yield SmtpServer(port, cert, handler)
    finally:
        controller.stop()


@contextlib.contextmanager
def plain_smtp_server(port: int) -> Iterator[SmtpServer]:
    """No TLS, no AUTH, on `port` (a relay on the same host: smtp+plain://)."""
    handler = _Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer(port, Path(), handler)
    finally:
        controller.stop()
