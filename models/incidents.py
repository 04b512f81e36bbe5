"""Personal-data breaches (개인정보 유출등, 개인정보 보호법 제34조): one row per incident and the
members found affected when it was opened.

No personal data in ``lifecycle_incidents``: categories, table names, times, counts and the
operator's own text about what happened and what was done. ``lifecycle_incident_members`` holds
member ids only (like ``lifecycle_notice_recipients``): who has to be told, fixed when the
incident is opened, so a sweep that moves rows away later does not shrink the list.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class IncidentState(enum.StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Incident(PrimaryBase):
    __tablename__ = "lifecycle_incidents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    state: Mapped[str] = mapped_column(String(16), default=IncidentState.OPEN.value)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    opened_by: Mapped[str] = mapped_column(String(128))
    # When the controller learnt of it: the 72 hours of 시행령 제39조·제40조 run from here.
    detected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The window in which the data was exposed.
    occurred_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    occurred_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    categories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tables: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Tables with no record date in the data map: every row was taken as affected.
    whole_tables: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The operator's description file: how it happened, what members can do, what was done,
    # where to ask (법 제34조① 2-5호). About the incident, never about a member.
    description: Mapped[str] = mapped_column(Text)
    # 시행령 제40조①3호: reached by unlawful access from outside (the operator says so).
    external_access: Mapped[bool] = mapped_column(Boolean, default=False)
    affected: Mapped[int] = mapped_column(Integer, default=0)
    affected_rows: Mapped[int] = mapped_column(Integer, default=0)
    # Affected members with no usable e-mail address when the incident was opened.
    no_contact: Mapped[int] = mapped_column(Integer, default=0)
    # Former members whose rows of these tables were archived during or after the window
    # (they were in the primary while it was exposed; no live contact), and before it.
    former_in_window: Mapped[int] = mapped_column(Integer, default=0)
    former_archived_before: Mapped[int] = mapped_column(Integer, default=0)
    notice_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the draft report was first written (``incident report``): drafting is not reporting.
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The report as actually submitted (법 제34조③, 시행령 제40조), as the officer records it:
    # when, to whom (``pipc`` or ``kisa``), the 접수번호 if one was given. ``submission_revision``
    # counts corrections, so each recorded version has its own ledger entry.
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    submitted_to: Mapped[str | None] = mapped_column(String(8), nullable=True)
    submission_receipt: Mapped[str | None] = mapped_column(String(40), nullable=True)
    submitted_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    submission_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    closing_record: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Closed with a report due and none recorded as submitted: the officer's reason, kept with
    # the closing record.
    no_report_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_lifecycle_incidents_state", "state"),)


class IncidentMember(PrimaryBase):
    """A member found affected: one row per (incident, member)."""

    __tablename__ = "lifecycle_incident_members"

    incident_id: Mapped[int] = mapped_column(
        ForeignKey("lifecycle_incidents.id"), primary_key=True, autoincrement=False
    )
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
