"""Archive-side secrets other than per-bucket data keys (owned by ``lifecycle.vault.keystore``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ArchiveBase, utcnow


class ArchiveSecret(ArchiveBase):
    """A named long-lived key, wrapped by the master key like a data key.

    Holds the ledger pseudonym key: it must outlive master-key rotation (otherwise a member's
    pseudonym would change on every rotation and old entries could no longer be linked), so it
    is stored wrapped and re-wrapped by ``lifecycle keys rotate`` instead of being re-derived.
    """

    __tablename__ = "archive_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    master_key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
