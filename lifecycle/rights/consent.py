"""동의 철회 per purpose (개인정보 보호법 제37조), e.g. marketing.

A purpose names the member-table column that records the consent. Withdrawing it clears that
column (the site's marketing mail checks it: no consent, no mail; this lifecycle sends no
marketing of its own), and every recipient that received the member's data *under that purpose*
(provisions recorded with ``--purpose``) gets a signed deletion notice for those fields.

received/dispatched --requester checked; in ONE transaction: column cleared, notices owed-->
consent_withdrawn --ledger--> notifying (answer sent) --every notice delivered--> completed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.member_table import MemberTable, member_table
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
from lifecycle.rights.telling import owe_deletions, recipients_for_purpose
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Purpose:
    name: str
    column: str
    label: str


PURPOSES: dict[str, Purpose] = {
    "marketing": Purpose("marketing", "marketing_consent", "마케팅 정보 수신 및 활용 동의"),
}


def purpose_of(name: str, mt: MemberTable) -> Purpose:
    p = PURPOSES.get(name)
    if p is None:
        raise UserError(f"unknown purpose {name!r}; expected one of {', '.join(sorted(PURPOSES))}")
    if p.column not in mt.table.c:
        raise UserError(f"purpose {name}: column {p.column} is not in {mt.table.name}")
    return p


def submit_consent_withdrawal(
    member_id: int, purpose: str, requester: Requester, *, dispatch: bool = True
) -> int:
    with db.session("primary") as s:
        p = purpose_of(purpose, member_table(s.get_bind()))  # type: ignore[arg-type]

    def check(_s: Session, _mt: MemberTable, row: Any) -> None:
        if not row[p.column]:
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


def _withdraw(job: Job) -> None:
    payload = job.payload
    refusal = refusal_of(job.s, job.req, job.mt, unknown="동의를 철회할 수 없습니다 ({})")
    if refusal is None:
        try:
            p = purpose_of(str(payload.get("purpose")), job.mt)
        except UserError as exc:
            refusal = f"동의를 철회할 수 없습니다 ({exc})"
    if refusal is not None:
        refuse(job, refusal)
        return
    s, member_id = job.s, job.member_id
    s.execute(update(job.mt.table).where(job.mt.key_col == member_id).values({p.column: False}))
    owed = recipients_for_purpose(s, member_id, p.name)
    n = owe_deletions(s, member_id, job.request_id, owed)
    job.req.payload = {
        **payload,
        "purpose_label": p.label,
        "notifications": n,
        "fields": sorted({f for fs in owed.values() for f in fs}),
    }
    transition(job.req, RequestState.CONSENT_WITHDRAWN)


def _entry(job: Job) -> dict[str, Any]:
    p = job.payload
    return {
        "action": "consent_withdrawal",
        "categories": sorted({job.mt.categories.get(f, "profile") for f in p.get("fields", [])}),
        "rows": 1,
        "reason": f"정보주체의 동의 철회: {p.get('purpose_label', p.get('purpose'))}",
        "legal_basis": "개인정보 보호법 제37조, 시행령 제44조",
        "method": "동의 기록 해제, 해당 목적으로 제공받은 제3자에게 삭제 요청",
        "actor": "lifecycle.rights.consent_withdraw",
        "details": {
            "purpose": p.get("purpose"),
            "fields": p.get("fields", []),
            "notifications": int(p.get("notifications", 0)),
        },
    }


CONSENT_WITHDRAWAL = Pipeline(
    RequestKind.CONSENT_WITHDRAWAL.value,
    {
        **starting(_withdraw),
        RequestState.CONSENT_WITHDRAWN.value: ledger_step(RequestState.NOTIFYING, _entry),
    },
    finish=(tell, answer_requester),
)


def run_consent_withdrawal(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(CONSENT_WITHDRAWAL, request_id, task_id)
