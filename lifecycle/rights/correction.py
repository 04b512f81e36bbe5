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
from sqlalchemy.orm import Session

from lifecycle.core import db, dispatch
from lifecycle.core.errors import UserError
from lifecycle.datamap import logins
from lifecycle.datamap.member_table import live_member, member_table, to_json
from lifecycle.notices.members import create_member_notice
from lifecycle.recipients.deliveries import create_delivery
from lifecycle.recipients.provisions import provided_fields
from lifecycle.requests.client import dispatch_now, submit_and_enqueue
from lifecycle.requests.outbox import submit
from lifecycle.requests.states import transition
from lifecycle.requests.use_block import lift
from lifecycle.rights.common import Requester, requester_refusal
from lifecycle.rights.contact_rows import correct_contact_rows
from lifecycle.rights.pipeline import (
    TELLING,
    Job,
    Pipeline,
    Run,
    ledger_step,
    refuse,
    restrict_step,
    run,
    starting,
    tell,
)
from lifecycle.vault import accesslog
from models.base import utcnow
from models.notices import Notice
from models.recipients import Delivery, Recipient
from models.requests import LifecycleRequest, RequestKind, RequestState

log = logging.getLogger(__name__)
REASON = "correction"

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


def validate_request(member_id: int, values: dict[str, Any]) -> dict[str, Any]:
    """Everything `lifecycle correct` checks before creating anything; returns JSON values."""
    if member_id <= 0:
        raise UserError("member id must be a positive integer")
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        typed = mt.validate(values)
        live_member(s, mt, member_id, exclusive=False)
        assert mt.subject is not None
        logins.refuse_taken(mt.subject, mt.table, s, member_id, typed)
    return {f: to_json(v) for f, v in typed.items()}


def submit_correction(
    member_id: int,
    values: dict[str, Any],
    requester: Requester | None = None,
    actor: str | None = None,
    *,
    dispatch: bool = True,
) -> int:
    """Validate, then create the request and dispatch it (the website's Python client path).

    ``actor``: the operator (or website handler) who entered it, for the handler access log.
    ``dispatch=False`` leaves the sending to the relay (see :func:`common.submit_right`).
    """
    payload = validate_request(member_id, values)
    if requester is None and dispatch:
        return submit_and_enqueue(RequestKind.CORRECTION.value, member_id, payload, actor=actor)
    # Who asked is recorded in the same transaction, before any worker can see the row.
    with db.session("primary") as s:
        request_id = submit(s, RequestKind.CORRECTION.value, member_id, payload, actor=actor)
        req = s.get(LifecycleRequest, request_id)
        assert req is not None
        if requester is not None:
            requester.record(req)
    if dispatch:
        dispatch_now(request_id)
    return request_id


# -- the job -------------------------------------------------------------------------------------


def _undo(job: Job) -> None:
    job.req.payload = None  # the requested values are not kept for a refused request
    lift(job.s, job.member_id, REASON)


def _same(a: Any, b: Any) -> bool:
    return bool(to_json(a) == to_json(b))


def _check(job: Job) -> str | None:
    try:
        job.mt.validate(job.payload)
        live_member(job.s, job.mt, job.member_id, exclusive=True)
    except UserError as exc:
        return str(exc)
    return requester_refusal(job.s, job.req)


def _apply(job: Job) -> None:
    s, mt, member_id, request_id = job.s, job.mt, job.member_id, job.request_id
    try:
        typed = mt.validate(job.payload)
        current = live_member(s, mt, member_id, exclusive=True)
        assert mt.subject is not None
        logins.refuse_taken(mt.subject, mt.table, s, member_id, typed)
    except UserError as exc:
        refuse(job, str(exc))
        return
    changed = sorted(f for f, v in typed.items() if not _same(current[f], v))
    del current  # the old values go no further than this comparison
    also: list[str] = []
    if changed:
        s.execute(
            update(mt.table).where(mt.key_col == member_id).values({f: typed[f] for f in changed})
        )
        # The same contact held in other rows (a billing_email meta row), in this transaction.
        also = correct_contact_rows(s, member_id, {f: typed[f] for f in changed})
    deliveries = 0
    for recipient_id, fields in sorted(provided_fields(s, member_id).items()):
        owed = sorted(fields & set(changed))
        if not owed:
            continue
        recipient = s.get(Recipient, recipient_id)
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
    job.req.payload = {"corrected_fields": changed}
    if also:
        job.req.payload["also_in"] = also  # entry names only, never values
    lift(s, member_id, REASON)
    transition(job.req, RequestState.CORRECTED)
    log.info(
        "correction request %s applied: %d field(s) changed, %d notification(s) owed",
        request_id,
        len(changed),
        deliveries,
    )


def _entry(job: Job) -> dict[str, Any]:
    fields = list(job.payload.get("corrected_fields", []))
    owed = job.s.scalars(select(Delivery.id).where(Delivery.request_id == job.request_id)).all()
    return {
        "action": "correction",
        "categories": sorted({job.mt.categories.get(f, "profile") for f in fields}),
        "rows": 1 if fields else 0,
        "reason": "정보주체의 정정 요구" if fields else "정보주체의 정정 요구 (변경 사항 없음)",
        "legal_basis": "개인정보 보호법 제36조",
        "method": "정정 (처리정지 후 단일 트랜잭션으로 반영)",
        "actor": "lifecycle.correct",
        "details": {"fields": fields, "notifications": len(owed)}
        | ({"also_in": list(job.payload["also_in"])} if job.payload.get("also_in") else {}),
    }


def _access_log(job: Job, a: Session) -> None:
    """Once per request, with the ledger entry (a re-run writes neither again)."""
    accesslog.record(
        a, operator=job.req.actor or "website", kind="change", action="correct (applied by worker)",
        member_id=job.member_id, request_id=job.request_id,
        details={"fields": list(job.payload.get("corrected_fields", []))},
    )  # fmt: skip


def _send_notice(r: Run) -> None:
    """The member's correction notice (created with the values), once the recipients are told."""
    if r.state not in TELLING:
        return
    with db.session("primary") as s:
        notice_member = s.execute(
            select(Notice.id, LifecycleRequest.member_id)
            .join(LifecycleRequest, LifecycleRequest.id == r.request_id)
            .where(Notice.dedup_key == f"correction_completed:request{r.request_id}")
        ).first()
    if notice_member is not None:
        nid, mid = notice_member
        (r.send or dispatch.send)(dispatch.NOTICE_SEND_BATCH, nid, mid, mid)


CORRECTION = Pipeline(
    RequestKind.CORRECTION.value,
    {
        **starting(restrict_step(REASON, _check)),
        RequestState.RESTRICTED.value: _apply,
        RequestState.CORRECTED.value: ledger_step(
            RequestState.NOTIFYING, _entry, first=_access_log
        ),
    },
    # No answer here: the correction notice is the answer; beat answers a refused one.
    finish=(_send_notice, tell),
    on_refuse=_undo,
)


def run_correction(
    request_id: int,
    task_id: str | None = None,
    *,
    send: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Carry the request as far as it can go now; safe to call any number of times.

    ``send`` is :func:`lifecycle.core.dispatch.send`; a test passes a stand-in to lose the
    messages on purpose (the beat's resend job must then find the deliveries).
    """
    return run(CORRECTION, request_id, task_id, send=send)
