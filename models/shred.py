"""Shred jobs and their items: which managed files to destroy, on which host, and how it went.

Task messages carry only the job id; the paths (which can name people) stay in the primary
database, next to the website's own rows that point at the same files. Once an item is done
its path is blanked and only a keyed hash is kept (``path_ref``), except for items that were
refused or failed, which an operator has to look at.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class ShredJobState(enum.StrEnum):
    PENDING = "pending"  # committed; sent or waiting for the broker
    RUNNING = "running"
    DONE = "done"  # every item reached a final status (which may be refused or failed)


class ShredItemState(enum.StrEnum):
    PENDING = "pending"
    WORKING = "working"  # tmp_name recorded, the shredder may have started
    DONE = "done"


class ShredJob(PrimaryBase):
    __tablename__ = "lifecycle_shred_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The host holding the files; the job is sent to queue shred.<host>.
    host: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16), default=ShredJobState.PENDING.value)
    origin: Mapped[str] = mapped_column(String(32), default="api")
    reason: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    categories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Keyed HMAC of (host, sorted paths): finds this job again when the same request hands
    # over the same files twice, without keeping the paths after they are destroyed.
    paths_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    passes: Mapped[int] = mapped_column(Integer, default=1)
    zero: Mapped[bool] = mapped_column(Boolean, default=False)
    verify: Mapped[bool] = mapped_column(Boolean, default=False)
    recursive: Mapped[bool] = mapped_column(Boolean, default=False)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sends: Mapped[int] = mapped_column(Integer, default=0)
    # When the resend beat may send the job again if it is still not done (backs off).
    next_send_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_lifecycle_shred_jobs_state_next", "state", "next_send_at"),
        Index("ix_lifecycle_shred_jobs_request", "request_id"),
    )


class ShredItem(PrimaryBase):
    __tablename__ = "lifecycle_shred_items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("lifecycle_shred_jobs.id", ondelete="CASCADE")
    )
    host: Mapped[str] = mapped_column(String(255))
    # NULL once the file is gone; path_ref (keyed HMAC) identifies it from then on.
    path: Mapped[str | None] = mapped_column(Text, nullable=True)
    path_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The random name the file is renamed to before unlinking, recorded before the shredder
    # starts, so a run killed after the rename can find and finish the file.
    tmp_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=ShredItemState.PENDING.value)
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    overwritten: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    passes: Mapped[int | None] = mapped_column(Integer, nullable=True)
    zero_pass: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    verified: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    fs_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    overwrite_trusted: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    files: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resumed: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ledgered: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_lifecycle_shred_items_job_state", "job_id", "state"),
        Index("ix_lifecycle_shred_items_host_state", "host", "state"),
    )
