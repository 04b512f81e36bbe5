"""Beat task: the 5-day destruction deadline. Overdue requests fail the task (Flower shows it)."""

from __future__ import annotations

import logging

from lifecycle.core import db
from lifecycle.core.errors import LifecycleError
from lifecycle.core.settings import get_settings
from lifecycle.ops.status import overdue_requests
from tasks.base import LifecycleTask
from workers.app import app

log = logging.getLogger("lifecycle.deadlines")


class OverdueRequests(LifecycleError):
    """Requests open longer than the legal deadline; names request ids only."""


@app.task(base=LifecycleTask, name="lifecycle.requests.check_deadlines")
def check_deadlines() -> dict[str, int]:

    days = get_settings().destruction_deadline_days
    with db.session("primary") as s:
        overdue = overdue_requests(s, days=days)
    if overdue:
        ids = ", ".join(str(r.id) for r in overdue[:50])
        more = f" and {len(overdue) - 50} more" if len(overdue) > 50 else ""
        msg = f"{len(overdue)} requests open longer than {days} days: {ids}{more}"
        log.error("OVERDUE: %s", msg)
        raise OverdueRequests(msg)
    return {"overdue": 0}
