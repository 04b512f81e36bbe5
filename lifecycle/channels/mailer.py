"""Email over SMTP, one connection reused for a whole batch.

``LIFECYCLE_SMTP_URL`` selects the server:

    smtp://host:25                      plain (a local relay on loopback)
    smtp+starttls://user:pass@host:587  STARTTLS, then AUTH
    smtps://user:pass@host:465          implicit TLS, then AUTH

User and password are URL-encoded. With no URL, nothing is sent: callers record the notice as
``not_sent`` and log a warning (the embedded default has no mail server).

Messages are built by hand (headers + base64 UTF-8 body) rather than through ``email.message``:
the body of a policy notice is the same for every member, so it is encoded once per batch.

The point of no return. SMTP commits a message when the server reads the final ``.`` line of
DATA; a server that loses the connection before it must discard the message (RFC 5321 4.1.1.4),
and a client that loses the connection after it cannot know whether it was accepted (the
two-generals problem: no further exchange can settle it). `Mailer.send` therefore sends the
dot-quoted body WITHOUT the terminator, calls the caller's ``before_commit`` (which records the
intent durably), and only then sends ``.``. If recording fails, the connection is dropped and
nothing was sent ("retry"); if the connection fails after the terminator, the outcome is
"unknown" (maybe delivered): the caller must not resend it blindly.
"""

from __future__ import annotations

import base64
import logging
import re
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate
from types import TracebackType
from typing import Literal
from urllib.parse import unquote, urlsplit

from lifecycle.channels.tls import client_context, is_loopback
from lifecycle.core.errors import SettingsError
from lifecycle.core.safe_errors import connection_reason
from lifecycle.core.settings import get_settings

log = logging.getLogger(__name__)

_LEADING_DOT = re.compile(rb"(?m)^\.")
_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux

Security = Literal["plain", "starttls", "ssl"]
# sent: the server answered 250 to the end of DATA. rejected: a 5xx for this address/message.
# retry: not sent, certainly (4xx, or the session failed before the end of DATA). unknown: the
# session failed after the end of DATA was written: the message may have been accepted.
SendStatus = Literal["sent", "rejected", "retry", "unknown"]

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
    # For logs: "connection refused 127.0.0.1:25", "SMTP 421" (never the server's reply text).
    reason: str | None = None


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
    if security == "plain" and not is_loopback(parts.hostname):
        if not get_settings().allow_plain_smtp:
            raise SettingsError(
                "LIFECYCLE_SMTP_URL: plain smtp:// to a host other than loopback would send "
                "personal data unencrypted; use smtp+starttls:// or smtps:// (or set "
                "LIFECYCLE_ALLOW_PLAIN_SMTP=true)"
            )
        log.warning(
            "LIFECYCLE_ALLOW_PLAIN_SMTP is set: mail to %s goes without TLS", parts.hostname
        )
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
                cfg.host, cfg.port, timeout=cfg.timeout, context=client_context()
            )
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            if cfg.security == "starttls":
                smtp.starttls(context=client_context())
        # The body and the terminating "." go out as two writes with the intent mark between:
        # where they cannot be joined (TLS, no MSG_MORE), Nagle could otherwise hold the 3-byte
        # terminator until the server's (delayed) ACK of the body: up to 40 ms per message.
        assert smtp.sock is not None  # connected by the constructor
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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

    def send(
        self,
        mail_from: str,
        to: str,
        raw: bytes,
        before_commit: Callable[[], None] | None = None,
    ) -> SendResult:
        """Send one message. Never raises; never logs the address or the content.

        ``before_commit`` runs after the whole body was written and before the terminating
        ``.``: if it raises, the connection is dropped unterminated (the server discards the
        message) and the result is "retry". After it returned, a lost connection gives
        "unknown", never "retry".
        """
        if not valid_address(to):
            return SendResult("rejected", None, "InvalidAddress")
        committing = False
        try:
            self.connect()
            smtp = self._smtp
            assert smtp is not None
            if valid_address(mail_from) and raw.isascii():
                # Both addresses passed `valid_address` (plain ASCII, no brackets, quotes or
                # spaces) and the message is ASCII (base64 body), so no ESMTP option is
                # needed; smtplib's mail()/rcpt() would re-parse each address every message.
                code, _ = smtp.docmd("mail", f"FROM:<{mail_from}>")
                if code != 250:
                    smtp.rset()
                    # Our own From is refused: a configuration problem, not this member's.
                    return SendResult("retry", code, "SMTPSenderRefused")
                code, _ = smtp.docmd("rcpt", f"TO:<{to}>")
            else:
                # Anything else (an unusual From, a non-ASCII message): smtplib quotes the
                # addresses; the DATA phase below is the same split one.
                code, _ = smtp.mail(mail_from)
                if code != 250:
                    smtp.rset()
                    return SendResult("retry", code, "SMTPSenderRefused")
                code, _ = smtp.rcpt(to)
            if code not in (250, 251):
                smtp.rset()
                return _by_code(code, "SMTPRecipientsRefused")
            smtp.putcmd("data")
            code, _ = smtp.getreply()
            if code != 354:
                smtp.rset()
                return _by_code(code, "SMTPDataError")
            body = _quote_periods(raw)
            if not body.endswith(b"\r\n"):
                body += b"\r\n"
            sock = smtp.sock
            if _MSG_MORE and sock is not None and not isinstance(sock, ssl.SSLSocket):
                # Written now, but the kernel holds it (MSG_MORE) until the terminator joins
                # it: one segment for the server, as with smtplib's data(), not two.
                sock.sendall(body, _MSG_MORE)
            else:
                smtp.send(body)
            if before_commit is not None:
                try:
                    before_commit()
                except Exception as exc:
                    # Unterminated DATA: the server must throw the message away.
                    self._drop()
                    return SendResult("retry", None, type(exc).__name__)
            committing = True
            smtp.send(b".\r\n")
            code, _ = smtp.getreply()
        except (smtplib.SMTPException, OSError) as exc:
            self._drop()
            why = connection_reason(exc, self.cfg.host, self.cfg.port)
            if committing:
                # The terminator may have reached the server and the message been accepted.
                return SendResult("unknown", None, type(exc).__name__, why)
            # Disconnected or timed out before the end of DATA: nothing was accepted.
            return SendResult("retry", None, type(exc).__name__, why)
        if code != 250:
            # A definite answer after the terminator (not accepted); a server that also hung
            # up (421) gets a fresh connection for the next message.
            try:
                smtp.rset()
            except (smtplib.SMTPException, OSError):
                self._drop()
            return _by_code(code, "SMTPDataError")
        return SendResult("sent", 250)

    def _drop(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            finally:
                self._smtp = None


def _quote_periods(raw: bytes) -> bytes:
    """RFC 5321 dot-stuffing, as ``smtplib.SMTP.data`` does it (bytes are sent as they are)."""
    # Built messages never have a line starting with "." (base64 body): skip the regex then.
    if raw.startswith(b".") or b"\n." in raw:
        return _LEADING_DOT.sub(b"..", raw)
    return raw


def _by_code(code: int | None, cls: str) -> SendResult:
    # 5xx is permanent for this address (e.g. 550 no such mailbox); 4xx is "try later".
    if code is not None and 500 <= code < 600:
        return SendResult("rejected", code, cls, f"SMTP {code}")
    return SendResult("retry", code, cls, f"SMTP {code}" if code is not None else None)


def mailer_from_settings() -> Mailer | None:
    cfg = smtp_config()
    return Mailer(cfg) if cfg else None
