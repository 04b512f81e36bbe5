"""Legal deadlines per request kind: when each open request is due, and which are overdue.

열람 (시행령 제41조), 정정·삭제 (제43조) and 처리정지·동의 철회 (제44조) are due 10 days after
receipt; destruction after a withdrawal 5 days (표준 개인정보 보호지침 제10조①, the settings'
destruction deadline).
The due date is stamped on the request when it is submitted; a row the website inserted
without one is due ``created_at`` plus its kind's days. Only an access request may be
postponed, with a recorded reason (``extend``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.requests.states import KINDS, TERMINAL
from models.base import utcnow
from models.requests import OPEN_STATES, LifecycleRequest

# An extension is a postponement for a reason that will pass, not an indefinite hold.
MAX_EXTENSION_DAYS = 30


def deadline_days(kind: str) -> int:
    spec = KINDS.get(kind)
    if spec is None or spec.deadline_days is None:
        return int(get_settings().destruction_deadline_days)
    return spec.deadline_days


def due_at_for(kind: str, created_at: datetime) -> datetime:
    return as_utc(created_at) + timedelta(days=deadline_days(kind))


def due_of(req: Any) -> datetime:
    """The request's due time (its stamped one, else from its kind)."""
    if req.due_at is not None:
        return as_utc(req.due_at)
    return due_at_for(req.kind, req.created_at)


@dataclass(frozen=True)
class OpenRequest:
    id: int
    kind: str
    state: str
    created_at: datetime
    due_at: datetime
    extended: bool

    def overdue(self, now: datetime) -> bool:
        return self.due_at <= now


def open_requests(session: Session) -> list[OpenRequest]:
    """Every open request with its due time (ids, kinds and times only)."""
    rows = session.execute(
        select(
            LifecycleRequest.id,
            LifecycleRequest.kind,
            LifecycleRequest.state,
            LifecycleRequest.created_at,
            LifecycleRequest.due_at,
            LifecycleRequest.extension_reason,
        ).where(LifecycleRequest.state.in_([s.value for s in OPEN_STATES]))
    ).all()
    out = [
        OpenRequest(
            i,
            k,
            st,
            as_utc(c),
            as_utc(d) if d is not None else due_at_for(k, c),
            ext is not None,
        )
        for i, k, st, c, d, ext in rows
    ]
    return sorted(out, key=lambda r: (r.due_at, r.id))


def by_kind(session: Session, now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per kind: its deadline, how many are open, due within a day, overdue, and the next due.

    Every declared kind is listed, open or not, so an operator (and `status --json`) always
    sees each kind's deadline.
    """
    now = now or utcnow()
    out: dict[str, dict[str, Any]] = {
        kind: {
            "deadline_days": deadline_days(kind),
            "extendable": spec.extendable,
            "open": 0,
            "due_within_1_day": 0,
            "overdue": 0,
            "overdue_ids": [],
            "next_due_at": None,
        }
        for kind, spec in KINDS.items()
    }
    held = held_now(session, now)
    for r in open_requests(session):
        item = out.setdefault(
            r.kind,
            {
                "deadline_days": deadline_days(r.kind),
                "extendable": False,
                "open": 0,
                "due_within_1_day": 0,
                "overdue": 0,
                "overdue_ids": [],
                "next_due_at": None,
            },
        )
        item["open"] += 1
        if r.id in held:
            # Waiting lawfully: neither overdue nor due soon (else every day of a months-long
            # hold would count it as due within a day).
            pass
        elif r.overdue(now):
            item["overdue"] += 1
            if len(item["overdue_ids"]) < 50:
                item["overdue_ids"].append(r.id)
        elif r.due_at - now <= timedelta(days=1):
            item["due_within_1_day"] += 1
        if item["next_due_at"] is None:
            item["next_due_at"] = r.due_at.isoformat()
    return out


def held_now(session: Session, now: datetime) -> set[int]:
    """Open requests whose member is under a legal hold: they wait lawfully, so they are not
    overdue (status lists them under holds)."""
    # Imported here: holds pulls in the vault (cryptography, the archive's models), which the
    # submit path (outbox.submit -> due_at_for) would otherwise load for every withdrawal.
    from lifecycle.requests import holds

    day = as_utc(now).astimezone(ZoneInfo(get_settings().timezone)).date()
    return holds.open_requests_held(session, day)


def overdue(session: Session, now: datetime | None = None) -> list[OpenRequest]:
    now = now or utcnow()
    held = held_now(session, now)
    return [r for r in open_requests(session) if r.overdue(now) and r.id not in held]


def extend(session: Session, req: LifecycleRequest, days: int, reason: str) -> datetime:
    """Postpone an open, extendable request by ``days`` with a recorded reason.

    Only before its deadline: the law asks for the postponement to be notified within the
    deadline, so a late one would itself be a breach to report, not paper over.
    """
    spec = KINDS.get(req.kind)
    if spec is None or not spec.extendable:
        raise UserError(
            f"request {req.id} is a {req.kind} request: the law allows no postponement of it "
            "(refuse it with a reason instead)"
        )
    if req.state in TERMINAL:
        raise UserError(f"request {req.id} is already {req.state}")
    if req.extension_reason is not None:
        raise UserError(f"request {req.id} was already postponed once")
    if not 1 <= days <= MAX_EXTENSION_DAYS:
        raise UserError(f"--days must be between 1 and {MAX_EXTENSION_DAYS}")
    reason = " ".join(reason.split())
    if not reason or len(reason) > 500:
        raise UserError("--reason must be 1-500 characters")
    now = utcnow()
    due = due_of(req)
    if due <= now:
        raise UserError(
            f"request {req.id} is already past its deadline ({due.date().isoformat()}); a "
            "postponement must be notified within it"
        )
    req.due_at = due + timedelta(days=days)
    req.extension_reason = reason
    req.updated_at = now
    return as_utc(req.due_at)
