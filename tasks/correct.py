"""`lifecycle.correct`: carry out one correction request (the request id is all it gets)."""

from __future__ import annotations

from typing import Any

from lifecycle.correction import run_correction
from workers.app import app


@app.task(name="lifecycle.correct", bind=True)
def correct(self: Any, request_id: int) -> dict[str, Any]:
    from tasks.notice import send_batch
    from tasks.notify import deliver

    return run_correction(
        request_id,
        self.request.id,
        enqueue_delivery=lambda delivery_id: deliver.apply_async((delivery_id,)),
        enqueue_notice=lambda notice_id, member_id: send_batch.apply_async(
            (notice_id, member_id, member_id)
        ),
    )
