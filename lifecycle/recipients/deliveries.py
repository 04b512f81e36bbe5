"""Deliveries to third parties: one attempt at a time, recorded before it is made.

Life of a delivery::

    pending --2xx--> delivered            (payload blanked, never sent again)
    pending --410--> disabled             (the recipient is disabled too)
    pending --other status / timeout / connection error--> pending, next_attempt_at = schedule
    pending --schedule exhausted--> failed  (request: needs_attention; ops can replay)

Crash safety. An attempt is *claimed* by one conditional UPDATE (state still pending, due now)
that pushes ``next_attempt_at`` out by a lease and commits an ``in_flight`` attempt row before
any byte is sent. Two tasks for the same delivery therefore never send concurrently, and a
delivered row is never picked again. If the worker dies after sending but before recording the
answer, the lease expires, the attempt is marked ``interrupted`` and the message is sent again
with the same ``webhook-id``: Standard Webhooks receivers drop the duplicate by that id.

Scheduling. The schedule lives in the database (``next_attempt_at``), not in the broker: a
beat job (`lifecycle.notify.resend_due`, every 15 s) enqueues whatever is due. That survives a
worker crash, a broker restart that lost every message, and 14-hour delays (Redis would
redeliver an ETA message held that long once the visibility timeout passed). Short delays
(up to `COUNTDOWN_MAX`) are also enqueued directly with a countdown, so a 5-second retry does
not wait for the next beat tick; whichever arrives first does the attempt, the other finds
nothing due.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from lifecycle.channels.mailer import MessageBuilder, mailer_from_settings
from lifecycle.channels.templates import third_party_correction, third_party_deletion
from lifecycle.core import db, dbkind, dispatch
from lifecycle.core.errors import NotDelivered, UserError
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.identifiers import flagged_columns, refusal
from lifecycle.datamap.member_table import member_table
from lifecycle.recipients.retry_schedule import delay_before
from lifecycle.requests.outbox import load_for_update
from lifecycle.requests.residue import open_reason as residue_reason
from lifecycle.requests.states import allowed, transition
from models.base import utcnow
from models.recipients import Channel, Delivery, DeliveryAttempt, DeliveryState, Recipient
from models.requests import LifecycleRequest, RequestState

log = logging.getLogger(__name__)

COUNTDOWN_MAX = 300.0
# How long an enqueued-but-not-started delivery is left alone before beat enqueues it again.
ENQUEUE_LEASE = timedelta(minutes=10)
EVENT_TYPE = "member.personal_data.corrected"
# A deletion notice (erasure, consent withdrawal, withdrawal): field names, no values.
EVENT_TYPES = {"correction": EVENT_TYPE, "deletion": "member.personal_data.deleted"}

Enqueue = Callable[[int, float], None]


def _aware(dt: datetime | None) -> datetime | None:
    return None if dt is None else as_utc(dt)


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def refuse_identifiers(values: Any, what: str) -> None:
    """A one-line UserError when ``values`` carries a value of a flagged unique identifier
    (고유식별정보, lifecycle.datamap.identifiers); field names alone (a deletion notice) pass."""
    if not isinstance(values, dict):
        return
    dm = current_datamap()
    flagged = flagged_columns(dm, dm.subject.table)
    for name, value in sorted(values.items()):
        if value is not None and name in flagged:
            raise UserError(refusal(flagged[name], name, what))


def create_delivery(
    s: Session,
    *,
    recipient: Recipient,
    kind: str,
    request_id: int | None,
    member_id: int,
    values: dict[str, Any],
) -> Delivery:
    """A pending delivery of ``values`` (JSON-ready) in the caller's transaction."""
    refuse_identifiers(values, "sent to a third party")
    d = Delivery(
        message_id=new_message_id(),
        recipient_id=recipient.id,
        kind=kind,
        request_id=request_id,
        member_id=member_id,
        fields=sorted(values),
        payload=values,
        state=DeliveryState.PENDING.value,
        attempts=0,
        next_attempt_at=utcnow(),
    )
    if recipient.disabled_at is not None:
        # They still got the wrong data: keep the debt visible instead of dropping it.
        d.state = DeliveryState.DISABLED.value
        d.last_status = "recipient disabled"
        d.next_attempt_at = None
        d.finished_at = utcnow()
    s.add(d)
    s.flush()
    return d


def webhook_payload(d: Delivery) -> dict[str, Any]:
    created = _aware(d.created_at) or utcnow()
    return {
        "type": EVENT_TYPES.get(d.kind, EVENT_TYPE),
        "timestamp": created.isoformat(),
        "data": {
            "member_id": d.member_id,
            "request_id": d.request_id,
            "fields": d.payload or {},
        },
    }


# -- one attempt ---------------------------------------------------------------------------------


def _claim(delivery_id: int, now: datetime, lease: timedelta) -> tuple[Delivery, Recipient] | str:
    """Claim the delivery for one attempt (or say why not). Commits the in_flight record."""
    with db.session("primary") as s:
        res = cast(
            "CursorResult[Any]",
            s.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.state == DeliveryState.PENDING.value,
                    Delivery.next_attempt_at <= now,
                )
                .values(
                    next_attempt_at=now + lease,
                    enqueued_at=None,
                    attempts=Delivery.attempts + 1,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ),
        )
        if res.rowcount != 1:
            return "not_due"
        d = s.get(Delivery, delivery_id)
        assert d is not None
        s.refresh(d)
        r = s.get(Recipient, d.recipient_id)
        assert r is not None
        if r.disabled_at is not None:
            _finish(s, d, DeliveryState.DISABLED, "recipient disabled")
            return "disabled"
        # Whatever was in flight before us was interrupted by a crash.
        s.execute(
            update(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id == d.id, DeliveryAttempt.outcome == "in_flight")
            .values(outcome="interrupted", finished_at=now)
        )
        number = (
            s.scalar(select(func.count()).where(DeliveryAttempt.delivery_id == d.id)) or 0
        ) + 1
        s.add(DeliveryAttempt(delivery_id=d.id, number=number, at=now, outcome="in_flight"))
        s.expunge(d)
        s.expunge(r)
        return d, r


def _finish(s: Session, d: Delivery, state: DeliveryState, last_status: str) -> None:
    d.state = state.value
    d.last_status = last_status[:64]
    d.finished_at = utcnow()
    d.next_attempt_at = None
    if state == DeliveryState.DELIVERED:
        d.payload = None


def _send(d: Delivery, r: Recipient) -> tuple[str, int | None, str | None, str | None]:
    """(outcome, status code, error class, safe reason) where outcome is
    delivered|gone|retry|rejected; the reason is for the log (``connection refused
    127.0.0.1:25``), never values."""
    settings = get_settings()
    if r.channel == Channel.WEBHOOK.value:
        from lifecycle.channels.webhooks import deliver_webhook

        assert r.endpoint and r.secret
        out = deliver_webhook(
            r.endpoint,
            r.secret,
            d.message_id,
            webhook_payload(d),
            timeout=settings.webhook_timeout_seconds,
        )
        return out.outcome, out.status_code, out.error_class, None

    mailer = mailer_from_settings()
    if mailer is None:
        return "retry", None, "SmtpNotConfigured", "LIFECYCLE_SMTP_URL is not set"
    created = _aware(d.created_at) or utcnow()
    if d.kind == "deletion":
        rendered = third_party_deletion(
            r.name, d.member_id, d.request_id or 0, d.message_id, list(d.fields), created.date()
        )
    else:
        rendered = third_party_correction(
            r.name, d.member_id, d.request_id or 0, d.message_id, d.payload or {}, created.date()
        )
    domain = settings.mail_from.rpartition("@")[2] or "localhost"
    raw = MessageBuilder(settings.mail_from, rendered.subject, rendered.body).build(
        r.email or "", f"{d.message_id}@{domain}"
    )
    with mailer:
        res = mailer.send(settings.mail_from, r.email or "", raw)
    # A third party's mail is at least once (its Message-ID is stable and the receiver
    # dedupes, as for webhooks): a session lost after the end of DATA is simply retried.
    outcome = {"sent": "delivered", "rejected": "rejected", "retry": "retry", "unknown": "retry"}[
        res.status
    ]
    return outcome, res.code, res.error_class, res.reason


def attempt(delivery_id: int, enqueue: Enqueue | None = None) -> str:
    """Make one attempt if the delivery is due; returns what happened (for logs and tests).

    ``enqueue(delivery_id, countdown)`` schedules a prompt retry for short delays.
    """
    now = utcnow()
    lease = timedelta(seconds=get_settings().webhook_timeout_seconds + 60)
    claimed = _claim(delivery_id, now, lease)
    if isinstance(claimed, str):
        if claimed == "disabled":
            _after_terminal(delivery_id)
        return claimed
    d, r = claimed
    outcome, code, err, why = _send(d, r)
    next_delay: float | None = None
    with db.session("primary") as s:
        row = s.get(Delivery, delivery_id, with_for_update=_pg(s))
        assert row is not None
        s.execute(
            update(DeliveryAttempt)
            .where(
                DeliveryAttempt.delivery_id == delivery_id, DeliveryAttempt.outcome == "in_flight"
            )
            .values(outcome=outcome, status_code=code, error_class=err, finished_at=utcnow())
        )
        status = str(code) if code is not None else (err or "")
        if row.state != DeliveryState.PENDING.value:
            return row.state  # an operator changed it meanwhile; keep their decision
        if outcome == "delivered":
            _finish(s, row, DeliveryState.DELIVERED, status)
        elif outcome == "gone":
            _finish(s, row, DeliveryState.DISABLED, status)
            _disable_recipient(s, row.recipient_id, "410 Gone")
        elif outcome == "rejected":
            _finish(s, row, DeliveryState.FAILED, status)
        else:
            next_delay = delay_before(row.attempts + 1)
            if next_delay is None:
                _finish(s, row, DeliveryState.FAILED, status)
            else:
                row.last_status = status[:64]
                row.next_attempt_at = utcnow() + timedelta(seconds=next_delay)
                if enqueue is not None and next_delay <= COUNTDOWN_MAX:
                    row.enqueued_at = row.next_attempt_at
        final = row.state
    if outcome == "delivered":
        log.info("delivery %s attempt %s: %s (%s)", delivery_id, d.attempts, outcome, status)
    else:
        # Not delivered: ops must see it without turning on INFO. Class and a safe reason.
        webhook = r.channel == Channel.WEBHOOK.value
        reason = f"HTTP {code}" if code is not None and webhook else (why or "-")
        log.warning(
            "delivery %s to recipient %r attempt %s: %s (%s: %s)%s",
            delivery_id,
            r.name,
            d.attempts,
            outcome,
            err or "status",
            reason,
            f"; next attempt in {next_delay:.0f} s" if final == "pending" and next_delay else "",
        )
    if final == DeliveryState.PENDING.value:
        if enqueue is not None and next_delay is not None and next_delay <= COUNTDOWN_MAX:
            enqueue(delivery_id, next_delay)
        return outcome
    _after_terminal(delivery_id)
    return outcome


def _pg(s: Session) -> bool:
    """The server has row locks (PostgreSQL, MySQL); SQLite serialises writers instead."""
    return dbkind.row_locks(s)


def _disable_recipient(s: Session, recipient_id: int, reason: str) -> None:
    r = s.get(Recipient, recipient_id)
    if r is not None and r.disabled_at is None:
        r.disabled_at = utcnow()
        r.disabled_reason = reason
        log.warning("recipient %s disabled: %s", recipient_id, reason)
    # Every other message to it is now undeliverable until an operator re-enables it.
    others = s.scalars(
        select(Delivery).where(
            Delivery.recipient_id == recipient_id,
            Delivery.state == DeliveryState.PENDING.value,
        )
    ).all()
    for o in others:
        _finish(s, o, DeliveryState.DISABLED, "recipient disabled")
    s.flush()
    for o in others:
        if o.request_id is not None:
            maybe_complete_request(s, o.request_id)


def _after_terminal(delivery_id: int) -> None:
    """Ledger entry, then the request's completion check (both idempotent)."""
    write_ledger(delivery_id)
    with db.session("primary") as s:
        d = s.get(Delivery, delivery_id)
        if d is not None and d.request_id is not None:
            maybe_complete_request(s, d.request_id)


# -- request completion --------------------------------------------------------------------------


def maybe_complete_request(s: Session, request_id: int) -> str | None:
    """A correction completes when none of its deliveries is pending any more."""
    req = load_for_update(s, request_id)
    if req is None or req.state not in (
        RequestState.NOTIFYING.value,
        RequestState.NEEDS_ATTENTION.value,
    ):
        return None
    counts = dict(
        s.execute(
            select(Delivery.state, func.count())
            .where(Delivery.request_id == request_id)
            .group_by(Delivery.state)
        ).all()
    )
    if counts.get(DeliveryState.PENDING.value):
        return req.state
    bad = sum(n for st, n in counts.items() if st != DeliveryState.DELIVERED.value)
    # An erasure whose residue check found the erased identities elsewhere (or could not
    # finish) does not complete until an operator dealt with it.
    residue = residue_reason(req)
    if bad or residue:
        reasons = [residue] if residue else []
        if bad:
            reasons.insert(
                0,
                f"{bad} third-party notification(s) failed or the endpoint is disabled; "
                "see lifecycle deliveries list --failing",
            )
        error = "; ".join(reasons)
        if req.state != RequestState.NEEDS_ATTENTION.value:
            transition(req, RequestState.NEEDS_ATTENTION, error=error)
        else:
            req.error = error
    else:
        transition(req, RequestState.COMPLETED, error=None)
    return req.state


# -- ledger --------------------------------------------------------------------------------------

_METHOD = {
    Channel.WEBHOOK.value: "서명된 웹훅 (Standard Webhooks, HMAC-SHA256)",
    Channel.EMAIL.value: "이메일 (SMTP)",
}


def write_ledger(delivery_id: int) -> bool:
    """Record a finished delivery in the ledger once (dedup key), then flag the row."""
    # Here, not at the top: `lifecycle status` imports this module for the failing deliveries
    # and has no use for the ledger (with the archive's models) or the keystore (cryptography).
    from lifecycle.vault import keystore, ledger

    with db.session("primary") as s:
        d = s.get(Delivery, delivery_id)
        if d is None or d.ledger_written or d.state == DeliveryState.PENDING.value:
            return False
        r = s.get(Recipient, d.recipient_id)
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        categories = sorted({mt.categories.get(f, "profile") for f in d.fields})
        info = {
            "delivery_id": d.id,
            "message_id": d.message_id,
            "recipient": r.name if r else str(d.recipient_id),
            "channel": r.channel if r else "",
            "fields": list(d.fields),
            "outcome": d.state,
            "attempts": _tries(s, [d.id]).get(d.id, 0),
        }
        member_id, request_id, table = d.member_id, d.request_id, mt.table.name
        kind = d.kind
        method = _METHOD.get(r.channel if r else "", "")
    with db.session("archive") as a:
        ledger.append(
            a,
            action="notification",
            categories=categories,
            tables=[table],
            subjects=1,
            rows=1,
            reason=(
                "삭제 요청의 제3자 통지 (개인정보 보호법 제36조·제37조)"
                if kind == "deletion"
                else "정정 결과의 제3자 통지 (개인정보 보호법 제36조)"
            ),
            legal_basis="개인정보 보호법 제36조, 시행령 제43조",
            method=method,
            actor=dispatch.NOTIFY_DELIVER,
            request_id=request_id,
            subject_ref=keystore.subject_ref(a, member_id),
            details=info,
            dedup_key=f"notification:delivery{delivery_id}",
        )
    with db.session("primary") as s:
        s.execute(update(Delivery).where(Delivery.id == delivery_id).values(ledger_written=True))
    return True


# -- beat: what is due ---------------------------------------------------------------------------


def due_deliveries(limit: int = 500) -> list[int]:
    """Claim due, not-recently-enqueued deliveries for enqueueing (SKIP LOCKED on PostgreSQL)."""
    now = utcnow()
    with db.session("primary") as s:
        stmt = (
            select(Delivery)
            .where(
                Delivery.state == DeliveryState.PENDING.value,
                Delivery.next_attempt_at <= now,
                (Delivery.enqueued_at.is_(None)) | (Delivery.enqueued_at < now - ENQUEUE_LEASE),
            )
            .order_by(Delivery.next_attempt_at)
            .limit(limit)
        )
        rows = list(s.scalars(dbkind.for_update(stmt, s, skip=True)))
        for d in rows:
            d.enqueued_at = now
        return [d.id for d in rows]


def unrecorded_finished(limit: int = 500) -> list[int]:
    """Finished deliveries whose ledger entry a crash left unwritten."""
    with db.session("primary") as s:
        return list(
            s.scalars(
                select(Delivery.id)
                .where(
                    Delivery.state != DeliveryState.PENDING.value,
                    Delivery.ledger_written.is_(False),
                )
                .limit(limit)
            )
        )


# -- ops -----------------------------------------------------------------------------------------


def replay(delivery_id: int) -> int:
    """Give a failed or disabled delivery a fresh round of the schedule; returns its request."""
    with db.session("primary") as s:
        d = s.get(Delivery, delivery_id, with_for_update=_pg(s))
        if d is None:
            raise UserError(f"delivery {delivery_id} does not exist")
        if d.state == DeliveryState.DELIVERED.value:
            raise UserError(f"delivery {delivery_id} was already delivered; it is never resent")
        if d.state == DeliveryState.PENDING.value and d.attempts == 0:
            if _tries(s, [delivery_id]):
                raise UserError(f"delivery {delivery_id} is already queued for a new attempt")
            raise UserError(f"delivery {delivery_id} has not been attempted yet")
        r = s.get(Recipient, d.recipient_id)
        if r is not None and r.disabled_at is not None:
            raise UserError(
                f"recipient {r.name!r} is disabled ({r.disabled_reason or 'by an operator'}); "
                f"fix the endpoint, then: lifecycle recipients enable {r.name}"
            )
        if d.payload is None:
            raise UserError(f"delivery {delivery_id} holds no values to send")
        # A correction sent before the map flagged the field: its value is not sent again.
        refuse_identifiers(d.payload, "sent again")
        d.state = DeliveryState.PENDING.value
        d.attempts = 0
        d.next_attempt_at = utcnow()
        d.enqueued_at = utcnow()
        d.finished_at = None
        d.ledger_written = False
        req_id = d.request_id
        if req_id is not None:
            req = s.get(LifecycleRequest, req_id)
            # A withdrawal's deletion notices do not hold the withdrawal open: its state stays.
            if req is not None and RequestState.NOTIFYING.value in allowed(req.kind, req.state):
                transition(req, RequestState.NOTIFYING)
        return req_id or 0


def failing_deliveries(s: Session) -> list[dict[str, Any]]:
    """For `lifecycle status`: deliveries that failed, were disabled, or are being retried.

    Ids, names, counts and times only: no member ids, no values.
    """
    rows = s.execute(
        select(Delivery, Recipient.name)
        .join(Recipient, Recipient.id == Delivery.recipient_id)
        .where(
            (Delivery.state.in_([DeliveryState.FAILED.value, DeliveryState.DISABLED.value]))
            | ((Delivery.state == DeliveryState.PENDING.value) & (Delivery.attempts > 0))
        )
        .order_by(Delivery.id)
    ).all()
    tries = _tries(s, [d.id for d, _ in rows])
    return [_delivery_summary(d, name, tries.get(d.id, 0)) for d, name in rows]


def _tries(s: Session, delivery_ids: list[int]) -> dict[int, int]:
    """Attempts ever made per delivery. `Delivery.attempts` counts only the current round of
    the retry schedule (a replay starts a new round), so it undercounts after a replay."""
    if not delivery_ids:
        return {}
    rows = s.execute(
        select(DeliveryAttempt.delivery_id, func.count())
        .where(DeliveryAttempt.delivery_id.in_(delivery_ids))
        .group_by(DeliveryAttempt.delivery_id)
    ).all()
    return {delivery_id: n for delivery_id, n in rows}


def _delivery_summary(d: Delivery, recipient: str, tries: int) -> dict[str, Any]:
    """What ops see of a delivery: ids, state and counts, never the values it carries."""
    return {
        "id": d.id,
        "message_id": d.message_id,
        "recipient": recipient,
        "kind": d.kind,
        "request_id": d.request_id,
        "state": d.state,
        "attempts": tries,
        "last_status": d.last_status,
        "next_attempt_at": _aware(d.next_attempt_at),
    }


def list_deliveries(failing_only: bool = False, limit: int = 200) -> list[dict[str, Any]]:
    with db.session("primary") as s:
        if failing_only:
            return failing_deliveries(s)[:limit]
        rows = s.execute(
            select(Delivery, Recipient.name)
            .join(Recipient, Recipient.id == Delivery.recipient_id)
            .order_by(Delivery.id.desc())
            .limit(limit)
        ).all()
        tries = _tries(s, [d.id for d, _ in rows])
        return [_delivery_summary(d, name, tries.get(d.id, 0)) for d, name in rows]


def attempt_report(delivery_id: int, outcome: str) -> NotDelivered | None:
    """None if ``outcome`` needs no alarm; else the one-line reason for Flower and the log.

    ``retry`` outcomes come back as a NotDelivered whose ``retry_in`` says when the next
    attempt is (the schedule itself lives in the database, not in Celery).
    """
    if outcome in ("delivered", "not_due"):
        return None
    with db.session("primary") as s:
        row = s.get(Delivery, delivery_id)
        if row is None:
            return None
        state, status, attempts, nxt = (
            row.state, row.last_status or "", row.attempts, row.next_attempt_at
        )  # fmt: skip
    what = f"delivery {delivery_id} attempt {attempts}: " + (
        f"HTTP {status}" if status.isdigit() else (status or outcome)
    )
    if state == DeliveryState.PENDING.value and nxt is not None:
        wait = max(0, int((as_utc(nxt) - utcnow()).total_seconds()))
        err = NotDelivered(f"{what}, not delivered; next attempt in {wait} s")
        err.retry_in = wait  # type: ignore[attr-defined]
        return err
    reason = {"disabled": "recipient disabled (410 Gone)", "failed": "gave up"}.get(state, state)
    return NotDelivered(f"{what}, not delivered: {reason}")
