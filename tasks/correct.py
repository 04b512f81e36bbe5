"""`lifecycle.correct`: carry out one correction request (the request id is all it gets)."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.rights.correction import run_correction
from tasks.base import RESUMABLE_TASK, LifecycleTask
from workers.app import app


@app.task(name=dispatch.CORRECT, lease="args", **RESUMABLE_TASK)
def correct(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_correction(int(request_id), self.request.id)
