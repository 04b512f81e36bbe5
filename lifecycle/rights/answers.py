"""The written answer every request ends with (시행령 제41조·제43조·제44조).

Done, or refused with the reason and how to object (이의제기); an access request may also be
postponed with a reason. The answer is a one-member notice (Korean template, the member-notice
machinery sends it, exactly once). It goes to the requester's own contact when the requester
was verified (the member, the recorded guardian, a delegate with a checked 위임장); otherwise
to the member's recorded address, so a stranger asking about a child learns nothing and the
family learns that someone asked.

``answer`` is idempotent (the request's ``answered_at`` and the notice's dedup key); each job
calls it when its request ends, and beat (`answer_pending`) answers whatever a crash left.
Withdrawal and correction keep their own completion notices: those are their answers.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.channels.templates import field_labels
from lifecycle.core import db
from lifecycle.core.timeutil import as_utc
from lifecycle.notices.members import create_member_notice, enqueue_batch
from lifecycle.requests.deadlines import due_of
from lifecycle.requests.outbox import load_for_update
from lifecycle.requests.states import TERMINAL
from lifecycle.rights.common import requester_refusal
from models.base import utcnow
from models.notices import Notice
from models.requests import LifecycleRequest, RequesterKind, RequestState

log = logging.getLogger(__name__)

# Beat answers requests that ended this recently without an answer (older rows predate answers).
ANSWER_WINDOW = timedelta(days=30)
# Let the job that ended the request send its own answer first.
ANSWER_GRACE = timedelta(minutes=2)

_ADDRESSEE = {
    RequesterKind.MEMBER.value: "회원님",
    RequesterKind.GUARDIAN.value: "법정대리인님",
    RequesterKind.DELEGATE.value: "대리인님",
}
_OWN_NOTICE = {"withdrawal": "withdrawal_completed", "correction": "correction_completed"}
# The member's part is done once third parties are being told: the answer does not wait for
# a recipient's endpoint (its failures are the operator's to chase, not the member's).
ANSWERABLE = frozenset(
    {*TERMINAL, RequestState.NOTIFYING.value, RequestState.NEEDS_ATTENTION.value}
)


def _total(counts: Any) -> int:
    return sum(int(n) for n in counts.values()) if isinstance(counts, dict) else 0


def _detail(req: LifecycleRequest) -> str:
    p: dict[str, Any] = req.payload if isinstance(req.payload, dict) else {}
    if req.kind == "access":
        return (
            f"■ 열람 자료: 보유 중인 개인정보 {p.get('tables', 0)}개 표 {p.get('rows', 0)}건과 "
            "제3자 제공 내역을 담은 파일(ZIP)을 준비하였습니다. 파일은 본인 확인 후 전달해 드리며, "
            "암호가 설정된 경우 암호는 다른 경로로 알려드립니다.\n"
        )
    if req.kind == "erasure":
        return (
            f"■ 삭제된 항목: {field_labels(list(p.get('erased', [])))}\n"
            "삭제된 항목을 제공받은 제3자에게는 삭제를 요청하였습니다.\n"
        )
    if req.kind == "suspension":
        return "■ 처리정지: 해제를 요청하시기 전까지 회원님의 개인정보는 이용·제공되지 않습니다.\n"
    if req.kind == "suspension_lift":
        return "■ 처리정지가 해제되어 회원님의 개인정보가 다시 이용될 수 있습니다.\n"
    if req.kind == "consent_withdrawal":
        gone = _total(p.get("destroyed")) + _total(p.get("archive_destroyed"))
        kept = _total(p.get("kept_by_law"))
        return (
            f"■ 철회된 동의: {p.get('purpose_label') or p.get('purpose', '')}\n"
            + (
                f"이 동의에 근거하여 처리하거나 보관하던 개인정보 {gone}건을 지체 없이 "
                "파기하였습니다.\n"
                if gone
                else ""
            )
            + (
                f"다른 법령에 따라 보존하여야 하는 기록 {kept}건은 그 법령이 정한 기간 동안 "
                "분리하여 보관한 뒤 파기합니다 (개인정보 보호법 제21조제1항 단서).\n"
                if kept
                else ""
            )
            + "해당 목적으로 개인정보를 제공받은 제3자에게는 이용 중지와 삭제를 요청하였습니다.\n"
        )
    if req.kind == "correction":
        return f"■ 정정된 항목: {field_labels(list(p.get('corrected_fields', [])) or ['없음'])}\n"
    return ""


def _address(s: Session, req: LifecycleRequest) -> tuple[str | None, str]:
    """Where the answer goes (None: the member's recorded address) and how it addresses them."""
    kind = req.requester_kind or RequesterKind.MEMBER.value
    if req.requester_contact and requester_refusal(s, req) is None:
        return req.requester_contact, _ADDRESSEE.get(kind, "회원님")
    return None, "회원님"


def _create(s: Session, req: LifecycleRequest) -> int | None:
    own = _OWN_NOTICE.get(req.kind)
    if own is not None and req.state != RequestState.FAILED.value:
        nid = s.scalar(select(Notice.id).where(Notice.dedup_key == f"{own}:request{req.id}"))
        if nid is not None:
            return int(nid)
    refused = req.state == RequestState.FAILED.value
    address, addressee = _address(s, req)
    ctx = {
        "request_id": req.id,
        "request_kind": req.kind,
        "outcome": "refused" if refused else "done",
        "reason": req.error or "사유 미기재",
        "received_date": as_utc(req.created_at).date(),
        "completed_date": utcnow().date(),
        "addressee": addressee,
        "detail": _detail(req),
    }
    return create_member_notice(s, "request_answer", req.member_id, ctx, address=address)


def answer(request_id: int) -> int | None:
    """Write (and send) the answer of an ended request once; returns the notice id."""
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None or req.state not in ANSWERABLE:
            return None
        if req.answered_at is not None:
            return req.answer_notice_id
        nid = _create(s, req)
        req.answered_at = utcnow()
        req.answer_notice_id = nid
        member_id = req.member_id
    if nid is not None:
        try:
            enqueue_batch(nid, member_id, member_id)
        except Exception as exc:
            # The notice row is pending in the DB: beat's stale-notice resume sends it.
            log.warning("answer %s to request %s not enqueued (%s)", nid, request_id,
                        type(exc).__name__)  # fmt: skip
    return nid


def postpone_notice(request_id: int) -> int:
    """The written postponement (연기 통지) of an extended access request; sent at once."""
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        assert req is not None
        address, addressee = _address(s, req)
        ctx = {
            "request_id": req.id,
            "request_kind": req.kind,
            "reason": req.extension_reason or "",
            "received_date": as_utc(req.created_at).date(),
            "due_date": due_of(req).date(),
            "addressee": addressee,
        }
        nid = create_member_notice(s, "request_postponed", req.member_id, ctx, address=address)
        member_id = req.member_id
    enqueue_batch(nid, member_id, member_id)
    return nid


def answer_pending(limit: int = 200) -> int:
    """Answer requests that ended recently without an answer (a crash between end and answer)."""
    now = utcnow()
    with db.session("primary") as s:
        ids = list(
            s.scalars(
                select(LifecycleRequest.id)
                .where(
                    LifecycleRequest.state.in_(ANSWERABLE),
                    LifecycleRequest.answered_at.is_(None),
                    LifecycleRequest.updated_at > now - ANSWER_WINDOW,
                    LifecycleRequest.updated_at < now - ANSWER_GRACE,
                )
                .order_by(LifecycleRequest.id)
                .limit(limit)
            )
        )
    for rid in ids:
        answer(rid)
    return len(ids)
