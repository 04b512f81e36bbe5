"""The consent history (동의 이력): one row per consent a member gave to one purpose of the data
map's ``consents:``, closed when it is withdrawn.

Kept in the primary database beside the site's tables. A purpose the site records in its own
column (``marketing_consent``, Gnuboard's ``mb_mailling``) is read from there; this table keeps
its history either way (the lifecycle writes a row when a consent is given or withdrawn through
it). Holds ids, purpose names, times and the consent text's version: no personal data beyond
the fact of the consent itself.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class Consent(PrimaryBase):
    __tablename__ = "lifecycle_consents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(BigInteger)
    purpose: Mapped[str] = mapped_column(String(32))
    # The version of the consent text the member was shown (the site's own label, e.g. v2).
    text_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # NULL: given before the lifecycle knew of it (the site's column said so), time unknown.
    given_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    withdrawn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Where the grant was learnt: "lifecycle" (recorded through it), "site" (the site's column).
    source: Mapped[str] = mapped_column(String(16))
    # The consent withdrawal request that closed it.
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_lifecycle_consents_member_purpose", "member_id", "purpose"),)
