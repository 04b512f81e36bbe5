"""Addresses captured for a notice (a withdrawn member's e-mail): kept only while needed.

The withdrawal job copies the member's address into the notice row before the member row is
destroyed (`members.capture_withdrawal_notice`): it is the only copy left, kept to send the
completion notice. It goes away:

- when the notice is sent (the sent mark blanks it), or the row ends otherwise (refused,
  discarded); or
- when it is older than ``LIFECYCLE_NOTICE_ADDRESS_DAYS`` (default 5) and still unsent, e.g.
  because no mail server was configured: the nightly notice job blanks it, and the row becomes
  ``not_sent`` with ``AddressExpired`` (an in-doubt row keeps its state for reconcile). The age
  counts from the withdrawal's completion (the row's release): a row still held, its withdrawal
  open (say, under a legal hold, the member row still in place), is left alone.

Either way the nightly job then records each destroyed address in the destruction ledger (what
and why, never the value), and only after that commit forgets that the row held one
(``address_captured_at``): a crash in between re-records nothing (the ledger entry's dedup key
is the row's id) and leaves nothing unrecorded.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.datamap.member_table import member_table
from lifecycle.notices.members import NR, refresh_counts
from models.base import utcnow
from models.notices import Notice, NoticeRecipientState

log = logging.getLogger(__name__)

# Why a row was left unsent: its captured address outlived LIFECYCLE_NOTICE_ADDRESS_DAYS.
EXPIRED = "AddressExpired"
# Rows that may still be sent: they become not_sent once their address is gone. Held rows
# (their withdrawal is still open, e.g. under a legal hold) never expire: their clock starts
# when the withdrawal completes and releases them (`members.prepare_member_notice`).
_UNSENT = (NoticeRecipientState.PENDING.value, NoticeRecipientState.NOT_SENT.value)
# Ledger entries per archive transaction (each one also holds the ledger head that long).
CHUNK = 500


def destroy_captured_addresses(
    now: datetime | None = None, task_id: str | None = None
) -> dict[str, int]:
    """Blank captured addresses older than the setting, then record every destroyed one.

    Idempotent: a second run finds nothing to blank and nothing unrecorded. Returns counts:
    ``expired`` (blanked now for age), ``recorded`` (ledger entries written now), ``waiting``
    (addresses still kept, each younger than the limit).
    """
    now = now or utcnow()
    cutoff = now - timedelta(days=get_settings().notice_address_days)
    expired, notices = _expire(cutoff)
    for notice_id in sorted(notices):
        # A notice whose last open row was one of these is finished now.
        refresh_counts(notice_id)
    recorded = _record_destroyed(task_id)
    with db.session("primary") as s:
        waiting = waiting_addresses(s)["waiting"]
    if expired or recorded:
        log.info(
            "captured notice addresses: %d expired, %d destructions recorded, %d still kept",
            expired,
            recorded,
            waiting,
        )
    return {"expired": expired, "recorded": recorded, "waiting": waiting}


def _expire(cutoff: datetime) -> tuple[int, set[int]]:
    due = (
        NR.c.address.is_not(None),
        NR.c.address_captured_at < cutoff,
        NR.c.state != NoticeRecipientState.HELD.value,
    )
    with db.session("primary") as s:
        notices = set(s.scalars(select(NR.c.notice_id).where(*due).distinct()))
        if not notices:
            return 0, set()
        unsent = cast(
            "CursorResult[Any]",
            s.execute(
                update(NR)
                .where(*due, NR.c.state.in_(_UNSENT))
                .values(
                    address=None, state=NoticeRecipientState.NOT_SENT.value, error_class=EXPIRED
                )
            ),
        ).rowcount
        # In doubt (reconcile decides whether it went out) or left sending by a dead batch: the
        # state stays for whoever settles it; only the address goes.
        other = cast(
            "CursorResult[Any]",
            s.execute(update(NR).where(*due).values(address=None, error_class=EXPIRED)),
        ).rowcount
    return int(unsent or 0) + int(other or 0), notices


def _record_destroyed(task_id: str | None) -> int:
    """Ledger entries for addresses already blanked (sent, ended or expired); returns how many
    were written. The rows forget their capture only once the entries are committed."""
    written = 0
    after = 0
    while True:
        with db.session("primary") as s:
            rows = s.execute(
                select(
                    NR.c.id,
                    NR.c.notice_id,
                    NR.c.member_id,
                    NR.c.state,
                    NR.c.error_class,
                    Notice.kind,
                    Notice.dedup_key,
                )
                .join(Notice, Notice.id == NR.c.notice_id)
                .where(
                    NR.c.address_captured_at.is_not(None),
                    NR.c.address.is_(None),
                    NR.c.id > after,
                )
                .order_by(NR.c.id)
                .limit(CHUNK)
            ).all()
            if not rows:
                return written
            mt = member_table(s.get_bind())  # type: ignore[arg-type]
            category = mt.categories.get(mt.email_column or "", "contact")
        after = rows[-1][0]
        # Here, not at the top: `lifecycle status` imports this module for its counts; the
        # ledger (with the archive's models) is for the nightly destruction only.
        from lifecycle.vault import ledger

        with db.session("archive") as a:
            written += ledger.append_many(a, [_entry(a, r, category, task_id) for r in rows])
        with db.session("primary") as s:
            s.execute(
                update(NR)
                .where(NR.c.id.in_([r[0] for r in rows]), NR.c.address.is_(None))
                .values(address_captured_at=None)
            )


def _entry(a: Session, row: Any, category: str, task_id: str | None) -> dict[str, Any]:
    # Here, not at the top: `lifecycle status` imports this module for its counts; the
    # keystore (cryptography) is for the nightly destruction only.
    from lifecycle.vault import keystore

    row_id, notice_id, member_id, state, error_class, kind, dedup_key = row
    expired = error_class == EXPIRED
    sent = state == NoticeRecipientState.SENT.value
    if expired:
        why = (
            f"통지 발송용으로 보관한 이메일 주소의 보관기간"
            f"({get_settings().notice_address_days}일) 경과, 통지 미발송"
        )
    elif sent:
        why = "통지 발송 완료로 발송용으로 보관한 이메일 주소의 목적 달성"
    else:
        why = "통지가 종결되어(발송 불가·취소) 발송용으로 보관한 이메일 주소가 불필요해짐"
    request_id = None
    prefix = f"{kind}:request"
    if dedup_key and dedup_key.startswith(prefix) and dedup_key[len(prefix) :].isdigit():
        request_id = int(dedup_key[len(prefix) :])
    return {
        "action": "destroy",
        "categories": [category],
        "tables": [NR.name],
        "subjects": 1,
        "rows": 1,
        "reason": why,
        "legal_basis": "개인정보 보호법 제21조, 표준 개인정보 보호지침 제10조①",
        "method": "DB 항목 삭제 (address 칼럼을 NULL로 갱신)",
        "actor": "lifecycle.notices.addresses",
        "task_id": task_id,
        "request_id": request_id,
        "subject_ref": keystore.subject_ref(a, member_id),
        "details": {
            "notice_id": notice_id,
            "notice_kind": kind,
            "row_state": state,
            "outcome": "expired" if expired else "sent" if sent else "ended",
        },
        "dedup_key": f"notice-address:row{row_id}",
    }


def waiting_addresses(s: Session, now: datetime | None = None) -> dict[str, Any]:
    """Captured addresses still kept (count, oldest age in days) and destructions not yet
    recorded in the ledger: for `lifecycle status`. Counts only."""
    # Both conditions on the captured-at index: a policy notice's millions of rows have none.
    waiting, oldest = s.execute(
        select(func.count(), func.min(NR.c.address_captured_at)).where(
            NR.c.address_captured_at.is_not(None), NR.c.address.is_not(None)
        )
    ).one()
    unrecorded = s.scalar(
        select(func.count()).where(NR.c.address_captured_at.is_not(None), NR.c.address.is_(None))
    )
    age = None
    if oldest is not None:
        age = round(((now or utcnow()) - as_utc(oldest)).total_seconds() / 86400, 1)
    return {
        "waiting": int(waiting or 0),
        "oldest_days": age,
        "destroy_after_days": get_settings().notice_address_days,
        "unrecorded": int(unrecorded or 0),
    }
