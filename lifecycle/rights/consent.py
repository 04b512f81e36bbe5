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

received/dispatched --requester checked, withdrawn, dependants destroyed--> consent_withdrawn
--ledger--> notifying (answer sent) --every notice delivered--> completed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, delete, func, or_, select, update
from sqlalchemy import types as sqltypes
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.consents import ConsentPurpose, holding
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.member_table import MemberTable, gives_consent, live_member, member_table
from lifecycle.engine.context import EngineContext, get_context
from lifecycle.requests import holds
from lifecycle.requests.states import transition
from lifecycle.rights.common import Requester, refusal_of, submit_right
from lifecycle.rights.pipeline import (
    Job,
    Pipeline,
    answer_requester,
    ledger_step,
    refuse,
    run,
    starting,
    tell,
)
from lifecycle.rights.telling import owe_deletions, recipients_for_purpose, recipients_of
from models.consents import Consent
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)

LIFECYCLE_SOURCE = "lifecycle"
SITE_SOURCE = "site"


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


def submit_consent_withdrawal(
    member_id: int, purpose: str, requester: Requester, *, dispatch: bool = True
) -> int:
    p = purpose_of(purpose)

    def check(s: Session, _mt: MemberTable, row: Any) -> None:
        if not gives_consent(s, p, member_id, row):
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
    )


# -- destroying what depended on the consent ------------------------------------------------------


def _blank(col: Column[Any]) -> Any:
    """What a cleared column holds: NULL where allowed, else '' for text."""
    if col.nullable:
        return None
    if isinstance(col.type, sqltypes.String):
        return ""
    raise UserError(f"column {col.table.name}.{col.name} cannot be cleared (NOT NULL, not text)")


def destroy_dependants(
    ctx: EngineContext, s: Session, p: ConsentPurpose, member_id: int
) -> dict[str, int]:
    """Destroy the categories ``p`` carries in the member's live rows: rows holding only such
    categories are deleted, other rows have those columns cleared. Checked by re-reading in the
    same transaction; returns table -> rows destroyed or cleared (tables touched only)."""
    dm = ctx.datamap
    md = ctx.metadata
    done: dict[str, int] = {}
    for tm in dm.tables_in_dependency_order():
        cats = [c for c in tm.columns if c in p.destroys]
        if not cats:
            continue
        t = ctx.table(tm.name)
        mine = tm.scoped(t, dm.member_expr(tm.name, md) == member_id)
        cols = [t.c[c] for cat in cats for c in tm.columns[cat]]
        if tm.name != dm.subject.table and set(tm.columns) <= set(p.destroys):
            n = s.connection().execute(delete(t).where(mine)).rowcount
            left = s.scalar(select(func.count()).select_from(t).where(mine))
        else:
            held = or_(*(holding(c) for c in cols))
            n = (
                s.connection()
                .execute(update(t).where(mine, held).values({c.name: _blank(c) for c in cols}))
                .rowcount
            )
            left = s.scalar(select(func.count()).select_from(t).where(mine, held))
        if left:
            raise UserError(
                f"consent withdrawal: {left} row(s) of {tm.name} still hold {', '.join(cats)}"
            )
        if n:
            done[tm.name] = int(n)
    return done


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
    given = row[p.date_column] if p.date_column else None
    if not isinstance(given, datetime):
        given = row[p.column] if p.column and isinstance(row[p.column], datetime) else None
    s.add(Consent(member_id=member_id, purpose=p.name, given_at=given, withdrawn_at=now,
                  source=SITE_SOURCE, request_id=request_id))  # fmt: skip


def _withdraw(job: Job) -> None:
    payload = job.payload
    refusal = refusal_of(job.s, job.req, job.mt, unknown="동의를 철회할 수 없습니다 ({})")
    p: ConsentPurpose | None = None
    if refusal is None:
        try:
            p = purpose_of(str(payload.get("purpose")))
        except UserError as exc:
            refusal = f"동의를 철회할 수 없습니다 ({exc})"
    if refusal is not None or p is None:
        refuse(job, refusal or "동의를 철회할 수 없습니다")
        return
    s, member_id, mt = job.s, job.member_id, job.mt
    ctx = get_context()
    if p.destroys:
        held = holds.holds_on_member(s, member_id, ctx.today())
        if held:
            # Destroying waits out a legal hold; `lifecycle requests retry` resumes it.
            ids = ", ".join(str(h.id) for h in held)
            job.req.error = f"on legal hold {ids}: the data depending on {p.name} is kept"
            return
    row = live_member(s, mt, member_id, exclusive=True)
    now = datetime.now(UTC)
    _close_history(s, p, member_id, job.request_id, row, now)
    values = _site_values(mt, p, False, now)
    subject_cols = ctx.datamap.subject_table.columns
    destroyed_fields = [c for cat in p.destroys for c in subject_cols.get(cat, ())]
    del row
    if values:
        s.execute(update(mt.table).where(mt.key_col == member_id).values(values))
    done = destroy_dependants(ctx, s, p, member_id)
    owed = recipients_for_purpose(s, member_id, p.name)
    for rid, fs in recipients_of(s, member_id, destroyed_fields).items():
        owed.setdefault(rid, set()).update(fs)
    n = owe_deletions(s, member_id, job.request_id, owed)
    job.req.payload = {
        **payload,
        "purpose_label": p.label,
        "notifications": n,
        "fields": sorted({f for fs in owed.values() for f in fs}),
        "destroyed": done,
        "categories": list(p.destroys) if done else [],
    }
    job.req.error = None
    transition(job.req, RequestState.CONSENT_WITHDRAWN)


def _entry(job: Job) -> dict[str, Any]:
    p = job.payload
    destroyed: dict[str, int] = dict(p.get("destroyed") or {})
    cats = set(p.get("categories") or [])
    cats |= {job.mt.categories.get(f, "profile") for f in p.get("fields", [])}
    entry: dict[str, Any] = {
        "action": "consent_withdrawal",
        "categories": sorted(cats),
        "rows": sum(destroyed.values()) or 1,
        "reason": f"정보주체의 동의 철회: {p.get('purpose_label', p.get('purpose'))}",
        "legal_basis": "개인정보 보호법 제37조 (동의 철회 시 지체 없이 파기), 시행령 제44조",
        "method": (
            "동의 기록 해제; 동의에 근거한 항목 파기 (행 삭제 또는 항목 삭제, 단일 트랜잭션, "
            "재조회로 확인); 해당 목적으로 제공받은 제3자에게 삭제 요청"
            if destroyed
            else "동의 기록 해제, 해당 목적으로 제공받은 제3자에게 삭제 요청"
        ),
        "actor": "lifecycle.rights.consent_withdraw",
        "details": {
            "purpose": p.get("purpose"),
            "fields": p.get("fields", []),
            "destroyed": destroyed,
            "notifications": int(p.get("notifications", 0)),
        },
    }
    if destroyed:
        entry["tables"] = sorted(destroyed)
    return entry


CONSENT_WITHDRAWAL = Pipeline(
    RequestKind.CONSENT_WITHDRAWAL.value,
    {
        **starting(_withdraw),
        RequestState.CONSENT_WITHDRAWN.value: ledger_step(RequestState.NOTIFYING, _entry),
    },
    finish=(tell, answer_requester),
    # A row the map's columns cannot clear: everything the step did rolled back with it.
    fails_on=(UserError,),
)


def run_consent_withdrawal(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(CONSENT_WITHDRAWAL, request_id, task_id)
