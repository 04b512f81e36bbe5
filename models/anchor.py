"""Facts the primary database keeps about this install: its identity and the anchors of the
ledger and of the handler access log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class InstallIdentity(PrimaryBase):
    """One row, created by the migration with a random id.

    The id names this install where others could be confused with it: the domain of the
    Message-IDs of member notices, so that a shared MTA log of another install (or of this
    site's previous, re-created database) never matches our rows.
    """

    __tablename__ = "lifecycle_install"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    install_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerCheckpoint(PrimaryBase):
    """The ledger head (sequence and hash) as verified at a moment, kept outside the archive DB.

    The archive DB alone cannot prove it was not truncated or wiped: whoever deletes its last
    entries can point its head row back too. A checkpoint here (and in a file, see
    ``lifecycle.vault.checkpoints``) makes entries up to ``seq`` undeletable without notice.
    """

    __tablename__ = "lifecycle_ledger_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AccessLogCheckpoint(PrimaryBase):
    """The handler access log's head as verified at a moment, kept outside the archive DB.

    The access log's own head row moves back with its entries, so deleting the newest entries
    and the head together would pass a chain check; a checkpoint here (and in a file) catches it,
    exactly as `LedgerCheckpoint` does for the ledger.
    """

    __tablename__ = "lifecycle_accesslog_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
