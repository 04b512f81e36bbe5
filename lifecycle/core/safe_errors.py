"""Exceptions without personal data, for the result backend, Flower and the logs.

An exception's message is where values leak: a PostgreSQL unique violation says
``Key (email)=(someone@example.com) already exists``, an ``OSError`` names a file whose name may
hold a member's name, ``smtplib`` errors list addresses. So only messages written for operators
pass through (`LifecycleError`, which by contract names ids, tables and settings only) plus a
few kinds whose messages are about code, not data. Everything else is described by its class,
database error codes and the stack (file, line, function: code, never values).
"""

from __future__ import annotations

import errno
import secrets
import socket
import sys
import traceback
from types import TracebackType

from lifecycle.core.errors import LifecycleError

# Messages of these are about the program (names of attributes, modules, limits), not data.
_SAFE_BUILTINS: tuple[type[BaseException], ...] = (
    AttributeError,
    NameError,
    ImportError,
    NotImplementedError,
    RecursionError,
    MemoryError,
)
# Celery's and billiard's own exceptions (time limits, lost workers, retries) say what happened
# to the job, never what it was working on.
_SAFE_MODULE_PREFIXES = ("celery.exceptions", "billiard.exceptions")


class RedactedError(LifecycleError):
    """Stands in for an exception whose message could hold personal data.

    The message is ``"<OriginalClass> (details in worker log, ref=<token>)"``: the class tells
    ops what kind of failure it was, the token finds the worker-log entry with the stack.
    """

    def __init__(self, message: str, original_type: str = "", ref: str = "") -> None:
        super().__init__(message)
        self.original_type = original_type
        self.ref = ref

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (str(self), self.original_type, self.ref))


def is_safe(exc: BaseException) -> bool:
    if isinstance(exc, (LifecycleError, *_SAFE_BUILTINS)):
        return True
    return type(exc).__module__.startswith(_SAFE_MODULE_PREFIXES)


def new_ref() -> str:
    # Random, not a hash of the message: a hash of a low-entropy value (a phone number) could
    # be reversed by trying every candidate.
    return secrets.token_hex(4)


def public_message(exc: BaseException, ref: str) -> str:
    return f"{type(exc).__name__} (details in worker log, ref={ref})"


def redact(exc: BaseException) -> BaseException:
    """``exc`` itself when its message is safe, else a `RedactedError` standing in for it."""
    if is_safe(exc):
        return exc
    ref = new_ref()
    return RedactedError(public_message(exc, ref), type(exc).__name__, ref)


def _db_details(exc: BaseException) -> str:
    """Error codes and object names from a database error (never its DETAIL, which has values)."""
    # SQLAlchemy wraps the driver's error in .orig; psycopg's own errors carry .diag.
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    if diag is None:
        return ""
    fields = []
    sqlstate = getattr(orig, "sqlstate", None) or getattr(diag, "sqlstate", None)
    if sqlstate:
        fields.append(f"sqlstate={sqlstate}")
    for name in ("schema_name", "table_name", "column_name", "constraint_name"):
        value = getattr(diag, name, None)
        if value:
            fields.append(f"{name.removesuffix('_name')}={value}")
    return " ".join(fields)


def describe(exc: BaseException) -> str:
    """One line for a log: class, and either the safe message or database codes."""
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if is_safe(exc):
        first = str(exc).splitlines()[0] if str(exc) else ""
        return f"{name}: {first}" if first else name
    db = _db_details(exc)
    return f"{name} [{db}]" if db else f"{name} (message withheld: may contain personal data)"


def safe_traceback(
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> str:
    """A traceback with frames (file, line, function, source line) and safe descriptions only.

    Chained exceptions (``raise ... from``) are walked too, each described by `describe`.
    """
    if exc is None:
        return ""
    chain: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        chain.append(cur)
        if cur.__cause__ is not None:
            cur = cur.__cause__
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur = cur.__context__
        else:
            cur = None
    out: list[str] = []
    for i, e in enumerate(reversed(chain)):
        if i:
            out.append("\nThe above exception led to:\n")
        out.append("Traceback (most recent call last):\n")
        frames = e.__traceback__ if e is not exc else (tb or e.__traceback__)
        # Source lines are code; locals are never printed.
        out.extend(traceback.format_tb(frames))
        out.append(describe(e) + "\n")
    return "".join(out).rstrip("\n")


# What an errno says about a connection, in words an operator searches for.
_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ETIMEDOUT: "timed out",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EPIPE: "connection closed",
}


def connection_reason(exc: BaseException, host: str | None = None, port: int | None = None) -> str:
    """A one-line reason for a failed connection: ``connection refused 127.0.0.1:25``.

    Built from the error's kind and the server's configured address (settings, not data);
    the exception's own text is never used (an SMTP reply can quote the recipient).
    """
    where = f" {host}:{port}" if host and port else (f" {host}" if host else "")
    if isinstance(exc, socket.gaierror):
        return f"host not found{where}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out{where}"
    # Looked up, not imported: ssl costs every command line start its import, and an error of a
    # module never imported cannot have been raised.
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return f"TLS error{where}"
    code = getattr(exc, "smtp_code", None)
    if isinstance(code, int):
        return f"SMTP {code}{where}"
    if isinstance(exc, OSError) and exc.errno in _ERRNO_WORDS:
        return f"{_ERRNO_WORDS[exc.errno]}{where}"
    return f"{type(exc).__name__}{where}"
