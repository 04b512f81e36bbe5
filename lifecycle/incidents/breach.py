"""Personal-data breaches (개인정보 유출등): open an incident, find who is affected from the data
map, tell them (법 제34조①), draft the report to the regulator (법 제34조③, 시행령 제40조),
record that it was submitted (when, to whom, the 접수번호), keep the 72-hour clock (시행령
제39조①·제40조①), close it with a record.

Drafting is not reporting: a report the grounds of 시행령 제40조① make due stays outstanding
(status attention, and ``close`` refuses without a reason) until the officer records its
submission; the product never submits anything itself.

The clock runs from ``detected_at`` (when the controller learnt of the breach). Who is affected
is fixed when the incident is opened (``lifecycle_incident_members``): members with rows in the
named tables (every table holding a named category, if no tables are named), restricted to rows
whose record date falls in the window where the data map gives the table one (``retain_from``
or its age column); every row otherwise, and the incident says which tables were taken whole.

Telling them goes through the notices machinery (:mod:`lifecycle.notices`): one notice of kind
``breach`` whose recipients are the incident's members, sent in batches exactly once per member
(a re-run adds nobody twice and resends nothing sent). A member with no usable address ends
``not_sent`` (``NoAddress``) and is counted in ``incident show``, the report and ``status``.

Every step writes one ledger entry (deduplicated per incident and step) naming categories,
tables and counts, never a member; :mod:`lifecycle.incidents.actions` runs each step for the
CLI and the console and adds the access-log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, literal, select, update
from sqlalchemy.orm import Session

from lifecycle.channels.mailer import valid_address
from lifecycle.channels.templates import CATEGORY_LABELS, FIELD_LABELS, breach_notice, breach_report
from lifecycle.core import dbkind
from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.member_table import member_table
from lifecycle.datamap.model import DataMap
from lifecycle.notices.members import NO_ADDRESS, counts
from models.base import utcnow
from models.incidents import Incident, IncidentMember, IncidentState
from models.notices import Notice, NoticeRecipient, NoticeRecipientState, NoticeState

WINDOW = timedelta(hours=72)
BASIS = "개인정보 보호법 제34조, 시행령 제39조·제40조"
# 시행령 제40조①1호: a report is due from this many subjects, whatever the data.
REPORT_THRESHOLD = 1000
# Who received the report (법 제34조③: 보호위원회 or the 전문기관 of 시행령 제40조, KISA).
RECIPIENTS = {"pipc": "개인정보보호위원회", "kisa": "한국인터넷진흥원(KISA)"}
RECEIPT_MAX = 40
# A 접수번호 as the portals print them: letters, digits, Hangul and a few separators.
_RECEIPT = re.compile(r"^[0-9A-Za-z가-힣][0-9A-Za-z가-힣._/#-]*$")
# Times are entered to the minute: "now" typed at hh:mm:30 is not in the future.
SUBMIT_CLOCK_SLACK = timedelta(minutes=1)
NOTICE_KIND = "breach"
IM = IncidentMember.__table__
NR = NoticeRecipient.__table__

# The description file: four sections, each headed by one of these names in brackets.
SECTIONS: dict[str, tuple[str, ...]] = {
    "how": ("how", "경위"),
    "advice": ("advice", "정보주체 조치"),
    "measures": ("measures", "대응조치"),
    "contact": ("contact", "연락처"),
}
_HEADING = re.compile(r"^\s*\[([^\]]+)\]\s*$")


def parse_description(text: str) -> dict[str, str]:
    """The four sections of a description file, or a one-line UserError naming what is
    missing. ``[how]`` (경위), ``[advice]`` (정보주체 조치), ``[measures]`` (대응조치),
    ``[contact]`` (연락처): the items of 법 제34조① the data map cannot supply."""
    names = {alias: key for key, aliases in SECTIONS.items() for alias in aliases}
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            heading = m.group(1).strip()
            if heading not in names:
                raise UserError(
                    f"description file: unknown section [{heading}] (use [how], [advice], "
                    "[measures], [contact])"
                )
            current = names[heading]
            out.setdefault(current, [])
        elif current is not None:
            out[current].append(line)
        elif line.strip():
            raise UserError("description file: text before the first section heading ([how])")
    sections = {k: "\n".join(v).strip() for k, v in out.items()}
    missing = [f"[{k}]" for k in SECTIONS if not sections.get(k)]
    if missing:
        raise UserError(f"description file: missing or empty section(s) {', '.join(missing)}")
    return sections


@dataclass(frozen=True)
class Scope:
    """What the operator says was exposed, checked against the data map."""

    categories: tuple[str, ...]
    tables: tuple[str, ...]
    # table -> its record-date column (None: every row of the table is taken).
    date_columns: dict[str, str | None] = field(default_factory=dict)

    @property
    def whole_tables(self) -> list[str]:
        return [t for t in self.tables if self.date_columns.get(t) is None]


def record_date_column(dm: DataMap, table: str) -> str | None:
    """The column the data map dates a table's rows by (its ``retain_from``, or the column it
    ages by), or None."""
    tm = dm.tables[table]
    if tm.retain_from:
        return tm.retain_from
    age = tm.age
    return age[0] if age is not None else None


def check_scope(dm: DataMap, categories: Iterable[str], tables: Iterable[str]) -> Scope:
    """The categories and tables as a :class:`Scope`, or a one-line UserError."""
    cats = tuple(dict.fromkeys(c.strip() for c in categories if c.strip()))
    if not cats:
        raise UserError("--categories is required: the data-map categories that were exposed")
    known = set(dm.categories_in_use())
    unknown = [c for c in cats if c not in known]
    if unknown:
        raise UserError(
            f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(unknown)}: not "
            f"held by any table of the data map ({', '.join(sorted(known))})"
        )
    named = tuple(dict.fromkeys(t.strip() for t in tables if t.strip()))
    for t in named:
        if t not in dm.tables:
            raise UserError(f"unknown table {t!r}: not in the data map")
        if not set(dm.tables[t].columns) & set(cats):
            raise UserError(
                f"table {t} holds none of the categories {', '.join(cats)} (it holds "
                f"{', '.join(dm.tables[t].columns) or 'none'})"
            )
    chosen = named or tuple(n for n, tm in dm.tables.items() if set(tm.columns) & set(cats))
    return Scope(cats, chosen, {t: record_date_column(dm, t) for t in chosen})


def check_recipient(raw: str) -> str:
    to = raw.strip().lower()
    if to not in RECIPIENTS:
        raise UserError(f"--to must be one of {', '.join(RECIPIENTS)}, not {raw.strip()!r}")
    return to


def check_receipt(raw: str | None) -> str | None:
    """The 접수번호 as given (trimmed), or None; a one-line UserError if it is not one."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if len(text) > RECEIPT_MAX or not _RECEIPT.match(text):
        raise UserError(
            f"--receipt must be the 접수번호 only: at most {RECEIPT_MAX} letters, digits or "
            "Hangul, with . _ / # - between them"
        )
    # Here, not at the top: `lifecycle status` imports this module and has no use for the
    # ledger. The receipt goes into the ledger, which refuses these shapes anyway; say so now.
    from lifecycle.vault import ledger

    try:
        ledger.refuse_personal_shapes(receipt=text)
    except UserError:
        raise UserError(
            "--receipt looks like a phone or resident registration number: give the 접수번호"
        ) from None
    return text


def minute(when: datetime) -> datetime:
    return as_utc(when).replace(second=0, microsecond=0)


def check_times(
    occurred_from: datetime, occurred_to: datetime, detected_at: datetime, now: datetime
) -> None:
    if occurred_from > occurred_to:
        raise UserError("--from must not be after --to")
    if detected_at > now + timedelta(minutes=5):
        raise UserError("--detected-at is in the future")


# -- opening: who is affected ----------------------------------------------------------------


def _member_sources(
    dm: DataMap, md: Any, scope: Scope, occurred_from: datetime, occurred_to: datetime
) -> list[tuple[str, Any, Any]]:
    """Per table: (table, member expression, the WHERE clause picking its exposed rows)."""
    out = []
    for name in scope.tables:
        t = md.tables[name]
        expr = dm.member_expr(name, md)
        where: Any = expr.is_not(None)
        col = scope.date_columns.get(name)
        if col is not None:
            where = and_(where, t.c[col].between(occurred_from, occurred_to))
        out.append((name, expr, where))
    return out


def find_affected(
    s: Session,
    incident_id: int,
    dm: DataMap,
    md: Any,
    scope: Scope,
    occurred_from: datetime,
    occurred_to: datetime,
) -> tuple[int, int, dict[str, int]]:
    """Record the affected members of ``incident_id`` (set-based, in ``s``'s transaction);
    returns (members, rows, rows per table)."""
    per_table: dict[str, int] = {}
    for name, expr, where in _member_sources(dm, md, scope, occurred_from, occurred_to):
        t = md.tables[name]
        per_table[name] = int(s.scalar(select(func.count()).select_from(t).where(where)) or 0)
        src = select(literal(incident_id).label("incident_id"), expr.label("member_id"))
        src = src.select_from(t).where(where).distinct()
        s.execute(
            dbkind.insert_ignoring_duplicates(s, IM, ["incident_id", "member_id"]).from_select(
                ["incident_id", "member_id"], src
            )
        )
    members = int(
        s.scalar(select(func.count()).select_from(IM).where(IM.c.incident_id == incident_id)) or 0
    )
    return members, sum(per_table.values()), per_table


def count_no_contact(s: Session, incident_id: int) -> int:
    """Affected members with no usable e-mail address in the member table now (no member row,
    an empty address, or one that is not an address)."""
    mt = member_table(s.get_bind())  # type: ignore[arg-type]
    ids = select(IM.c.member_id).where(IM.c.incident_id == incident_id)
    total = int(s.scalar(select(func.count()).select_from(ids.subquery())) or 0)
    if mt.email_col is None:
        return total
    usable = 0
    rows = s.execute(select(mt.key_col, mt.email_col).where(mt.key_col.in_(ids))).all()
    for _key, address in rows:
        if valid_address(address):
            usable += 1
    return total - usable


def count_former(
    a: Session, scope: Scope, occurred_from: datetime, occurred_to: datetime
) -> tuple[int, int]:
    """Former members whose rows of the scope's tables and categories are in the archive:
    (archived during or after the window: they were in the primary while it was exposed;
    archived before it). Distinct pseudonyms: the archive knows no member ids."""
    # Here, not at the top: `lifecycle status` imports this module for the open incidents'
    # clocks and has no use for the archive's models.
    from models.archive import ArchivedRecord

    base = and_(
        ArchivedRecord.source_table.in_(scope.tables),
        ArchivedRecord.category.in_(scope.categories),
    )
    during = select(func.count(func.distinct(ArchivedRecord.subject_ref))).where(
        base, ArchivedRecord.archived_at >= occurred_from
    )
    before_refs = select(ArchivedRecord.subject_ref).where(
        base, ArchivedRecord.archived_at < occurred_from
    )
    later_refs = select(ArchivedRecord.subject_ref).where(
        base, ArchivedRecord.archived_at >= occurred_from
    )
    before = select(func.count(func.distinct(ArchivedRecord.subject_ref))).where(
        ArchivedRecord.subject_ref.in_(before_refs), ArchivedRecord.subject_ref.not_in(later_refs)
    )
    return int(a.scalar(during) or 0), int(a.scalar(before) or 0)


def ledger_entry(a: Session, inc: Incident, step: str, actor: str, **more: Any) -> None:
    """The incident's ledger entry for ``step`` (once per incident and step)."""
    # Here, not at the top: `lifecycle status` imports this module for the open incidents'
    # clocks; the ledger (with the archive's models) is for the incident's own steps.
    from lifecycle.vault import ledger

    labels = {
        "open": "개인정보 유출등 사고 접수",
        "notify": "개인정보 유출등 정보주체 통지",
        "report": "개인정보 유출등 신고서 작성",
        "submit": "개인정보 유출등 신고 제출 기록",
        "close": "개인정보 유출등 사고 종결",
    }
    # Each recorded version of the submission is its own entry: a correction adds one.
    key = f"incident:{inc.id}:{step}" + (f":{more['revision']}" if more.get("revision") else "")
    ledger.append(
        a,
        action=f"incident_{step}",
        categories=list(inc.categories),
        tables=list(inc.tables),
        subjects=int(more.pop("subjects", inc.affected)),
        rows=int(more.pop("rows", 0)),
        reason=f"{labels[step]} (사고번호 {inc.id})",
        legal_basis=BASIS,
        method=more.pop("method", ""),
        actor=actor,
        details={"incident_id": inc.id, **more},
        dedup_key=key,
    )


# -- reading -----------------------------------------------------------------------------------


def get(s: Session, incident_id: int, *, for_update: bool = False) -> Incident:
    stmt = select(Incident).where(Incident.id == incident_id)
    if for_update:
        stmt = stmt.with_for_update()
    inc = s.scalar(stmt)
    if inc is None:
        raise UserError(f"incident {incident_id} does not exist")
    return inc


def get_open(s: Session, incident_id: int) -> Incident:
    inc = get(s, incident_id, for_update=True)
    if inc.state != IncidentState.OPEN.value:
        raise UserError(f"incident {incident_id} is closed")
    return inc


def notice_counts(s: Session, inc: Incident) -> dict[str, int]:
    """Per-member notice states of the incident (ids of none: counts only)."""
    affected = int(inc.affected)
    if inc.notice_id is None:
        return {"affected": affected, "sent": 0, "unsent": affected, "no_address": 0,
                "pending": 0, "failed": 0, "in_doubt": 0, "not_sent": 0}  # fmt: skip
    c = counts(s, inc.notice_id)
    no_address = int(
        s.scalar(
            select(func.count()).where(
                NR.c.notice_id == inc.notice_id,
                NR.c.state == NoticeRecipientState.NOT_SENT.value,
                NR.c.error_class == NO_ADDRESS,
            )
        )
        or 0
    )
    sent = c.get(NoticeRecipientState.SENT.value, 0)
    return {
        "affected": affected,
        "sent": sent,
        "unsent": max(affected - sent, 0),
        "no_address": no_address,
        "pending": c.get("pending", 0) + c.get("sending", 0) + c.get("held", 0),
        "failed": c.get("failed", 0),
        "in_doubt": c.get("in_doubt", 0),
        "not_sent": c.get("not_sent", 0),
    }


def report_grounds(dm: DataMap | None, inc: Incident) -> list[str]:
    """Which grounds of 시행령 제40조① make a report to the regulator due (empty: none found
    by the product; the operator still judges)."""
    out = []
    total = int(inc.affected) + int(inc.former_in_window)
    if total >= REPORT_THRESHOLD:
        out.append(f"1호: {REPORT_THRESHOLD:,}명 이상 ({total:,}명)")
    if dm is not None:
        sensitive = [
            c for c in inc.categories if c in dm.rules and "제23조" in dm.rules[c].legal_basis
        ]
        unique = [c for c in inc.categories if c in dm.identifiers]
        if sensitive or unique:
            out.append(f"2호: 민감정보·고유식별정보 ({', '.join(sensitive + unique)})")
    if inc.external_access:
        out.append("3호: 외부로부터의 불법적인 접근")
    return out


def report_state(inc: Incident, grounds: list[str]) -> str:
    """``submitted``, ``drafted`` (not submitted), ``due`` (not even drafted) or ``none``."""
    if inc.submitted_at is not None:
        return "submitted"
    if inc.reported_at is not None:
        return "drafted"
    return "due" if grounds else "none"


def _iso(when: datetime | None) -> str | None:
    return as_utc(when).isoformat() if when is not None else None


def summary(s: Session, inc: Incident, now: datetime, dm: DataMap | None = None) -> dict[str, Any]:
    """One incident as plain data (status, `incident show`, `--json`): no personal data."""
    deadline = as_utc(inc.deadline_at)
    left = int((deadline - now).total_seconds())
    n = notice_counts(s, inc)
    grounds = report_grounds(dm, inc)
    return {
        "id": inc.id,
        "state": inc.state,
        "categories": list(inc.categories),
        "tables": list(inc.tables),
        "whole_tables": list(inc.whole_tables),
        "occurred_from": as_utc(inc.occurred_from).isoformat(),
        "occurred_to": as_utc(inc.occurred_to).isoformat(),
        "detected_at": as_utc(inc.detected_at).isoformat(),
        "deadline_at": deadline.isoformat(),
        "seconds_left": left,
        "overdue": left < 0 and inc.state == IncidentState.OPEN.value,
        "affected": int(inc.affected),
        "affected_rows": int(inc.affected_rows),
        "no_contact_at_open": int(inc.no_contact),
        "former_in_window": int(inc.former_in_window),
        "former_archived_before": int(inc.former_archived_before),
        "notice_id": inc.notice_id,
        "notices": n,
        "notified_at": as_utc(inc.notified_at).isoformat() if inc.notified_at else None,
        "reported_at": as_utc(inc.reported_at).isoformat() if inc.reported_at else None,
        "report_grounds": grounds,
        "report_state": report_state(inc, grounds),
        # Due and not recorded as submitted: what keeps the incident under attention.
        "report_outstanding": bool(grounds) and inc.submitted_at is None,
        "submitted_at": _iso(inc.submitted_at),
        "submitted_to": inc.submitted_to,
        "submission_receipt": inc.submission_receipt,
        "submitted_by": inc.submitted_by,
        "submission_revision": int(inc.submission_revision or 0),
        "closed_at": as_utc(inc.closed_at).isoformat() if inc.closed_at else None,
        "closed_by": inc.closed_by,
    }


def open_summaries(s: Session, now: datetime, dm: DataMap | None = None) -> list[dict[str, Any]]:
    rows = s.scalars(
        select(Incident).where(Incident.state == IncidentState.OPEN.value).order_by(Incident.id)
    ).all()
    return [summary(s, inc, now, dm) for inc in rows]


def attention(inc: dict[str, Any]) -> list[str]:
    """What an open incident needs from the operator, one line each (status)."""
    n = inc["notices"]
    due = bool(inc["report_grounds"])
    if inc["overdue"]:
        late = _hours(-inc["seconds_left"])
        what = []
        if n["unsent"]:
            what.append(f"{n['unsent']} of {n['affected']} member(s) not notified")
        if due and not inc["reported_at"]:
            what.append("report to the regulator not drafted")
        elif due and not inc.get("submitted_at"):
            what.append("report not submitted (drafted, no submission recorded)")
        tail = "; ".join(what) or "not closed"
        return [f"incident {inc['id']}: 72-hour deadline passed {late} ago ({tail})"]
    out = []
    left = _hours(inc["seconds_left"])
    if n["unsent"]:
        no_address = n["no_address"] if inc["notice_id"] else inc["no_contact_at_open"]
        out.append(
            f"incident {inc['id']}: {n['unsent']} of {n['affected']} affected member(s) not "
            f"notified yet ({no_address} without an address), {left} left of 72 h"
        )
    # Its own line, not hidden behind unsent notices: the report is a separate duty (법
    # 제34조③) on the same 72 hours.
    if due and not inc["reported_at"]:
        out.append(
            f"incident {inc['id']}: report to the regulator due (시행령 제40조), {left} left "
            "of 72 h"
        )
    elif due and not inc.get("submitted_at"):
        out.append(
            f"incident {inc['id']}: report to the regulator drafted but not submitted "
            f"(시행령 제40조; lifecycle incident submitted {inc['id']}), {left} left of 72 h"
        )
    return out


def _hours(seconds: int) -> str:
    seconds = max(int(seconds), 0)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


# -- the texts ---------------------------------------------------------------------------------


def items_text(dm: DataMap | None, inc: Incident) -> str:
    """The exposed items: each category with the Korean names of its columns in the tables."""
    lines = []
    for cat in inc.categories:
        cols: list[str] = []
        if dm is not None:
            for t in inc.tables:
                tm = dm.tables.get(t)
                if tm is not None:
                    cols.extend(c for c in tm.columns_of(cat) if c not in cols)
        label = CATEGORY_LABELS.get(cat, cat)
        names = ", ".join(FIELD_LABELS.get(c, c) for c in cols)
        lines.append(f"  - {label}" + (f": {names}" if names else ""))
    return "\n".join(lines)


def _local(when: datetime, tz: Any) -> str:
    return as_utc(when).astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _indent(text: str) -> str:
    return "\n".join(f"   {ln}" if ln.strip() else "" for ln in text.splitlines())


def notice_context(dm: DataMap | None, inc: Incident, tz: Any) -> dict[str, Any]:
    d = parse_description(inc.description)
    return {
        "incident_id": inc.id,
        "items": items_text(dm, inc),
        "window": f"{_local(inc.occurred_from, tz)} ~ {_local(inc.occurred_to, tz)}",
        "detected": _local(inc.detected_at, tz),
        "deadline": _local(inc.deadline_at, tz),
        "how": d["how"],
        "advice": d["advice"],
        "measures": d["measures"],
        "contact": d["contact"],
    }


def report_text(s: Session, dm: DataMap | None, inc: Incident, tz: Any, now: datetime) -> str:
    ctx = notice_context(dm, inc, tz)
    n = notice_counts(s, inc)
    for key in ("how", "advice", "measures", "contact"):
        ctx[key] = _indent(ctx[key])
    if inc.notice_id is None:
        notified = "   아직 통지하지 않음"
    else:
        notified = (
            f"   통지 시작: {_local(inc.notified_at or now, tz)}\n"
            f"   전자우편 발송 완료 {n['sent']}명, 미발송 {n['unsent']}명 (주소 없음 "
            f"{n['no_address']}명, 발송 대기 {n['pending']}명, 수신 거부 {n['failed']}명, "
            f"확인 필요 {n['in_doubt']}명)"
        )
    whole = ""
    if inc.whole_tables:
        whole = "   기록 일자가 없는 테이블은 전체 행을 영향받은 것으로 보았음: " + ", ".join(
            inc.whole_tables
        )
    grounds = report_grounds(dm, inc)
    ctx.update(
        drafted=_local(now, tz),
        affected=f"{int(inc.affected):,}",
        rows=f"{int(inc.affected_rows):,}",
        no_contact=f"{n['no_address'] if inc.notice_id else int(inc.no_contact):,}",
        former_in_window=f"{int(inc.former_in_window):,}",
        former_before=f"{int(inc.former_archived_before):,}",
        whole=whole,
        notified=notified,
        grounds="\n".join(f"   - {g}" for g in grounds)
        or "   제1항 각 호에 해당하는 사유를 찾지 못함 (개인정보 보호책임자가 판단할 것)",
    )
    return breach_report(ctx)


# -- notifying ---------------------------------------------------------------------------------


def prepare_notice(s: Session, inc: Incident, dm: DataMap | None, tz: Any) -> tuple[int, bool]:
    """The incident's notice and a recipient row per affected member (idempotent: the notice
    is found by its key, rows already there stay as they are); (notice id, created)."""
    rendered = breach_notice(notice_context(dm, inc, tz))
    key = f"{NOTICE_KIND}:incident{inc.id}"
    n = s.scalar(select(Notice).where(Notice.dedup_key == key))
    created = n is None
    if n is None:
        n = Notice(
            kind=NOTICE_KIND,
            dedup_key=key,
            title=rendered.subject,
            body=rendered.body,
            state=NoticeState.SENDING.value,
        )
        s.add(n)
        s.flush()
    now = utcnow()
    src = select(
        literal(n.id).label("notice_id"),
        IM.c.member_id,
        literal(NoticeRecipientState.PENDING.value).label("state"),
        literal(0).label("attempts"),
        literal(now).label("created_at"),
    ).where(IM.c.incident_id == inc.id)
    s.execute(
        dbkind.insert_ignoring_duplicates(s, NR, ["notice_id", "member_id"]).from_select(
            ["notice_id", "member_id", "state", "attempts", "created_at"], src
        )
    )
    n.total = int(s.scalar(select(func.count()).where(NR.c.notice_id == n.id)) or 0)
    n.updated_at = now
    inc.notice_id = n.id
    if inc.notified_at is None:
        inc.notified_at = now
    return n.id, created


# -- the report as submitted ------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    at: datetime
    to: str
    receipt: str | None

    def text(self, tz: Any) -> str:
        receipt = f", 접수번호 {self.receipt}" if self.receipt else ""
        return f"to {self.to} at {_local(self.at, tz)}{receipt}"


def recorded_submission(inc: Incident) -> Submission | None:
    if inc.submitted_at is None or inc.submitted_to is None:
        return None
    return Submission(minute(inc.submitted_at), inc.submitted_to, inc.submission_receipt)


def record_submission(
    inc: Incident, new: Submission, who: str, now: datetime, tz: Any, *, correct: bool
) -> tuple[str, Submission | None]:
    """Record that the report was submitted (on an open incident, locked by the caller):
    ("recorded" | "unchanged" | "corrected", the version it replaced). Refused in one line,
    changing nothing: no draft yet, a time in the future or before the incident was opened,
    another version already recorded without ``correct``."""
    if inc.reported_at is None:
        raise UserError(
            f"incident {inc.id}: no report drafted yet; run `lifecycle incident report {inc.id}` "
            "first"
        )
    if new.at > now + SUBMIT_CLOCK_SLACK:
        raise UserError(f"--at {_local(new.at, tz)} is in the future")
    if new.at < minute(inc.opened_at):
        raise UserError(
            f"--at {_local(new.at, tz)} is before incident {inc.id} was opened "
            f"({_local(inc.opened_at, tz)})"
        )
    old = recorded_submission(inc)
    if old == new:
        return "unchanged", old
    if old is not None and not correct:
        raise UserError(
            f"incident {inc.id}: already recorded as submitted {old.text(tz)}; to replace it "
            "with these values add --correct (both stay in the ledger)"
        )
    inc.submitted_at, inc.submitted_to, inc.submission_receipt = new.at, new.to, new.receipt
    inc.submitted_by = who
    if old is not None:
        inc.submission_revision = int(inc.submission_revision or 0) + 1
    return ("corrected" if old is not None else "recorded"), old


def close_refusal(inc: Incident, grounds: list[str], no_report_reason: str | None) -> str | None:
    """Why closing must wait (a one-line reason), or None: a report is due and none is
    recorded as submitted, and the officer gave no reason for closing without one."""
    if not grounds or inc.submitted_at is not None:
        return None
    if no_report_reason is not None and no_report_reason.strip():
        return None
    drafted = "drafted but not recorded as submitted" if inc.reported_at else "not drafted"
    return (
        f"incident {inc.id}: the report to the regulator is due (시행령 제40조①) and {drafted}; "
        f"record it with `lifecycle incident submitted {inc.id}`, or close with "
        "--no-report-reason TEXT"
    )


def close(
    s: Session, inc: Incident, record: str, who: str, no_report_reason: str | None = None
) -> None:
    if not record.strip():
        raise UserError("the closing record file is empty")
    reason = no_report_reason.strip() if no_report_reason and no_report_reason.strip() else None
    s.execute(
        update(Incident)
        .where(Incident.id == inc.id)
        .values(
            state=IncidentState.CLOSED.value,
            closed_at=utcnow(),
            closed_by=who,
            closing_record=record,
            no_report_reason=reason,
        )
    )
