"""Settling notice rows left *in doubt* by a crash (`lifecycle notice reconcile`).

SMTP commits a message when the server reads the end of DATA; a worker killed between that
moment and recording it cannot know whether the member got it. `lifecycle.notices` marks such
rows ``in_doubt`` instead of resending them blindly; this module decides them afterwards,
against the MTA's own log (our Message-IDs are stable per notice and member) or by the
operator's explicit choice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import BrokerUnavailable, UserError, reading
from lifecycle.notices.identity import install_label, our_ids_pattern
from lifecycle.notices.journal import journal_for
from lifecycle.notices.members import NR, enqueue_batch, pending_ranges, refresh_counts, reopen
from models.base import utcnow
from models.notices import Notice, NoticeRecipientState

log = logging.getLogger(__name__)

# Postfix's cleanup logs a message's Message-ID while the message is still arriving, before
# the end of DATA; a message dropped unterminated is logged there too and never queued. Only
# qmgr's "from=<...>" line for the same queue id says the message was accepted.
_PF_CLEANUP = re.compile(rb"/cleanup\[\d+\]: ([0-9A-Za-z]+): (?:resent-)?message-id=")
_PF_QUEUED = re.compile(rb"/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<")


def accepted_in_mail_log(notice_id: int, lines: Any, label: str | None = None) -> set[int]:
    """Member ids of ``notice_id`` whose message the MTA log shows as accepted.

    Any line holding one of our Message-IDs counts (the whole id, domain included: its first
    label is this install's, see ``identity``), except Postfix's cleanup line, which counts
    only if qmgr queued the same queue id (anywhere in the log).
    """
    our_id = our_ids_pattern(label if label is not None else install_label())
    accepted: set[int] = set()
    by_queue_id: dict[bytes, set[int]] = {}
    queued: set[bytes] = set()
    want = str(notice_id).encode()
    for line in lines:
        q = _PF_QUEUED.search(line)
        if q is not None:
            queued.add(q.group(1))
        found = {int(m.group(2)) for m in our_id.finditer(line) if m.group(1) == want}
        if not found:
            continue
        c = _PF_CLEANUP.search(line)
        if c is not None:
            by_queue_id.setdefault(c.group(1), set()).update(found)
        else:
            accepted |= found
    for qid, members in by_queue_id.items():
        if qid in queued:
            accepted |= members
    return accepted


@dataclass
class ReconcileResult:
    notice_id: int
    in_doubt: int = 0  # rows found in doubt
    delivered: int = 0  # marked sent (the log shows them accepted, or the operator said so)
    resend: int = 0  # back to pending, to be sent again
    batches: int = 0  # batch tasks enqueued


def _read_mail_logs(notice_id: int, paths: list[Path]) -> set[int]:
    accepted: set[int] = set()
    for path in paths:
        with reading(path, "mail log"), path.open("rb") as f:
            accepted |= accepted_in_mail_log(notice_id, f)
    return accepted


def reconcile(
    notice_id: int,
    *,
    mail_logs: list[Path] | None = None,
    assume_delivered: bool = False,
    resend: bool = False,
    enqueue: Callable[[int, int, int], None] | None = None,
) -> ReconcileResult:
    """Settle a notice's in-doubt rows: sent if the MTA accepted them, else pending again.

    Exactly one way to decide: ``mail_logs`` (the MTA's logs, searched for our Message-IDs),
    ``assume_delivered`` (all sent) or ``resend`` (all pending). Everything is checked and the
    logs read before anything changes; the rows change in one transaction; then the notice's
    pending rows are enqueued (a crash before that leaves them to beat's resume job, and a
    second run enqueues them again: claims keep that from sending anything twice).
    """
    modes = sum([bool(mail_logs), assume_delivered, resend])
    if modes != 1:
        raise UserError("give exactly one of --mail-log FILE, --assume-delivered, --resend")
    with db.session("primary") as s:
        if s.get(Notice, notice_id) is None:
            raise UserError(f"notice {notice_id} does not exist")
    accepted = _read_mail_logs(notice_id, mail_logs) if mail_logs else set()
    result = ReconcileResult(notice_id)
    with db.session("primary") as s:
        rows = s.execute(
            select(NR.c.id, NR.c.member_id).where(
                NR.c.notice_id == notice_id, NR.c.state == NoticeRecipientState.IN_DOUBT.value
            )
        ).all()
        result.in_doubt = len(rows)
        if assume_delivered:
            delivered = [r[0] for r in rows]
        else:
            delivered = [r[0] for r in rows if r[1] in accepted]
        settled = set(delivered)
        again = [r[0] for r in rows if r[0] not in settled]
        if again:
            journal = journal_for(notice_id)
            if journal is not None:
                # A stale in-flight mark would make the next batch put the row back in doubt.
                try:
                    journal.remove(again)
                except Exception as exc:
                    raise BrokerUnavailable(
                        f"broker unreachable ({type(exc).__name__}); nothing was changed"
                    ) from None
                finally:
                    journal.close()
        now = utcnow()
        for ids in _chunks(delivered):
            s.execute(
                update(NR)
                .where(NR.c.id.in_(ids), NR.c.state == NoticeRecipientState.IN_DOUBT.value)
                .values(state=NoticeRecipientState.SENT.value, sent_at=now, address=None)
            )
        for ids in _chunks(again):
            s.execute(
                update(NR)
                .where(NR.c.id.in_(ids), NR.c.state == NoticeRecipientState.IN_DOUBT.value)
                .values(state=NoticeRecipientState.PENDING.value, error_class=None)
            )
        if again:
            reopen(s, notice_id)
            s.execute(update(Notice).where(Notice.id == notice_id).values(updated_at=now))
        result.delivered, result.resend = len(delivered), len(again)
    mode = "mail-log" if mail_logs else "assume-delivered" if assume_delivered else "resend"
    log.info(
        "notice %s reconciled (%s): %d in doubt, %d marked sent, %d to send again",
        notice_id,
        mode,
        result.in_doubt,
        result.delivered,
        result.resend,
    )
    ranges = pending_ranges(notice_id)
    send = enqueue or enqueue_batch
    for first, last in ranges:
        send(notice_id, first, last)
    result.batches = len(ranges)
    if not ranges:
        refresh_counts(notice_id)
    return result


def in_doubt_by_notice(s: Session) -> list[dict[str, Any]]:
    """Notices with in-doubt rows (ids and counts only), for `lifecycle status`."""
    rows = s.execute(
        select(NR.c.notice_id, Notice.kind, func.count())
        .join(Notice, Notice.id == NR.c.notice_id)
        .where(NR.c.state == NoticeRecipientState.IN_DOUBT.value)
        .group_by(NR.c.notice_id, Notice.kind)
        .order_by(NR.c.notice_id)
    ).all()
    return [
        {
            "notice_id": nid,
            "kind": kind,
            "in_doubt": int(n),
            "resolve": f"lifecycle notice reconcile {nid} --mail-log FILE",
        }
        for nid, kind, n in rows
    ]


def _chunks(ids: list[int], size: int = 1000) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]
