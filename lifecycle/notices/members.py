"""Individual notices to members: policy changes, withdrawal/correction completed, dormancy.

Fan-out. A notice gets one ``lifecycle_notice_recipients`` row per member, inserted set-based
(``INSERT ... SELECT ... ON CONFLICT DO NOTHING``) and unique on (notice, member): running the
fan-out again adds nobody twice. Rows are then sent in member-id ranges, one batch task per
range, each over ONE reused SMTP connection.

Exactly once, never a blind resend. SMTP commits a message when the server reads the end of
DATA, and a client that loses the session after writing it cannot know whether the message was
accepted (the two-generals problem). So each row's intent is recorded durably just before that
point (`Mailer.send`'s ``before_commit``: a Redis journal, `lifecycle.notices.journal`, or
without Redis a ``sending`` state in the database) and its acceptance right after the 250 (the
journal, then PostgreSQL per chunk; or the database directly). Whoever claims a row next knows
which of three cases it is in: recorded sent (marked, not resent), in flight (maybe accepted:
``in_doubt``, not resent), or neither (certainly not accepted: sent). A session lost after the
end of DATA also gives ``in_doubt``. In-doubt rows wait for `lifecycle.notices.reconcile`
(``lifecycle notice reconcile``), which settles them from the MTA's log (or by the operator's
explicit choice) and sends only those the server never accepted. A worker killed at any line
leaves at most one row in doubt per SMTP connection. Every message carries a stable
``Message-ID`` (``notice-<notice>-<member>@<domain>``): that is what the MTA log is searched
for. Two batches never send the same row at the same time, even when their member ranges overlap
(a redelivered message next to a resume): each claims rows a chunk at a time under per-row locks
that the database drops the moment a batch's connection dies (`lifecycle.notices.sending`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session, aliased

from lifecycle.channels.mailer import smtp_config
from lifecycle.channels.templates import member_notice
from lifecycle.core import db, dbkind, dispatch
from lifecycle.core.errors import UserError
from lifecycle.core.settings import get_settings
from lifecycle.datamap.current import current_datamap
from lifecycle.datamap.member_table import member_table
from lifecycle.notices.journal import group_journal_for, journal_for
from models.base import utcnow
from models.notices import (
    SENDABLE_STATES,
    Notice,
    NoticeRecipient,
    NoticeRecipientState,
    NoticeState,
)
from models.requests import LifecycleRequest, RequestState

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
NR = NoticeRecipient.__table__
# A notice with pending rows and no batch activity for this long is resumed by beat.
STALE_AFTER = timedelta(minutes=10)
# Stop a batch after this many consecutive "try later" answers: the server is in trouble.
MAX_CONSECUTIVE_RETRIES = 5
# Why a row is ``not_sent``: no mail server was configured when its batch ran. Such a row never
# reached any server, so sending it later cannot duplicate it.
NO_CHANNEL = "SmtpNotConfigured"
NO_ADDRESS = "NoAddress"


# -- creating notices ----------------------------------------------------------------------------


def _printable(value: str, what: str, max_len: int) -> str:
    value = value.strip()
    if not value:
        raise UserError(f"{what} must not be empty")
    if len(value) > max_len:
        raise UserError(f"{what} is longer than {max_len} characters")
    if any(ord(c) < 32 for c in value):
        raise UserError(f"{what} must be one line of printable text")
    return value


def check_policy_input(version: str, title: str, body: str) -> tuple[str, str]:
    """Version and title as stored; UserError for bad input (checked before anything else)."""
    version = _printable(version, "--version", 64)
    title = _printable(title, "--title", 200)
    if not body.strip():
        raise UserError("the body file is empty")
    return version, title


def create_policy_notice(
    version: str, title: str, body: str, effective_date: date
) -> tuple[int, bool]:
    """The notice row for a policy change; (id, created). Same version again: the same notice."""
    version, title = check_policy_input(version, title, body)
    with db.session("primary") as s:
        existing = s.scalar(select(Notice).where(Notice.dedup_key == f"policy:{version}"))
        if existing is not None:
            same = (existing.title, existing.body.strip(), existing.effective_date) == (
                title,
                body.strip(),
                effective_date,
            )
            if not same:
                raise UserError(
                    f"a policy notice for version {version} already exists (notice "
                    f"{existing.id}) with a different title, body or date; use a new --version"
                )
            return existing.id, False
        n = Notice(
            kind="policy",
            dedup_key=f"policy:{version}",
            version=version,
            title=title,
            body=body,
            effective_date=effective_date,
            state=NoticeState.PENDING.value,
        )
        s.add(n)
        s.flush()
        return n.id, True


def _dedup_key(kind: str, member_id: int, context: dict[str, Any]) -> str:
    if "request_id" in context:
        return f"{kind}:request{context['request_id']}"
    return f"{kind}:member{member_id}:{context.get('key', utcnow().date().isoformat())}"


def create_member_notice(
    s: Session,
    kind: str,
    member_id: int,
    context: dict[str, Any],
    *,
    state: NoticeRecipientState = NoticeRecipientState.PENDING,
    address: str | None = None,
) -> int:
    """A one-member notice in the caller's transaction (idempotent by kind + request id).

    ``context`` holds ids, dates and field names: it is rendered into the notice text, which
    names no value of the member's data.
    """
    rendered = member_notice(kind, context)
    key = _dedup_key(kind, member_id, context)
    n = s.scalar(select(Notice).where(Notice.dedup_key == key))
    if n is None:
        n = Notice(
            kind=kind,
            dedup_key=key,
            title=rendered.subject,
            body=rendered.body,
            state=NoticeState.SENDING.value,
            total=1,
        )
        s.add(n)
        s.flush()
    elif n.state != NoticeState.COMPLETED.value:
        # Re-rendered so e.g. a withdrawal notice carries the day it actually completed.
        n.title, n.body = rendered.subject, rendered.body
    _insert_ignore(
        s,
        [
            {
                "notice_id": n.id,
                "member_id": member_id,
                "state": state.value,
                "address": address,
                "address_captured_at": utcnow() if address is not None else None,
                "attempts": 0,
                "created_at": utcnow(),
            }
        ],
    )
    return n.id


def _insert_ignore(s: Session, rows: list[dict[str, Any]]) -> None:
    s.execute(dbkind.insert_ignoring_duplicates(s, NR, ["notice_id", "member_id"]).values(rows))


def capture_withdrawal_notice(s: Session, member_id: int, request_id: int) -> int:
    """Call in the withdrawal job BEFORE the member's data is destroyed.

    Keeps the member's email in the notice row (held, not sent) because the member row will be
    gone when the withdrawal completes; the address is blanked once the notice is sent. Then,
    after the withdrawal completed: ``send_member_notice("withdrawal_completed", member_id,
    {"request_id": request_id})``. Idempotent.
    """
    mt = member_table(s.get_bind())  # type: ignore[arg-type]
    address = None
    if mt.email_col is not None:
        address = s.scalar(select(mt.email_col).where(mt.key_col == member_id))
    ctx = {"request_id": request_id, "completed_date": utcnow().date()}
    nid = create_member_notice(
        s, "withdrawal_completed", member_id, ctx, state=NoticeRecipientState.HELD, address=address
    )
    # A re-run after the member row is gone must not overwrite the captured address with None.
    if address is not None:
        s.execute(
            update(NoticeRecipient)
            .where(
                NoticeRecipient.notice_id == nid,
                NoticeRecipient.member_id == member_id,
                NoticeRecipient.state == NoticeRecipientState.HELD.value,
            )
            # The first capture starts the clock: a re-run must not extend how long it is kept.
            .values(
                address=address,
                address_captured_at=func.coalesce(NoticeRecipient.address_captured_at, utcnow()),
            )
        )
    return nid


def discard_member_notice(s: Session, kind: str, request_id: int) -> None:
    """Drop a held notice (e.g. the withdrawal failed for good): blank the captured address."""
    n = s.scalar(select(Notice).where(Notice.dedup_key == f"{kind}:request{request_id}"))
    if n is not None:
        s.execute(
            update(NoticeRecipient)
            .where(NoticeRecipient.notice_id == n.id, NoticeRecipient.state == "held")
            .values(
                state=NoticeRecipientState.NOT_SENT.value, address=None, error_class="Discarded"
            )
        )


def prepare_member_notice(kind: str, member_id: int, context: dict[str, Any]) -> int:
    """Create (or release a held) one-member notice; returns its id. Caller enqueues the send."""
    ctx = {"completed_date": utcnow().date(), **context}
    with db.session("primary") as s:
        nid = create_member_notice(s, kind, member_id, ctx)
        s.execute(
            update(NoticeRecipient)
            .where(
                NoticeRecipient.notice_id == nid,
                NoticeRecipient.state == NoticeRecipientState.HELD.value,
            )
            .values(state=NoticeRecipientState.PENDING.value, address_captured_at=_due_from_now())
        )
        s.execute(update(Notice).where(Notice.id == nid).values(updated_at=utcnow()))
    return nid


def _due_from_now() -> Any:
    """A released row's captured address ages from now: the notice is due from its release (a
    withdrawal held for weeks by a legal hold must not lose its notice to the age limit)."""
    return case((NR.c.address.is_not(None), utcnow()), else_=NR.c.address_captured_at)


def release_held_for_completed() -> int:
    """Release withdrawal notices still held although their withdrawal completed.

    The withdrawal job releases its notice itself; this covers a crash (or a database error)
    between its completion and that release. Returns how many rows were released.
    """

    with db.session("primary") as s:
        key = literal("withdrawal_completed:request") + cast(LifecycleRequest.id, String)
        rows = s.execute(
            select(NR.c.id, NR.c.notice_id)
            .join(Notice, Notice.id == NR.c.notice_id)
            .join(LifecycleRequest, Notice.dedup_key == key)
            .where(
                NR.c.state == NoticeRecipientState.HELD.value,
                Notice.kind == "withdrawal_completed",
                LifecycleRequest.state == RequestState.COMPLETED.value,
            )
        ).all()
        if rows:
            s.execute(
                update(NR)
                .where(NR.c.id.in_([r[0] for r in rows]))
                .values(
                    state=NoticeRecipientState.PENDING.value, address_captured_at=_due_from_now()
                )
            )
            # Make the resume pass below pick these notices up now.
            s.execute(
                update(Notice)
                .where(Notice.id.in_({r[1] for r in rows}))
                .values(updated_at=utcnow() - STALE_AFTER - timedelta(seconds=1))
            )
    return len(rows)


def send_member_notice(kind: str, member_id: int, context: dict[str, Any]) -> int:
    """Send a notice to one member (withdrawal_completed, correction_completed, ...).

    Safe to call twice: the second call finds the row already sent and sends nothing.
    """
    nid = prepare_member_notice(kind, member_id, context)
    enqueue_batch(nid, member_id, member_id)
    return nid


def enqueue_each(notice_ids: list[int], member_ids: list[int]) -> None:
    """One task for many one-member notices (a withdrawal group's completion notices): each
    keeps its own row and state, and one the task cannot send goes on as its own batch."""
    dispatch.send(dispatch.NOTICE_SEND_EACH, notice_ids, member_ids)


def enqueue_batch(notice_id: int, first: int, last: int, countdown: float | None = None) -> None:
    dispatch.send(dispatch.NOTICE_SEND_BATCH, notice_id, first, last, countdown=countdown)


# -- fan-out -------------------------------------------------------------------------------------


def fanout(notice_id: int) -> dict[str, Any]:
    """Insert a row per active member (policy notices) and return the pending ranges."""
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            raise UserError(f"notice {notice_id} does not exist")
        if n.kind == "policy" and n.state == NoticeState.PENDING.value:
            mt = member_table(s.get_bind())  # type: ignore[arg-type]
            now = utcnow()
            src = select(
                literal(notice_id).label("notice_id"),
                mt.key_col.label("member_id"),
                literal(NoticeRecipientState.PENDING.value).label("state"),
                literal(0).label("attempts"),
                literal(now).label("created_at"),
            ).where(mt.active_clause())
            cols = ["notice_id", "member_id", "state", "attempts", "created_at"]
            s.execute(
                dbkind.insert_ignoring_duplicates(s, NR, ["notice_id", "member_id"]).from_select(
                    cols, src
                )
            )
        if n.state == NoticeState.PENDING.value:
            n.state = NoticeState.SENDING.value
        n.total = s.scalar(select(func.count()).where(NR.c.notice_id == notice_id)) or 0
        n.updated_at = utcnow()
        total = n.total
        pg = s.get_bind().dialect.name == "postgresql"
    if pg:
        # Fresh statistics after a bulk insert: without them the planner may scan the whole
        # table for every per-chunk statement of the batches that follow.
        with db.engine("primary").connect() as conn:
            conn.execute(text(f"ANALYZE {NR.name}"))
            conn.commit()
    if smtp_config() is not None:
        # A resume now that a mail server exists: rows recorded "not sent" for want of one go
        # out too (the same command run again is how an operator says "send it now").
        requeue_not_sent(notice_id)
    ranges = pending_ranges(notice_id)
    if not ranges:
        refresh_counts(notice_id)
    return {"notice_id": notice_id, "total": total, "batches": ranges}


def requeue_not_sent(
    notice_id: int | None = None, reasons: tuple[str, ...] = (NO_CHANNEL,)
) -> dict[int, int]:
    """Rows recorded ``not_sent`` for one of ``reasons`` back to pending, their notice back to
    sending; returns rows per notice. Never rows of a discarded request (``Discarded``)."""
    where = [NR.c.state == NoticeRecipientState.NOT_SENT.value, NR.c.error_class.in_(reasons)]
    if notice_id is not None:
        where.append(NR.c.notice_id == notice_id)
    with db.session("primary") as s:
        per = {
            int(nid): int(n)
            for nid, n in s.execute(
                select(NR.c.notice_id, func.count()).where(*where).group_by(NR.c.notice_id)
            ).all()
        }
        if not per:
            return {}
        s.execute(
            update(NR)
            .where(*where)
            .values(state=NoticeRecipientState.PENDING.value, error_class=None)
            .execution_options(synchronize_session=False)
        )
        for nid in per:
            reopen(s, nid)
    log.info("notice rows not sent before are queued again: %s", per)
    return per


def pending_ranges(notice_id: int, size: int | None = None) -> list[tuple[int, int]]:
    """Member-id ranges of at most ``size`` rows still to act on each.

    That is pending rows, and rows a dead embedded-mode batch left in ``sending`` (the next
    batch turns those into in_doubt): a notice must not wait forever on them.
    """
    size = size or get_settings().notice_batch_size
    with db.session("primary") as s:
        ids = s.scalars(
            select(NR.c.member_id)
            .where(NR.c.notice_id == notice_id, NR.c.state.in_(SENDABLE_STATES))
            .order_by(NR.c.member_id)
        ).all()
    return [(ids[i], ids[min(i + size, len(ids)) - 1]) for i in range(0, len(ids), size)]


# -- counts and progress -------------------------------------------------------------------------

# Rows that still need a batch: a notice is not complete while any is left.
UNFINISHED_STATES = (*SENDABLE_STATES, NoticeRecipientState.HELD.value)


def counts(s: Session, notice_id: int) -> dict[str, int]:
    return {
        st: int(c)
        for st, c in s.execute(
            select(NR.c.state, func.count()).where(NR.c.notice_id == notice_id).group_by(NR.c.state)
        ).all()
    }


def refresh_counts(notice_id: int) -> dict[str, int]:
    """Complete the notice with its final totals once nothing is left to send.

    Totals are recounted (idempotent, unlike increments), but only then: while rows are still
    pending, a batch just records that it was active (a full count per batch would cost the
    database a scan of the whole notice, a hundred times for a large one). In-doubt rows do
    not hold a notice open: it completes, and `lifecycle status` shows them as needing
    attention until they are reconciled.
    """
    with db.session("primary") as s:
        unfinished = s.scalar(
            select(NR.c.id)
            .where(NR.c.notice_id == notice_id, NR.c.state.in_(UNFINISHED_STATES))
            .limit(1)
        )
        if unfinished is not None:
            s.execute(update(Notice).where(Notice.id == notice_id).values(updated_at=utcnow()))
            return {"pending": 1}
        c = counts(s, notice_id)
        values: dict[str, Any] = {
            "sent": c.get("sent", 0),
            "not_sent": c.get("not_sent", 0),
            "failed": c.get("failed", 0),
            "total": sum(c.values()),
            "updated_at": utcnow(),
            "state": NoticeState.COMPLETED.value,
            "completed_at": utcnow(),
        }
        journal = journal_for(notice_id)
        if journal is not None:
            with contextlib.suppress(Exception):
                journal.delete()
            journal.close()
        s.execute(
            update(Notice)
            .where(Notice.id == notice_id, Notice.state != NoticeState.PENDING.value)
            .values(**values)
        )
    return c


def refresh_counts_many(notice_ids: list[int]) -> None:
    """`refresh_counts` for many notices (a withdrawal group's) in a fixed number of statements:
    the unfinished ones found with one query and touched with one UPDATE, the others' totals
    counted with one grouped query and each written to its own notice."""
    if not notice_ids:
        return
    n = Notice.__table__
    now = utcnow()
    with db.session("primary") as s:
        unfinished = set(
            s.scalars(
                select(NR.c.notice_id)
                .where(NR.c.notice_id.in_(notice_ids), NR.c.state.in_(UNFINISHED_STATES))
                .distinct()
            )
        )
        if unfinished:
            s.execute(update(n).where(n.c.id.in_(unfinished)).values(updated_at=now))
        done = [nid for nid in notice_ids if nid not in unfinished]
        if not done:
            return
        per: dict[int, dict[str, int]] = {nid: {} for nid in done}
        for nid, st, c in s.execute(
            select(NR.c.notice_id, NR.c.state, func.count())
            .where(NR.c.notice_id.in_(done))
            .group_by(NR.c.notice_id, NR.c.state)
        ).all():
            per[nid][st] = int(c)
        journal = group_journal_for({})
        if journal is not None:
            with contextlib.suppress(Exception):
                journal.delete_notices(done)
            journal.close()
        s.execute(
            update(n)
            .where(n.c.id == bindparam("nid"), n.c.state != NoticeState.PENDING.value)
            .values(
                sent=bindparam("n_sent"),
                not_sent=bindparam("n_not_sent"),
                failed=bindparam("n_failed"),
                total=bindparam("n_total"),
                updated_at=now,
                state=NoticeState.COMPLETED.value,
                completed_at=now,
            ),
            [
                {
                    "nid": nid,
                    "n_sent": c.get("sent", 0),
                    "n_not_sent": c.get("not_sent", 0),
                    "n_failed": c.get("failed", 0),
                    "n_total": sum(c.values()),
                }
                for nid, c in per.items()
            ],
        )


def progress(notice_id: int) -> dict[str, Any]:
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            raise UserError(f"notice {notice_id} does not exist")
        c = counts(s, notice_id)
        no_channel = s.scalar(
            select(func.count()).where(
                NR.c.notice_id == notice_id,
                NR.c.state == NoticeRecipientState.NOT_SENT.value,
                NR.c.error_class == NO_CHANNEL,
            )
        )
        return {
            "state": n.state,
            "total": sum(c.values()),
            "pending": sum(c.get(st, 0) for st in UNFINISHED_STATES),
            "sent": c.get("sent", 0),
            "not_sent": c.get("not_sent", 0),
            "no_channel": int(no_channel or 0),
            "failed": c.get("failed", 0),
            "in_doubt": c.get(NoticeRecipientState.IN_DOUBT.value, 0),
        }


def stale_notices() -> list[int]:
    """Notices left unfinished with no batch activity for a while (e.g. after a crash).

    Also a completed notice that has rows to send again (a reconcile racing a batch's final
    count could leave one so); one with only in-doubt rows left is not stale: resending those
    is the operator's decision (`lifecycle notice reconcile`).
    """
    cutoff = utcnow() - STALE_AFTER
    leftover = exists().where(NR.c.notice_id == Notice.id, NR.c.state.in_(UNFINISHED_STATES))
    with db.session("primary") as s:
        return list(
            s.scalars(
                select(Notice.id).where(
                    Notice.updated_at < cutoff,
                    or_(
                        Notice.state.in_([NoticeState.PENDING.value, NoticeState.SENDING.value]),
                        and_(Notice.state == NoticeState.COMPLETED.value, leftover),
                    ),
                )
            )
        )


def resume_ranges(notice_id: int) -> list[tuple[int, int]]:
    """What is left to send of a notice (fanning it out first if that never happened)."""
    with db.session("primary") as s:
        n = s.get(Notice, notice_id)
        if n is None:
            return []
        n.updated_at = utcnow()
        state = n.state
    if state == NoticeState.PENDING.value:
        return list(fanout(notice_id)["batches"])
    ranges = pending_ranges(notice_id)
    if ranges:
        with db.session("primary") as s:
            reopen(s, notice_id)
    else:
        refresh_counts(notice_id)
    return ranges


def reopen(s: Session, notice_id: int) -> None:
    """A completed notice that has rows to send again is sending (for `--wait` and status)."""
    s.execute(
        update(Notice)
        .where(Notice.id == notice_id, Notice.state == NoticeState.COMPLETED.value)
        .values(state=NoticeState.SENDING.value, completed_at=None, updated_at=utcnow())
    )


# -- dormancy advance notice ---------------------------------------------------------------------


def dormancy_advance(now: datetime | None = None) -> int | None:
    """Notice members who will become dormant in ``advance_notice_days`` (if dormancy is on).

    Dormancy is an operator option (the 1-year rule was repealed in 2023): nothing happens
    unless the data map enables it. A member is noticed once per period of inactivity.
    """

    dm = current_datamap()
    dorm = dm.subject.dormancy
    if not dorm.enabled or not dorm.last_active_column:
        return None
    now = now or utcnow()
    today = now.date()
    separation = today + timedelta(days=dorm.advance_notice_days)
    threshold = dorm.inactive_for.subtract_from(now) + timedelta(days=dorm.advance_notice_days)
    ctx = {
        "separation_date": separation,
        "inactive_days": round(dorm.inactive_for.approx_days),
    }
    rendered = member_notice("dormancy_advance", ctx)
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        last_active = mt.table.c[dorm.last_active_column]
        key = f"dormancy_advance:{today.isoformat()}"
        n = s.scalar(select(Notice).where(Notice.dedup_key == key))
        if n is None:
            n = Notice(
                kind="dormancy_advance",
                dedup_key=key,
                title=rendered.subject,
                body=rendered.body,
                effective_date=separation,
                state=NoticeState.SENDING.value,
            )
            s.add(n)
            s.flush()
        nr2 = aliased(NoticeRecipient)
        n2 = aliased(Notice)
        already = exists().where(
            and_(
                nr2.member_id == mt.key_col,
                n2.id == nr2.notice_id,
                n2.kind == "dormancy_advance",
                nr2.created_at > last_active,
            )
        )
        src = select(
            literal(n.id).label("notice_id"),
            mt.key_col.label("member_id"),
            literal(NoticeRecipientState.PENDING.value).label("state"),
            literal(0).label("attempts"),
            literal(now).label("created_at"),
        ).where(mt.active_clause(), last_active.is_not(None), last_active <= threshold, ~already)
        s.execute(
            dbkind.insert_ignoring_duplicates(s, NR, ["notice_id", "member_id"]).from_select(
                ["notice_id", "member_id", "state", "attempts", "created_at"], src
            )
        )
        n.total = s.scalar(select(func.count()).where(NR.c.notice_id == n.id)) or 0
        n.updated_at = utcnow()
        return n.id


__all__ = [
    "capture_withdrawal_notice",
    "create_member_notice",
    "create_policy_notice",
    "discard_member_notice",
    "dormancy_advance",
    "fanout",
    "pending_ranges",
    "progress",
    "send_member_notice",
]
