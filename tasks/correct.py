"""`lifecycle.correct`: carry out one correction request (the request id is all it gets)."""

from __future__ import annotations

from typing import Any

from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.rights.correction import run_correction
from tasks.base import LifecycleTask
from workers.app import app


@app.task(
    base=LifecycleTask,
    name="lifecycle.correct",
    bind=True,
    # A database restart: try again; every step resumes from the persisted state.
    autoretry_for=TRANSIENT_DB_ERRORS,
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=20,
    lease="args",
)
def correct(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_correction(int(request_id), self.request.id)
