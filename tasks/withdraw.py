"""Task: carry out one withdrawal request (receives only the request id)."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.datamap.model import DataMapError
from lifecycle.engine.context import get_context
from lifecycle.rights.withdrawal import carry_out_group, fail_request, stands_aside
from lifecycle.vault.keystore import KeyUnavailable
from tasks.base import RESUMABLE_TASK, LifecycleTask
from workers.app import app


def _grouped(self: LifecycleTask, request_id: int) -> dict[str, Any] | None:
    # Most tasks of a burst find their request carried by another task's group.
    return stands_aside(int(request_id))


@app.task(name=dispatch.WITHDRAW, lease="args", before_lease=_grouped, **RESUMABLE_TASK)
def withdraw(self: LifecycleTask, request_id: int) -> dict[str, Any]:

    try:
        ctx = get_context()
    except DataMapError as exc:
        # The operator's map is broken: say so on the request and change nothing. The member
        # stays marked withdrawn, so the nightly sweep finishes the job once the map is fixed.
        fail_request(int(request_id), str(exc))
        return {"request_id": int(request_id), "state": "failed"}
    try:
        # With the dispatched withdrawals nobody has started yet (rights/withdrawal.py, groups).
        return carry_out_group(ctx, int(request_id), task_id=self.request.id)
    except KeyUnavailable as exc:
        # Wrong or missing master key: no retry can fix it, and a request left 'restricted'
        # would keep `withdraw --wait` waiting for nothing. Fail it with the advice; the member
        # stays withdrawn, so the nightly sweep finishes the job once the key is fixed.
        fail_request(int(request_id), str(exc))
        raise
