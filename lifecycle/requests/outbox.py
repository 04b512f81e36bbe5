"""The request outbox: the table the website writes a request into, in its own transaction.

The website inserts a row in the same transaction that marks the member withdrawn (or records
the correction), so a request is never lost even if the broker is down at that moment; the
relay (``relay``) dispatches it. :func:`submit` is that insert for Python callers; the state
the row then moves through belongs to ``states``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.requests.deadlines import due_at_for
from lifecycle.requests.states import KINDS
from models.base import utcnow
from models.requests import LifecycleRequest, RequestState


def valid_member_id(member_id: Any) -> bool:
    """Whether a request row names a member the engine can look up."""
    return isinstance(member_id, int) and not isinstance(member_id, bool) and member_id > 0


def submit(
    session: Session,
    kind: str,
    member_id: int,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    actor: str | None = None,
) -> int:
    """Insert a request inside the caller's transaction; returns its id.

    ``actor``: who asked (an operator's name, or the website's handler); never required.

    With an ``idempotency_key`` a second submit returns the first request's id instead of
    creating another (the website may retry its own transaction), also when the two race: the
    loser gets the winner's id and the caller's transaction stays usable.
    """
    if kind not in KINDS:
        raise UserError(f"unknown request kind {kind!r}; expected one of {sorted(KINDS)}")
    if not valid_member_id(member_id):
        raise UserError("member id must be a positive integer")
    if idempotency_key is not None:
        existing = _by_key(session, idempotency_key, lock=False)
        if existing is not None:
            return existing
    now = utcnow()
    req = LifecycleRequest(
        kind=kind,
        member_id=member_id,
        payload=payload,
        state=RequestState.RECEIVED.value,
        idempotency_key=idempotency_key,
        actor=actor[:128] if actor else None,
        created_at=now,
        due_at=due_at_for(kind, now),
    )
    # The savepoint opens before the row is added, so the unique-key violation of a lost race
    # rolls back only the savepoint, never the caller's transaction.
    try:
        with session.begin_nested():
            session.add(req)
            session.flush()
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = _by_key(session, idempotency_key, lock=True)
        if existing is None:
            raise
        return existing
    return req.id


def _by_key(session: Session, key: str, *, lock: bool) -> int | None:
    stmt = select(LifecycleRequest.id).where(LifecycleRequest.idempotency_key == key)
    if lock and session.get_bind().dialect.name != "sqlite":
        # A locking read sees the winner's committed row even under REPEATABLE READ (MariaDB).
        # A shared one: InnoDB leaves every loser of the race holding a shared lock on the
        # winner's key (its failed duplicate check; rolling back to the savepoint keeps it), so
        # FOR UPDATE would make two losers wait on each other. MariaDB breaks that deadlock by
        # rolling back a loser's whole transaction: the website's own work with it.
        stmt = stmt.with_for_update(read=True)
    with session.no_autoflush:
        return session.scalar(stmt)


def load_for_update(session: Session, request_id: int) -> LifecycleRequest | None:
    """Lock the request row so two deliveries of the same job serialise on it."""
    stmt = select(LifecycleRequest).where(LifecycleRequest.id == request_id)
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def get(request_id: int) -> LifecycleRequest | None:
    with db.session("primary") as s:
        return s.get(LifecycleRequest, request_id)
