"""A no-op job ops can enqueue to see the whole path work (worker, results, Flower)."""

from __future__ import annotations

from lifecycle.core import dispatch
from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name=dispatch.PING)
def ping() -> dict[str, str]:
    return {"pong": "ok"}
