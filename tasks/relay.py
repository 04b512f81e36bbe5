"""The outbox relay's old task names, kept so queued messages still work.

The relay itself runs on the beat process's ticker (schedules/ticker.py), not as a task.
"""

from __future__ import annotations

from lifecycle.core import dispatch
from schedules.housekeeping import relay_pending, relay_stale
from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name=dispatch.RELAY, ignore_result=True, expires=30)
def relay() -> int:
    # expires: if beat queued several relays while workers were down, only fresh ones run.
    return relay_pending()


@app.task(base=LifecycleTask, name=dispatch.RELAY_REDISPATCH_STALE, ignore_result=True, expires=300)
def redispatch() -> int:
    return relay_stale()
