"""Lawful retrieval of one member's archived records (`lifecycle archive retrieve`).

Archived data exists so that it can be produced for a tax audit, a dispute or a court, and for
nothing else (개인정보 보호법 제21조③: kept separately, used only for the purpose the law names).
So a retrieval needs a stated basis, names the operator, writes the plaintext only to a new file
(mode 0600) the operator chose, never to the broker, logs or a terminal, and leaves a ledger
entry saying who retrieved how many records of which categories and why. Records whose bucket
key was already destroyed are counted, not produced: crypto-shredding working as intended.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.vault import keystore, ledger
from models.archive import ArchivedRecord
from models.base import utcnow

MIN_BASIS_CHARS = 4


@dataclass(frozen=True)
class Retrieved:
    records: int
    destroyed: int
    categories: tuple[str, ...]
    tables: tuple[str, ...]


def check_basis(basis: str | None) -> str:
    text = " ".join((basis or "").split())
    if len(text) < MIN_BASIS_CHARS:
        raise UserError(
            "--basis is required: the legal reason for producing archived data "
            "(e.g. '국세기본법 제81조의6 세무조사 자료 제출')"
        )
    return text


def _open_new(out: Path) -> int:
    try:
        return os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"--out {out} already exists; choose a new file") from None
    except OSError as exc:
        raise UserError(f"--out {out} cannot be created ({exc.strerror})") from None


def archived_of(archive: Session, member_id: int) -> tuple[list[dict[str, Any]], int]:
    """The member's archived records, decrypted (``table``, ``key``, ``category``,
    ``retain_until``, ``data``), and how many could not be because their bucket key is already
    destroyed. The caller says why it may read them and logs that it did (retrieval: a legal
    basis; 열람: the member's own request, 개인정보 보호법 제35조)."""
    ref = keystore.subject_ref(archive, member_id)
    rows = archive.scalars(
        select(ArchivedRecord)
        .where(ArchivedRecord.subject_ref == ref)
        .order_by(ArchivedRecord.source_table, ArchivedRecord.source_pk, ArchivedRecord.category)
    ).all()
    produced: list[dict[str, Any]] = []
    destroyed = 0
    for r in rows:
        try:
            plain = keystore.decrypt_archived(archive, r)
        except keystore.KeyDestroyed:
            destroyed += 1
            continue
        produced.append(
            {
                "table": r.source_table,
                "key": r.source_pk,
                "category": r.category,
                "retain_until": r.retain_until.isoformat(),
                "data": json.loads(plain),
            }
        )
    return produced, destroyed


def holds_member(archive: Session, member_id: int) -> bool:
    """Whether the archive still holds any record of the member (destroyed keys included: the
    rows are there until the purge deletes them)."""
    ref = keystore.subject_ref(archive, member_id)
    return (
        archive.scalar(
            select(ArchivedRecord.source_pk).where(ArchivedRecord.subject_ref == ref).limit(1)
        )
        is not None
    )


def retrieve_member(
    archive: Session, member_id: int, *, basis: str, operator: str, out: Path
) -> Retrieved:
    """Decrypt ``member_id``'s archived records into the new file ``out`` and record it.

    Runs in the caller's archive transaction: the ledger entry commits with it. The file is
    removed again if anything fails before the entry is written.
    """
    basis = check_basis(basis)
    if not operator.strip():
        raise UserError("the operator's name is required (--operator)")
    ref = keystore.subject_ref(archive, member_id)
    produced, destroyed = archived_of(archive, member_id)
    if not produced and not destroyed:
        raise UserError(f"the archive holds no records of member {member_id}")
    if not produced:
        raise UserError(
            f"every archived record of member {member_id} was already destroyed "
            f"({destroyed} record(s) past their retention period)"
        )
    cats = tuple(sorted({str(p["category"]) for p in produced}))
    tables = tuple(sorted({str(p["table"]) for p in produced}))
    doc = {
        "member_id": member_id,
        "retrieved_at": utcnow().isoformat(),
        "operator": operator,
        "basis": basis,
        "records": produced,
        "destroyed_records_not_produced": destroyed,
    }
    fd = _open_new(out)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False, indent=2, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        ledger.append(
            archive,
            action="archive_retrieve",
            categories=cats,
            tables=tables,
            subjects=1,
            rows=len(produced),
            reason=basis,
            legal_basis=basis,
            method="분리보관 자료 열람·제출 (복호화하여 운영자 지정 파일로만 출력)",
            actor=f"operator:{operator}",
            subject_ref=ref,
            details={"destroyed_not_produced": destroyed},
        )
        archive.flush()
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return Retrieved(len(produced), destroyed, cats, tables)
