"""Task: destroy archived data whose retention period ended (crypto-shredding)."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.engine.context import get_context
from lifecycle.engine.purge import run_purge
from tasks.base import LifecycleTask
from workers.app import app


@app.task(
    base=LifecycleTask,
    name=dispatch.PURGE_RUN,
    bind=True,
    time_limit=6 * 3600,
    soft_time_limit=6 * 3600 - 120,
    lease="name",
)
def purge_run(self: LifecycleTask) -> dict[str, Any]:

    return run_purge(get_context(), task_id=self.request.id, report=self.progress)
