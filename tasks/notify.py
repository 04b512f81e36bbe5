"""Third-party deliveries: one attempt per task; the schedule itself lives in the database."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.core.db import session
from lifecycle.thirdparty import deliveries as delivery
from tasks.base import LifecycleTask
from workers.app import app


def _enqueue(delivery_id: int, countdown: float) -> None:
    dispatch.send(dispatch.NOTIFY_DELIVER, delivery_id, countdown=countdown)


@app.task(base=LifecycleTask, name="lifecycle.notify.deliver", bind=True)
def deliver(self: LifecycleTask, delivery_id: int) -> dict[str, Any]:
    return {"delivery_id": delivery_id, "outcome": delivery.attempt(delivery_id, _enqueue)}


@app.task(base=LifecycleTask, name="lifecycle.notify.resend_due", ignore_result=True, expires=60)
def resend_due() -> dict[str, int]:
    """Beat: enqueue every due delivery; finish ledger entries a crash left unwritten."""
    due = delivery.due_deliveries()
    for delivery_id in due:
        dispatch.send(dispatch.NOTIFY_DELIVER, delivery_id)
    unrecorded = delivery.unrecorded_finished()
    for delivery_id in unrecorded:
        delivery.write_ledger(delivery_id)
        with session("primary") as s:
            row = s.get(delivery.Delivery, delivery_id)
            if row is not None and row.request_id is not None:
                delivery.maybe_complete_request(s, row.request_id)
    return {"enqueued": len(due), "ledger": len(unrecorded)}
