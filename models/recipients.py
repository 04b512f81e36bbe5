"""제3자 제공: recipients (the third parties), the provision log, and deliveries to them.

A delivery is a message owed to a recipient (a correction's corrected values, or a deletion
notice: a field it received is gone); its tasks keep their historical names
``lifecycle.notify.*``.
Notices to members are another thing, in ``models.notices``.

Personal data held here, and for how long:
- ``lifecycle_deliveries.payload``: the corrected values owed to a third party. Kept only until
  the delivery is delivered (then NULL); a failed one keeps them so ops can replay it.
Nothing here ever holds a value from before a correction.
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
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class Channel(enum.StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"


class Basis(enum.StrEnum):
    CONSENT = "consent"
    LEGAL_REQUEST = "legal_request"


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # retries exhausted or permanently rejected: needs attention
    DISABLED = "disabled"  # the endpoint answered 410 Gone (or was disabled): needs attention


class Recipient(PrimaryBase):
    """A recipient of personal data (제3자 제공): where corrections must be sent."""

    __tablename__ = "lifecycle_recipients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    channel: Mapped[str] = mapped_column(String(16))
    endpoint: Mapped[str | None] = mapped_column(String(500), nullable=True)
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    # The Standard Webhooks secret as given (whsec_...): needed in clear to sign.
    secret: Mapped[str | None] = mapped_column(String(200), nullable=True)
    contact: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(100), nullable=True)


class Provision(PrimaryBase):
    """The provision log: which member's which fields went to which recipient, and why."""

    __tablename__ = "lifecycle_provisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(BigInteger)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("lifecycle_recipients.id"))
    fields: Mapped[list[Any]] = mapped_column(JSON)
    basis: Mapped[str] = mapped_column(String(32))
    provided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The consent purpose it was provided under (e.g. "marketing"): a withdrawal of that
    # consent tells exactly these recipients.
    purpose: Mapped[str | None] = mapped_column(String(32), nullable=True)

    __table_args__ = (Index("ix_lifecycle_provisions_member", "member_id"),)


class Delivery(PrimaryBase):
    """One message owed to one third party (a correction's corrected values)."""

    __tablename__ = "lifecycle_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The webhook-id / Message-ID: stable across retries so receivers can drop duplicates.
    message_id: Mapped[str] = mapped_column(String(64), unique=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("lifecycle_recipients.id"))
    kind: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    member_id: Mapped[int] = mapped_column(BigInteger)
    # Field names only (kept for the record and for `lifecycle status`).
    fields: Mapped[list[Any]] = mapped_column(JSON)
    # The corrected values; NULL once delivered.
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # When a task for it was last put on the broker: beat leaves it alone for a while after.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The ledger lives in the archive DB; this flag lets a sweep finish an entry a crash missed.
    ledger_written: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_lifecycle_deliveries_due", "state", "next_attempt_at"),
        Index("ix_lifecycle_deliveries_request", "request_id"),
    )


class DeliveryAttempt(PrimaryBase):
    """Every attempt, recorded *before* the send (outcome 'in_flight'), then finished.

    No bodies, no response text: an outcome, a status code and an exception class name.
    """

    __tablename__ = "lifecycle_delivery_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("lifecycle_deliveries.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # in_flight | delivered | gone | retry | rejected | interrupted (a crash left it in flight)
    outcome: Mapped[str] = mapped_column(String(16))
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
