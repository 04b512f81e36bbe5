"""The officer's steps on a breach (법 제34조), one function each, for the CLI
(`lifecycle incident open|notify|report|submitted|close`) and the console alike: each runs the
domain calls of :mod:`lifecycle.incidents.breach` in the same two transactions (the archive's
outermost: it commits after the primary one, so the ledger never records a step that did not
commit) and writes the step's ledger entry and access-log line, naming the operator.

The callers check their own input first (a form's fields, a command's options and files) and
say what was done in their own words; ``extra`` adds to the access-log details what only the
caller knows (the console: the client's address).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.engine.context import get_context
from lifecycle.incidents import breach
from lifecycle.vault import accesslog
from models.base import utcnow
from models.incidents import Incident


@dataclass(frozen=True)
class Opened:
    """What opening found, read inside its transaction (the row is not used after it)."""

    incident_id: int
    members: int
    rows: int
    deadline_at: datetime
    no_contact: int
    former_in_window: int
    former_archived_before: int
    report_grounds: list[str]


@dataclass(frozen=True)
class Notified:
    notice_id: int
    created: bool
    affected: int


def _details(base: dict[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**base, **(extra or {})}


def open_incident(
    operator: str,
    *,
    scope: breach.Scope,
    occurred_from: datetime,
    occurred_to: datetime,
    detected_at: datetime,
    description: str,
    external_access: bool,
    extra: Mapping[str, Any] | None = None,
) -> Opened:
    """Open an incident on a checked scope and times: find the affected members from the data
    map, count those without contact and the former members in the archive, start the clock."""
    ctx = get_context()
    with db.session("archive") as a, db.session("primary") as p:
        inc = Incident(
            opened_by=operator, detected_at=detected_at,
            deadline_at=detected_at + breach.WINDOW, occurred_from=occurred_from,
            occurred_to=occurred_to, categories=list(scope.categories),
            tables=list(scope.tables), whole_tables=scope.whole_tables,
            description=description, external_access=external_access,
        )  # fmt: skip
        p.add(inc)
        p.flush()
        members, rows, per_table = breach.find_affected(
            p, inc.id, ctx.datamap, ctx.metadata, scope, occurred_from, occurred_to
        )
        inc.affected, inc.affected_rows = members, rows
        inc.no_contact = breach.count_no_contact(p, inc.id)
        inc.former_in_window, inc.former_archived_before = breach.count_former(
            a, scope, occurred_from, occurred_to
        )
        breach.ledger_entry(
            a, inc, "open", operator, rows=rows, per_table=per_table,
            no_contact=inc.no_contact, former_in_window=inc.former_in_window,
            whole_tables=scope.whole_tables, deadline=inc.deadline_at.isoformat(),
            method="데이터 맵으로 영향받은 회원 확인",
        )  # fmt: skip
        accesslog.record(
            a, operator=operator, kind="read", action="incident open",
            details=_details({"incident_id": inc.id, "members": members, "rows": rows}, extra),
        )  # fmt: skip
        return Opened(
            incident_id=inc.id, members=members, rows=rows, deadline_at=inc.deadline_at,
            no_contact=inc.no_contact, former_in_window=inc.former_in_window,
            former_archived_before=inc.former_archived_before,
            report_grounds=breach.report_grounds(ctx.datamap, inc),
        )  # fmt: skip


def notify(
    operator: str, incident_id: int, tz: tzinfo, *, extra: Mapping[str, Any] | None = None
) -> Notified:
    """Prepare (or find again) the incident's notice and its recipients (법 제34조①). Sending
    is the caller's: the CLI hands it to the workers, the console leaves it to the beat."""
    dm = get_context().datamap
    with db.session("archive") as a, db.session("primary") as p:
        inc = breach.get_open(p, incident_id)
        notice_id, created = breach.prepare_notice(p, inc, dm, tz)
        breach.ledger_entry(
            a, inc, "notify", operator, notice_id=notice_id,
            method="전자우편 개별 통지 (법 제34조①)",
        )  # fmt: skip
        accesslog.record(
            a, operator=operator, kind="read", action="incident notify",
            details=_details({"incident_id": incident_id, "notice_id": notice_id}, extra),
        )  # fmt: skip
        return Notified(notice_id=notice_id, created=created, affected=inc.affected)


def report(
    operator: str,
    incident_id: int,
    tz: tzinfo,
    now: datetime,
    *,
    deliver: Callable[[str], None] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The draft report (법 제34조③, 시행령 제40조), recorded as drafted. ``deliver`` (the
    CLI's file write) runs inside the transaction: if it fails, nothing is recorded."""
    dm = get_context().datamap
    with db.session("archive") as a, db.session("primary") as p:
        inc = breach.get(p, incident_id, for_update=True)
        text = breach.report_text(p, dm, inc, tz, now)
        if deliver is not None:
            deliver(text)
        if inc.reported_at is None:
            inc.reported_at = now
        breach.ledger_entry(a, inc, "report", operator, method="신고서 초안 작성")
        accesslog.record(
            a, operator=operator, kind="export", action="incident report",
            details=_details({"incident_id": incident_id}, extra),
        )  # fmt: skip
    return text


@dataclass(frozen=True)
class Submitted:
    outcome: str  # "recorded", "unchanged" or "corrected"
    previous: breach.Submission | None


def submitted(
    operator: str,
    incident_id: int,
    submission: breach.Submission,
    tz: tzinfo,
    *,
    correct: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Submitted:
    """Record that the drafted report was submitted (법 제34조③, 시행령 제40조): when, to whom,
    the 접수번호. The same values again change nothing (the entry is written if a crash lost
    it); other values need ``correct``, and each version keeps its own ledger entry."""
    with db.session("archive") as a, db.session("primary") as p:
        inc = breach.get_open(p, incident_id)
        outcome, previous = breach.record_submission(
            inc, submission, operator, utcnow(), tz, correct=correct
        )
        details: dict[str, Any] = {
            "submitted_at": submission.at.isoformat(), "to": submission.to,
            "receipt": submission.receipt, "revision": int(inc.submission_revision or 0),
        }  # fmt: skip
        if outcome == "corrected" and previous is not None:
            details["replaces"] = {"submitted_at": previous.at.isoformat(), "to": previous.to,
                                   "receipt": previous.receipt}  # fmt: skip
        breach.ledger_entry(
            a, inc, "submit", operator, method=f"신고 제출 ({breach.RECIPIENTS[submission.to]})",
            **details,
        )  # fmt: skip
        accesslog.record(
            a, operator=operator, kind="change", action="incident submitted",
            details=_details({"incident_id": incident_id, "outcome": outcome}, extra),
        )  # fmt: skip
    return Submitted(outcome=outcome, previous=previous)


def close(
    operator: str,
    incident_id: int,
    record: str,
    *,
    no_report_reason: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Close an open incident with its record; returns its notice counts at closing. Refused
    while a due report is not recorded as submitted, unless the officer says why."""
    dm = get_context().datamap
    with db.session("archive") as a, db.session("primary") as p:
        inc = breach.get_open(p, incident_id)
        r = breach.summary(p, inc, utcnow(), dm)
        refusal = breach.close_refusal(inc, r["report_grounds"], no_report_reason)
        if refusal is not None:
            raise UserError(refusal)
        n: dict[str, Any] = r["notices"]
        breach.close(p, inc, record, operator, no_report_reason)
        breach.ledger_entry(
            a, inc, "close", operator, sent=n["sent"], unsent=n["unsent"],
            no_address=n["no_address"], method="사고 종결 기록",
            report=r["report_state"], no_report_reason_given=bool((no_report_reason or "").strip()),
        )  # fmt: skip
        accesslog.record(
            a, operator=operator, kind="change", action="incident close",
            details=_details({"incident_id": incident_id}, extra),
        )  # fmt: skip
    return n
