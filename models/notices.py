"""Notices to members (개별 통지): policy changes, a request's completion, dormancy advance.

One ``lifecycle_notices`` row per notice and one ``lifecycle_notice_recipients`` row per
(notice, member); the member is the notice's recipient here, never a third party (those are in
``models.recipients``).

Personal data held here, and for how long:
- ``lifecycle_notice_recipients.address``: an email captured before a withdrawal destroys the
  member row, kept only until that one notice is sent (then NULL).
"""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class NoticeState(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    COMPLETED = "completed"


class NoticeRecipientState(enum.StrEnum):
    HELD = "held"  # captured before a withdrawal; released when the withdrawal completes
    PENDING = "pending"
    SENT = "sent"
    NOT_SENT = "not_sent"  # no SMTP configured, or the member has no usable address
    FAILED = "failed"  # the server refused the address permanently
    # Embedded mode only (no Redis journal): the intent to send, written just before the end
    # of DATA. A batch that claims a row still in this state knows its owner died mid-send.
    SENDING = "sending"
    # The message may or may not have been accepted (the session or the worker died after the
    # end of DATA was written). Never resent blindly: `lifecycle notice reconcile` settles it.
    IN_DOUBT = "in_doubt"


# Rows a batch may still act on: pending ones it sends, sending ones it turns into in_doubt.
SENDABLE_STATES = (NoticeRecipientState.PENDING.value, NoticeRecipientState.SENDING.value)


class Notice(PrimaryBase):
    """A notice to members: a policy change (to all active members) or one member's notice."""

    __tablename__ = "lifecycle_notices"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # policy | withdrawal_completed | correction_completed | dormancy_advance
    kind: Mapped[str] = mapped_column(String(32))
    # Makes creation idempotent: policy:<version>, withdrawal_completed:<request id>, ...
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    effective_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    state: Mapped[str] = mapped_column(String(16), default=NoticeState.PENDING.value)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    not_sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # Bumped by every batch: a notice with pending rows and no activity is resumed by beat.
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class NoticeRecipient(PrimaryBase):
    """One row per (notice, member): unique, so a re-run never sends a member a second copy."""

    __tablename__ = "lifecycle_notice_recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    notice_id: Mapped[int] = mapped_column(ForeignKey("lifecycle_notices.id"))
    member_id: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=NoticeRecipientState.PENDING.value)
    address: Mapped[str | None] = mapped_column(String(254), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Set when an address is captured into ``address`` (a withdrawn member's, whose row will be
    # gone) and again when the held row is released (the notice is due from then); kept after
    # the address is blanked until the nightly job has recorded that destruction in the ledger
    # (`lifecycle.notices.addresses`). Its age bounds the address's.
    address_captured_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )

    __table_args__ = (
        UniqueConstraint("notice_id", "member_id", name="uq_lifecycle_notice_recipients_member"),
        Index("ix_lifecycle_notice_recipients_state", "notice_id", "state"),
        Index("ix_lifecycle_notice_recipients_member", "member_id"),
        Index("ix_lifecycle_notice_recipients_captured", "address_captured_at"),
    )
