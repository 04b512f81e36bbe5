"""Correction requests (정정 요구, 개인정보 보호법 제36조).

The job, each step persisted before the next so a re-run resumes where a crash left off:

1. ``received/dispatched``: validate every field and value against the data map and the real
   column types; refuse (request ``failed``, nothing changed) on any error. Otherwise restrict
   the member (처리정지) at once → ``restricted``.
2. ``restricted``: in ONE transaction: apply the new values, create a delivery for every
   recipient that received any changed field (with exactly those fields' corrected values),
   create the correction-completed notice, replace the payload by the list of corrected field
   names, lift the restriction → ``corrected``.
3. ``corrected``: ledger entry (field names and a pseudonymous subject ref only) →
   ``notifying``; enqueue the deliveries and the member's notice.
4. ``notifying``: completes when every delivery is delivered, or ``needs_attention`` once any
   has exhausted its retries or hit a disabled endpoint.

Old values are read only into memory to tell which fields really change; they are never
written anywhere: not to logs, the ledger, deliveries, notices or the broker.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update

from lifecycle.core import db, dispatch
from lifecycle.core.errors import UserError
from lifecycle.datamap.member_table import MemberTable, member_table, to_json
from lifecycle.notices.members import create_member_notice
from lifecycle.requests.client import dispatch_now, submit_and_enqueue
from lifecycle.requests.outbox import load_for_update, submit
from lifecycle.requests.states import transition
from lifecycle.requests.use_block import lift, restrict
from lifecycle.rights.common import Requester, requester_refusal
from lifecycle.thirdparty.deliveries import create_delivery, maybe_complete_request
from lifecycle.thirdparty.recipients import lock_member, provided_fields
from lifecycle.vault import accesslog, keystore, ledger
from models.archive import LedgerEntry
from models.base import utcnow
from models.notices import Notice
from models.recipients import Delivery, DeliveryState, ThirdParty
from models.requests import LifecycleRequest, RequestKind, RequestState

log = logging.getLogger(__name__)

_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["mobile=010-1234-5678", ...]`` → dict; a one-line UserError on malformed input."""
    if not items:
        raise UserError("nothing to correct: give at least one --set FIELD=VALUE")
    out: dict[str, str] = {}
    for item in items:
        field, sep, value = item.partition("=")
        field = field.strip()
        if not sep or not _FIELD_RE.fullmatch(field):
            raise UserError("--set expects FIELD=VALUE (a field name, '=', then the new value)")
        if field in out:
            raise UserError(f"field {field} is given twice")
        out[field] = value
    return out


def _check_member(s: Any, mt: MemberTable, member_id: int, *, exclusive: bool) -> Any:
    row = lock_member(s, mt, member_id, share=not exclusive)
    if row is None or mt.is_withdrawn(row):
        raise UserError(f"member {member_id} does not exist or has withdrawn")
    return row


def validate_request(member_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Everything `lifecycle correct` checks before creating anything; returns JSON values."""
    if member_id <= 0:
        raise UserError("member id must be a positive integer")
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        typed = mt.validate(values)
        _check_member(s, mt, member_id, exclusive=False)
    return {f: to_json(v) for f, v in typed.items()}


def submit_correction(
    member_id: int,
    values: dict[str, Any],
    requester: Requester | None = None,
    actor: str | None = None,
) -> int:
    """Validate, then create the request and dispatch it (the website's Python client path).

    ``actor``: the operator (or website handler) who entered it, for the handler access log.
    """
    payload = validate_request(member_id, values)
    if requester is None:
        return submit_and_enqueue(RequestKind.CORRECTION.value, member_id, payload, actor=actor)
    # Who asked is recorded in the same transaction, before any worker can see the row.
    with db.session("primary") as s:
        request_id = submit(s, RequestKind.CORRECTION.value, member_id, payload, actor=actor)
        req = s.get(LifecycleRequest, request_id)
        assert req is not None
        req.requester_kind, req.requester_name = requester.kind, requester.name
        req.requester_contact, req.verified_by = requester.contact, requester.verified_by
    dispatch_now(request_id)
    return request_id


# -- the job -------------------------------------------------------------------------------------


def _fail(s: Any, req: LifecycleRequest, reason: str) -> None:
    transition(req, RequestState.FAILED, error=reason)
    req.payload = None  # the requested values are not kept for a refused request
    lift(s, req.member_id, "correction")
    log.warning("correction request %s refused: %s", req.id, reason)


def _same(a: Any, b: Any) -> bool:
    return bool(to_json(a) == to_json(b))


def _step_restrict(request_id: int) -> str | None:
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None:
            return None
        if req.kind != RequestKind.CORRECTION.value:
            return req.state
        if req.state not in (RequestState.RECEIVED.value, RequestState.DISPATCHED.value):
            return req.state
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        try:
            mt.validate(req.payload if isinstance(req.payload, dict) else {})
            _check_member(s, mt, req.member_id, exclusive=True)
        except UserError as exc:
            _fail(s, req, str(exc))
            return req.state
        refusal = requester_refusal(s, req)
        if refusal is not None:
            _fail(s, req, refusal)
            return req.state
        restrict(s, req.member_id, "correction", request_id)
        transition(req, RequestState.RESTRICTED)
        return req.state


def _step_apply(request_id: int) -> str | None:

    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is None or req.state != RequestState.RESTRICTED.value:
            return req.state if req else None
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        member_id = req.member_id
        try:
            typed = mt.validate(req.payload if isinstance(req.payload, dict) else {})
            current = _check_member(s, mt, member_id, exclusive=True)
        except UserError as exc:
            _fail(s, req, str(exc))
            return req.state
        changed = sorted(f for f, v in typed.items() if not _same(current[f], v))
        del current  # the old values go no further than this comparison
        if changed:
            s.execute(
                update(mt.table)
                .where(mt.key_col == member_id)
                .values({f: typed[f] for f in changed})
            )
        deliveries = 0
        for recipient_id, fields in sorted(provided_fields(s, member_id).items()):
            owed = sorted(fields & set(changed))
            if not owed:
                continue
            recipient = s.get(ThirdParty, recipient_id)
            assert recipient is not None
            create_delivery(
                s,
                recipient=recipient,
                kind="correction",
                request_id=request_id,
                member_id=member_id,
                values={f: to_json(typed[f]) for f in owed},
            )
            deliveries += 1
        if changed:
            create_member_notice(
                s,
                "correction_completed",
                member_id,
                {"request_id": request_id, "fields": changed, "completed_date": utcnow().date()},
            )
        req.payload = {"corrected_fields": changed}
        lift(s, member_id, "correction")
        transition(req, RequestState.CORRECTED)
        log.info(
            "correction request %s applied: %d field(s) changed, %d notification(s) owed",
            request_id,
            len(changed),
            deliveries,
        )
        return req.state


def _step_ledger(request_id: int, task_id: str | None) -> str | None:

    with db.session("primary") as s:
        req = s.get(LifecycleRequest, request_id)
        if req is None or req.state != RequestState.CORRECTED.value:
            return req.state if req else None
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        fields = list((req.payload or {}).get("corrected_fields", []))
        member_id = req.member_id
        asked_by = req.actor or "website"
        owed = s.scalars(select(Delivery.id).where(Delivery.request_id == request_id)).all()
    categories = sorted({mt.categories.get(f, "profile") for f in fields})
    with db.session("archive") as a:
        first = (
            a.scalar(
                select(LedgerEntry.seq).where(
                    LedgerEntry.dedup_key == f"correction:request{request_id}"
                )
            )
            is None
        )
        if first:  # once per request, with the ledger entry (a re-run writes neither again)
            accesslog.record(
                a, operator=asked_by, kind="change", action="correct (applied by worker)",
                member_id=member_id, request_id=request_id, details={"fields": fields},
            )  # fmt: skip
        ledger.append(
            a,
            action="correction",
            categories=categories,
            tables=[mt.table.name],
            subjects=1,
            rows=1 if fields else 0,
            reason="정보주체의 정정 요구" if fields else "정보주체의 정정 요구 (변경 사항 없음)",
            legal_basis="개인정보 보호법 제36조",
            method="정정 (처리정지 후 단일 트랜잭션으로 반영)",
            actor="lifecycle.correct",
            task_id=task_id,
            request_id=request_id,
            subject_ref=keystore.subject_ref(a, member_id),
            details={"fields": fields, "notifications": len(owed)},
            dedup_key=f"correction:request{request_id}",
        )
    with db.session("primary") as s:
        req = load_for_update(s, request_id)
        if req is not None and req.state == RequestState.CORRECTED.value:
            transition(req, RequestState.NOTIFYING)
        return req.state if req else None


def run_correction(
    request_id: int,
    task_id: str | None = None,
    *,
    send: Callable[..., Any] = dispatch.send,
) -> dict[str, Any]:
    """Carry the request as far as it can go now; safe to call any number of times.

    ``send`` is :func:`lifecycle.core.dispatch.send`; a test passes a stand-in to lose the
    messages on purpose (the beat's resend job must then find the deliveries).
    """

    state = _step_restrict(request_id)
    if state == RequestState.RESTRICTED.value:
        state = _step_apply(request_id)
    if state == RequestState.CORRECTED.value:
        state = _step_ledger(request_id, task_id)
    pending: list[int] = []
    if state in (RequestState.NOTIFYING.value, RequestState.NEEDS_ATTENTION.value):
        with db.session("primary") as s:
            pending = list(
                s.scalars(
                    select(Delivery.id).where(
                        Delivery.request_id == request_id,
                        Delivery.state == DeliveryState.PENDING.value,
                        Delivery.attempts == 0,
                    )
                )
            )
            if pending:
                s.execute(
                    update(Delivery).where(Delivery.id.in_(pending)).values(enqueued_at=utcnow())
                )
            notice_member = s.execute(
                select(Notice.id, LifecycleRequest.member_id)
                .join(LifecycleRequest, LifecycleRequest.id == request_id)
                .where(Notice.dedup_key == f"correction_completed:request{request_id}")
            ).first()
        for did in pending:
            send(dispatch.NOTIFY_DELIVER, did)
        if notice_member is not None:
            nid, mid = notice_member
            send(dispatch.NOTICE_SEND_BATCH, nid, mid, mid)
        with db.session("primary") as s:
            state = maybe_complete_request(s, request_id) or state
    if state is None:
        return {"request_id": request_id, "state": "missing"}
    return {"request_id": request_id, "state": state, "deliveries_enqueued": len(pending)}
