"""Shred tasks. ``lifecycle.shred.files`` is sent to queue ``shred.<host>`` with a job id only."""

from __future__ import annotations

from typing import Any

from lifecycle import shred_jobs
from workers.app import app


@app.task(name="lifecycle.shred.files", bind=True)
def shred_files(self: Any, job_id: int) -> dict[str, Any]:
    def progress(done: int, total: int) -> None:
        self.update_state(state="PROGRESS", meta={"done": done, "total": total})

    return shred_jobs.run_job(int(job_id), task_id=self.request.id, progress=progress)


@app.task(name="lifecycle.shred.resend_pending", ignore_result=True, expires=60)
def resend_pending() -> int:
    # expires: after an outage only the newest of the queued minute-ticks needs to run.
    return shred_jobs.resend_pending()


@app.task(name="lifecycle.shred.sweep_orphans")
def sweep_orphans() -> dict[str, int]:
    return shred_jobs.sweep_orphans()
