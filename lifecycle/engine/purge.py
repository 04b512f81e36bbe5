"""Purge: archived data whose retention period ended is deleted and its key destroyed.

A bucket (category x ``retain_until`` day) is purged in one archive-DB transaction: its data
key is destroyed first (``keystore.destroy_keys`` locks the key row, waiting out any sweep still
archiving under it), then its records are deleted, then the ledger gets a ``destroy`` entry
(rows, subjects) and a ``key_destroy`` entry. A bucket expires the day after its
``retain_until`` in the site's timezone (Asia/Seoul), so data is kept for its whole last day.
Re-running is harmless: a bucket already purged has no key and no rows left, and the ledger
entries are deduplicated per key.

Before the key goes, every record of the bucket is authenticated (AES-GCM tag under the bucket
key, with its row identity as associated data). The data is destroyed either way — its period
ended — but a record that fails is recorded in the ledger (``tamper_detected``, counts only) and
the purge ends failed, so an altered archive is known rather than silently shredded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, update
from sqlalchemy.orm import Session

from lifecycle.core.errors import LifecycleError
from lifecycle.core.locks import job_lock
from lifecycle.engine.context import EngineContext
from lifecycle.requests import holds
from lifecycle.vault import accesslog, crypto, former, keystore, ledger
from models.archive import ArchivedRecord, DataKey
from models.base import utcnow
from models.guards import LegalHold
from models.requests import JobRun

log = logging.getLogger(__name__)

LOCK_NAME = "lifecycle-purge"
REASON = "법정 보존기간 경과 (retention period ended)"
DESTROY_METHOD = "분리보관 DB 행 삭제 및 데이터 키 파기 (archive rows deleted)"
TAMPER_REASON = (
    "분리보관 기록 인증 실패: 파기 전 검증에서 위변조 확인 "
    "(archived records failed authentication before destruction)"
)
TAMPER_METHOD = "AES-256-GCM 인증 태그 검증 (authentication tag check under the bucket key)"
AUTH_PAGE = 2000
KEY_METHOD = (
    "암호키 파기(crypto-shredding): 래핑된 데이터 키 삭제, 백업 사본도 복호화 불가 "
    "(wrapped data key erased)"
)


HOLD_METHOD = (
    "보존 명령: 보존기간이 끝난 버킷의 키 파기 전에 해당 정보주체 기록을 보존 명령 전용 키로 "
    "재암호화 (re-encrypted under the hold's key before the bucket key is destroyed)"
)
HOLD_REASON = "보존 명령(legal hold) 중: 파기 보류"


class ArchiveTampered(LifecycleError):
    """Archived records failed authentication; they were destroyed and the ledger says so."""


@dataclass(frozen=True)
class Bucket:
    key_id: int
    category: str
    retain_until: date
    key_live: bool
    rows: int
    subjects: int
    tables: tuple[str, ...]
    held_rows: int = 0  # rows a legal hold keeps (re-encrypted, not destroyed)
    held_by: tuple[int, ...] = ()


def _held(ctx: EngineContext, s: Session, today: date) -> holds.HeldSet:
    with Session(ctx.primary) as p:
        return holds.held_set(p, s, today)


def _due(k: Any, today: date, held: holds.HeldSet) -> Any:
    """Keys to purge: their day has passed, or they keep records for a released hold."""
    due = k.c.retain_until < today
    if held.released_keys:
        due = or_(due, k.c.category.in_(held.released_keys))
    return and_(due, or_(k.c.wrapped_key.is_not(None), _has_rows(k)))


def expired_buckets(
    ctx: EngineContext, s: Session, today: date, held: holds.HeldSet | None = None
) -> list[Bucket]:
    held = held or _held(ctx, s, today)
    k = DataKey.__table__
    keys = s.execute(
        select(k.c.id, k.c.category, k.c.retain_until, k.c.wrapped_key.is_not(None))
        .where(_due(k, today, held))
        .order_by(k.c.retain_until, k.c.id)
    ).all()
    out: list[Bucket] = []
    for key_id, cat, until, live in keys:
        rows, subjects, tables = _bucket_counts(s, key_id, until)
        kept = _held_records(s, key_id, until, cat, held)
        by = tuple(sorted({h.id for _, h in kept}))
        out.append(Bucket(key_id, cat, until, bool(live), rows, subjects, tables, len(kept), by))
    return out


def _held_records(
    s: Session, key_id: int, until: date, key_category: str, held: holds.HeldSet
) -> list[tuple[ArchivedRecord, LegalHold]]:
    """Records of the bucket an active hold covers, each with the hold that lasts longest."""
    if not held.refs and not held.categories:
        return []
    r = ArchivedRecord
    conds = []
    if held.refs:
        conds.append(r.subject_ref.in_(list(held.refs)))
    if held.categories:
        conds.append(r.category.in_(list(held.categories)))
    rows = s.scalars(
        select(r).where(r.retain_until == until, r.key_id == key_id, or_(*conds))
    ).all()
    out = []
    for rec in rows:
        cands = [
            h for h in (held.refs.get(rec.subject_ref), held.categories.get(rec.category)) if h
        ]
        out.append((rec, max(cands, key=lambda h: h.until)))
    return out


def _keep_for_holds(s: Session, key_id: int, kept: list[tuple[ArchivedRecord, LegalHold]]) -> None:
    """Move held records to their hold's own bucket: decrypt under the expiring bucket key,
    encrypt under the hold key (same AAD: table, key, category), ``retain_until`` = the hold's
    ``until``. The old key can then be destroyed like any other; the held records live on
    under a key that dies with the hold (on release, or on its ``until``)."""
    dk = keystore.get_key(s, key_id)
    hold_keys: dict[int, tuple[int, bytes]] = {}
    for rec, h in kept:
        if h.id not in hold_keys:
            hold_keys[h.id] = keystore.get_or_create_bucket_key(
                s, holds.hold_key_category(h.id), h.until
            )
        hk_id, hk = hold_keys[h.id]
        aad = crypto.record_aad(rec.source_table, rec.source_pk, rec.category)
        plain = crypto.decrypt_record(dk, rec.nonce, rec.ciphertext, aad)
        rec.nonce, rec.ciphertext = crypto.encrypt_record(hk, plain, aad)
        rec.key_id, rec.retain_until = hk_id, h.until
    s.flush()


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


def _authenticate(s: Session, key_id: int, until: date, dk: bytes) -> tuple[int, int]:
    """``(authentic, failed)`` records of the bucket; each plaintext is dropped at once."""
    r = ArchivedRecord.__table__
    cipher = crypto.RecordCipher(dk)
    ok = bad = 0
    stmt = select(r.c.source_table, r.c.source_pk, r.c.category, r.c.nonce, r.c.ciphertext)
    res = s.execute(stmt.where(_in_bucket(key_id, until)).execution_options(yield_per=AUTH_PAGE))
    for part in res.partitions():
        for table, pk, category, nonce, ciphertext in part:
            try:
                cipher.decrypt(nonce, ciphertext, crypto.record_aad(table, pk, category))
            except crypto.CryptoError:
                bad += 1
            else:
                ok += 1
    return ok, bad


def _legal_basis(ctx: EngineContext, category: str) -> str:
    rule = ctx.datamap.rules.get(category)
    return rule.legal_basis if rule else "보존기간 경과"


def purge_bucket(
    ctx: EngineContext,
    key_id: int,
    *,
    task_id: str | None = None,
    actor: str | None = None,
    held: holds.HeldSet | None = None,
    today: date | None = None,
) -> dict[str, int]:
    actor = actor or ctx.actor
    r = ArchivedRecord.__table__
    with Session(ctx.archive) as s, s.begin():
        # Key row first (FOR UPDATE): waits for, then blocks, anyone still archiving into it.
        row = s.execute(
            select(DataKey.category, DataKey.retain_until, DataKey.wrapped_key.is_not(None))
            .where(DataKey.id == key_id)
            .with_for_update()
        ).first()
        if row is None:
            return {"rows": 0, "keys": 0}
        category, until, live = row
        held = held or _held(ctx, s, today or ctx.today())
        if category in held.categories:
            # A held category keeps its whole bucket (that is what the hold asks for); it is
            # purged on the first run after the hold ends.
            n, _, _ = _bucket_counts(s, key_id, until)
            return {"rows": 0, "keys": 0, "held_rows": n, "held_buckets": 1}
        kept = _held_records(s, key_id, until, category, held) if live else []
        if kept:
            _keep_for_holds(s, key_id, kept)
            k_tables = sorted({rec.source_table for rec, _ in kept})
            ledger.append(
                s,
                action="hold_keep",
                categories=sorted({rec.category for rec, _ in kept}),
                tables=k_tables,
                subjects=len({rec.subject_ref for rec, _ in kept}),
                rows=len(kept),
                reason=HOLD_REASON,
                legal_basis=holds.HOLD_BASIS,
                method=HOLD_METHOD,
                actor=actor,
                task_id=task_id,
                details={"key_id": key_id, "retain_until": until.isoformat(),
                         "hold_ids": sorted({h.id for _, h in kept})},
                dedup_key=f"purge:key{key_id}:hold_keep:{len(kept)}",
            )  # fmt: skip
        # Unwrapped before it is destroyed, to authenticate the records below. A key wrapped
        # under another master key raises KeyUnavailable: the purge fails (fix the master key
        # setting) rather than destroy records nobody could check.
        try:
            dk: bytes | None = keystore.get_key(s, key_id)
        except keystore.KeyDestroyed:
            dk = None
        # Key first: its row lock waits for (and then blocks) anyone still archiving into it.
        keys = keystore.destroy_keys(s, [key_id])
        rows, subjects, tables = _bucket_counts(s, key_id, until)
        cats = _bucket_categories(s, key_id, until)
        authentic, failed = (
            _authenticate(s, key_id, until, dk) if dk is not None and rows else (0, 0)
        )
        refs = s.scalars(select(r.c.subject_ref).where(_in_bucket(key_id, until)).distinct())
        leaving = set(refs)
        s.execute(delete(r).where(_in_bucket(key_id, until)))
        # With the records: a former member whose last records these were can no longer be
        # found by their email or login id (lifecycle/vault/former.py).
        former.forget_purged(s, leaving, until, keep={rec.subject_ref for rec, _ in kept})
        basis = _legal_basis(ctx, category)
        if category.startswith(holds.HOLD_KEY_PREFIX):
            basis = f"보존 명령 {category[len(holds.HOLD_KEY_PREFIX) :]} 종료 (legal hold ended)"
        else:
            cats = [category]
        details: dict[str, Any] = {"key_id": key_id, "retain_until": until.isoformat()}
        entries = []
        if failed:
            entries.append(
                (
                    "tamper_detected",
                    TAMPER_REASON,
                    TAMPER_METHOD,
                    0,
                    failed,
                    {**details, "failed": failed, "authentic": authentic},
                    f"purge:key{key_id}:tamper",
                )
            )
        if rows:
            checked = (
                {"authentic": authentic, "failed": failed}
                if dk is not None
                else {"unverified": rows}  # the key was already gone: nothing to check with
            )
            entries.append(
                (
                    "destroy",
                    REASON,
                    DESTROY_METHOD,
                    subjects,
                    rows,
                    {**details, **checked},
                    f"purge:key{key_id}:destroy:{rows}",
                )
            )
        if keys:
            entries.append(
                (
                    "key_destroy",
                    REASON,
                    KEY_METHOD,
                    subjects,
                    rows,
                    details,
                    f"purge:key{key_id}:key_destroy",
                )
            )
        for action, reason, method, n_subjects, n_rows, entry_details, dedup_key in entries:
            ledger.append(
                s,
                action=action,
                categories=cats,
                tables=list(tables),
                subjects=n_subjects,
                rows=n_rows,
                reason=reason,
                legal_basis=basis,
                method=method,
                actor=actor,
                task_id=task_id,
                details=entry_details,
                dedup_key=dedup_key,
            )
    if failed:
        log.error(
            "purge: %d archived records of data key %d failed authentication (destroyed; "
            "recorded in the ledger)",
            failed,
            key_id,
        )
    return {
        "rows": rows,
        "keys": keys,
        "subjects": subjects,
        "tampered": failed,
        "held_rows": len(kept),
    }


def _bucket_categories(s: Session, key_id: int, until: date) -> list[str]:
    r = ArchivedRecord.__table__
    return sorted(
        c for (c,) in s.execute(select(r.c.category).where(_in_bucket(key_id, until)).distinct())
    )


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
        # A run row on the primary, as the sweep keeps: `status` shows the outcome and the
        # metrics' last-success time comes from it, so a purge that stops running is noticed.
        run_id = _open_run(ctx, task_id)
        try:
            out = _purge_locked(ctx, task_id, today, report)
        except BaseException as exc:
            _close_run(ctx, run_id, "failed", {"error": type(exc).__name__})
            raise
        _close_run(ctx, run_id, "ok", {k: v for k, v in out.items() if isinstance(v, int)})
        return out


def _open_run(ctx: EngineContext, task_id: str | None) -> int:
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        # We hold the purge lock: a run still "running" is one whose worker died.
        conn.execute(
            update(jr)
            .where(jr.c.job == "purge", jr.c.outcome == "running")
            .values(outcome="abandoned", finished_at=utcnow())
        )
        row = conn.execute(
            insert(jr).values(
                job="purge", task_id=task_id, started_at=utcnow(), outcome="running", counts={}
            )
        )
        return int(row.inserted_primary_key[0])  # type: ignore[index]


def _close_run(ctx: EngineContext, run_id: int, outcome: str, counts: dict[str, Any]) -> None:
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        conn.execute(
            update(jr)
            .where(jr.c.id == run_id)
            .values(outcome=outcome, finished_at=utcnow(), counts=counts)
        )


def _purge_locked(
    ctx: EngineContext, task_id: str | None, today: date, report: Any
) -> dict[str, Any]:
    with Session(ctx.archive) as s:
        held = _held(ctx, s, today)
        s.commit()  # the pseudonym key, if this is its first use
        k = DataKey.__table__
        ids = [
            i
            for (i,) in s.execute(
                select(k.c.id).where(_due(k, today, held)).order_by(k.c.retain_until, k.c.id)
            )
        ]
    out: dict[str, Any] = {"buckets": 0, "rows": 0, "keys": 0, "today": today.isoformat()}
    out.update({"held_rows": 0, "held_buckets": 0, "holds": held.hold_ids})
    tampered: dict[int, int] = {}
    for n, key_id in enumerate(ids, 1):
        res = purge_bucket(ctx, key_id, task_id=task_id, held=held, today=today)
        if res.get("held_buckets"):
            out["held_buckets"] += 1
            out["held_rows"] += res["held_rows"]
        else:
            out["buckets"] += 1
            out["held_rows"] += res.get("held_rows", 0)
        out["rows"] += res["rows"]
        out["keys"] += res["keys"]
        if res.get("tampered"):
            tampered[key_id] = res["tampered"]
        if report is not None:
            try:
                report(n, len(ids))
            except Exception:
                log.debug("progress report failed", exc_info=True)
    # The access log's 2 years end nightly too (its chain keeps a checkpoint: accesslog).
    with Session(ctx.archive) as s, s.begin():
        out["access_log_pruned"] = accesslog.prune(s, operator=ctx.actor)
    if tampered:
        keys_ = ", ".join(str(k) for k in sorted(tampered)[:20])
        raise ArchiveTampered(
            f"purge done ({out['buckets']} buckets, {out['rows']} rows, {out['keys']} keys) "
            f"but {sum(tampered.values())} archived records failed authentication (altered "
            f"in the archive DB) in data keys {keys_}; they were destroyed and recorded in "
            "the ledger as tamper_detected: investigate who could write the archive DB"
        )
    return out
