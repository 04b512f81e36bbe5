"""What the data-map checks found, stored (lifecycle/datamap/findings.py): the console's
findings page, the metrics and `lifecycle status` read it.

Names and counts only, never a value: the table and column, the pattern kinds with how many
sampled rows held each (discovery) or the identity kind and how many rows hold another member's
(linkage), whether the map covers the column, when and by which run (``lifecycle_job_runs``).
A new run of a kind closes the previous run's open findings of that kind (``closed_at``,
``closed_by_run``): the rows are kept as the history of what was found when.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class FindingKind(enum.StrEnum):
    DISCOVERY = "discovery"  # personal data found by pattern in a table.column
    LINKAGE = "linkage"  # rows linked to one member holding another member's identity


class DataMapFinding(PrimaryBase):
    __tablename__ = "lifecycle_datamap_findings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    table_name: Mapped[str] = mapped_column(String(128))
    column_name: Mapped[str] = mapped_column(String(128))
    # discovery: pattern kind -> sampled rows holding it; linkage: {identity kind: rows}.
    patterns: Mapped[dict[str, Any]] = mapped_column(JSON)
    # discovery: rows sampled from the table; linkage: rows holding another's identity.
    rows: Mapped[int] = mapped_column(Integer)
    # discovery: lifecycle.datamap.discover's coverage word; linkage: "wrong link".
    coverage: Mapped[str] = mapped_column(String(32))
    covered: Mapped[bool] = mapped_column(Boolean)
    run_id: Mapped[int] = mapped_column(BigInteger)
    found_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_by_run: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The officer's acknowledgement of a discovery finding (console), carried over to the
    # same table.column's finding of later runs while it stays uncovered.
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    acknowledged_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    ack_reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_lifecycle_datamap_findings_kind_closed", "kind", "closed_at"),)
