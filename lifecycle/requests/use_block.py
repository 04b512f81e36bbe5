"""The use block (이용·제공 중지): while a member has one, their data is neither used nor provided.

One row per member in ``lifecycle_restrictions`` (the table keeps its first name), with the
reason it was set: a withdrawal (until its data is archived or destroyed), a correction (until
corrected, as the privacy policy promises), an erasure, or the member's own 처리정지 (개인정보
보호법 제37조, the ``suspension`` request, which takes the row over). 처리정지 is the right;
this is the mechanism several rights use (docs/design.md, glossary).

The website checks `is_restricted` (or the table directly) before using a member's data; the
lifecycle checks it before recording any provision to a third party.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models.requests import Restriction


def restrict(
    session: Session,
    member_id: int,
    reason: str,
    request_id: int | None,
    *,
    override: bool = False,
) -> None:
    """Idempotent: restricting an already restricted member keeps the first reason, unless
    ``override`` (a member's 처리정지 outlasts the short restriction of a correction, so it
    takes the row over and that correction's lift leaves it in place)."""
    row = session.get(Restriction, member_id)
    if row is None:
        session.add(Restriction(member_id=member_id, reason=reason, request_id=request_id))
        session.flush()
    elif override:
        row.reason = reason
        row.request_id = request_id


def lift(session: Session, member_id: int, reason: str | None = None) -> None:
    """Lift the restriction; with ``reason``, only a restriction made for that reason."""
    stmt = delete(Restriction).where(Restriction.member_id == member_id)
    if reason is not None:
        stmt = stmt.where(Restriction.reason == reason)
    session.execute(stmt)


def restriction_reason(session: Session, member_id: int) -> str | None:
    return session.scalar(select(Restriction.reason).where(Restriction.member_id == member_id))


def is_restricted(session: Session, member_id: int) -> bool:
    return (
        session.scalar(select(Restriction.member_id).where(Restriction.member_id == member_id))
        is not None
    )
