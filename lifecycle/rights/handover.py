"""Handing an access package (열람, 제35조) over to the requester when the request came in by
phone, letter, email or in person (the console's 요구 접수): the worker wrote the encrypted ZIP
under ``var/access/`` and its random password next to it; staff download the package and have
the password shown, then give both to the requester by separate ways.

Each download is recorded on the request (``payload["handovers"]``: how, when, by whom) and in
the access log as an ``export`` with its counts; the password is shown once: its file is
removed after the showing is recorded (who, when), so a second look is refused and says who saw
it. A request whose package the CLI wrote with ``--password-file`` has its password with the
operator who chose it, and a ``--plain`` one none.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.requests.outbox import load_for_update
from lifecycle.rights.access import password_path, read_password
from models.base import utcnow
from models.requests import LifecycleRequest, RequestKind, RequestState

log = logging.getLogger(__name__)

# How the package reaches the requester (recorded; the console's choice list).
HOW = {
    "visit": "방문 수령 (저장매체)",
    "letter": "우편 (저장매체)",
    "email": "전자우편 첨부 (암호는 다른 경로로)",
}
READY = (RequestState.PACKAGED.value, RequestState.COMPLETED.value)


@dataclass(frozen=True)
class Package:
    request_id: int
    member_id: int
    path: str
    counts: dict[str, Any]  # what the access log's export entry says


def status(req: LifecycleRequest) -> dict[str, Any]:
    """What the request's page shows: whether the package can be handed over (or why not),
    the handovers so far and whether the password is still to be shown."""
    payload = req.payload or {}
    out = str(payload.get("out") or "")
    why = None
    if req.kind != RequestKind.ACCESS.value:
        why = "not an access request"
    elif req.state not in READY:
        why = "열람 자료가 아직 작성되지 않았습니다."
    elif not out or not Path(out).is_file():
        why = "열람 자료 파일이 없습니다 (옮겨졌거나 지워짐)."
    if payload.get("plain"):
        password = "none"
    elif payload.get("password_file"):
        password = "operator"
    elif payload.get("password_shown"):
        password = "shown"
    else:
        password = "ready" if out and Path(password_path(out)).is_file() else "missing"
    return {
        "ready": why is None,
        "why": why,
        "handovers": list(payload.get("handovers") or []),
        "password": password,
        "password_shown": payload.get("password_shown"),
    }


def _ready(s: Session, request_id: int) -> tuple[LifecycleRequest, dict[str, Any]]:
    req = load_for_update(s, request_id)
    if req is None or req.kind != RequestKind.ACCESS.value:
        raise UserError(f"요구 {request_id}번은 열람 요구가 아닙니다.")
    st = status(req)
    if not st["ready"]:
        raise UserError(str(st["why"]))
    return req, dict(req.payload or {})


def hand_over(s: Session, request_id: int, how: str, by: str) -> Package:
    """Record a download of the package for the requester (in the caller's transaction)."""
    if how not in HOW:
        raise UserError("전달 방법을 고르십시오.")
    req, payload = _ready(s, request_id)
    done = {"how": how, "at": utcnow().isoformat(), "by": by}
    payload["handovers"] = [*(payload.get("handovers") or []), done]
    req.payload = payload  # a new dict: the JSON column sees the change
    counts: dict[str, Any] = {
        k: payload[k] for k in ("tables", "rows", "archived_records", "encrypted") if k in payload
    }
    return Package(req.id, req.member_id, str(payload["out"]), {**counts, "subjects": 1})


def show_password(s: Session, request_id: int, by: str) -> tuple[str, str]:
    """The package's password, once: (password, its file to remove once this commits)."""
    req, payload = _ready(s, request_id)
    st = status(req)
    if st["password"] == "none":
        raise UserError("이 열람 자료는 암호 없이 작성되었습니다.")
    if st["password"] == "operator":
        raise UserError("이 열람 자료의 암호는 요구를 입력한 담당자가 정한 파일에 있습니다.")
    if st["password"] == "shown":
        seen = payload["password_shown"]
        raise UserError(f"암호는 이미 한 번 표시되었습니다 ({seen['by']}, {seen['at'][:16]}).")
    path = password_path(str(payload["out"]))
    try:
        password = read_password(path)
    except UserError:
        raise UserError("암호 파일을 읽을 수 없습니다.") from None
    payload["password_shown"] = {"at": utcnow().isoformat(), "by": by}
    req.payload = payload
    return password, path


def forget_password(path: str) -> None:
    """Remove the password file once its showing is on record (a second look is refused)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        # Shown and recorded; the file stays for the operator to remove: said, not silent.
        log.warning("access package password file not removed: %s", type(exc).__name__)
