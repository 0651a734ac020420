"""Where mail goes, from TAHOE_SMTP_URL:

- `smtp://user:password@host:587`: STARTTLS, required (a server that does not offer it
  is a failure, not a reason to send in clear);
- `smtps://user:password@host:465`: TLS from the first byte;
- `smtp+plain://host:25`: no TLS, for a relay on the same host or network only;
- `log:var/mail` (or `log:/absolute/dir`): each message written to a file, nothing sent.

Query parameters: `timeout` (seconds, default 10), `ca_file` (a CA bundle to trust
instead of the system's). User and password are percent-decoded.
"""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit


class MailFailure(Exception):
    """A message was not accepted. `permanent`: sending it again will not help."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    def send(self, message: EmailMessage) -> None: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class SmtpTransport:
    host: str
    port: int
    security: str  # "starttls", "tls" or "none"
    username: str = ""
    password: str = field(default="", repr=False)  # never in a log line or a traceback
    timeout: float = 10.0
    ca_file: str = ""

    def describe(self) -> str:
        return f"smtp {self.host}:{self.port} ({self.security}{', authenticated' if self.username else ''})"

    def _tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file or None)

    def send(self, message: EmailMessage) -> None:
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls())
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            with client:
                client.ehlo()
                if self.security == "starttls":
                    if not client.has_extn("starttls"):
                        raise MailFailure(f"{self.host}:{self.port} does not offer STARTTLS")
                    client.starttls(context=self._tls())
                    client.ehlo()
                if self.username:
                    client.login(self.username, self.password)
                refused = client.send_message(message)
        except MailFailure:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise MailFailure(f"recipient refused ({codes})", permanent=all(c >= 500 for c in codes)) from None
        except smtplib.SMTPAuthenticationError as exc:
            # Wrong credentials are the deployment's to fix; retried until they are.
            raise MailFailure(f"authentication refused ({exc.smtp_code})") from None
        except smtplib.SMTPResponseException as exc:
            permanent = 500 <= exc.smtp_code < 600
            raise MailFailure(f"server answered {exc.smtp_code}", permanent=permanent) from None
        except (TimeoutError, smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            raise MailFailure(f"{type(exc).__name__}: {exc}") from None
        if refused:
            raise MailFailure(f"recipient refused ({sorted(refused)})", permanent=True)


@dataclass(frozen=True)
class LogTransport:
    """Writes each message to `directory` as an .eml file (RFC 5322), for local runs."""

    directory: Path

    def describe(self) -> str:
        return f"log to {self.directory}/"

    def send(self, message: EmailMessage) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        ident = str(message.get("Message-ID", "")).strip("<>").split("@")[0] or os.urandom(6).hex()
        path = self.directory / f"{stamp}-{ident}.eml"
        try:
            path.write_bytes(bytes(message))
        except OSError as exc:
            raise MailFailure(f"cannot write {path}: {exc}") from None


class MailUrlError(ValueError):
    pass


SECURITY = {"smtp": ("starttls", 587), "smtps": ("tls", 465), "smtp+plain": ("none", 25)}


def transport_from_url(url: str, var_dir: Path) -> Transport:
    if not url:
        return LogTransport(var_dir / "mail")
    if url.startswith("log:"):
        where = url.removeprefix("log:").removeprefix("//") or str(var_dir / "mail")
        return LogTransport(Path(where))
    parts = urlsplit(url)
    if parts.scheme not in SECURITY:
        raise MailUrlError("TAHOE_SMTP_URL must start with smtp://, smtps://, smtp+plain:// or log:")
    if not parts.hostname:
        raise MailUrlError("TAHOE_SMTP_URL names no host")
    security, default_port = SECURITY[parts.scheme]
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"timeout", "ca_file"}
    if unknown:
        raise MailUrlError(f"TAHOE_SMTP_URL: unknown parameters {sorted(unknown)}")
    try:
        timeout = float(query.get("timeout", "10"))
        port = parts.port or default_port
    except ValueError:
        raise MailUrlError("TAHOE_SMTP_URL: the port and timeout must be numbers") from None
    if not 0 < timeout <= 120:
        raise MailUrlError("TAHOE_SMTP_URL: timeout must be within (0, 120] seconds")
    if parts.username and security == "none":
        raise MailUrlError("TAHOE_SMTP_URL: smtp+plain:// would send the password in clear; use smtp:// or smtps://")
    return SmtpTransport(
        host=parts.hostname,
        port=port,
        security=security,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        timeout=timeout,
        ca_file=query.get("ca_file", ""),
    )
