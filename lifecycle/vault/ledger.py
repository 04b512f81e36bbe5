"""The destruction ledger (파기 관리대장) in the archive DB: append, verify, export.

Contract for every caller of ``append``: ``reason``, ``legal_basis``, ``method``, ``actor``,
``details`` and ``dedup_key`` describe *what kind* of processing happened and *why*: category
and table names, counts, rule names, request/task ids, bucket dates. They must NEVER contain
personal data (names, contacts, member ids, file names, row values): the ledger outlives the
data it records and is handed to the privacy officer. Link an entry to a person only through
``subject_ref`` (``crypto.subject_ref``: a keyed HMAC). ``details`` is part of the hash.

Concurrency: ``append`` locks the single ``ledger_head`` row for the rest of the caller's
transaction, so writers serialise and the chain stays linear; the entry commits (or rolls
back) together with the archive-side change it records. Call it as the last statement before
commit: that keeps the lock short, and keeps one lock order everywhere (data keys, then
records, then the ledger head), so the sweep and the purge cannot deadlock each other.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, CursorResult, RowMapping, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.vault.chain import GENESIS_HASH, VerifyResult, entry_hash, verify_chain
from models.anchor import LedgerCheckpoint
from models.archive import LedgerEntry, LedgerHead
from models.base import utcnow

HEAD_ID = 1
log = logging.getLogger(__name__)

# How long a process trusts the checkpoint floor it read: checkpoints move once a night, and
# reading the primary DB on every append would put a round trip in every ledger writer.
FLOOR_TTL_SECONDS = 300.0
_floor_lock = threading.Lock()
_floor_cache: dict[str, tuple[float, int]] = {}


class LedgerBroken(LifecycleError):
    """The ledger failed verification, or its head is older than a checkpoint."""

    exit_code = 1


# Korean labels for the privacy officer; codes stay English in the DB and in the hash.
ACTION_LABELS = {
    "archive": "분리보관",
    "destroy": "파기",
    "key_destroy": "암호키 파기",
    "file_shred": "파일 완전삭제",
    "correction": "정정",
    "notification": "제3자 통지",
    "restriction": "처리정지",
    "tamper_detected": "위변조 탐지",
    "archive_retrieve": "분리보관 자료 열람·제출",
    "hold": "보존 명령 설정",
    "hold_release": "보존 명령 해제",
    "hold_keep": "보존 명령에 따른 파기 보류",
    "file_keep": "다른 기록이 참조하는 파일 보존",
    "ledger_replay": "백업 복원 후 파기 재적용",
    "consent_withdrawal": "동의 철회",
    "incident_open": "유출등 사고 접수",
    "incident_notify": "유출등 정보주체 통지",
    "incident_report": "유출등 신고서 작성",
    "incident_submit": "유출등 신고 제출 기록",
    "incident_close": "유출등 사고 종결",
    "paper_destroy": "종이 문서 파기",
    "signoff": "보호책임자 파기 결과 확인",
}

# The privacy officer's confirmation of a range of entries (``lifecycle.vault.register``): its
# ``details`` name the range and the hash of its last entry, which :func:`verify` checks.
SIGNOFF = "signoff"

# The whole chain: corrections, notifications and archive moves too, so the headings say 처리
# (processing), not 파기; the register (lifecycle.vault.register) is the 파기 관리대장 proper.
CSV_COLUMNS: tuple[tuple[str, str], ...] = (
    ("seq", "일련번호"),
    ("occurred_at", "처리일시"),
    ("action", "처리구분"),
    ("categories", "개인정보 항목"),
    ("tables", "대상 테이블"),
    ("subjects", "정보주체 수"),
    ("rows", "건수"),
    ("reason", "사유"),
    ("legal_basis", "법적 근거"),
    ("method", "처리방법"),
    ("actor", "처리자"),
    ("task_id", "작업 ID"),
    ("request_id", "요청번호"),
    ("subject_ref", "정보주체 가명"),
    ("details", "상세"),
    ("hash", "해시"),
    ("prev_hash", "이전 해시"),
)


def _lock_head(session: Session) -> LedgerHead:
    """Take the ledger-wide write lock; create the head row if it is missing."""
    pg = session.get_bind().dialect.name == "postgresql"
    for _ in range(2):
        if pg:
            head = session.execute(
                select(LedgerHead)
                .where(LedgerHead.id == HEAD_ID)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
        else:
            # SQLite has no row locks: writing first takes the database write lock, which
            # serialises appenders until commit just like FOR UPDATE does.
            res = cast(
                "CursorResult[Any]",
                session.execute(
                    update(LedgerHead)
                    .where(LedgerHead.id == HEAD_ID)
                    .values(updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                ),
            )
            head = (
                session.execute(
                    select(LedgerHead)
                    .where(LedgerHead.id == HEAD_ID)
                    .execution_options(populate_existing=True)
                ).scalar_one_or_none()
                if res.rowcount
                else None
            )
        if head is not None:
            return head
        _create_head(session, pg)
    raise RuntimeError("ledger head row cannot be created")


def _create_head(session: Session, pg: bool) -> None:
    """Create the head at the chain's tip (the migration creates it; this covers a restore)."""

    tip = session.execute(
        select(LedgerEntry.seq, LedgerEntry.hash).order_by(LedgerEntry.seq.desc()).limit(1)
    ).first()
    seq, digest = (int(tip[0]), tip[1]) if tip else (0, GENESIS_HASH)
    if tip:
        # The migration creates the head, so entries without one mean a partial restore or
        # tampering: keep recording destructions (they are legally due) but say so loudly.
        log.error("ledger head row was missing; recreating it at entry %d", seq)
    ins = (postgresql.insert if pg else sqlite.insert)(LedgerHead).values(
        id=HEAD_ID, seq=seq, hash=digest, updated_at=utcnow()
    )
    session.execute(ins.on_conflict_do_nothing(index_elements=["id"]))


def lock_head(session: Session) -> tuple[int, str]:
    """Take the ledger-wide write lock for the rest of the caller's transaction (as
    :func:`append` does; taking it again there is harmless) and return the head ``(seq, hash)``.
    For writers that must decide what to append from what the ledger holds (a sign-off)."""
    floor = checkpoint_floor()
    h = _lock_head(session)
    _refuse_head_below(h, floor)
    return h.seq, h.hash


def checkpoint_floor() -> int:
    """The highest ledger ``seq`` a checkpoint in the primary DB recorded (0 if none)."""
    url = db.engine("primary").url.render_as_string(hide_password=False)
    now = time.monotonic()
    with _floor_lock:
        cached = _floor_cache.get(url)
    if cached is not None and now - cached[0] < FLOOR_TTL_SECONDS:
        return cached[1]
    with db.session("primary") as p:
        floor = int(p.scalar(select(func.coalesce(func.max(LedgerCheckpoint.seq), 0))) or 0)
    with _floor_lock:
        _floor_cache[url] = (now, floor)
    return floor


def forget_checkpoint_floor() -> None:
    """Drop the cached floor (a checkpoint was just written by this process)."""
    with _floor_lock:
        _floor_cache.clear()


def _refuse_head_below(head: LedgerHead, floor: int) -> None:
    # Appending on top of a truncated chain would bury the evidence under fresh entries and
    # make the ledger look like it simply has fewer destructions; stop and say so instead.
    if head.seq < floor:
        raise LedgerBroken(
            f"ledger head is at entry {head.seq} but a checkpoint recorded entry {floor}: "
            "entries were deleted from the archive DB; nothing is appended until the archive "
            "DB is restored (run `lifecycle ledger verify`)"
        )


def _by_dedup(session: Session, dedup_key: str) -> LedgerEntry | None:
    return session.execute(
        select(LedgerEntry).where(LedgerEntry.dedup_key == dedup_key)
    ).scalar_one_or_none()


# A safety net under the contract above, not a replacement for it: values that are personal
# data by their very shape (e-mail address, Korean mobile/landline number, resident
# registration number) are refused outright.
_PERSONAL_SHAPES = re.compile(
    r"[\w.+-]+@[\w-]+\.[\w.-]+"
    r"|\b0\d{1,2}-?\d{3,4}-?\d{4}\b"
    r"|\b\d{6}-?[1-8]\d{6}\b"
)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def _refuse_personal_shapes(**fields: Any) -> None:
    for name, value in fields.items():
        for text_ in _strings(value):
            if _PERSONAL_SHAPES.search(text_):
                raise UserError(
                    f"ledger entry field {name!r} looks like it holds personal data "
                    "(e-mail, phone or resident registration number); the ledger must not"
                )


def refuse_personal_shapes(**fields: Any) -> None:
    """Refuse operator text a job will write to the ledger later (a reason), up front: the same
    check :func:`append` makes, so the command fails before anything starts."""
    _refuse_personal_shapes(**fields)


def _norm_list(values: Iterable[str] | str | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return sorted({str(v) for v in values})


_FIELDS = (
    "action", "categories", "tables", "subjects", "rows", "reason", "legal_basis", "method",
    "actor", "task_id", "request_id", "subject_ref", "details", "dedup_key",
)  # fmt: skip


def _prepare(e: Mapping[str, Any]) -> dict[str, Any]:
    """One entry's fields checked and normalised (the keyword arguments of :func:`append`).

    See the module docstring: no personal data in any text field or in ``details``; values
    shaped like personal data (e-mail, phone, RRN) are refused with UserError.
    """
    unknown = set(e) - set(_FIELDS)
    if unknown:
        raise UserError(f"ledger entry has unknown fields: {', '.join(sorted(unknown))}")
    if not e.get("action"):
        raise UserError("ledger entry needs an action")
    subjects, rows = int(e.get("subjects", 0)), int(e.get("rows", 0))
    if subjects < 0 or rows < 0:
        raise UserError("ledger entry counts must not be negative")
    details_d = dict(e.get("details") or {})
    try:  # fail here, not half-way through verify, if details cannot be hashed canonically
        json.dumps(details_d, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"ledger entry details are not plain JSON: {exc}") from None
    cats, tabs = e.get("categories"), e.get("tables")
    _refuse_personal_shapes(
        reason=e.get("reason") or "",
        legal_basis=e.get("legal_basis") or "",
        method=e.get("method") or "",
        actor=e.get("actor") or "",
        categories=list(cats or []) if not isinstance(cats, str) else cats,
        tables=list(tabs or []) if not isinstance(tabs, str) else tabs,
        details=details_d,
        dedup_key=e.get("dedup_key"),
    )
    return {
        "action": e["action"],
        "categories": _norm_list(cats),
        "tables": _norm_list(tabs),
        "subjects": subjects,
        "rows": rows,
        "reason": e.get("reason") or "",
        "legal_basis": e.get("legal_basis") or "",
        "method": e.get("method") or "",
        "actor": e.get("actor") or "",
        "task_id": e.get("task_id"),
        "request_id": e.get("request_id"),
        "subject_ref": e.get("subject_ref"),
        "details": details_d,
        "dedup_key": e.get("dedup_key"),
    }


def append(
    session: Session,
    *,
    action: str,
    categories: Iterable[str] | str | None,
    tables: Iterable[str] | str | None,
    subjects: int,
    rows: int,
    reason: str,
    legal_basis: str,
    method: str,
    actor: str,
    task_id: str | None = None,
    request_id: int | None = None,
    subject_ref: str | None = None,
    details: Mapping[str, Any] | None = None,
    dedup_key: str | None = None,
) -> LedgerEntry | None:
    """Append one entry inside the caller's archive-DB transaction and return it.

    With ``dedup_key`` (e.g. ``f"archive:req{request_id}:{table}"``: build it from request,
    task, bucket and batch ids, never from member ids), a second append with the same key
    returns the entry already recorded and appends nothing, so a re-run step records itself
    once. Categories and tables are stored sorted and de-duplicated. See the module docstring:
    no personal data in any text field or in ``details``; values shaped like personal data
    (e-mail, phone, RRN) are refused with UserError.
    """
    fields = _prepare(
        {
            "action": action,
            "categories": categories,
            "tables": tables,
            "subjects": subjects,
            "rows": rows,
            "reason": reason,
            "legal_basis": legal_basis,
            "method": method,
            "actor": actor,
            "task_id": task_id,
            "request_id": request_id,
            "subject_ref": subject_ref,
            "details": details,
            "dedup_key": dedup_key,
        }
    )
    if dedup_key is not None:
        existing = _by_dedup(session, dedup_key)
        if existing is not None:
            return existing
    floor = checkpoint_floor()
    head = _lock_head(session)
    _refuse_head_below(head, floor)
    if dedup_key is not None:
        # A concurrent writer with the same key may have committed while we waited.
        existing = _by_dedup(session, dedup_key)
        if existing is not None:
            return existing
    now = utcnow()
    fields = {"seq": head.seq + 1, "occurred_at": now, **fields}
    digest = entry_hash(head.hash, fields)
    session.execute(insert(LedgerEntry).values(**fields, prev_hash=head.hash, hash=digest))
    session.execute(
        update(LedgerHead)
        .where(LedgerHead.id == HEAD_ID)
        .values(seq=fields["seq"], hash=digest, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.expire(head)
    return session.execute(select(LedgerEntry).where(LedgerEntry.seq == fields["seq"])).scalar_one()


def append_many(session: Session, entries: Iterable[Mapping[str, Any]]) -> int:
    """Append several entries (each the keyword arguments of :func:`append`) under one lock.

    Same checks and chain as calling :func:`append` once per entry, in order, but with a
    handful of round trips instead of six per entry: the sweep records a dozen entries per
    batch and every writer waits on the ledger head while one holds it. Entries whose
    ``dedup_key`` is already recorded (or repeated in ``entries``) are skipped. Returns how many
    were appended.
    """
    prepared = [_prepare(e) for e in entries]
    if not prepared:
        return 0

    def recorded(keys: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            found.update(
                session.scalars(
                    select(LedgerEntry.dedup_key).where(
                        LedgerEntry.dedup_key.in_(keys[i : i + 500])
                    )
                )
            )
        return found

    def fresh(items: list[dict[str, Any]], seen: set[str]) -> list[dict[str, Any]]:
        out = []
        for f in items:
            k = f["dedup_key"]
            if k is not None:
                if k in seen:
                    continue
                seen.add(k)
            out.append(f)
        return out

    keys = [f["dedup_key"] for f in prepared if f["dedup_key"] is not None]
    todo = fresh(prepared, recorded(keys) if keys else set())
    if not todo:
        return 0
    floor = checkpoint_floor()
    head = _lock_head(session)
    _refuse_head_below(head, floor)
    if keys:
        # A concurrent writer with one of the keys may have committed while we waited.
        todo = fresh(todo, recorded([f["dedup_key"] for f in todo if f["dedup_key"]]))
        if not todo:
            return 0
    seq, prev = head.seq, head.hash
    now = utcnow()
    rows_out: list[dict[str, Any]] = []
    for f in todo:
        seq += 1
        fields = {"seq": seq, "occurred_at": now, **f}
        digest = entry_hash(prev, fields)
        rows_out.append({**fields, "prev_hash": prev, "hash": digest})
        prev = digest
    session.execute(insert(LedgerEntry), rows_out)
    session.execute(
        update(LedgerHead)
        .where(LedgerHead.id == HEAD_ID)
        .values(seq=seq, hash=prev, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.expire(head)
    return len(rows_out)


# -- reading -------------------------------------------------------------------------------------


def iter_entries(session: Session | Connection, batch: int = 2000) -> Iterator[RowMapping]:
    """Entries in seq order as plain mappings, in keyset pages: a million entries stay cheap
    and no ORM object piles up in the caller's session."""
    table = LedgerEntry.__table__
    last = 0
    while True:
        page = session.execute(
            select(table).where(table.c.seq > last).order_by(table.c.seq).limit(batch)
        ).all()
        if not page:
            return
        for row in page:
            yield row._mapping
        last = page[-1].seq


def head(session: Session | Connection) -> tuple[int, str] | None:
    row = session.execute(
        select(LedgerHead.seq, LedgerHead.hash).where(LedgerHead.id == HEAD_ID)
    ).first()
    return (int(row[0]), row[1]) if row else None


@contextmanager
def snapshot(session: Session) -> Iterator[Connection]:
    """A read-only connection to ``session``'s database whose reads all see one moment.

    Without it the head and the entries are read at different moments, and an entry committed
    in between looks inserted past the head: a false tampering alarm whenever the system is
    busy. It is a connection of its own, so it works whatever ``session`` already did (and does
    not see ``session``'s uncommitted writes).
    """
    bind = session.get_bind()
    engine = bind.engine if isinstance(bind, Connection) else bind
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite starts no transaction for a SELECT, so each statement would read its own
            # WAL snapshot; an explicit BEGIN holds one read snapshot until the rollback.
            conn.exec_driver_sql("BEGIN")
            snap = conn
        else:
            # PostgreSQL, MariaDB/MySQL: the snapshot is taken at the first read and kept.
            snap = conn.execution_options(isolation_level="REPEATABLE READ")
        try:
            yield snap
        finally:
            snap.rollback()


def verify(session: Session, anchors: Mapping[int, str] | None = None) -> VerifyResult:
    """Verify the whole chain against the head row and ``anchors`` (checkpoints), and every
    sign-off against the entry it confirms, read-only, in one snapshot of the database (see
    :func:`snapshot`)."""
    with snapshot(session) as snap:
        h = head(snap)
        result = verify_chain(iter_entries(snap), head=h, anchors=anchors)
        if result.ok:
            bad = check_signoffs(snap)
            if bad is not None:
                return VerifyResult(False, result.checked, bad[0], bad[1])
    if result.ok and h is None and result.checked:
        # The migration creates the head; entries without one means it was deleted.
        return VerifyResult(False, result.checked, result.checked, "ledger head row missing")
    return result


def check_signoffs(conn: Session | Connection) -> tuple[int, str] | None:
    """``(seq, reason)`` of the first sign-off that does not match the chain, else None.

    A sign-off records the hash of the last entry it confirms, inside its own hashed details:
    a chain rewritten below it (every hash recomputed) no longer carries that hash, so the
    officer's confirmation is an anchor like a checkpoint. Ranges must follow each other
    without gap or overlap, each ending before the sign-off itself.
    """
    t = LedgerEntry.__table__
    rows = conn.execute(
        select(t.c.seq, t.c.details).where(t.c.action == SIGNOFF).order_by(t.c.seq)
    ).all()
    if not rows:
        return None
    wanted = set()
    for _, d in rows:
        through = (d or {}).get("through_seq")
        if isinstance(through, int):
            wanted.add(through)
    hashes: dict[int, str] = {}
    ordered = sorted(wanted)
    for i in range(0, len(ordered), 500):
        hashes.update(
            (int(seq), digest)
            for seq, digest in conn.execute(
                select(t.c.seq, t.c.hash).where(t.c.seq.in_(ordered[i : i + 500]))
            )
        )
    expected_from = 1
    for seq, d in rows:
        d = d or {}
        frm, through, digest = d.get("from_seq"), d.get("through_seq"), d.get("through_hash")
        if not (isinstance(frm, int) and isinstance(through, int) and frm <= through < seq):
            return seq, "sign-off names no valid range of earlier entries (entry changed)"
        if frm != expected_from:
            return seq, (
                f"sign-off starts at entry {frm}, not {expected_from} (sign-offs overlap or "
                "leave a gap: a sign-off was changed or deleted)"
            )
        if hashes.get(through) != digest:
            return seq, (
                f"sign-off does not match entry {through}: the officer confirmed another hash "
                "(entries up to it were rewritten)"
            )
        expected_from = through + 1
    return None


def count(session: Session) -> int:
    return int(session.execute(text("SELECT count(*) FROM ledger_entries")).scalar_one())


# -- export --------------------------------------------------------------------------------------


def _csv_value(entry: Mapping[Any, Any], name: str, tz: ZoneInfo) -> str:
    value = entry[name]
    if value is None:
        return ""
    if name == "occurred_at":
        return as_utc(value).astimezone(tz).isoformat(sep=" ", timespec="seconds")
    if name == "action":
        label = ACTION_LABELS.get(value)
        return f"{label} ({value})" if label else value
    if name in ("categories", "tables"):
        return csv_cell(", ".join(value))
    if name == "details":
        return csv_cell(json.dumps(value, sort_keys=True, ensure_ascii=False)) if value else ""
    return csv_cell(str(value))


def csv_cell(text_: str) -> str:
    """Stop Excel from evaluating a cell as a formula (CSV injection)."""
    return "'" + text_ if text_[:1] in ("=", "+", "-", "@", "\t", "\r") else text_


def export_csv(session: Session, out: IO[str], tz: str = "Asia/Seoul") -> int:
    """Write the ledger as CSV with Korean headings, times in ``tz``; returns rows written."""
    zone = ZoneInfo(tz)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([label for _, label in CSV_COLUMNS])
    n = 0
    for entry in iter_entries(session):
        writer.writerow([_csv_value(entry, name, zone) for name, _ in CSV_COLUMNS])
        n += 1
    return n


__all__ = [
    "ACTION_LABELS",
    "CSV_COLUMNS",
    "SIGNOFF",
    "LedgerBroken",
    "append",
    "append_many",
    "check_signoffs",
    "checkpoint_floor",
    "count",
    "export_csv",
    "forget_checkpoint_floor",
    "head",
    "iter_entries",
    "lock_head",
    "snapshot",
    "verify",
]
