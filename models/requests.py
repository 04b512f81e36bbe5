"""The request table: the transactional outbox the website writes to, and its state machine."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class RequestKind(enum.StrEnum):
    WITHDRAWAL = "withdrawal"
    CORRECTION = "correction"
    ACCESS = "access"  # 열람 (개인정보 보호법 제35조)
    ERASURE = "erasure"  # 삭제 of named items of a live member (제36조)
    SUSPENSION = "suspension"  # 처리정지 (제37조)
    SUSPENSION_LIFT = "suspension_lift"  # 처리정지 해제
    CONSENT_WITHDRAWAL = "consent_withdrawal"  # 동의 철회, per purpose (제37조)


class RequesterKind(enum.StrEnum):
    """Who made the request (시행령 제45조: 정보주체 or 대리인)."""

    MEMBER = "member"
    GUARDIAN = "guardian"  # 법정대리인 of a child under 14
    DELEGATE = "delegate"  # 위임을 받은 자 (with 위임장)


class VerifiedBy(enum.StrEnum):
    LOGIN = "login"  # the site's own authenticated session
    DOCUMENT = "document"  # staff checked an ID document / 위임장 / 가족관계증명서
    # Staff called or wrote back to the member's recorded phone or address (a request received
    # by phone, letter or email, 시행령 제41조 본인 확인).
    CALLBACK = "callback"


class ReceivedVia(enum.StrEnum):
    """How a request reached the organisation (NULL: the website or the CLI)."""

    PHONE = "phone"
    LETTER = "letter"
    EMAIL = "email"
    VISIT = "visit"


class RequestState(enum.StrEnum):
    """received → dispatched → restricted → archived → destroyed → completed (or failed).

    Every state is persisted before the work of the next one starts, so a job killed at any
    line resumes from the last state it wrote.
    """

    RECEIVED = "received"
    DISPATCHED = "dispatched"
    RESTRICTED = "restricted"
    ARCHIVED = "archived"
    DESTROYED = "destroyed"
    CORRECTED = "corrected"
    PACKAGED = "packaged"  # access: the package is written
    ERASED = "erased"  # erasure: the items are gone from the primary DB
    CONSENT_WITHDRAWN = "consent_withdrawn"  # the consent column is cleared
    NOTIFYING = "notifying"
    COMPLETED = "completed"
    FAILED = "failed"
    NEEDS_ATTENTION = "needs_attention"


OPEN_STATES = tuple(
    s for s in RequestState if s not in (RequestState.COMPLETED, RequestState.FAILED)
)


class LifecycleRequest(PrimaryBase):
    __tablename__ = "lifecycle_requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    member_id: Mapped[int] = mapped_column(BigInteger)
    # Correction values live here until applied, then are blanked: the primary DB is where the
    # member's data already lives, and it never leaves it through the broker.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(32), default=RequestState.RECEIVED.value)
    # Free text written by workers only (never personal data): why it failed.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The steps done so far, comma-separated ("restricted,archived,rows_destroyed"); kept
    # when the request fails, so status says what was done and a retry resumes after it.
    steps_done: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # Lets the website retry its insert safely (e.g. "withdraw:<member>:<session>").
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Who asked: the website's logged-in handler or member (it may fill this), or the operator
    # of `lifecycle withdraw/correct` (OS user or --operator). Migration p_guards_0001.
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Who asked and how their identity was checked. The name and contact are the requester's
    # own personal data: they stay in the primary DB and never reach the broker.
    requester_kind: Mapped[str] = mapped_column(
        String(16), default=RequesterKind.MEMBER.value, server_default=RequesterKind.MEMBER.value
    )
    requester_name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    requester_contact: Mapped[str | None] = mapped_column(String(200), nullable=True)
    verified_by: Mapped[str] = mapped_column(
        String(16), default=VerifiedBy.LOGIN.value, server_default=VerifiedBy.LOGIN.value
    )
    # The legal deadline (set on submit from the kind; NULL for a row the website wrote
    # without it: then created_at plus the kind's days).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    extension_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The written answer to the requester (a one-member notice).
    answered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    answer_notice_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # A request staff took by phone, letter, email or in person (ReceivedVia); migration
    # p_console_0001.
    received_via: Mapped[str | None] = mapped_column(String(16), nullable=True)

    __table_args__ = (
        Index("ix_lifecycle_requests_state_created", "state", "created_at"),
        Index("ix_lifecycle_requests_member", "member_id"),
        Index("ix_lifecycle_requests_member_kind", "member_id", "kind"),
    )


class Restriction(PrimaryBase):
    """처리정지: while a row exists the member's data may be neither used nor provided."""

    __tablename__ = "lifecycle_restrictions"

    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class JobRun(PrimaryBase):
    """One row per run of a nightly/beat job: what `lifecycle status` shows as last outcome."""

    __tablename__ = "lifecycle_job_runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64), index=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
