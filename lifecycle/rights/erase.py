"""삭제 of named items of a live member (개인정보 보호법 제36조), e.g. the RRN or hobbies.

The member stays a member: the named columns of their row are cleared (NULL), nothing else.
Fields are given by column or by category of the member table (``--fields rrn,hobbies``).
Refused before anything is created: an unknown field, a system column, a column the account
cannot exist without (that is a withdrawal), a category the data map keeps for a legal period
(제36조① 단서: other laws require keeping it).

Steps, each persisted before the next, so a re-run resumes where a crash left off:

1. received/dispatched: requester and fields checked (refused with a reason otherwise), the
   member restricted → ``restricted``.
2. restricted: in ONE transaction: clear the fields, owe a deletion notice to every recipient
   that received one of them, lift this restriction → ``erased``.
3. erased: ledger entry (field names and a pseudonymous subject ref only) → ``notifying``;
   the answer goes to the requester and the deletion notices are sent.
4. notifying: completes when every notice is delivered (or ``needs_attention``), and only
   when the residue check of step 2 found none of the erased identities elsewhere (else
   ``needs_attention`` naming table.column and counts; :mod:`lifecycle.engine.residue`).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.member_table import MemberTable, live_member, member_table
from lifecycle.engine import residue
from lifecycle.engine.context import get_context
from lifecycle.requests.states import transition
from lifecycle.requests.use_block import lift
from lifecycle.rights import residue_check
from lifecycle.rights.common import Requester, refusal_of, submit_right
from lifecycle.rights.pipeline import (
    Job,
    Pipeline,
    answer_requester,
    ledger_step,
    log_access,
    refuse,
    restrict_step,
    run,
    starting,
    tell,
)
from lifecycle.rights.telling import owe_deletions, recipients_of
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)
REASON = "erasure"


def parse_fields(text: str) -> list[str]:
    items = [f.strip() for f in text.split(",") if f.strip()]
    if not items:
        raise UserError("--fields needs at least one field or category, e.g. --fields rrn,hobbies")
    return list(dict.fromkeys(items))


def resolve(mt: MemberTable, items: list[str]) -> list[str]:
    """Columns to clear for these field or category names, or a one-line UserError."""
    dm = current_datamap()
    tm = dm.subject_table
    cols: list[str] = []
    carried = {cat: p for p in dm.consents.values() for cat in p.destroys}
    for item in items:
        category = item if item in tm.columns else mt.categories.get(item)
        if category in carried:
            p = carried[category]
            raise UserError(
                f"{item} is processed under the member's consent {p.name!r}, not kept by law: "
                f"withdraw it with lifecycle consent withdraw MEMBER --purpose {p.name} (that "
                "destroys every record depending on it)"
            )
        if item in mt.categories or item in mt.system:
            named = [item]
        elif item in tm.columns:
            named = [c for c in tm.columns[item] if c in mt.table.c]
        else:
            raise UserError(
                f"unknown field {item!r}: not a personal-data column or category of "
                f"{mt.table.name} in the data map"
            )
        for col in named:
            if col in mt.system:
                raise UserError(
                    f"field {col} is a system column and cannot be erased (consent has its own "
                    "procedure: lifecycle consent withdraw)"
                )
            if not mt.table.c[col].nullable or (
                mt.subject is not None and col == mt.subject.login_column
            ):
                # The login (an email the member logs in with) is needed while they stay.
                raise UserError(
                    f"field {col} is required while the account exists; it goes only with a "
                    "withdrawal (lifecycle withdraw)"
                )
            rule = dm.rule(mt.categories[col])
            if not rule.period.is_zero and rule.consent:
                raise UserError(
                    f"field {col} is kept under the member's consent ({rule.consent}), not by "
                    f"law: withdraw it first (lifecycle consent withdraw --purpose "
                    f"{rule.consent})"
                )
            if not rule.period.is_zero:
                raise UserError(
                    f"field {col} is kept by law ({rule.legal_basis}) and cannot be erased now"
                )
            if col not in cols:
                cols.append(col)
    return cols


def submit_erasure(
    member_id: int, fields_text: str, requester: Requester, *, dispatch: bool = True
) -> int:
    items = parse_fields(fields_text)
    with db.session("primary") as s:
        cols = resolve(member_table(s.get_bind()), items)  # type: ignore[arg-type]
    return submit_right(
        RequestKind.ERASURE.value,
        member_id,
        {"fields": cols},
        requester,
        conflicting=(RequestKind.CORRECTION.value,),
        dispatch=dispatch,
    )


# -- the job ------------------------------------------------------------------------------------


def _check(job: Job) -> str | None:
    """Why to refuse (requester, member, fields), or None; the fields go in the payload."""
    refusal = refusal_of(job.s, job.req, job.mt)
    if refusal is not None:
        return refusal
    fields = job.payload.get("fields")
    if not fields or not isinstance(fields, list):
        return "삭제할 항목이 지정되지 않았습니다 (no fields)"
    try:
        resolve(job.mt, [str(f) for f in fields])
    except UserError as exc:
        return f"삭제할 수 없는 항목입니다 ({exc})"
    return None


def _erase(job: Job) -> None:
    refusal = _check(job)
    if refusal is not None:
        refuse(job, refusal)
        return
    mt, member_id = job.mt, job.member_id
    fields = resolve(mt, [str(f) for f in job.payload["fields"]])
    row = live_member(job.s, mt, member_id, exclusive=True)
    held = [f for f in fields if row[f] is not None]
    del row  # the values go no further than telling which fields held one
    # For the residue check: the identities among the values about to be cleared, captured
    # now and kept in this local only.
    ctx = get_context()
    conn = job.s.connection()
    ids = residue.capture_fields(conn, ctx.datamap, ctx.subject_table, member_id, held)
    job.s.execute(update(mt.table).where(mt.key_col == member_id).values(dict.fromkeys(fields)))
    owed = owe_deletions(job.s, member_id, job.request_id, recipients_of(job.s, member_id, fields))
    job.req.payload = {"fields": fields, "erased": held, "notifications": owed}
    residue_check.check(job, ctx.datamap, ids, residue.kept_in_erasure(ctx.datamap))
    del ids
    lift(job.s, member_id, REASON)
    transition(job.req, RequestState.ERASED)


def _entry(job: Job) -> dict[str, Any]:
    p = job.payload
    fields = list(p.get("fields", []))
    return {
        "action": "destroy",
        "categories": sorted({job.mt.categories.get(f, "profile") for f in fields}),
        "rows": 1 if p.get("erased") else 0,
        "reason": "정보주체의 삭제 요구 (회원 유지, 지정 항목만 삭제)",
        "legal_basis": "개인정보 보호법 제36조, 제21조",
        "method": "DB 항목 삭제 (해당 칼럼을 NULL로 갱신, 단일 트랜잭션)",
        "actor": "lifecycle.rights.erase",
        "details": {
            "fields": fields,
            "erased": list(p.get("erased", [])),
            "notifications": int(p.get("notifications", 0)),
        },
    }


def _access_log(job: Job, a: Session) -> None:
    """Once per request, with the ledger entry, whoever submitted it (the website included)."""
    p = job.payload
    erased = list(p.get("erased", []))
    details = {"fields": list(p.get("fields", [])), "erased": erased, "rows": 1 if erased else 0}
    log_access(job, a, "destroy" if erased else "change", "erase (carried out by worker)", details)


ERASURE = Pipeline(
    RequestKind.ERASURE.value,
    {
        **starting(restrict_step(REASON, _check)),
        RequestState.RESTRICTED.value: _erase,
        RequestState.ERASED.value: ledger_step(RequestState.NOTIFYING, _entry, first=_access_log),
    },
    finish=(tell, answer_requester),
    # A refusal after the restriction lifts it (none yet before it: a no-op).
    on_refuse=lambda job: lift(job.s, job.member_id, REASON),
)


def run_erasure(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(ERASURE, request_id, task_id)
