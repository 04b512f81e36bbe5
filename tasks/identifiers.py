"""Task: clear a flagged unique identifier (고유식별정보) in live rows; gets the run id only."""

from __future__ import annotations

from typing import Any

from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.engine.context import get_context
from lifecycle.engine.identifiers import BATCH, run
from tasks.base import LifecycleTask
from workers.app import app


@app.task(
    base=LifecycleTask,
    name="lifecycle.identifiers.destroy",
    bind=True,
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=20,
    time_limit=6 * 3600,
    soft_time_limit=6 * 3600 - 120,
    # The watchdog re-sends the run to another worker if this one dies; it resumes.
    lease="args",
)
def destroy(self: LifecycleTask, run_id: int, batch: int = BATCH) -> dict[str, Any]:
    return run(
        get_context(), int(run_id), task_id=self.request.id, report=self.progress,
        batch=int(batch),
    )  # fmt: skip
