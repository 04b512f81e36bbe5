"""동의 철회 per purpose (개인정보 보호법 제37조), and the consent history.

The purposes are the data map's ``consents:`` (:mod:`lifecycle.datamap.consents`): marketing
per channel, processing of sensitive data, keeping it after withdrawal, provision to a third
party, a guardian's consent. A purpose is read where the map says: the site's own column
(``marketing_consent``, Gnuboard's ``mb_mailling``) or the lifecycle's ``lifecycle_consents``
table; that table keeps the history either way (:func:`give_consent` records a grant, a
withdrawal closes it).

Withdrawing a consent, in ONE transaction: the site's column is cleared (its date column set
to the time), the history closed, the categories that depended on it destroyed in the
member's live rows (a processing or guardian consent: 제37조 as amended 2023-03-14, destroy
without delay once consent is withdrawn), and every recipient that received data under the
purpose, or a field destroyed now, is owed a signed deletion notice.

A former member (row gone) may withdraw a retention consent still open in the history: the
records the archive keeps only under it (:func:`lifecycle.engine.consent_destroy.kept_by_consent`)
are destroyed. Their files go to the shredder in the first step's transaction, the archived
rows are deleted in the next step's archive transaction together with the ledger entry and the
access-log line (once: :func:`lifecycle.rights.pipeline.ledger_once`), so a crash between them
loses no path and repeats nothing. What a statute keeps stays and is counted for the answer.

received/dispatched --requester checked, withdrawn, dependants destroyed--> consent_withdrawn
--archived records deleted, ledger, access log--> notifying (answer sent) --every notice
delivered--> completed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, select, update
from sqlalchemy import types as sqltypes
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.consents import ConsentPurpose
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.member_table import (
    MemberTable,
    gives_consent,
    live_member,
    member_table,
    open_grants,
)
from lifecycle.engine.consent_destroy import (
    archived_counts,
    archived_files,
    destroy_archived,
    destroy_dependants,
    kept_by_consent,
    kept_by_law,
)
from lifecycle.engine.context import EngineContext, get_context
from lifecycle.engine.mover import Scope, hand_to_shredder, send_shred_jobs
from lifecycle.requests import holds
from lifecycle.requests.states import transition
from lifecycle.rights.common import Requester, requester_refusal, submit_right
from lifecycle.rights.pipeline import (
    Job,
    Pipeline,
    answer_requester,
    ledger_once,
    log_access,
    refuse,
    run,
    starting,
    tell,
)
from lifecycle.rights.telling import owe_deletions, recipients_for_purpose, recipients_of
from lifecycle.vault import keystore
from models.consents import Consent
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)

LIFECYCLE_SOURCE = "lifecycle"
SITE_SOURCE = "site"
RETENTION = "retention"
ARCHIVE_REASON = "정보주체의 보존 동의 철회 (retention consent withdrawn)"


def purpose_of(name: str) -> ConsentPurpose:
    """The map's purpose ``name``, or a one-line UserError."""
    purposes = current_datamap().consents
    p = purposes.get(name)
    if p is None:
        known = ", ".join(sorted(purposes)) or "none: the data map declares no consents:"
        raise UserError(f"unknown purpose {name!r}; expected one of {known}")
    return p


def _set_value(col: Column[Any], on: bool, now: datetime) -> Any:
    """What the site's column holds for a consent given (``on``) or withdrawn, by its type."""
    t = col.type
    if isinstance(t, sqltypes.Boolean):
        return on
    if isinstance(t, sqltypes.DateTime | sqltypes.Date):
        return now if on else None
    if isinstance(t, sqltypes.Integer | sqltypes.Numeric):
        return 1 if on else 0
    if isinstance(t, sqltypes.String):
        return "1" if on else ("" if not col.nullable else None)
    raise UserError(f"consent column {col.name} has a type the lifecycle cannot set")


def _date_value(col: Column[Any], now: datetime) -> Any:
    if isinstance(col.type, sqltypes.String):
        # Text dates (Gnuboard's style): the site's own format.
        return now.strftime("%Y-%m-%d %H:%M:%S")
    return now


def _site_values(mt: MemberTable, p: ConsentPurpose, on: bool, now: datetime) -> dict[str, Any]:
    if p.column is None:
        return {}
    out = {p.column: _set_value(mt.table.c[p.column], on, now)}
    if p.date_column:
        out[p.date_column] = _date_value(mt.table.c[p.date_column], now)
    return out


def check_version(version: str) -> str:
    version = (version or "").strip()
    if not version or len(version) > 32 or any(ord(c) < 32 for c in version):
        raise UserError("--version must name the consent text's version (1-32 characters)")
    return version


def give_consent(
    member_id: int, purpose: str, version: str, *, given_at: datetime | None = None
) -> int:
    """Record that the member gave ``purpose`` (text ``version``): the history row, and the
    site's column where the map names one. Returns the history row's id."""
    version = check_version(version)
    if member_id <= 0:
        raise UserError("member id must be a positive integer")
    p = purpose_of(purpose)
    now = datetime.now(UTC)
    when = given_at or now
    if when > now:
        raise UserError("--given-at lies in the future")
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        row = live_member(s, mt, member_id, exclusive=True)
        if gives_consent(s, p, member_id, row):
            raise UserError(f"member {member_id} already gives consent {p.name}")
        values = _site_values(mt, p, True, when)
        if values:
            s.execute(update(mt.table).where(mt.key_col == member_id).values(values))
        c = Consent(member_id=member_id, purpose=p.name, text_version=version, given_at=when,
                    source=LIFECYCLE_SOURCE)  # fmt: skip
        s.add(c)
        s.flush()
        return int(c.id)


def history(member_id: int) -> list[Consent]:
    with db.session("primary") as s:
        rows = list(
            s.scalars(select(Consent).where(Consent.member_id == member_id).order_by(Consent.id))
        )
        s.expunge_all()
        return rows


def _former_gives(s: Session, p: ConsentPurpose, member_id: int) -> bool:
    """A former member (their row gone or withdrawn) still gives ``p``: a retention consent
    whose grant the lifecycle's history holds open (what keeps their archived records)."""
    return p.kind == RETENTION and (
        s.scalars(open_grants(member_id, p.name).limit(1)).first() is not None
    )


def submit_consent_withdrawal(
    member_id: int, purpose: str, requester: Requester, *, dispatch: bool = True
) -> int:
    """Record a 동의 철회 (제37조①) of a member, or of a former member withdrawing the retention
    consent that keeps their archived records (they need ``requester.contact``: the site no
    longer holds an address for the answer)."""
    p = purpose_of(purpose)

    def former(s: Session, mid: int) -> bool:
        if not _former_gives(s, p, mid):
            return False
        if not requester.contact:
            raise UserError(
                f"member {mid} has withdrawn: give --requester-contact (the site no longer "
                "holds an address for the answer)"
            )
        return True

    def check(s: Session, _mt: MemberTable, row: Any) -> None:
        if row is not None and not gives_consent(s, p, member_id, row):
            raise UserError(
                f"member {member_id} has not consented to {p.name}; nothing to withdraw"
            )

    return submit_right(
        RequestKind.CONSENT_WITHDRAWAL.value,
        member_id,
        {"purpose": p.name, "purpose_label": p.label},
        requester,
        check=check,
        dispatch=dispatch,
        former=former,
    )


# -- the job ------------------------------------------------------------------------------------


def _close_history(
    s: Session, p: ConsentPurpose, member_id: int, request_id: int, row: Any, now: datetime
) -> None:
    """Close the open grant(s); a consent the site recorded itself gets its row now."""
    n = s.connection().execute(
        update(Consent)
        .where(Consent.member_id == member_id, Consent.purpose == p.name,
               Consent.withdrawn_at.is_(None))
        .values(withdrawn_at=now, request_id=request_id)
    ).rowcount  # fmt: skip
    if n:
        return
    given = None
    if row is not None:
        given = row[p.date_column] if p.date_column else None
        if not isinstance(given, datetime):
            given = row[p.column] if p.column and isinstance(row[p.column], datetime) else None
    s.add(Consent(member_id=member_id, purpose=p.name, given_at=given, withdrawn_at=now,
                  source=SITE_SOURCE, request_id=request_id))  # fmt: skip


def _member_row(job: Job, p: ConsentPurpose) -> tuple[Any, str | None]:
    """(the member's row, locked; None for a former member whose retention consent is still
    open), or a one-line (Korean) reason to refuse."""
    refusal = requester_refusal(job.s, job.req)
    if refusal is not None:
        return None, refusal
    try:
        return live_member(job.s, job.mt, job.member_id, exclusive=True), None
    except UserError as exc:
        if _former_gives(job.s, p, job.member_id):
            return None, None
        return None, f"동의를 철회할 수 없습니다 ({exc})"


def _hand_files(job: Job, ctx: EngineContext, paths: list[str], cats: list[str]) -> int:
    """Hand the archived records' files to the shredder in the step's transaction (committed
    before the next step deletes the records that name them: a crash in between loses no
    path). A path the shredder refuses fails the request, nothing changed."""
    if not paths:
        return 0
    scope = Scope(key=f"req:{job.request_id}", purpose="consent_withdrawal",
                  reason=f"{ARCHIVE_REASON}: {job.payload.get('purpose')}", actor=ctx.actor,
                  task_id=job.run.task_id, request_id=job.request_id)  # fmt: skip
    handed, refused, jobs, why = hand_to_shredder(paths, scope, cats, ctx, job.s.connection())
    if refused:
        raise UserError(
            f"{refused} file(s) of the archived records refused by the shredder ({why}): fix "
            "the storage roots (LIFECYCLE_FILE_ROOTS) or the map's site.root, then retry"
        )
    job.after.append(lambda: send_shred_jobs(jobs))
    return handed


def _withdraw(job: Job) -> None:
    payload = job.payload
    try:
        p = purpose_of(str(payload.get("purpose")))
    except UserError as exc:
        refuse(job, f"동의를 철회할 수 없습니다 ({exc})")
        return
    row, refusal = _member_row(job, p)
    if refusal is not None:
        refuse(job, refusal)
        return
    s, member_id, mt = job.s, job.member_id, job.mt
    ctx = get_context()
    archived_cats = kept_by_consent(ctx.datamap, p) if p.kind == RETENTION else []
    if p.destroys or archived_cats:
        held = holds.holds_on_member(s, member_id, ctx.today())
        if held:
            # Destroying waits out a legal hold; `lifecycle requests retry` resumes it.
            ids = ", ".join(str(h.id) for h in held)
            job.req.error = f"on legal hold {ids}: the data depending on {p.name} is kept"
            return
    now = datetime.now(UTC)
    _close_history(s, p, member_id, job.request_id, row, now)
    subject_cols = ctx.datamap.subject_table.columns
    done: dict[str, int] = {}
    former = row is None
    if row is not None:
        values = _site_values(mt, p, False, now)
        del row
        if values:
            s.execute(update(mt.table).where(mt.key_col == member_id).values(values))
        done = destroy_dependants(ctx, s.connection(), p, member_id)
    planned: dict[str, int] = {}
    by_law: dict[str, int] = {}
    files = 0
    if p.kind == RETENTION:
        with db.session("archive") as a:
            ref = keystore.subject_ref(a, member_id)
            planned = archived_counts(a, ref, archived_cats)
            by_law = kept_by_law(ctx.datamap, a, ref, p)
            paths = archived_files(ctx, a, ref, archived_cats)
        files = _hand_files(job, ctx, paths, archived_cats)
    gone_cats = [*p.destroys, *(archived_cats if planned else [])]
    destroyed_fields = [c for cat in gone_cats for c in subject_cols.get(cat, ())]
    owed = recipients_for_purpose(s, member_id, p.name)
    for rid, fs in recipients_of(s, member_id, destroyed_fields).items():
        owed.setdefault(rid, set()).update(fs)
    n = owe_deletions(s, member_id, job.request_id, owed)
    out: dict[str, Any] = {
        **payload,
        "purpose_label": p.label,
        "notifications": n,
        "fields": sorted({f for fs in owed.values() for f in fs}),
        "destroyed": done,
        "categories": list(p.destroys) if done else [],
    }
    if former:
        out["former_member"] = True
    if p.kind == RETENTION:
        out.update(
            archive_categories=archived_cats,
            archive_planned=planned,
            archived_files=files,
            kept_by_law=by_law,
        )
    job.req.payload = out
    job.req.error = None
    transition(job.req, RequestState.CONSENT_WITHDRAWN)


def _entry(job: Job, archived: dict[str, int]) -> dict[str, Any]:
    """The ledger entry: only what was done and checked (rows deleted or cleared and re-read;
    archived records deleted and re-counted; files handed to the shredder, whose own
    ``file_shred`` entries record each one destroyed)."""
    p = job.payload
    destroyed: dict[str, int] = dict(p.get("destroyed") or {})
    cats = set(p.get("categories") or [])
    cats |= {job.mt.categories.get(f, "profile") for f in p.get("fields", [])}
    if archived:
        cats |= set(p.get("archive_categories") or [])
    files = int(p.get("archived_files", 0)) if archived else 0
    method = ["동의 기록 해제"]
    if destroyed:
        method.append(
            "동의에 근거한 항목 파기 (행 삭제 또는 항목 삭제, 단일 트랜잭션, 재조회로 확인)"
        )
    if archived:
        method.append("동의에 근거하여 분리보관하던 기록 삭제 (분리보관 DB 행 삭제, 재조회로 확인)")
    if files:
        method.append(f"해당 기록의 파일 {files}건 완전삭제 작업 인계 (결과는 file_shred 항목)")
    method.append("해당 목적으로 제공받은 제3자에게 삭제 요청")
    entry: dict[str, Any] = {
        "action": "consent_withdrawal",
        "categories": sorted(cats),
        "rows": sum(destroyed.values()) + sum(archived.values()) or 1,
        "reason": f"정보주체의 동의 철회: {p.get('purpose_label', p.get('purpose'))}",
        "legal_basis": (
            "개인정보 보호법 제37조 (동의 철회 시 지체 없이 파기), 제21조 (파기), 시행령 제44조"
            if archived
            else "개인정보 보호법 제37조 (동의 철회 시 지체 없이 파기), 시행령 제44조"
        ),
        "method": "; ".join(method),
        "actor": "lifecycle.rights.consent_withdraw",
        "details": {
            "purpose": p.get("purpose"),
            "fields": p.get("fields", []),
            "destroyed": destroyed,
            "notifications": int(p.get("notifications", 0)),
        },
    }
    if "archive_categories" in p:
        entry["details"].update(
            archive_destroyed=archived,
            archive_categories=list(p.get("archive_categories") or []),
            files_handed=files,
            kept_by_law=dict(p.get("kept_by_law") or {}),
        )
    tables = sorted({*destroyed, *archived})
    if tables:
        entry["tables"] = tables
    return entry


def _record(job: Job) -> None:
    """The archived records the consent kept are deleted, the access log and the ledger
    entry written, all in one archive transaction, once (:func:`ledger_once`)."""
    cats = [str(c) for c in job.payload.get("archive_categories") or []]

    def build(a: Session) -> dict[str, Any]:
        archived = destroy_archived(a, keystore.subject_ref(a, job.member_id), cats)
        entry = _entry(job, archived)
        log_access(job, a, "destroy" if entry["details"]["destroyed"] or archived else "change",
                   "consent withdrawal (carried out by worker)",
                   {"purpose": job.payload.get("purpose"), "rows": entry["rows"],
                    "archived_records": sum(archived.values())})  # fmt: skip
        return entry

    details = ledger_once(job, build)
    if "archive_categories" in job.payload:
        done = dict(details.get("archive_destroyed") or {})
        job.req.payload = {**job.payload, "archive_destroyed": done}
    transition(job.req, RequestState.NOTIFYING)


CONSENT_WITHDRAWAL = Pipeline(
    RequestKind.CONSENT_WITHDRAWAL.value,
    {
        **starting(_withdraw),
        RequestState.CONSENT_WITHDRAWN.value: _record,
    },
    finish=(tell, answer_requester),
    # A row the map's columns cannot clear: everything the step did rolled back with it.
    fails_on=(UserError,),
)


def run_consent_withdrawal(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(CONSENT_WITHDRAWAL, request_id, task_id)
