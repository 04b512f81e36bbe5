"""Purge: archived data whose retention period ended is deleted and its key destroyed.

A bucket (category x ``retain_until`` day) is purged in one archive-DB transaction: its data
key is destroyed first (``keystore.destroy_keys`` locks the key row, waiting out any sweep still
archiving under it), then its records are deleted, then the ledger gets a ``destroy`` entry
(rows, subjects) and a ``key_destroy`` entry. A bucket expires the day after its
``retain_until`` in the site's timezone (Asia/Seoul), so data is kept for its whole last day.
Re-running is harmless: a bucket already purged has no key and no rows left, and the ledger
entries are deduplicated per key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from lifecycle.core.locks import job_lock
from lifecycle.engine.context import EngineContext
from lifecycle.vault import keystore, ledger
from models.archive import ArchivedRecord, DataKey

log = logging.getLogger(__name__)

LOCK_NAME = "lifecycle-purge"
REASON = "법정 보존기간 경과 (retention period ended)"
DESTROY_METHOD = "분리보관 DB 행 삭제 및 데이터 키 파기 (archive rows deleted)"
KEY_METHOD = (
    "암호키 파기(crypto-shredding): 래핑된 데이터 키 삭제, 백업 사본도 복호화 불가 "
    "(wrapped data key erased)"
)


@dataclass(frozen=True)
class Bucket:
    key_id: int
    category: str
    retain_until: date
    key_live: bool
    rows: int
    subjects: int
    tables: tuple[str, ...]


def expired_buckets(ctx: EngineContext, s: Session, today: date) -> list[Bucket]:
    k = DataKey.__table__
    has_rows = _has_rows(k)
    keys = s.execute(
        select(k.c.id, k.c.category, k.c.retain_until, k.c.wrapped_key.is_not(None))
        .where(k.c.retain_until < today, or_(k.c.wrapped_key.is_not(None), has_rows))
        .order_by(k.c.retain_until, k.c.id)
    ).all()
    out: list[Bucket] = []
    for key_id, cat, until, live in keys:
        rows, subjects, tables = _bucket_counts(s, key_id, until)
        out.append(Bucket(key_id, cat, until, bool(live), rows, subjects, tables))
    return out


def _has_rows(k: Any) -> Any:
    """The data key ``k`` still has archived rows (found through the day index)."""
    r = ArchivedRecord.__table__
    return exists().where(r.c.retain_until == k.c.retain_until, r.c.key_id == k.c.id)


def _in_bucket(key_id: int, until: date) -> Any:
    # retain_until first: it is the indexed column; a day holds a bucket per category.
    r = ArchivedRecord.__table__
    return and_(r.c.retain_until == until, r.c.key_id == key_id)


def _bucket_counts(s: Session, key_id: int, until: date) -> tuple[int, int, tuple[str, ...]]:
    r = ArchivedRecord.__table__
    here = _in_bucket(key_id, until)
    rows, subjects = s.execute(
        select(func.count(), func.count(func.distinct(r.c.subject_ref))).where(here)
    ).one()
    tables = tuple(t for (t,) in s.execute(select(r.c.source_table).where(here).distinct()))
    return int(rows), int(subjects), tuple(sorted(tables))


def _legal_basis(ctx: EngineContext, category: str) -> str:
    rule = ctx.datamap.rules.get(category)
    return rule.legal_basis if rule else "보존기간 경과"


def purge_bucket(
    ctx: EngineContext, key_id: int, *, task_id: str | None = None, actor: str | None = None
) -> dict[str, int]:
    actor = actor or ctx.actor
    r = ArchivedRecord.__table__
    with Session(ctx.archive) as s, s.begin():
        row = s.execute(
            select(DataKey.category, DataKey.retain_until).where(DataKey.id == key_id)
        ).first()
        if row is None:
            return {"rows": 0, "keys": 0}
        category, until = row
        # Key first: its row lock waits for (and then blocks) anyone still archiving into it.
        keys = keystore.destroy_keys(s, [key_id])
        rows, subjects, tables = _bucket_counts(s, key_id, until)
        s.execute(delete(r).where(_in_bucket(key_id, until)))
        basis = _legal_basis(ctx, category)
        details: dict[str, Any] = {"key_id": key_id, "retain_until": until.isoformat()}
        entries = []
        if rows:
            entries.append(("destroy", DESTROY_METHOD, f"purge:key{key_id}:destroy:{rows}"))
        if keys:
            entries.append(("key_destroy", KEY_METHOD, f"purge:key{key_id}:key_destroy"))
        for action, method, dedup_key in entries:
            ledger.append(
                s,
                action=action,
                categories=[category],
                tables=list(tables),
                subjects=subjects,
                rows=rows,
                reason=REASON,
                legal_basis=basis,
                method=method,
                actor=actor,
                task_id=task_id,
                details=details,
                dedup_key=dedup_key,
            )
    return {"rows": rows, "keys": keys, "subjects": subjects}


def purge_preview(ctx: EngineContext, today: date | None = None) -> list[Bucket]:
    today = today or ctx.today()
    with Session(ctx.archive) as s:
        try:
            return expired_buckets(ctx, s, today)
        finally:
            s.rollback()


def run_purge(
    ctx: EngineContext,
    *,
    task_id: str | None = None,
    today: date | None = None,
    report: Any = None,
) -> dict[str, Any]:
    today = today or ctx.today()
    with job_lock(ctx.archive, LOCK_NAME) as lock:
        if lock is None:
            return {"skipped": "another purge is running"}
        with Session(ctx.archive) as s:
            k = DataKey.__table__
            ids = [
                i
                for (i,) in s.execute(
                    select(k.c.id)
                    .where(
                        k.c.retain_until < today,
                        or_(k.c.wrapped_key.is_not(None), _has_rows(k)),
                    )
                    .order_by(k.c.retain_until, k.c.id)
                )
            ]
        out = {"buckets": 0, "rows": 0, "keys": 0, "today": today.isoformat()}
        for n, key_id in enumerate(ids, 1):
            res = purge_bucket(ctx, key_id, task_id=task_id)
            out["buckets"] += 1
            out["rows"] += res["rows"]
            out["keys"] += res["keys"]
            if report is not None:
                try:
                    report(n, len(ids))
                except Exception:
                    log.debug("progress report failed", exc_info=True)
        return out
