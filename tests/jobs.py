"""Test-only jobs, loaded into real workers with ``--include tests.jobs``.

They misbehave the way real jobs could: an exception whose message holds a member's value,
a PostgreSQL error whose DETAIL holds one, a retry caused by one. The values are made inside
the worker (tasks carry ids only), so the test can look for them where they must not appear.
"""

from __future__ import annotations

import logging

from sqlalchemy import text

from lifecycle.core.errors import LifecycleError
from tasks.base import LifecycleTask
from workers.app import app

SECRET_EMAIL = "hong.gildong.secret@example.com"
SECRET_PHONE = "010-9876-5432"

log = logging.getLogger("tests.jobs")


@app.task(base=LifecycleTask, name="lifecycle.testjobs.leaky_failure")
def leaky_failure(request_id: int) -> None:
    log.info("working on the request")
    raise ValueError(f"could not process {SECRET_EMAIL} / {SECRET_PHONE}")


@app.task(base=LifecycleTask, name="lifecycle.testjobs.db_failure")
def db_failure(request_id: int) -> None:
    from lifecycle.core import db

    with db.engine("primary").begin() as conn:
        conn.execute(text("CREATE TEMP TABLE leak (email text UNIQUE)"))
        conn.execute(text("INSERT INTO leak VALUES (:e)"), {"e": SECRET_EMAIL})
        # Duplicate key: PostgreSQL's DETAIL says "Key (email)=(<the value>) already exists".
        conn.execute(text("INSERT INTO leak VALUES (:e)"), {"e": SECRET_EMAIL})


@app.task(base=LifecycleTask, name="lifecycle.testjobs.safe_failure")
def safe_failure(request_id: int) -> None:
    raise LifecycleError(f"request {request_id} refused: member is restricted")


@app.task(
    base=LifecycleTask,
    name="lifecycle.testjobs.leaky_retry",
    autoretry_for=(ConnectionError,),
    retry_kwargs={"max_retries": 1, "countdown": 0},
)
def leaky_retry(request_id: int) -> None:
    raise ConnectionError(f"mail server refused {SECRET_EMAIL}")


@app.task(base=LifecycleTask, name="lifecycle.testjobs.batch", bind=True)
def batch(self: LifecycleTask, run_id: int, ids: list[int]) -> dict[str, int]:
    for i, _ in enumerate(ids, 1):
        self.progress(i, len(ids), archived=i)
    log.info("batch done")
    return {"archived": len(ids), "skipped": 0}


@app.task(base=LifecycleTask, name="lifecycle.testjobs.slow_batch", bind=True)
def slow_batch(self: LifecycleTask, run_id: int, ids: list[int]) -> dict[str, int]:
    import time

    for i, _ in enumerate(ids, 1):
        time.sleep(0.8)
        self.progress(i, len(ids), archived=i)
    return {"archived": len(ids)}


@app.task(base=LifecycleTask, name="lifecycle.testjobs.leaky_result")
def leaky_result(request_id: int) -> dict[str, str]:
    return {"member": SECRET_EMAIL}


@app.task(base=LifecycleTask, name="lifecycle.testjobs.leased_work", bind=True, lease="args")
def leased_work(self: LifecycleTask, job_id: int, seconds: int) -> dict[str, int]:
    """Long the first time (a marker file says it started), quick when sent again."""
    import time

    from lifecycle.core.settings import get_settings

    marker = get_settings().var_dir / f"leased-work-{int(job_id)}.started"
    first = not marker.exists()
    marker.touch()
    if first:
        time.sleep(int(seconds))
    return {"job_id": int(job_id), "first": int(first)}
