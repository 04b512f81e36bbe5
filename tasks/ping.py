"""A no-op job ops can enqueue to see the whole path work (worker, results, Flower)."""

from __future__ import annotations

from tasks.base import LifecycleTask
from workers.app import app


@app.task(base=LifecycleTask, name="lifecycle.ping")
def ping() -> dict[str, str]:
    return {"pong": "ok"}
