"""처리정지 (processing restriction): a restricted member's data is neither used nor provided.

The website checks `is_restricted` (or the table directly) before using a member's data; the
lifecycle checks it before recording any provision to a third party.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models.requests import Restriction


def restrict(session: Session, member_id: int, reason: str, request_id: int | None) -> None:
    """Idempotent: restricting an already restricted member keeps the first reason."""
    if session.get(Restriction, member_id) is None:
        session.add(Restriction(member_id=member_id, reason=reason, request_id=request_id))
        session.flush()


def lift(session: Session, member_id: int) -> None:
    session.execute(delete(Restriction).where(Restriction.member_id == member_id))


def is_restricted(session: Session, member_id: int) -> bool:
    return (
        session.scalar(select(Restriction.member_id).where(Restriction.member_id == member_id))
        is not None
    )
