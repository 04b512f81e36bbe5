"""Legal holds (primary DB) and the handler access log (archive DB).

Holds live next to the member rows they protect, so the sweep and the withdrawal can exclude
held members in the same query that selects them. The access log lives in the archive DB next
to the ledger: it names members only by the ledger's keyed pseudonym (the key is there) and is
hash-chained the same way.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Date, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ArchiveBase, BigId, PrimaryBase, utcnow


class LegalHold(PrimaryBase):
    """보존 명령(legal hold): while active, purge, sweep and withdrawal leave the data alone.

    Exactly one of ``member_id`` (``--member``; also filled for ``--request`` from the
    request's member), ``category`` says what is held. Active = not released and ``until`` not
    passed (the hold covers its whole last day in the site's timezone).
    """

    __tablename__ = "lifecycle_holds"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))  # member | request | category
    member_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Why (e.g. the case number of an investigation); checked to hold no personal data.
    reason: Mapped[str] = mapped_column(Text)
    until: Mapped[date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    released_by: Mapped[str | None] = mapped_column(String(128), nullable=True)

    __table_args__ = (
        Index("ix_lifecycle_holds_member", "member_id"),
        Index("ix_lifecycle_holds_open", "released_at", "until"),
    )


class AccessLogEntry(ArchiveBase):
    """개인정보처리시스템 접속기록: who did what to whose data, when; never the values."""

    __tablename__ = "access_log"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    operator: Mapped[str] = mapped_column(String(128))
    # read | change | destroy | export | hold ...: what kind of processing.
    kind: Mapped[str] = mapped_column(String(16))
    # What was done: the command or job ("archive retrieve", "correct", "withdraw").
    action: Mapped[str] = mapped_column(String(64))
    subject_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Counts, category and field names only.
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    __table_args__ = (Index("ix_access_log_occurred", "occurred_at"),)


class AccessLogHead(ArchiveBase):
    """Single row: the chain's tip (locked by writers) and where the kept part starts.

    ``base_seq``/``base_hash`` are the last pruned entry: after a prune the chain is verified
    from there, and the prune itself is an entry of the chain naming that base.
    """

    __tablename__ = "access_log_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    base_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    base_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Operator(PrimaryBase):
    """A registered operator (처리자): the OS account that runs `lifecycle` commands, and the
    name the access log records for it. Once one is registered, a command run by an OS account
    that is not (or is disabled) is refused: the access log then names people the operating
    system authenticated, not free text (안전성 확보조치 기준 제8조)."""

    __tablename__ = "lifecycle_operators"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The OS account (getpass.getuser()), or a console's login later.
    login: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
