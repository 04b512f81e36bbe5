"""처리정지 (개인정보 보호법 제37조) and its lifting.

A suspension is a ``lifecycle_restrictions`` row with reason ``suspension``: while it exists the
member's data is not provided to third parties (`record_provision` refuses), notices other than
answers to their own requests are held, and the website must check it before using the data
(`lifecycle.requests.use_block.is_restricted`). It takes over a shorter restriction (an
open correction's), so that correction's end does not lift it. Only a lift request (the member
asks to resume, or the operator records that the reason ended) removes it.

suspension: received/dispatched --requester checked, restricted--> restricted --ledger,
answer--> completed. suspension_lift: received/dispatched --ledger, lifted, answer--> completed.
The ledger entry has a dedup key, so a re-run after a crash writes it once.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.datamap.member_table import MemberTable
from lifecycle.requests.states import transition
from lifecycle.requests.use_block import lift, restriction_reason
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
    write_ledger,
)
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)
REASON = "suspension"


def _clean_reason(text: str) -> str:
    text = " ".join(text.split())
    if not text or len(text) > 500:
        raise UserError("--reason must be 1-500 characters")
    return text


def submit_suspension(
    member_id: int, reason: str, requester: Requester, *, dispatch: bool = True
) -> int:
    reason = _clean_reason(reason)

    def check(s: Session, _mt: MemberTable, _row: Any) -> None:
        if restriction_reason(s, member_id) == REASON:
            raise UserError(f"member {member_id} is already suspended (처리정지)")

    return submit_right(
        RequestKind.SUSPENSION.value,
        member_id,
        {"reason": reason},
        requester,
        check=check,
        conflicting=(RequestKind.SUSPENSION_LIFT.value,),
        dispatch=dispatch,
    )


def submit_lift(member_id: int, requester: Requester, *, dispatch: bool = True) -> int:
    def check(s: Session, _mt: MemberTable, _row: Any) -> None:
        if restriction_reason(s, member_id) != REASON:
            raise UserError(f"member {member_id} is not suspended (처리정지); nothing to lift")

    return submit_right(
        RequestKind.SUSPENSION_LIFT.value,
        member_id,
        None,
        requester,
        check=check,
        conflicting=(RequestKind.SUSPENSION.value,),
        dispatch=dispatch,
    )


def _refusal(job: Job) -> str | None:
    return refusal_of(job.s, job.req, job.mt)


def _entry(job: Job) -> dict[str, Any]:
    lifting = job.req.kind == RequestKind.SUSPENSION_LIFT.value
    return {
        "action": "restriction",
        "categories": [],
        "rows": 0,
        "reason": "정보주체의 처리정지 해제" if lifting else "정보주체의 처리정지 요구",
        "legal_basis": "개인정보 보호법 제37조, 시행령 제44조",
        "method": "처리정지 해제 (이용·제공 재개)" if lifting else "처리정지 (이용·제공 중지)",
        "actor": "lifecycle.rights.suspend_lift" if lifting else "lifecycle.rights.suspend",
        "details": {"lifted": lifting},
    }


def _access_log(job: Job, a: Session) -> None:
    """Once per request, with the ledger entry, whoever submitted it (the website included)."""
    lifting = job.req.kind == RequestKind.SUSPENSION_LIFT.value
    log_access(job, a, "change",
               "suspension lift (carried out by worker)" if lifting
               else "suspension (carried out by worker)", {"lifted": lifting})  # fmt: skip


def _lift(job: Job) -> None:
    refusal = _refusal(job)
    if refusal is None and restriction_reason(job.s, job.member_id) != REASON:
        refusal = "처리정지 중이 아니어서 해제할 것이 없습니다 (member is not suspended)"
    if refusal is not None:
        refuse(job, refusal)
        return
    # The ledger first: a crash after it re-runs into the same (deduplicated) entry.
    write_ledger(job, lambda a: _access_log(job, a), **_entry(job))
    lift(job.s, job.member_id, REASON)
    transition(job.req, RequestState.COMPLETED, error=None)


SUSPENSION = Pipeline(
    RequestKind.SUSPENSION.value,
    {
        **starting(restrict_step(REASON, _refusal, override=True)),
        RequestState.RESTRICTED.value: ledger_step(
            RequestState.COMPLETED, _entry, first=_access_log
        ),
    },
    finish=(answer_requester,),
)

SUSPENSION_LIFT = Pipeline(
    RequestKind.SUSPENSION_LIFT.value, starting(_lift), finish=(answer_requester,)
)


def run_suspension(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(SUSPENSION, request_id, task_id)


def run_lift(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    return run(SUSPENSION_LIFT, request_id, task_id)
