"""Email over SMTP, one connection reused for a whole batch.

``LIFECYCLE_SMTP_URL`` selects the server:

    smtp://host:25                      plain (a local relay on loopback)
    smtp+starttls://user:pass@host:587  STARTTLS, then AUTH
    smtps://user:pass@host:465          implicit TLS, then AUTH

User and password are URL-encoded. With no URL, nothing is sent: callers record the notice as
``not_sent`` and log a warning (the embedded default has no mail server).

Messages are built by hand (headers + base64 UTF-8 body) rather than through ``email.message``:
the body of a policy notice is the same for every member, so it is encoded once per batch.
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate
from types import TracebackType
from typing import Literal
from urllib.parse import unquote, urlsplit

from lifecycle.settings import SettingsError, get_settings

log = logging.getLogger(__name__)

Security = Literal["plain", "starttls", "ssl"]
SendStatus = Literal["sent", "rejected", "retry"]

_SCHEMES: dict[str, tuple[Security, int]] = {
    "smtp": ("plain", 25),
    "smtp+starttls": ("starttls", 587),
    "smtps": ("ssl", 465),
}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Security
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class SendResult:
    """One message's outcome: no address, no body, only what ops need."""

    status: SendStatus
    code: int | None = None
    error_class: str | None = None


def parse_smtp_url(url: str) -> SmtpConfig:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise SettingsError("LIFECYCLE_SMTP_URL is not a valid URL") from None
    if parts.scheme not in _SCHEMES:
        raise SettingsError(
            "LIFECYCLE_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://"
        )
    if not parts.hostname:
        raise SettingsError("LIFECYCLE_SMTP_URL has no host")
    security, default_port = _SCHEMES[parts.scheme]
    return SmtpConfig(
        host=parts.hostname,
        port=port or default_port,
        security=security,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def smtp_config() -> SmtpConfig | None:
    url = get_settings().smtp_url
    return parse_smtp_url(url) if url else None


def valid_address(addr: str | None) -> bool:
    """Plain ASCII ``local@domain`` with no whitespace: anything else could inject headers."""
    if not addr or len(addr) > 254 or not addr.isascii():
        return False
    if any(c.isspace() or c in '<>,;"\\' for c in addr):
        return False
    local, sep, domain = addr.rpartition("@")
    return bool(sep and local and "." in domain and not domain.startswith("."))


class MessageBuilder:
    """Encodes subject and body once; `build` only adds the per-recipient headers."""

    def __init__(self, mail_from: str, subject: str, body: str) -> None:
        self.mail_from = mail_from
        subj = Header(subject, "utf-8").encode(maxlinelen=998)
        b64 = base64.encodebytes(body.replace("\r\n", "\n").encode("utf-8"))
        self._head = (
            f"From: {mail_from}\r\nSubject: {subj}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
        ).encode("ascii")
        self._body = b64.replace(b"\n", b"\r\n")

    def build(self, to: str, message_id: str) -> bytes:
        """``message_id`` is stable per (notice, member): a resend after a crash carries the
        same Message-ID, so mail clients collapse the duplicate."""
        tail = (
            f"To: {to}\r\nDate: {formatdate(usegmt=True)}\r\nMessage-ID: <{message_id}>\r\n\r\n"
        ).encode("ascii")
        return self._head + tail + self._body


class Mailer:
    """A reusable SMTP session. Connects lazily; reconnects after the server hung up.

    Use as a context manager so the connection is closed (QUIT) at the end of the batch.
    """

    def __init__(self, cfg: SmtpConfig) -> None:
        self.cfg = cfg
        self._smtp: smtplib.SMTP | None = None
        self.connections = 0

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        smtp: smtplib.SMTP
        if cfg.security == "ssl":
            smtp = smtplib.SMTP_SSL(
                cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context()
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo_or_helo_if_needed()
        if cfg.username:
            smtp.login(cfg.username, cfg.password or "")
        self.connections += 1
        return smtp

    def connect(self) -> None:
        """Open the session now (raises OSError/SMTPException if the server is unreachable)."""
        if self._smtp is None:
            self._smtp = self._connect()

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def send(self, mail_from: str, to: str, raw: bytes) -> SendResult:
        """Send one message. Never raises; never logs the address or the content."""
        if not valid_address(to):
            return SendResult("rejected", None, "InvalidAddress")
        try:
            self.connect()
            assert self._smtp is not None
            if valid_address(mail_from) and raw.isascii():
                return self._send_plain(mail_from, to, raw)
            self._smtp.sendmail(mail_from, [to], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code = next(iter(exc.recipients.values()))[0] if exc.recipients else None
            return _by_code(code, type(exc).__name__)
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            if isinstance(exc, smtplib.SMTPSenderRefused):
                # Our own From is refused: a configuration problem, not this member's.
                return SendResult("retry", exc.smtp_code, type(exc).__name__)
            return _by_code(exc.smtp_code, type(exc).__name__)
        except (smtplib.SMTPException, OSError) as exc:
            # Disconnected or timed out: the message may or may not have been accepted; the
            # caller resends later with the same Message-ID (at least once).
            self._drop()
            return SendResult("retry", None, type(exc).__name__)
        return SendResult("sent", 250)

    def _send_plain(self, mail_from: str, to: str, raw: bytes) -> SendResult:
        """MAIL, RCPT, DATA for one recipient, skipping smtplib's address re-parsing.

        Both addresses passed `valid_address` (plain ASCII, no brackets, quotes or spaces) and
        the message is ASCII (base64 body), so no ESMTP option is needed. ``sendmail`` would
        parse each address with ``email.utils`` again on every message.
        """
        smtp = self._smtp
        assert smtp is not None
        code, _ = smtp.docmd("mail", f"FROM:<{mail_from}>")
        if code != 250:
            smtp.rset()
            # Our own From is refused: a configuration problem, not this member's.
            return SendResult("retry", code, "SMTPSenderRefused")
        code, _ = smtp.docmd("rcpt", f"TO:<{to}>")
        if code not in (250, 251):
            smtp.rset()
            return _by_code(code, "SMTPRecipientsRefused")
        code, _ = smtp.data(raw)
        if code != 250:
            smtp.rset()
            return _by_code(code, "SMTPDataError")
        return SendResult("sent", 250)

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None


def _by_code(code: int | None, cls: str) -> SendResult:
    # 5xx is permanent for this address (e.g. 550 no such mailbox); 4xx is "try later".
    if code is not None and 500 <= code < 600:
        return SendResult("rejected", code, cls)
    return SendResult("retry", code, cls)


def mailer_from_settings() -> Mailer | None:
    cfg = smtp_config()
    return Mailer(cfg) if cfg else None
