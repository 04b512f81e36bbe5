"""Third-party deliveries: one attempt per task; the schedule itself lives in the database."""

from __future__ import annotations

from typing import Any

from celery.exceptions import Retry

from lifecycle.core import dispatch
from lifecycle.recipients import deliveries as delivery
from schedules import housekeeping
from tasks.base import LifecycleTask
from workers.app import app


def _enqueue(delivery_id: int, countdown: float) -> None:
    dispatch.send(dispatch.NOTIFY_DELIVER, delivery_id, countdown=countdown)


@app.task(base=LifecycleTask, name=dispatch.NOTIFY_DELIVER, bind=True)
def deliver(self: LifecycleTask, delivery_id: int) -> dict[str, Any]:
    outcome = delivery.attempt(delivery_id, _enqueue)
    problem = delivery.attempt_report(delivery_id, outcome)
    if problem is None:
        return {"delivery_id": delivery_id, "outcome": outcome}
    retry_in = getattr(problem, "retry_in", None)
    if retry_in is not None:
        # RETRY in Flower with its reason ("HTTP 500 ... next attempt in 300 s"). Nothing is
        # sent from here: the next attempt is already scheduled by the database's schedule.
        raise Retry(str(problem), problem, retry_in)
    # HTTP 410, a permanent rejection, or the schedule exhausted: a failed task in Flower.
    raise problem


@app.task(base=LifecycleTask, name=dispatch.NOTIFY_RESEND_DUE, ignore_result=True, expires=60)
def resend_due() -> dict[str, int]:
    """Kept for messages queued before beat's ticker took this over.

    The ticker: schedules/ticker.py.
    """
    return housekeeping.resend_due_deliveries()
