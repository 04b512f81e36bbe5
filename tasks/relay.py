"""Beat task: the outbox relay, every few seconds."""

from __future__ import annotations

from lifecycle.requests.relay import dispatch_pending, redispatch_stale
from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name="lifecycle.relay", ignore_result=True, expires=30)
def relay() -> int:
    # expires: if beat queued several relays while workers were down, only fresh ones run.
    return dispatch_pending()


@app.task(
    base=LifecycleTask, name="lifecycle.relay.redispatch_stale", ignore_result=True, expires=300
)
def redispatch() -> int:
    return redispatch_stale()
