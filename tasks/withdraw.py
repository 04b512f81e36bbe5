"""Task: carry out one withdrawal request (receives only the request id)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import OperationalError

from workers.app import app


@app.task(
    name="lifecycle.withdraw",
    bind=True,
    # A database restart or a deadlock with the sweep: try again; the steps are idempotent.
    autoretry_for=(OperationalError,),
    retry_backoff=2,
    retry_backoff_max=120,
    max_retries=20,
)
def withdraw(self: Any, request_id: int) -> dict[str, Any]:
    from lifecycle.engine.context import get_context
    from lifecycle.engine.withdraw import carry_out

    return carry_out(get_context(), int(request_id), task_id=self.request.id)
