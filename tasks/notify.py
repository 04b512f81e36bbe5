"""Third-party deliveries: one attempt per task; the schedule itself lives in the database."""

from __future__ import annotations

from typing import Any

from lifecycle.thirdparty import deliveries as delivery
from schedules import housekeeping
from tasks.base import LifecycleTask
from workers.app import app


def _enqueue(delivery_id: int, countdown: float) -> None:
    deliver.apply_async((delivery_id,), countdown=countdown)


@app.task(base=LifecycleTask, name="lifecycle.notify.deliver", bind=True)
def deliver(self: LifecycleTask, delivery_id: int) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "outcome": delivery.attempt(delivery_id, _enqueue)}


@app.task(base=LifecycleTask, name="lifecycle.notify.resend_due", ignore_result=True, expires=60)
def resend_due() -> dict[str, int]:
    """Kept for messages queued before the beat ticker took this over (schedules/ticker.py)."""
    return housekeeping.resend_due_deliveries()
