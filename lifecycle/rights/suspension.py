"""처리정지 (개인정보 보호법 제37조) and its lifting.

A suspension is a ``lifecycle_restrictions`` row with reason ``suspension``: while it exists the
member's data is not provided to third parties (`record_provision` refuses), notices other than
answers to their own requests are held, and the website must check it before using the data
(`lifecycle.requests.restriction.is_restricted`). It takes over a shorter restriction (an
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

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.member_table import MemberTable, member_table
from lifecycle.requests.outbox import load_for_update
from lifecycle.requests.states import START, transition
from lifecycle.requests.use_block import lift, restrict, restriction_reason
from lifecycle.rights.answers import answer
from lifecycle.rights.common import Requester, live_member, refuse, requester_refusal, submit_right
from lifecycle.vault import keystore, ledger
from models.requests import RequestKind, RequestState

log = logging.getLogger(__name__)
REASON = "suspension"


def _clean_reason(text: str) -> str:
    text = " ".join(text.split())
    if not text or len(text) > 500:
        raise UserError("--reason must be 1-500 characters")
    return text


def submit_suspension(member_id: int, reason: str, requester: Requester) -> int:
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
    )


def submit_lift(member_id: int, requester: Requester) -> int:
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
    )


def _refusal(s: Session, req: Any) -> str | None:
    refusal = requester_refusal(s, req)
    if refusal is not None:
        return refusal
    try:
        live_member(s, member_table(s.get_bind()), req.member_id, exclusive=True)  # type: ignore[arg-type]
    except UserError as exc:
        return f"회원 정보를 찾을 수 없습니다 ({exc})"
    return None


def _ledger(request_id: int, member_id: int, lifting: bool, task_id: str | None) -> None:
    with db.session("primary") as s:
        table = member_table(s.get_bind()).table.name  # type: ignore[arg-type]
    with db.session("archive") as a:
        ledger.append(
            a,
            action="restriction",
            categories=[],
            tables=[table],
            subjects=1,
            rows=0,
            reason="정보주체의 처리정지 해제" if lifting else "정보주체의 처리정지 요구",
            legal_basis="개인정보 보호법 제37조, 시행령 제44조",
            method="처리정지 해제 (이용·제공 재개)" if lifting else "처리정지 (이용·제공 중지)",
            actor="lifecycle.rights.suspend_lift" if lifting else "lifecycle.rights.suspend",
            task_id=task_id,
            request_id=request_id,
            subject_ref=keystore.subject_ref(a, member_id),
            details={"lifted": lifting},
            dedup_key=f"{'suspension_lift' if lifting else 'suspension'}:request{request_id}",
        )


def run_suspension(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None or req.kind != RequestKind.SUSPENSION.value:
            return {"request_id": request_id, "state": "missing"}
        if req.state in START:
            refusal = _refusal(s, req)
            if refusal is not None:
                refuse(req, refusal)
            else:
                restrict(s, req.member_id, REASON, request_id, override=True)
                transition(req, RequestState.RESTRICTED)
        state, member_id = req.state, req.member_id
    if state == RequestState.RESTRICTED.value:
        _ledger(request_id, member_id, False, task_id)
        with db.session("primary") as s:
            req = load_for_update(s, request_id)
            assert req is not None
            if req.state == RequestState.RESTRICTED.value:
                transition(req, RequestState.COMPLETED, error=None)
            state = req.state
    answer(request_id)
    return {"request_id": request_id, "state": state}


def run_lift(request_id: int, task_id: str | None = None) -> dict[str, Any]:
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None or req.kind != RequestKind.SUSPENSION_LIFT.value:
            return {"request_id": request_id, "state": "missing"}
        state, member_id = req.state, req.member_id
        if state in START:
            refusal = _refusal(s, req)
            if refusal is None and restriction_reason(s, member_id) != REASON:
                refusal = "처리정지 중이 아니어서 해제할 것이 없습니다 (member is not suspended)"
            if refusal is not None:
                refuse(req, refusal)
                state = req.state
    if state in START:
        # The ledger first: a crash after it re-runs into the same (deduplicated) entry.
        _ledger(request_id, member_id, True, task_id)
        with db.session("primary") as s:
            req = load_for_update(s, request_id)
            assert req is not None
            if req.state in START:
                lift(s, member_id, REASON)
                transition(req, RequestState.COMPLETED, error=None)
            state = req.state
    answer(request_id)
    return {"request_id": request_id, "state": state}
