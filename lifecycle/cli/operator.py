"""Who runs a command: the registered operator of the OS account running it
(`lifecycle.vault.operators`, `lifecycle operators add`), or, while nobody is registered,
`lifecycle --operator NAME ...` else the OS user.

Recorded with every request a command creates (``lifecycle_requests.actor``), in the ledger
entries it writes and in the handler access log (``lifecycle accesslog export``).
"""

from __future__ import annotations

import getpass
import os

_global: list[str] = []
# (claimed name -> what is recorded), once per process: one query to the register.
_resolved: dict[str, str] = {}


def set_global(name: str) -> None:
    _global[:] = [name] if name else []
    if name:
        claimed_name(name)  # refuse a bad --operator before the command does anything


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def claimed_name(explicit: str) -> str:
    """The name ``explicit`` (else the global ``--operator``) claims, or "" for none; a one-line
    UserError for a name the log cannot take."""
    from lifecycle.core.errors import UserError

    name = " ".join((explicit or (_global[0] if _global else "")).split())
    if len(name) > 100 or not name.isprintable():
        raise UserError("--operator must be a short printable name")
    return name


def current(explicit: str = "") -> str:
    """The operator to record: the registered operator of this OS account (``--operator`` may
    only repeat its name), or, with nobody registered, ``--operator`` or the OS user. A one-line
    UserError for an account the register does not know."""
    claimed = claimed_name(explicit)
    if claimed in _resolved:
        return _resolved[claimed]
    from sqlalchemy.exc import SQLAlchemyError

    from lifecycle.core import db
    from lifecycle.vault import operators

    user = _os_user()
    try:
        with db.session("primary") as s:
            registered = operators.resolve(s, user, claimed)
    except SQLAlchemyError:
        # No primary DB to ask (a file host; not yet migrated): the command's own checks
        # report an unreachable database; the entry still carries the OS user.
        registered = None
    _resolved[claimed] = registered or claimed or user
    return _resolved[claimed]


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
        print(unlogged_warning(action, exc), file=sys.stderr)


def unlogged_warning(action: str, exc: BaseException) -> str:
    """The line a command prints when its work is done but its access-log entry is not."""
    return (
        f"lifecycle: warning: access log entry for {action!r} not written "
        f"({type(exc).__name__}); record it by hand"
    )
