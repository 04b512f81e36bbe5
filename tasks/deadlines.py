"""Beat task: every kind's legal deadline (5 days for destruction, 10 for the other rights),
and the 72-hour clock of open breach incidents (시행령 제39조·제40조).

Overdue requests or incidents fail the task (Flower shows it, naming ids); otherwise the result
is the per-kind count of open and soon-due requests and each open incident's hours left (ids
and counts only)."""

from __future__ import annotations

import logging

from lifecycle.core import db, dispatch
from lifecycle.core.errors import LifecycleError
from lifecycle.incidents import breach
from lifecycle.requests import deadlines
from models.base import utcnow
from tasks.base import LifecycleTask
from workers.app import app

log = logging.getLogger("lifecycle.deadlines")


class OverdueRequests(LifecycleError):
    """Requests open longer than the legal deadline; names request ids only."""


@app.task(base=LifecycleTask, name=dispatch.CHECK_DEADLINES)
def check_deadlines() -> dict[str, object]:

    with db.session("primary") as s:
        kinds = deadlines.by_kind(s)
        incidents = breach.open_summaries(s, utcnow())
    # Incidents past their 72 hours fail the run too: Flower shows the clock, every hour until
    # the incident is closed.
    problems = [line for i in incidents if i["overdue"] for line in breach.attention(i)]
    overdue = {k: v for k, v in kinds.items() if v["overdue"]}
    if overdue:
        total = sum(v["overdue"] for v in overdue.values())
        parts = "; ".join(
            f"{k} (deadline {v['deadline_days']} days): "
            + ", ".join(str(i) for i in v["overdue_ids"])
            + (f" and {v['overdue'] - len(v['overdue_ids'])} more" if v["overdue"] > 50 else "")
            for k, v in sorted(overdue.items())
        )
        problems.insert(0, f"{total} requests past their legal deadline: {parts}")
    if problems:
        msg = "; ".join(problems)
        log.error("OVERDUE: %s", msg)
        raise OverdueRequests(msg)
    return {
        "overdue": 0,
        "incidents": {
            str(i["id"]): {
                "hours_left": round(i["seconds_left"] / 3600, 1),
                "unsent": i["notices"]["unsent"],
                "report": i["report_state"],
            }
            for i in incidents
        },
        "due": {
            k: {
                "open": v["open"],
                "due_within_1_day": v["due_within_1_day"],
                "next_due_at": v["next_due_at"],
            }
            for k, v in kinds.items()
            if v["open"]
        },
    }
