"""The archive database: encrypted rows, wrapped data keys and the destruction ledger."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import ArchiveBase, BigId, utcnow


class DataKey(ArchiveBase):
    """One data key per retention bucket (category × retain_until day).

    Destroying the bucket's key crypto-shreds exactly the rows whose period ended that day,
    including copies in backups; ``wrapped_key`` is NULL once destroyed.
    """

    __tablename__ = "archive_data_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    category: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[date] = mapped_column(Date)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Which master key wrapped it (fingerprint), so rotation knows what is left to re-wrap.
    master_key_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    destroyed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (UniqueConstraint("category", "retain_until", name="uq_archive_bucket"),)


class ArchivedRecord(ArchiveBase):
    """One retained category of one source row, encrypted under its bucket's data key.

    The natural key is the identity that makes moves idempotent. No surrogate id, no index on
    ``key_id`` and no foreign key to the data key: each would cost work on every one of the
    millions of rows the sweep writes (migration a0002 says why each is safe to leave out).
    The purge finds a bucket's rows by ``retain_until`` (its day) and ``key_id``.
    """

    __tablename__ = "archive_records"

    source_table: Mapped[str] = mapped_column(String(128), primary_key=True)
    # Primary-key value(s) in the source table, as text: stable identity for idempotent moves.
    source_pk: Mapped[str] = mapped_column(String(128), primary_key=True)
    category: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject_ref: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[date] = mapped_column(Date)
    # archive_data_keys.id; deliberately not a ForeignKey (see above).
    key_id: Mapped[int] = mapped_column(BigInteger)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    archived_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_archive_records_retain", "retain_until"),)


class LedgerEntry(ArchiveBase):
    """파기 관리대장: append-only, hash-chained. Never holds the data it records."""

    __tablename__ = "ledger_entries"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # archive | destroy | key_destroy | file_shred | correction | notification | ...
    action: Mapped[str] = mapped_column(String(32))
    categories: Mapped[list[Any]] = mapped_column(JSON, default=list)
    tables: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subjects: Mapped[int] = mapped_column(Integer, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    legal_basis: Mapped[str] = mapped_column(Text, default="")
    method: Mapped[str] = mapped_column(Text, default="")
    actor: Mapped[str] = mapped_column(String(128), default="")
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    request_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Keyed HMAC of the member id (or of a file name): links entries without naming anyone.
    subject_ref: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Idempotency: a re-run of the same step (same key) does not append a second entry.
    dedup_key: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)


class LedgerHead(ArchiveBase):
    """Single row locked FOR UPDATE by every writer, so concurrent appends serialise."""

    __tablename__ = "ledger_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = ({"comment": "one row, id=1"},)


class FormerIdentity(ArchiveBase):
    """A keyed hash of one identity (email, login id, mobile) a former member declared, so a
    request naming them by it finds their member number once their row is gone.

    In the archive DB, beside the records it leads to: it lives exactly as long as something of
    the member is kept (lifecycle/vault/former.py), is deleted by the purge that destroys the
    last record, and a restore of the primary DB cannot bring it back. ``digest`` is
    HMAC-SHA256 under its own key (never the value, never the ledger's pseudonym key).
    """

    __tablename__ = "former_identities"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # The ledger pseudonym of member_id: what archive_records carry, so the purge finds them.
    subject_ref: Mapped[str] = mapped_column(String(64))
    # The last retain_until day of the member's archived records: the purge of that day's
    # buckets deletes the entry (archive_records has no index on subject_ref to ask it).
    kept_until: Mapped[date | None] = mapped_column(Date, nullable=True)
    # The member's row stays in the primary DB (blanked, kept to reserve the login id).
    kept_live: Mapped[bool] = mapped_column(Boolean, default=False)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_former_identities_subject_ref", "subject_ref"),)


__all__ = [
    "ArchivedRecord",
    "DataKey",
    "FormerIdentity",
    "LedgerEntry",
    "LedgerHead",
    "Text",
]
