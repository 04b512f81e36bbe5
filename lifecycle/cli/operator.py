"""Who runs a command: `lifecycle --operator NAME ...`, else the OS user.

Recorded with every request a command creates (``lifecycle_requests.actor``), in the ledger
entries it writes and in the handler access log (``lifecycle accesslog export``).
"""

from __future__ import annotations

import getpass
import os

_global: list[str] = []


def set_global(name: str) -> None:
    _global[:] = [name] if name else []
    if name:
        current()  # refuse a bad --operator before the command does anything


def current(explicit: str = "") -> str:
    """The operator: a command's own ``--operator``, the global one, or the OS user."""
    from lifecycle.core.errors import UserError

    name = " ".join((explicit or (_global[0] if _global else "")).split())
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):
            name = f"uid:{os.getuid()}"
    if len(name) > 100 or not name.isprintable():
        raise UserError("--operator must be a short printable name")
    return name


def record(
    kind: str,
    action: str,
    *,
    member_id: int | None = None,
    request_id: int | None = None,
    details: dict[str, object] | None = None,
    operator: str = "",
) -> None:
    """One access-log entry for this command, in a short archive transaction of its own.

    The command's work is done (and committed) when this runs; if the archive DB cannot take
    the entry (e.g. a file host without access to it), say so on stderr rather than fail a
    command whose effect already happened.
    """
    import sys

    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.vault import accesslog

    try:
        accesslog.record_now(
            current(operator), kind, action, member_id=member_id, request_id=request_id,
            details=details,
        )  # fmt: skip
    except SQLAlchemyError as exc:
        print(
            f"lifecycle: warning: access log entry for {action!r} not written "
            f"({type(exc).__name__}); record it by hand",
            file=sys.stderr,
        )
