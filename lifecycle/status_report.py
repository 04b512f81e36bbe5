"""What `lifecycle status` reports about requests: open ones by state, and overdue ones."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.requests import OPEN_STATES, JobRun, LifecycleRequest


@dataclass(frozen=True)
class OverdueRequest:
    id: int
    kind: str
    state: str
    created_at: datetime
    age_days: float


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def open_requests_by_state(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(LifecycleRequest.state, func.count())
        .where(LifecycleRequest.state.in_([s.value for s in OPEN_STATES]))
        .group_by(LifecycleRequest.state)
    ).all()
    return {state: int(n) for state, n in rows}


def overdue_requests(
    session: Session, *, days: int | None = None, now: datetime | None = None
) -> list[OverdueRequest]:
    """Requests still open more than ``days`` (default: the legal 5) after they were made."""
    if days is None:
        from lifecycle.settings import get_settings

        days = get_settings().destruction_deadline_days
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=days)
    rows = session.execute(
        select(
            LifecycleRequest.id,
            LifecycleRequest.kind,
            LifecycleRequest.state,
            LifecycleRequest.created_at,
        )
        .where(
            LifecycleRequest.state.in_([s.value for s in OPEN_STATES]),
            LifecycleRequest.created_at < cutoff,
        )
        .order_by(LifecycleRequest.created_at, LifecycleRequest.id)
    ).all()
    return [
        OverdueRequest(i, k, st, _aware(c), round((now - _aware(c)).total_seconds() / 86400, 1))
        for i, k, st, c in rows
    ]


def last_job_runs(session: Session, jobs: tuple[str, ...] = ("sweep",)) -> list[JobRun]:
    out: list[JobRun] = []
    for job in jobs:
        run = session.scalar(
            select(JobRun).where(JobRun.job == job).order_by(JobRun.id.desc()).limit(1)
        )
        if run is not None:
            out.append(run)
    return out


def ledger_entries_owed(session: Session) -> int:
    """Destruction entries committed with their DELETE but not yet moved into the ledger."""
    from models.engine import LedgerOutbox

    return int(session.scalar(select(func.count()).select_from(LedgerOutbox)) or 0)
