"""Shred tasks. ``lifecycle.shred.files`` is sent to queue ``shred.<host>`` with a job id only."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.shred import jobs as shred_jobs
from tasks.base import LifecycleTask
from workers.app import app


@app.task(
    base=LifecycleTask,
    name=dispatch.SHRED_FILES,
    bind=True,
    lease="args",
    # A shred job's resends live in the database (next_send_at, resend_pending every minute):
    # a database error fails the task at once, visibly (`shred --wait` says so), and the
    # job's own resend runs it again; no Celery retries on top.
    transient_retries=0,
)
def shred_files(self: LifecycleTask, job_id: int) -> dict[str, Any]:
    return shred_jobs.run_job(int(job_id), task_id=self.request.id, progress=self.progress)


@app.task(base=LifecycleTask, name=dispatch.SHRED_RESEND_PENDING, ignore_result=True, expires=60)
def resend_pending() -> int:
    # Kept for messages queued before the beat ticker took this over (schedules/ticker.py).
    return shred_jobs.resend_pending()


@app.task(base=LifecycleTask, name=dispatch.SHRED_SWEEP_ORPHANS)
def sweep_orphans() -> dict[str, int]:
    return shred_jobs.sweep_orphans()
