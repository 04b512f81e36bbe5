"""An access-log entry's fields and chain constants, without the database layer.

``accesslog.record`` builds every entry with :func:`entry_fields`; a command that only submits a
request (``lifecycle.cli.submit_plan``) writes its entry on the plain driver with the same
function and the same hash chain, so the two cannot drift.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from lifecycle.core.errors import UserError

GENESIS = hashlib.sha256(b"pipa-lifecycle access log genesis").hexdigest()
HEAD_ID = 1
HASHED: tuple[str, ...] = (
    "seq", "occurred_at", "operator", "kind", "action", "subject_ref", "request_id", "details",
)  # fmt: skip
KINDS = ("read", "change", "destroy", "provide", "export", "hold", "prune")


# Set once by a Celery worker or beat process (workers/app.py): their entries are automated.
_process_role: list[str] = []


def set_process_role(role: str) -> None:
    _process_role[:] = [role]


def origin() -> str:
    """접속지 of this process: ``ssh:<client address>``, ``tty:<terminal>``, ``worker`` or
    ``local``, each with the host name the command ran on."""
    host = socket.gethostname()
    if _process_role:
        return f"{_process_role[0]}@{host}"
    ssh = os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT") or ""
    if ssh.split():
        return f"ssh:{ssh.split()[0]}@{host}"
    for fd in (0, 1, 2):
        try:
            return f"tty:{os.ttyname(fd)}@{host}"
        except OSError:
            continue
    return f"local@{host}"


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def check_entry(kind: str, operator: str) -> None:
    """A one-line UserError for an entry the log must not take."""
    if kind not in KINDS:
        raise UserError(f"access log kind must be one of {', '.join(KINDS)}")
    if not " ".join((operator or "").split()):
        raise UserError("the operator's name is required (--operator)")


def entry_fields(
    head_seq: int,
    operator: str,
    kind: str,
    action: str,
    *,
    subject_ref: str | None,
    request_id: int | None,
    details: Mapping[str, Any] | None,
    occurred_at: datetime,
    where: str | None = None,
) -> dict[str, Any]:
    """The hashed fields of the entry that follows ``head_seq`` (see ``HASHED``)."""
    details_d = dict(details or {})
    details_d.setdefault("origin", (where or origin())[:128])
    details_d.setdefault("os_user", os_user()[:64])
    return {
        "seq": head_seq + 1,
        "occurred_at": occurred_at,
        "operator": " ".join((operator or "").split())[:128],
        "kind": kind,
        "action": action[:64],
        "subject_ref": subject_ref,
        "request_id": request_id,
        "details": details_d,
    }
