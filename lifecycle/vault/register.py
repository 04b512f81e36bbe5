"""The destruction register (개인정보 파기 관리대장) read from the ledger, and what people add to
it: paper destructions and the privacy officer's sign-off. Functions over an archive-DB session and
plain values (no CLI, no Celery), for `lifecycle ledger register|paper|signoff` and a console.

What the 표준 개인정보 보호지침 asks (고시; our reading, see docs/privacy-officer.md): 제10조①
destruction within 5 days of the data becoming unnecessary, ④ the 개인정보 보호책임자 checks
the result after a destruction, ⑤ the destruction is recorded and kept. The register is a view
of the ledger's entries by kind:

- ``destruction``: rows deleted (``destroy``), archived buckets crypto-shredded
  (``key_destroy``), files overwritten (``file_shred``);
- ``archive-move``: rows moved to the separate archive (``archive``, 법 제21조③): not a
  destruction, so never under 폐기일;
- ``paper``: paper records destroyed by a person (``paper_destroy``), entered with what, how,
  when, by whom and the witness.

A sign-off (``signoff``) is the officer's confirmation of a contiguous range of entries; it is
chained like every entry, and names the hash of the last entry it confirms, which
``ledger.verify`` checks. Only names listed in ``LIFECYCLE_PRIVACY_OFFICERS`` may sign off.

Nothing here writes personal data: the member filter takes the member's pseudonym
(``keystore.subject_ref``), and paper entries are refused when a field is shaped like personal
data, like every ledger entry.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.vault import ledger
from lifecycle.vault.chain import utc_iso
from models.archive import LedgerEntry
from models.base import utcnow

PAPER = "paper_destroy"

# Register kind -> the ledger actions it shows. One name per kind on the command line and in
# the console; the Korean label is what the printed register says.
KINDS: dict[str, tuple[str, ...]] = {
    "destruction": ("destroy", "key_destroy", "file_shred"),
    "archive-move": ("archive",),
    "paper": (PAPER,),
}
KIND_LABELS = {"destruction": "파기", "archive-move": "분리보관", "paper": "종이 문서 파기"}
_KIND_OF = {action: kind for kind, actions in KINDS.items() for action in actions}

# What was destroyed, as the form's 자료의 종류 column names a medium.
_MEDIUM = {
    "destroy": "전자적 파일(DB 레코드)",
    "key_destroy": "전자적 파일(분리보관 DB 암호키 파기)",
    "file_shred": "전자적 파일(업로드 파일)",
    "archive": "전자적 파일(DB 레코드)",
    PAPER: "종이 문서",
}

PAPER_BASIS = "개인정보 보호법 제21조, 같은 법 시행령 제16조제1항제2호 (파쇄 또는 소각)"
SIGNOFF_BASIS = "표준 개인정보 보호지침 제10조제4항 (개인정보 보호책임자의 파기 결과 확인)"

# The 개인정보파일 파기 관리대장 form of the 표준 개인정보 보호지침 (별지 서식), its columns in
# order, then ours: the form has no room for the method, the legal basis, counts, the witness of
# a paper destruction or the hash that ties the row to the chain.
FORM_COLUMNS: tuple[str, ...] = (
    "번호",
    "개인정보파일명",
    "자료의 종류",
    "생성일",
    "폐기일",
    "폐기사유",
    "처리담당자",
    "처리부서장",
)
EXTRA_COLUMNS: tuple[str, ...] = (
    "구분",
    "처리일시",
    "파기방법",
    "법적 근거",
    "정보주체 수",
    "건수",
    "입회자",
    "보호책임자 확인일시",
    "대장 일련번호",
    "해시",
)
CSV_COLUMNS = FORM_COLUMNS + EXTRA_COLUMNS


@dataclass(frozen=True)
class SignOff:
    """The officer's confirmation of entries ``from_seq``..``through_seq`` (entry ``seq``)."""

    seq: int
    officer: str
    at: datetime
    from_seq: int
    through_seq: int
    through_hash: str


@dataclass(frozen=True)
class Filter:
    """Which register rows: kinds, one member's (by pseudonym), and a time window [since,
    until) in UTC."""

    kinds: tuple[str, ...] = tuple(KINDS)
    subject_ref: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Row:
    """One register row: a ledger entry of a register kind, with the sign-off covering it."""

    seq: int
    kind: str
    action: str
    occurred_at: datetime
    tables: list[str]
    categories: list[str]
    subjects: int
    rows: int
    reason: str
    legal_basis: str
    method: str
    handler: str
    task_id: str | None
    request_id: int | None
    hash: str
    what: str | None
    witness: str | None
    destroyed_at: datetime | None
    signoff: SignOff | None

    def as_json(self, tz: ZoneInfo) -> dict[str, Any]:
        def local(v: datetime | None) -> str | None:
            return None if v is None else as_utc(v).astimezone(tz).isoformat(timespec="seconds")

        s = self.signoff
        return {
            "seq": self.seq,
            "kind": self.kind,
            "action": self.action,
            "occurred_at": local(self.occurred_at),
            "destroyed_at": local(self.destroyed_at),
            "tables": self.tables,
            "categories": self.categories,
            "subjects": self.subjects,
            "rows": self.rows,
            "reason": self.reason,
            "legal_basis": self.legal_basis,
            "method": self.method,
            "handler": self.handler,
            "task_id": self.task_id,
            "request_id": self.request_id,
            "what": self.what,
            "witness": self.witness,
            "signed_off_by": s.officer if s else None,
            "signed_off_at": local(s.at) if s else None,
            "signoff_seq": s.seq if s else None,
            "hash": self.hash,
        }


# -- reading -------------------------------------------------------------------------------------


def day_window(
    start: date | None, end: date | None, tz: str
) -> tuple[datetime | None, datetime | None]:
    """``[since, until)`` in UTC for the local days ``start``..``end`` (both included)."""
    if start is not None and end is not None and start > end:
        raise UserError(f"--from {start.isoformat()} is after --to {end.isoformat()}")
    zone = ZoneInfo(tz)

    def at(d: date) -> datetime:
        return datetime.combine(d, time.min, tzinfo=zone).astimezone(UTC)

    return (
        at(start) if start is not None else None,
        at(end + timedelta(days=1)) if end is not None else None,
    )


def signoffs(conn: Session | Connection) -> list[SignOff]:
    """Every sign-off, oldest first (few: one a week or a month)."""
    t = LedgerEntry.__table__
    out = []
    for seq, at, d in conn.execute(
        select(t.c.seq, t.c.occurred_at, t.c.details)
        .where(t.c.action == ledger.SIGNOFF)
        .order_by(t.c.seq)
    ):
        d = d or {}
        out.append(
            SignOff(
                seq=int(seq),
                officer=str(d.get("officer", "")),
                at=as_utc(at),
                from_seq=int(d.get("from_seq", 0)),
                through_seq=int(d.get("through_seq", 0)),
                through_hash=str(d.get("through_hash", "")),
            )
        )
    return out


def covering(signed: Sequence[SignOff], seq: int) -> SignOff | None:
    """The sign-off whose range holds entry ``seq`` (ranges are contiguous and ordered)."""
    i = bisect.bisect_left([s.through_seq for s in signed], seq)
    if i < len(signed) and signed[i].from_seq <= seq:
        return signed[i]
    return None


def _handler(actor: str, task_id: str | None) -> str:
    # The ledger's actor is the job (lifecycle.rights.erase, lifecycle.shred.files@host) or the
    # person (operator:NAME, handler:NAME); the task id finds the run in Flower.
    return f"{actor} (작업 {task_id})" if task_id else actor


def rows(conn: Session | Connection, flt: Filter = Filter(), batch: int = 2000) -> Iterator[Row]:
    """Register rows in ledger order, in keyset pages (a year of sweeps stays cheap)."""
    unknown = set(flt.kinds) - set(KINDS)
    if unknown:
        raise UserError(f"unknown register kind {sorted(unknown)[0]!r}; one of {', '.join(KINDS)}")
    actions = [a for k in flt.kinds for a in KINDS[k]]
    t = LedgerEntry.__table__
    conds: list[ColumnElement[bool]] = [t.c.action.in_(actions)]
    if flt.subject_ref is not None:
        conds.append(t.c.subject_ref == flt.subject_ref)
    if flt.since is not None:
        conds.append(t.c.occurred_at >= flt.since)
    if flt.until is not None:
        conds.append(t.c.occurred_at < flt.until)
    signed = signoffs(conn)
    last = 0
    while True:
        page = conn.execute(
            select(t).where(t.c.seq > last, *conds).order_by(t.c.seq).limit(batch)
        ).all()
        if not page:
            return
        for r in page:
            yield _row(r._mapping, signed)
        last = page[-1].seq


def _row(e: Mapping[Any, Any], signed: Sequence[SignOff]) -> Row:
    d = e["details"] or {}
    paper = e["action"] == PAPER
    destroyed = d.get("destroyed_at") if paper else None
    return Row(
        seq=int(e["seq"]),
        kind=_KIND_OF[e["action"]],
        action=e["action"],
        occurred_at=as_utc(e["occurred_at"]),
        tables=list(e["tables"] or []),
        categories=list(e["categories"] or []),
        subjects=int(e["subjects"] or 0),
        rows=int(e["rows"] or 0),
        reason=e["reason"] or "",
        legal_basis=e["legal_basis"] or "",
        method=e["method"] or "",
        handler=d.get("handler", "") if paper else _handler(e["actor"] or "", e["task_id"]),
        task_id=e["task_id"],
        request_id=e["request_id"],
        hash=e["hash"],
        what=d.get("what") if paper else None,
        witness=d.get("witness") if paper else None,
        destroyed_at=datetime.fromisoformat(destroyed) if destroyed else None,
        signoff=covering(signed, int(e["seq"])),
    )


def form_row(n: int, row: Row, tz: ZoneInfo) -> list[str]:
    """One line of the form (:data:`CSV_COLUMNS`), times in ``tz``; ``n`` is the 번호."""

    def day(v: datetime | None) -> str:
        return "" if v is None else as_utc(v).astimezone(tz).date().isoformat()

    def moment(v: datetime | None) -> str:
        return "" if v is None else as_utc(v).astimezone(tz).isoformat(sep=" ", timespec="seconds")

    destroyed = None if row.kind == "archive-move" else (row.destroyed_at or row.occurred_at)
    items = ", ".join(row.categories)
    medium = _MEDIUM.get(row.action, "")
    s = row.signoff
    cells = [
        str(n),
        row.what if row.what else ", ".join(row.tables),
        f"{medium}: {items}" if items else medium,
        "",  # 생성일: the ledger does not know when destroyed data was collected
        day(destroyed),
        row.reason,
        row.handler,
        s.officer if s else "",
        KIND_LABELS[row.kind],
        moment(row.occurred_at),
        row.method,
        row.legal_basis,
        str(row.subjects),
        str(row.rows),
        row.witness or "",
        moment(s.at) if s else "",
        str(row.seq),
        row.hash,
    ]
    return [ledger.csv_cell(c) for c in cells]


# -- writing -------------------------------------------------------------------------------------


def _text(name: str, value: str, limit: int) -> str:
    v = " ".join((value or "").split())
    if not v:
        raise UserError(f"{name} is required")
    if len(v) > limit or not v.isprintable():
        raise UserError(f"{name} must be printable text of at most {limit} characters")
    return v


def record_paper(
    session: Session,
    *,
    what: str,
    method: str,
    handler: str,
    witness: str,
    destroyed_at: datetime,
    recorded_by: str,
    categories: Iterable[str] = (),
    count: int = 0,
    reason: str = "보유기간 경과",
    legal_basis: str = PAPER_BASIS,
) -> LedgerEntry:
    """Record a paper destruction a person carried out, in the caller's transaction.

    ``what`` says which records (kind and period, e.g. "2019년 상담 신청서 원본"), never whose;
    ``handler`` destroyed them and ``witness`` saw it done (another person). Recording the same
    destruction twice (same what, method, time, handler) returns the first entry.
    """
    what = _text("--what", what, 200)
    method = _text("--method", method, 100)
    handler = _text("--handler", handler, 100)
    witness = _text("--witness", witness, 100)
    reason = _text("--reason", reason, 200)
    if handler == witness:
        raise UserError("--witness must be someone other than --handler")
    if count < 0:
        raise UserError("--count must not be negative")
    when = as_utc(destroyed_at).astimezone(UTC)
    if when > utcnow() + timedelta(minutes=5):
        raise UserError("--at is in the future: record a destruction once it is done")
    details = {
        "what": what,
        "handler": handler,
        "witness": witness,
        "destroyed_at": when.isoformat(),
        "recorded_by": recorded_by,
    }
    key = hashlib.sha256(
        json.dumps([what, method, handler, utc_iso(when)], ensure_ascii=False).encode()
    ).hexdigest()[:32]
    entry = ledger.append(
        session,
        action=PAPER,
        categories=list(categories),
        tables=[],
        subjects=0,
        rows=count,
        reason=reason,
        legal_basis=legal_basis,
        method=method,
        actor=f"handler:{handler}",
        details=details,
        dedup_key=f"paper:{key}",
    )
    assert entry is not None
    return entry


def through_seq(conn: Session | Connection, through: str, tz: str) -> int:
    """The last entry a sign-off ``--through`` names: an entry number, or a local date (the
    last entry recorded on or before that day)."""
    raw = through.strip()
    if raw.isdigit():
        return int(raw)
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise UserError("--through must be an entry number or a date YYYY-MM-DD") from None
    _, until = day_window(None, day, tz)
    t = LedgerEntry.__table__
    seq = conn.execute(
        select(t.c.seq).where(t.c.occurred_at < until).order_by(t.c.seq.desc()).limit(1)
    ).scalar()
    if seq is None:
        raise UserError(f"the ledger has no entry on or before {day.isoformat()}")
    return int(seq)


def check_officer(officer: str, officers: Sequence[str]) -> str:
    """``officer`` (whitespace normalised) if it is a registered privacy officer, else
    UserError."""
    name = " ".join(officer.split())
    if not officers:
        raise UserError(
            "no privacy officer is registered: set LIFECYCLE_PRIVACY_OFFICERS to the officer's "
            "name (개인정보 보호책임자)"
        )
    if name not in officers:
        raise UserError(
            f"{name!r} is not a registered privacy officer (LIFECYCLE_PRIVACY_OFFICERS); only "
            "the 개인정보 보호책임자 confirms the register"
        )
    return name


def sign_off(
    session: Session, *, through: int, officer: str, officers: Sequence[str], operator: str
) -> tuple[SignOff, bool]:
    """The officer confirms every entry after the last sign-off up to entry ``through``.

    Returns the sign-off and whether it is new (signing the same range again is a no-op).
    Refused (UserError, nothing written) for a name not in ``officers``, an entry that does not
    exist, or a range already confirmed. The caller verifies the chain first: confirming a
    tampered chain would vouch for it.
    """
    name = check_officer(officer, officers)
    head_seq, _ = ledger.lock_head(session)
    signed = signoffs(session)
    for s in signed:
        if s.through_seq == through:
            return s, False
    start = signed[-1].through_seq + 1 if signed else 1
    if through < 1 or through > head_seq:
        raise UserError(f"--through {through}: the ledger has entries 1 to {head_seq}")
    if through < start:
        raise UserError(
            f"entries up to {start - 1} are already signed off (entry {signed[-1].seq}); "
            f"sign off a later entry"
        )
    t = LedgerEntry.__table__
    digest = session.execute(select(t.c.hash).where(t.c.seq == through)).scalar_one()
    entry = ledger.append(
        session,
        action=ledger.SIGNOFF,
        categories=[],
        tables=[],
        subjects=0,
        rows=through - start + 1,
        reason="개인정보 파기 결과 확인",
        legal_basis=SIGNOFF_BASIS,
        method="",
        actor=f"officer:{name}",
        details={
            "officer": name,
            "operator": operator,
            "from_seq": start,
            "through_seq": through,
            "through_hash": digest,
        },
        dedup_key=f"signoff:{through}",
    )
    assert entry is not None
    return (
        SignOff(entry.seq, name, as_utc(entry.occurred_at), start, through, digest),
        True,
    )


__all__ = [
    "CSV_COLUMNS",
    "EXTRA_COLUMNS",
    "FORM_COLUMNS",
    "KINDS",
    "KIND_LABELS",
    "PAPER",
    "Filter",
    "Row",
    "SignOff",
    "check_officer",
    "covering",
    "day_window",
    "form_row",
    "record_paper",
    "rows",
    "sign_off",
    "signoffs",
    "through_seq",
]
