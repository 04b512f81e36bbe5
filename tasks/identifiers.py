"""Task: clear a flagged unique identifier (고유식별정보) in live rows; gets the run id only."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.engine.context import get_context
from lifecycle.engine.identifiers import BATCH, run
from tasks.base import RESUMABLE_TASK, LifecycleTask
from workers.app import app


@app.task(
    name=dispatch.IDENTIFIERS_DESTROY,
    time_limit=6 * 3600,
    soft_time_limit=6 * 3600 - 120,
    # The watchdog re-sends the run to another worker if this one dies; it resumes.
    lease="args",
    **RESUMABLE_TASK,
)
def destroy(self: LifecycleTask, run_id: int, batch: int = BATCH) -> dict[str, Any]:
    return run(
        get_context(), int(run_id), task_id=self.request.id, report=self.progress,
        batch=int(batch),
    )  # fmt: skip
