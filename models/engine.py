"""The engine's own bookkeeping in the primary DB: sweep batches and the ledger outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import BigId, PrimaryBase, utcnow


class SweepBatch(PrimaryBase):
    """One slice of a sweep run: a range of member ids (or of a table's ids for age rules).

    A batch task claims its row ``FOR UPDATE SKIP LOCKED`` for the length of its primary-DB
    transaction and marks it done in that same transaction, so a worker killed mid-batch leaves
    the row pending (and unlocked) for whoever runs it next.
    """

    __tablename__ = "lifecycle_sweep_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    # withdrawal | dormancy | age
    kind: Mapped[str] = mapped_column(String(16))
    # For age batches: the table whose ids the range covers ("" for member ranges).
    table_name: Mapped[str] = mapped_column(String(128), default="")
    first_id: Mapped[int] = mapped_column(BigInteger)
    last_id: Mapped[int] = mapped_column(BigInteger)
    # pending | done | superseded
    state: Mapped[str] = mapped_column(String(16), default="pending")
    counts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("run_id", "kind", "table_name", "first_id", name="uq_sweep_batch"),
        Index("ix_lifecycle_sweep_batches_run_state", "run_id", "state"),
    )


class LedgerOutbox(PrimaryBase):
    """A destruction's ledger entry, written in the same primary-DB transaction as the DELETE.

    The ledger lives in the archive DB, so the entry cannot commit atomically with the
    deletion; parking it here makes "rows gone" and "entry owed" one fact, and
    ``flush_ledger_outbox`` moves it to the ledger (deduplicated by ``token``) soon after.
    Holds counts and names only, never the destroyed data.
    """

    __tablename__ = "lifecycle_ledger_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token: Mapped[str] = mapped_column(String(64), unique=True)
    entry: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class MemberWithdrawal(PrimaryBase):
    """A member's withdrawal, for a site whose schema has nowhere to record one (the map's
    ``subject.withdrawn: lifecycle``). Written by ``lifecycle withdraw`` (and the withdrawal
    request) in the site's primary DB, beside the member rows the sweep selects by it; it
    holds the member id and a time, no personal data of the site's."""

    __tablename__ = "lifecycle_withdrawals"

    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    withdrawn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OrphanMember(PrimaryBase):
    """A member id that rows of the site still name while no member row has it (the site
    deleted the row itself, e.g. Rhymix's own 탈퇴), and when the lifecycle first saw it.

    The site left no withdrawal time, so ``first_seen_at`` is the earliest time the lifecycle
    can prove the member was gone: retention counts from it (lifecycle.engine.orphans). A
    member id only, never a value of the member's data.
    """

    __tablename__ = "lifecycle_orphan_members"

    member_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
