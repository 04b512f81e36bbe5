"""The request outbox: the table the website writes a request into, in its own transaction.

The website inserts a row in the same transaction that marks the member withdrawn (or records
the correction), so a request is never lost even if the broker is down at that moment; the
relay (``relay``) dispatches it. :func:`submit` is that insert for Python callers; the state
the row then moves through belongs to ``states``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core import db, dbkind
from lifecycle.core.errors import UserError
from lifecycle.requests import outbox_sql
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
    requester: Mapping[str, Any] | None = None,
) -> int:
    """Insert a request inside the caller's transaction; returns its id.

    ``actor``: who asked (an operator's name, or the website's handler); never required.
    ``requester``: who asked and how they were checked (``Requester.columns``), written with
    the row.

    With an ``idempotency_key`` a second submit returns the first request's id instead of
    creating another (the website may retry its own transaction), also when the two race: the
    loser gets the winner's id and the caller's transaction stays usable. The INSERT is
    ``outbox_sql``'s, the one the command line's submit path runs on its plain driver.
    """
    if kind not in KINDS:
        raise UserError(f"unknown request kind {kind!r}; expected one of {sorted(KINDS)}")
    if not valid_member_id(member_id):
        raise UserError("member id must be a positive integer")
    now = utcnow()
    values = outbox_sql.row_values(
        kind, member_id, state=RequestState.RECEIVED.value, created_at=now,
        due_at=due_at_for(kind, now), payload=payload, idempotency_key=idempotency_key,
        actor=actor, requester=requester,
    )  # fmt: skip
    # The session's pending changes go first, in the order the caller made them.
    session.flush()
    conn = session.connection()
    return outbox_sql.insert_request(conn.connection.driver_connection, dbkind.family(conn), values)


def load_for_update(session: Session, request_id: int) -> LifecycleRequest | None:
    """Lock the request row so two deliveries of the same job serialise on it."""
    stmt = select(LifecycleRequest).where(LifecycleRequest.id == request_id)
    if session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def get(request_id: int) -> LifecycleRequest | None:
    with db.session("primary") as s:
        return s.get(LifecycleRequest, request_id)
