"""The request outbox: how the website asks for a withdrawal or a correction.

The website inserts a row in its own transaction (the same one that marks the member withdrawn),
so a request is never lost even if the broker is down at that moment; the relay dispatches it.
The Python client (`submit_and_enqueue`) does the same insert and then dispatches at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from lifecycle import db, dbkind
from lifecycle.errors import UserError
from models.base import utcnow
from models.requests import LifecycleRequest, RequestKind, RequestState

# Which task carries out each kind of request. Tasks receive only the request id.
HANDLERS: dict[str, str] = {
    RequestKind.WITHDRAWAL.value: "lifecycle.withdraw",
    RequestKind.CORRECTION.value: "lifecycle.correct",
}

TERMINAL = {RequestState.COMPLETED.value, RequestState.FAILED.value}


def submit(
    session: Session,
    kind: str,
    member_id: int,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> int:
    """Insert a request inside the caller's transaction; returns its id.

    With an ``idempotency_key`` a second submit returns the first request's id instead of
    creating another (the website may retry its own transaction).
    """
    if kind not in HANDLERS:
        raise UserError(f"unknown request kind {kind!r}; expected one of {sorted(HANDLERS)}")
    if not isinstance(member_id, int) or isinstance(member_id, bool) or member_id <= 0:
        raise UserError("member id must be a positive integer")
    if idempotency_key is not None:
        existing = session.scalar(
            select(LifecycleRequest.id).where(LifecycleRequest.idempotency_key == idempotency_key)
        )
        if existing is not None:
            return existing
    req = LifecycleRequest(
        kind=kind,
        member_id=member_id,
        payload=payload,
        state=RequestState.RECEIVED.value,
        idempotency_key=idempotency_key,
    )
    session.add(req)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # A concurrent submit with the same key won the race: return its row.
        existing = session.scalar(
            select(LifecycleRequest.id).where(LifecycleRequest.idempotency_key == idempotency_key)
        )
        if existing is None:
            raise
        return existing
    return req.id


def submit_and_enqueue(
    kind: str,
    member_id: int,
    payload: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> int:
    """The Python client: commit the request, then dispatch it (the relay covers failures)."""
    with db.session("primary") as s:
        request_id = submit(s, kind, member_id, payload, idempotency_key)
    from lifecycle.relay import dispatch_one

    try:
        dispatch_one(request_id)
    except Exception:
        # Broker down: the row is committed as 'received' and the relay will send it.
        import logging

        logging.getLogger(__name__).warning(
            "request %s stored; broker unreachable, the relay will dispatch it", request_id
        )
    return request_id


def load_for_update(session: Session, request_id: int) -> LifecycleRequest | None:
    """Lock the request row so two deliveries of the same job serialise on it."""
    stmt = select(LifecycleRequest).where(LifecycleRequest.id == request_id)
    return session.scalar(dbkind.for_update(stmt, session))


def set_state(
    session: Session, request_id: int, state: str | RequestState, error: str | None = None
) -> None:
    req = session.get(LifecycleRequest, request_id)
    if req is None:
        raise UserError(f"request {request_id} does not exist")
    req.state = RequestState(state).value
    req.updated_at = utcnow()
    if error is not None:
        req.error = error[:500]
    if req.state in TERMINAL:
        req.completed_at = utcnow()


def get(request_id: int) -> LifecycleRequest | None:
    with db.session("primary") as s:
        return s.get(LifecycleRequest, request_id)


def age_days(req: LifecycleRequest, now: datetime | None = None) -> float:
    now = now or utcnow()
    created = req.created_at
    if created.tzinfo is None:  # SQLite returns naive datetimes (stored as UTC)
        from datetime import UTC

        created = created.replace(tzinfo=UTC)
    return (now - created).total_seconds() / 86400
