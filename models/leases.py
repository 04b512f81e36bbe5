"""Job leases: which long job is being worked on, by whom, and until when (heartbeat)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class JobLease(PrimaryBase):
    """One row per long job (a sweep run, a batch, a withdrawal, a shred job, a notice batch).

    The worker running the job renews ``expires_at`` every few seconds; a row still ``held``
    after ``expires_at`` belongs to a job whose worker died or whose message was lost, and the
    watchdog sends ``task`` again with ``args``/``kwargs`` (ids only) to ``queue``. The row is
    keyed by ``key`` (task name and ids), so a re-sent job finds and takes over the same row.
    """

    __tablename__ = "lifecycle_job_leases"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    task: Mapped[str] = mapped_column(String(128))
    args: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    kwargs: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    queue: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # held | retrying | redispatched | done | failed
    state: Mapped[str] = mapped_column(String(16), default="held")
    # Random per acquisition: only the current holder may renew or finish the lease.
    holder: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The Celery task now responsible, and the one that started this generation of the job
    # (``--wait`` follows a re-dispatched job from the id it was given).
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    redispatches: Mapped[int] = mapped_column(Integer, default=0)
    last_redispatch_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    # One line, no personal data (the task's safe exception message).
    error: Mapped[str | None] = mapped_column(String(500), nullable=True)

    __table_args__ = (Index("ix_lifecycle_job_leases_state_expires", "state", "expires_at"),)
