"""The relay: sends committed requests from the outbox to Celery, at least once.

A request is marked 'dispatched' only after the broker accepted the message, so a crash in
between re-sends it; handlers dedupe on the request's persisted state, so a second delivery
has the effect of none.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from lifecycle.core import db, dbkind, dispatch
from lifecycle.requests.outbox import valid_member_id
from lifecycle.requests.states import task_for, transition
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
    RequestState.PACKAGED.value,
    RequestState.ERASED.value,
    RequestState.CONSENT_WITHDRAWN.value,
]


def _claim(s: Session, stmt: Select[LifecycleRequest]) -> list[LifecycleRequest]:
    # Two relays (two beats during a failover) never send the same rows concurrently: they skip
    # each other's rows, or, on a server without SKIP LOCKED (MariaDB < 10.6), the second waits
    # and then finds them no longer 'received'.
    return list(s.scalars(dbkind.for_update(stmt, s, skip=True)))


def _send(req: LifecycleRequest) -> bool:
    """Send ``req`` to its task, or refuse a malformed row; True if a message went out."""
    task = task_for(req.kind)
    if task is None or not valid_member_id(req.member_id):
        what = f"unknown kind {req.kind!r}" if task is None else "member id is not valid"
        transition(req, RequestState.FAILED, error=f"malformed request: {what}")
        log.error("request %s refused: malformed", req.id)
        return False
    req.attempts = (req.attempts or 0) + 1
    req.task_id = f"request-{req.id}-{req.attempts}"
    dispatch.send(task, req.id, task_id=req.task_id)
    return True


def _dispatch(s: Session, req: LifecycleRequest) -> bool:
    if not _send(req):
        return False
    transition(req, RequestState.DISPATCHED)
    req.dispatched_at = utcnow()
    return True


def dispatch_pending(limit: int = 500) -> int:
    """Dispatch up to ``limit`` received requests; returns how many were sent."""
    with db.session("primary") as s:
        stmt = (
            select(LifecycleRequest)
            .where(LifecycleRequest.state == RequestState.RECEIVED.value)
            .order_by(LifecycleRequest.id)
            .limit(limit)
        )
        return sum(_dispatch(s, req) for req in _claim(s, stmt))


def dispatch_one(request_id: int) -> bool:
    """Dispatch one request now if it is still 'received' (used right after a client submit)."""
    with db.session("primary") as s:
        stmt = select(LifecycleRequest).where(
            LifecycleRequest.id == request_id,
            LifecycleRequest.state == RequestState.RECEIVED.value,
        )
        return any(_dispatch(s, req) for req in _claim(s, stmt))


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
        for req in _claim(s, stmt):
            if _send(req):
                req.updated_at = utcnow()
                log.warning("request %s made no progress since %s; re-dispatched", req.id, cutoff)
                sent += 1
    return sent
