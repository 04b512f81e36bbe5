"""Telling third parties that a field they received is gone (deletion notices).

An erasure, a consent withdrawal and a withdrawal destroy fields that recipients may hold; each
recipient that received one of them gets a signed deletion notice through the same delivery
machinery as corrections (webhook or email, recorded before it is attempted, retried on the
database's schedule, one ledger entry per finished delivery). The notice names the fields,
never a value: there is nothing to send but the request to delete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from lifecycle.core import db, dispatch
from lifecycle.recipients.deliveries import create_delivery, maybe_complete_request
from lifecycle.recipients.provisions import provided_fields
from models.base import utcnow
from models.recipients import Delivery, DeliveryState, Provision, Recipient

DELETION = "deletion"


def owe_deletions(s: Session, member_id: int, request_id: int, owed: dict[int, set[str]]) -> int:
    """A pending deletion delivery per recipient (in the caller's transaction); how many."""
    n = 0
    for recipient_id, fields in sorted(owed.items()):
        if not fields:
            continue
        recipient = s.get(Recipient, recipient_id)
        if recipient is None:
            continue
        create_delivery(
            s,
            recipient=recipient,
            kind=DELETION,
            request_id=request_id,
            member_id=member_id,
            values=dict.fromkeys(sorted(fields)),
        )
        n += 1
    return n


def recipients_of(s: Session, member_id: int, fields: Iterable[str]) -> dict[int, set[str]]:
    """recipient -> which of ``fields`` of this member it received."""
    wanted = set(fields)
    return {r: fs & wanted for r, fs in provided_fields(s, member_id).items() if fs & wanted}


def recipients_for_purpose(s: Session, member_id: int, purpose: str) -> dict[int, set[str]]:
    """recipient -> every field of this member it received under ``purpose``."""
    out: dict[int, set[str]] = {}
    for rid, fields in s.execute(
        select(Provision.recipient_id, Provision.fields).where(
            Provision.member_id == member_id, Provision.purpose == purpose
        )
    ):
        out.setdefault(rid, set()).update(fields or [])
    return out


def send_owed(request_id: int, send: Callable[..., Any] | None = None) -> int:
    """Enqueue the request's deliveries not yet attempted (the beat resend job is the net).
    ``send``: :func:`lifecycle.core.dispatch.send`, or a test's stand-in that loses them."""
    with db.session("primary") as s:
        pending = list(
            s.scalars(
                select(Delivery.id).where(
                    Delivery.request_id == request_id,
                    Delivery.state == DeliveryState.PENDING.value,
                    Delivery.attempts == 0,
                )
            )
        )
        if pending:
            s.execute(update(Delivery).where(Delivery.id.in_(pending)).values(enqueued_at=utcnow()))
    for did in pending:
        (send or dispatch.send)(dispatch.NOTIFY_DELIVER, did)
    return len(pending)


def settle(request_id: int) -> str | None:
    """Complete the request if none of its deliveries is pending any more."""
    with db.session("primary") as s:
        return maybe_complete_request(s, request_id)
