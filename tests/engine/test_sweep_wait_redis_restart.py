"""`sweep --wait` follows the run, not one task: Redis killed and restarted under a running
sweep cancels the coordinator task (it may end REVOKED "terminated"), the watchdog re-sends the
job (``<task>~r1``) and the run resumes; the wait must end with the run's outcome, exit 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers import (
    LifecycleEnv,
    apply_env,
    seed_site,
    sql_one,
    sql_rows,
    start_beat,
    start_redis,
    wait_until,
    withdraw_all,
)

MEMBERS = 3000


def _withdrawn_left(primary: str) -> int:
    return sql_one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'")


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_sweep_wait_follows_the_run_across_a_redis_restart(
    primary_env: LifecycleEnv, start_worker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    redis = start_redis(tmp_path / "redis", aof=True)
    env.vars.update(
        LIFECYCLE_BROKER_URL=redis.url,
        LIFECYCLE_RESULT_BACKEND=redis.url,
        LIFECYCLE_LEASE_SECONDS="4",
        LIFECYCLE_TICK_SCALE="0.2",  # the watchdog every 3 s
    )
    apply_env(monkeypatch, env)
    seed_site(primary, MEMBERS)
    assert withdraw_all(primary) == MEMBERS
    beat = start_beat(env, tmp_path / "beat.log")
    start_worker(env, queues=["archive"], concurrency=2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", "sweep", "--wait", "--batch-size", "10"],
        env=env.environ(LIFECYCLE_WAIT_BROKER_GRACE_SECONDS="120"),
        cwd=env.var_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Under way (some members done, most not): the kill lands in a running sweep.
        wait_until(lambda: _withdrawn_left(primary) < MEMBERS - 50, 120, "sweep progress")
        assert _withdrawn_left(primary) > MEMBERS // 3, "sweep nearly done before the kill"
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGKILL)
        redis.proc.wait(10)
        again = start_redis(redis.dir, redis.port, aof=True)
        try:
            out, err = proc.communicate(timeout=360)
        finally:
            assert again.proc is not None
            again.proc.terminate()
            again.proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        beat.terminate()
        beat.wait(30)
        if redis.proc is not None and redis.proc.poll() is None:
            redis.proc.kill()
    runs = sql_rows(
        primary, "SELECT outcome, task_id FROM lifecycle_job_runs WHERE job='sweep' ORDER BY id"
    )
    assert proc.returncode == 0, (err, runs)
    assert "sweep done: " in out, out
    assert "failed" not in err, err
    # An ok run left no withdrawn member behind (on MariaDB it once ended ok with 205 left).
    assert _withdrawn_left(primary) == 0
    # The last run is ok. Under load the coordinator's redelivered copy may close the
    # interrupted run as abandoned and redo its remaining work in a new one: never failed.
    outcomes = [r[0] for r in runs]
    assert outcomes[-1] == "ok" and set(outcomes[:-1]) <= {"abandoned"}, runs


def test_a_revoked_coordinator_does_not_end_the_wait_while_its_job_goes_on(
    primary_env: LifecycleEnv,
) -> None:
    """What the restart above leaves when the cancelled task is recorded REVOKED: the wait
    follows the job (lease) and the run row, and ends with the run's outcome."""
    from celery.result import AsyncResult

    from lifecycle.cli.waiting import wait_for_task
    from lifecycle.core import db, leases
    from models.requests import JobRun
    from workers.app import app

    key = "lifecycle.sweep.run"
    first = leases.acquire(key, key, task_id="t1")
    assert first is not None
    with db.session("primary") as s:
        run = JobRun(job="sweep", task_id="t1", outcome="running", counts={})
        s.add(run)
        s.flush()
        run_id = run.id
    # The worker lost Redis and cancelled the coordinator: its result says REVOKED.
    app.backend.mark_as_revoked("t1", "terminated")
    done = {"run_id": run_id, "batches": 4, "batches_done": 4}

    def watchdog_copy_finishes() -> None:
        # The lease expired; the watchdog's copy t1~r1 takes it over and resumes the run.
        leases.retrying(first, 0)
        again = leases.acquire(key, key, task_id="t1~r1")
        assert again is not None
        with db.engine("primary").begin() as c:
            c.execute(
                JobRun.__table__.update()
                .where(JobRun.__table__.c.id == run_id)
                .values(task_id="t1~r1", outcome="ok", counts=done)
            )
        leases.finish(again, "done")
        app.backend.store_result("t1~r1", done, "SUCCESS")

    timer = threading.Timer(3.0, watchdog_copy_finishes)
    timer.start()
    try:
        got = wait_for_task(AsyncResult("t1", app=app), "sweep", timeout=60)
    finally:
        timer.join()
    assert got == done
