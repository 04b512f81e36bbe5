"""Housekeeping: the frequent checks that keep work moving, as plain functions.

They run on the beat process's ticker thread (:mod:`schedules.ticker`), not as Celery tasks:
at every few seconds they would fill Flower's history with thousands of ticks a day and push
the real jobs out of it. The old task names stay registered (``tasks/relay.py`` and friends
call these same functions), so messages already queued under them still work.
Each function is idempotent and safe to run in two beat processes at once.
"""

from __future__ import annotations

import logging

from lifecycle.channels.mailer import smtp_config
from lifecycle.core import db, dispatch, leases
from lifecycle.engine import sweep_watch
from lifecycle.notices import members as notices
from lifecycle.recipients import deliveries as delivery
from lifecycle.requests import relay
from lifecycle.rights import answers
from lifecycle.shred import jobs as shred_jobs
from models.recipients import Delivery

log = logging.getLogger("lifecycle.housekeeping")


def relay_pending() -> int:
    """Committed requests from the website's outbox go to their task."""
    return relay.dispatch_pending()


def relay_stale() -> int:
    return relay.redispatch_stale()


def resend_due_deliveries() -> dict[str, int]:
    """Third-party deliveries whose retry time came; ledger entries a crash left unwritten."""
    due = delivery.due_deliveries()
    for delivery_id in due:
        dispatch.send(dispatch.NOTIFY_DELIVER, delivery_id)
    unrecorded = delivery.unrecorded_finished()
    for delivery_id in unrecorded:
        delivery.write_ledger(delivery_id)
        with db.session("primary") as s:
            row = s.get(Delivery, delivery_id)
            if row is not None and row.request_id is not None:
                delivery.maybe_complete_request(s, row.request_id)
    return {"enqueued": len(due), "ledger": len(unrecorded)}


def resend_pending_shred_jobs() -> int:
    return shred_jobs.resend_pending()


def enqueue_notice_ranges(notice_id: int, ranges: list[tuple[int, int]]) -> None:
    for first, last in ranges:
        dispatch.send(dispatch.NOTICE_SEND_BATCH, notice_id, first, last)


def resume_stale_notices() -> int:
    """Notices left half-sent by a crash (or a lost broker message) are sent on."""
    notices.release_held_for_completed()
    resumed = 0
    if smtp_config() is not None:
        # Rows recorded "not sent" while no mail server was configured: there is one now.
        for notice_id in notices.requeue_not_sent():
            ranges = notices.pending_ranges(notice_id)
            enqueue_notice_ranges(notice_id, ranges)
            resumed += len(ranges)
    for notice_id in notices.stale_notices():
        ranges = notices.resume_ranges(notice_id)
        enqueue_notice_ranges(notice_id, ranges)
        resumed += len(ranges)
    return resumed


def answer_pending_requests() -> int:
    """Written answers to requests that a crash left unanswered."""
    return answers.answer_pending()


def _send_again(job: leases.Redispatch) -> None:
    dispatch.send(
        job.task, *job.args, task_id=job.task_id, queue=job.queue, note=job.note, **job.kwargs
    )


def watchdog() -> int:
    """Jobs whose lease expired (their worker died, their message was lost) are sent again,
    and so is a sweep run left running with nobody on it (its lease finished or missing)."""
    sent = len(leases.redispatch_expired(_send_again))
    return sent + len(sweep_watch.redispatch_unattended(_send_again))


def prune_leases() -> int:
    return leases.prune()
