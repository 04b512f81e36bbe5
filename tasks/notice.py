"""Notices to members: fan-out, batches over one SMTP connection each, resume, dormancy."""

from __future__ import annotations

import logging
from typing import Any

from lifecycle.core import dispatch
from lifecycle.core.errors import JobDeferred
from lifecycle.notices import members as notices
from lifecycle.notices.addresses import destroy_captured_addresses
from lifecycle.notices.sending import send_batch as send_range
from lifecycle.notices.sending import send_group
from schedules import housekeeping
from tasks.base import LifecycleTask
from workers.app import app

# A batch whose server said "try later" is retried this many times by Celery; after that the
# beat resume job picks the notice up again (the rows stay pending in the database).
BATCH_RETRIES = 8
# A notice of a group that did not go out goes on alone after the first retry's wait.
ALONE_AFTER = 30

log = logging.getLogger(__name__)


def _enqueue_ranges(notice_id: int, ranges: list[tuple[int, int]]) -> None:
    dispatch.send_many(dispatch.NOTICE_SEND_BATCH, ((notice_id, f, last) for f, last in ranges))


@app.task(base=LifecycleTask, name=dispatch.NOTICE_FANOUT, bind=True, lease="args")
def fanout(self: LifecycleTask, notice_id: int) -> dict[str, Any]:
    self.progress(0, None)
    result = notices.fanout(notice_id)
    _enqueue_ranges(notice_id, result["batches"])
    return {"notice_id": notice_id, "total": result["total"], "batches": len(result["batches"])}


@app.task(
    base=LifecycleTask,
    name=dispatch.NOTICE_SEND_BATCH,
    bind=True,
    max_retries=BATCH_RETRIES,
    lease="args",
)
def send_batch(self: LifecycleTask, notice_id: int, first: int, last: int) -> dict[str, Any]:

    result = send_range(notice_id, first, last, self.progress)
    if result.left and self.request.retries < BATCH_RETRIES:
        # The cause goes with the retry: the worker log (WARNING) and Flower say why.
        why = JobDeferred(
            f"notice {notice_id} members {first}..{last}: {result.left} not sent yet"
            + (f" ({result.last_error})" if result.last_error else "")
        )
        raise self.retry(exc=why, countdown=min(3600, 30 * 2**self.request.retries))
    return result.as_dict()


@app.task(base=LifecycleTask, name=dispatch.NOTICE_SEND_EACH, bind=True, lease="args")
def send_each(self: LifecycleTask, notice_ids: list[int], member_ids: list[int]) -> dict[str, Any]:
    """Many one-member notices (a withdrawal group's completion notices) in one task and one
    sending pass (`send_group`): a pass each cost more of a worker than sending the notice.
    Each notice keeps its own row and state, and the pass skips what is already sent, so a
    re-run sends only the rest. One this task could not send (the server said "try later", or
    sending it raised) goes on as its own ``send_batch`` with that task's retries: it fails
    alone, and visibly."""
    try:
        result = send_group(notice_ids, member_ids, self.progress)
    except Exception as exc:
        # The pass as a whole failed (the database went away…): every notice goes on alone;
        # its own batch skips what this pass sent and recovers what it left in flight.
        log.warning("notice group: not sent together (%s); each goes on alone",
                    type(exc).__name__)  # fmt: skip
        sent, alone = 0, list(zip(notice_ids, member_ids, strict=True))
    else:
        sent, alone = result.sent, result.alone
    for nid, mid in alone:
        notices.enqueue_batch(nid, mid, mid, countdown=ALONE_AFTER)
    return {"notices": len(notice_ids), "sent": sent, "alone": len(alone)}


@app.task(base=LifecycleTask, name=dispatch.NOTICE_RESUME_STALE, ignore_result=True, expires=300)
def resume_stale() -> int:
    """Kept for messages queued before beat's ticker took this over.

    The ticker: schedules/ticker.py.
    """
    return housekeeping.resume_stale_notices()


@app.task(base=LifecycleTask, name=dispatch.NOTICE_DORMANCY_ADVANCE, bind=True, ignore_result=True)
def dormancy_advance(self: LifecycleTask) -> dict[str, Any]:
    """Nightly notice housekeeping: destroy captured addresses kept too long (and record every
    destroyed one in the ledger), then the 30-day advance notice before dormancy where the
    data map enables it. The beat entry keeps its name: RedBeat stores entries by name."""
    failed: Exception | None = None
    addresses: dict[str, int] | None = None
    try:
        addresses = destroy_captured_addresses(task_id=self.request.id)
    except Exception as exc:
        # The dormancy notices are still due tonight; the task fails visibly afterwards.
        failed = exc
    notice_id = notices.dormancy_advance()
    if failed is not None:
        raise failed
    if notice_id is None:
        return {"enabled": False, "addresses": addresses}
    ranges = notices.pending_ranges(notice_id)
    _enqueue_ranges(notice_id, ranges)
    return {
        "enabled": True,
        "notice_id": notice_id,
        "batches": len(ranges),
        "addresses": addresses,
    }
