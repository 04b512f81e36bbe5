"""The relay: sends committed requests from the outbox to Celery, at least once.

A request is marked 'dispatched' only after the broker accepted the message, so a crash in
between re-sends it; handlers dedupe on the request's persisted state, so a second delivery
has the effect of none.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select

from lifecycle import db, dbkind
from lifecycle.requests import HANDLERS
from models.base import utcnow
from models.requests import LifecycleRequest, RequestState

log = logging.getLogger(__name__)

STALE_AFTER = timedelta(minutes=15)
# States in which a worker is (or should be) carrying the request forward.
STALE_STATES = [
    RequestState.DISPATCHED.value,
    RequestState.RESTRICTED.value,
    RequestState.ARCHIVED.value,
    RequestState.DESTROYED.value,
    RequestState.CORRECTED.value,
]


def _send(request_id: int, kind: str, attempt: int) -> str:
    from workers.app import app

    task_id = f"request-{request_id}-{attempt}"
    app.send_task(HANDLERS[kind], args=[request_id], task_id=task_id)
    return task_id


def _mark_malformed(s, req: LifecycleRequest) -> None:  # type: ignore[no-untyped-def]
    req.state = RequestState.FAILED.value
    req.error = f"malformed request: unknown kind {req.kind!r}"[:500]
    req.completed_at = utcnow()
    log.error("request %s refused: unknown kind", req.id)


def dispatch_pending(limit: int = 500) -> int:
    """Dispatch up to ``limit`` received requests; returns how many were sent."""
    sent = 0
    with db.session("primary") as s:
        stmt = (
            select(LifecycleRequest)
            .where(LifecycleRequest.state == RequestState.RECEIVED.value)
            .order_by(LifecycleRequest.id)
            .limit(limit)
        )
        # Two relays (two beats during a failover) never send the same rows concurrently: they
        # skip each other's rows, or, on a server without SKIP LOCKED (MariaDB < 10.6), the second
        # waits and then finds them no longer 'received'.
        stmt = dbkind.for_update(stmt, s, skip=True)
        for req in s.scalars(stmt):
            if req.kind not in HANDLERS or not req.member_id or req.member_id <= 0:
                _mark_malformed(s, req)
                continue
            req.attempts = (req.attempts or 0) + 1
            req.task_id = _send(req.id, req.kind, req.attempts)
            req.state = RequestState.DISPATCHED.value
            req.dispatched_at = utcnow()
            sent += 1
    return sent


def dispatch_one(request_id: int) -> bool:
    """Dispatch one request now if it is still 'received' (used right after a client submit)."""
    with db.session("primary") as s:
        stmt = select(LifecycleRequest).where(
            LifecycleRequest.id == request_id,
            LifecycleRequest.state == RequestState.RECEIVED.value,
        )
        req = s.scalar(dbkind.for_update(stmt, s, skip=True))
        if req is None:
            return False
        if req.kind not in HANDLERS:
            _mark_malformed(s, req)
            return False
        req.attempts = (req.attempts or 0) + 1
        req.task_id = _send(req.id, req.kind, req.attempts)
        req.state = RequestState.DISPATCHED.value
        req.dispatched_at = utcnow()
    return True


def redispatch_stale(older_than: timedelta = STALE_AFTER, limit: int = 100) -> int:
    """Re-send open requests that made no progress for a long time.

    Covers a message lost with a broker that kept nothing on disk. Handlers serialise on the
    request row and resume from its state, so a duplicate is harmless.
    """
    cutoff = utcnow() - older_than
    sent = 0
    with db.session("primary") as s:
        stmt = (
            select(LifecycleRequest)
            .where(
                LifecycleRequest.state.in_(STALE_STATES),
                LifecycleRequest.updated_at < cutoff,
            )
            .order_by(LifecycleRequest.id)
            .limit(limit)
        )
        for req in s.scalars(dbkind.for_update(stmt, s, skip=True)):
            if req.kind not in HANDLERS:
                _mark_malformed(s, req)
                continue
            req.attempts = (req.attempts or 0) + 1
            req.task_id = _send(req.id, req.kind, req.attempts)
            req.updated_at = utcnow()
            log.warning("request %s made no progress since %s; re-dispatched", req.id, cutoff)
            sent += 1
    return sent
