"""Job leases: taken by one holder at a time, renewed while the job runs, and a job whose
worker died is sent again by beat's watchdog with its ids, visible in `status` meanwhile."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

import tests.jobs  # noqa: F401  (the sender knows the test jobs, so it names their arguments)
from tests.helpers import (
    LifecycleEnv,
    WorkerProc,
    apply_env,
    migrate_embedded,
    start_beat,
    wait_until,
)


def _lease_row(key: str) -> dict[str, object] | None:
    from lifecycle.core import db
    from models.leases import JobLease

    with db.session("primary") as s:
        row = s.scalars(select(JobLease).where(JobLease.key == key)).first()
        if row is None:
            return None
        columns = ("state", "redispatches", "task_id", "first_task_id", "error")
        return {c: getattr(row, c) for c in columns}


# lifecycle_env is reached through getfixturevalue, which the integration hook cannot see.
@pytest.mark.parametrize(
    "which", [pytest.param("lifecycle_env", marks=pytest.mark.integration), "embedded_env"]
)
def test_one_holder_at_a_time_and_expired_leases_are_sent_again_once(
    which: str, request: pytest.FixtureRequest
) -> None:
    from lifecycle.core import db, leases
    from models.leases import JobLease

    env: LifecycleEnv = request.getfixturevalue(which)
    if which == "embedded_env":  # SQLite: the same statements, no row locks
        migrate_embedded(env)

    key = leases.lease_key("lifecycle.withdraw", [42])
    assert key == "lifecycle.withdraw:42"
    first = leases.acquire(key, "lifecycle.withdraw", [42], queue="requests", task_id="t1")
    assert first is not None
    # A duplicate message while the job runs stands down.
    assert leases.acquire(key, "lifecycle.withdraw", [42], task_id="t2") is None
    assert leases.renew(first)

    # The holder dies: its lease expires. The watchdog sends it again, once, with its ids.
    past = datetime.now(UTC) - timedelta(seconds=90)
    with db.session("primary") as s:
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    sent: list[leases.Redispatch] = []
    assert leases.redispatch_expired(sent.append) == [key]
    assert leases.redispatch_expired(sent.append) == []  # waiting for the re-sent copy
    (job,) = sent
    assert (job.task, job.args, job.queue) == ("lifecycle.withdraw", [42], "requests")
    assert job.number == 1
    assert job.note.startswith("re-dispatched #1, stalled ")
    # Its task id names the generation it belongs to (Flower shows it).
    assert job.task_id == "t1~r1"

    # The re-sent copy takes the lease over; the dead holder can no longer finish it.
    second = leases.acquire(key, "lifecycle.withdraw", [42], task_id=job.task_id)
    assert second is not None and second.redispatches == 1 and second.stalled_seconds >= 0
    assert not second.taken_over  # re-sent by the watchdog, not taken from a silent holder
    leases.finish(first, "failed", "should not count")
    assert _lease_row(key)["state"] == "held"  # type: ignore[index]
    leases.finish(second, "done")
    assert _lease_row(key)["state"] == "done"  # type: ignore[index]
    # Late copies of the finished job stand down and leave its history as it was: the original
    # message redelivered after a Redis restart, an older re-sent copy that waited its turn.
    before = _lease_row(key)
    for late in ("t1", "t1~r1", "t1~r2"):
        with pytest.raises(leases.AlreadyFinished):
            leases.acquire(key, "lifecycle.withdraw", [42], task_id=late)
    assert _lease_row(key) == before
    assert before["redispatches"] == 1 and before["first_task_id"] == "t1"  # type: ignore[index]
    # Finished jobs are never re-sent; a later message for the same ids starts afresh.
    with db.session("primary") as s:
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    assert leases.redispatch_expired(sent.append) == []
    third = leases.acquire(key, "lifecycle.withdraw", [42], task_id="t4")
    assert third is not None and third.redispatches == 0 and not third.taken_over
    assert leases.follow("t4") is not None and leases.follow("t1") is None
    # Its worker dies before the watchdog looks; the broker redelivers the same message to
    # another worker, which takes the expired lease over (and says so in its log).
    with db.session("primary") as s:
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    fourth = leases.acquire(key, "lifecycle.withdraw", [42], task_id="t4")
    assert fourth is not None and fourth.taken_over and fourth.redispatches == 0


@pytest.mark.parametrize(
    "which", [pytest.param("lifecycle_env", marks=pytest.mark.integration), "embedded_env"]
)
def test_a_copy_that_stands_down_hands_the_lease_back_instead_of_finishing_it(
    which: str, request: pytest.FixtureRequest
) -> None:
    """The sweep's chaos failure: a re-sent coordinator took the expired lease, found the
    original (alive after a database restart) holding the sweep lock and stood down, marking
    the lease done; the original then stopped for a retry before its heartbeat took the lease
    back. Nothing was live, so nothing sent the sweep again."""
    from lifecycle.core import db, leases
    from models.leases import JobLease

    env: LifecycleEnv = request.getfixturevalue(which)
    if which == "embedded_env":
        migrate_embedded(env)
    key = leases.lease_key("lifecycle.sweep.run")
    runner = leases.acquire(key, "lifecycle.sweep.run", task_id="s1")
    assert runner is not None
    past = datetime.now(UTC) - timedelta(seconds=90)
    with db.session("primary") as s:  # its heartbeat failed while the database was down
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    sent: list[leases.Redispatch] = []
    assert leases.redispatch_expired(sent.append) == [key]
    copy = leases.acquire(key, "lifecycle.sweep.run", task_id=sent[0].task_id)
    assert copy is not None

    leases.stand_down(copy)
    leases.finish(copy, "done")  # what the task wrapper does after any return: now a no-op
    assert _lease_row(key)["state"] == "held"  # type: ignore[index]
    # The runner stops for a retry before its heartbeat came: the retry keeps the job live.
    leases.retrying(runner, 5.0, "OperationalError")
    assert _lease_row(key)["state"] == "retrying"  # type: ignore[index]

    # Had the runner's heartbeat come first, it takes the handed-back lease and finishes it.
    again = leases.acquire(key, "lifecycle.sweep.run", task_id="s1")
    assert again is not None
    with db.session("primary") as s:
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    assert leases.redispatch_expired(sent.append) == [key]
    late = leases.acquire(key, "lifecycle.sweep.run", task_id=sent[-1].task_id)
    assert late is not None
    leases.stand_down(late)
    assert leases.renew(again)
    leases.finish(again, "done")
    assert _lease_row(key)["state"] == "done"  # type: ignore[index]
    # A handed-back lease nobody takes expires and is sent again.
    fresh = leases.acquire(key, "lifecycle.sweep.run", task_id="s9")
    assert fresh is not None
    leases.stand_down(fresh)
    with db.session("primary") as s:
        s.execute(update(JobLease).where(JobLease.key == key).values(expires_at=past))
    assert leases.redispatch_expired(sent.append) == [key]


def test_a_failed_job_is_not_sent_again(lifecycle_env: LifecycleEnv) -> None:
    from lifecycle.core import db, leases
    from models.leases import JobLease

    lease = leases.acquire("lifecycle.correct:5", "lifecycle.correct", [5], task_id="c1")
    assert lease is not None
    leases.finish(lease, "failed", "LifecycleError: request 5 refused")
    with db.session("primary") as s:
        s.execute(update(JobLease).values(expires_at=datetime.now(UTC) - timedelta(hours=1)))
    assert leases.redispatch_expired(lambda job: None) == []
    assert _lease_row("lifecycle.correct:5")["error"] == "LifecycleError: request 5 refused"  # type: ignore[index]


@pytest.mark.timeout(240)
def test_a_job_whose_worker_died_is_shown_stalled_then_sent_again_and_finished(
    lifecycle_env: LifecycleEnv,
    start_worker: Callable[..., WorkerProc],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from workers.app import app

    lifecycle_env.vars["LIFECYCLE_LEASE_SECONDS"] = "3"
    lifecycle_env.vars["LIFECYCLE_TICK_SCALE"] = "0.2"
    apply_env(monkeypatch, lifecycle_env)
    key = "lifecycle.testjobs.leased_work:7,600"
    args = ["--include", "tests.jobs"]
    w1 = start_worker(lifecycle_env, queues=["testjobs"], concurrency=2, extra_args=args)
    app.send_task("lifecycle.testjobs.leased_work", args=[7, 600], queue="testjobs")
    wait_until(lambda: (_lease_row(key) or {}).get("state") == "held", 30, "the job running")

    # A second copy of the same job while it runs does nothing.
    dup = app.send_task("lifecycle.testjobs.leased_work", args=[7, 600], queue="testjobs")
    assert dup.get(timeout=30) == {"skipped": "another worker holds this job's lease"}

    w1.kill()  # main process and child: nobody runs the job now; its message is not back

    def lease_expired() -> bool:
        # What `status` below reports: the lease (3 s) expired with no heartbeat, the job 4 s old.
        from lifecycle.core import db
        from lifecycle.core.timeutil import as_utc
        from models.leases import JobLease

        with db.session("primary") as s:
            row = s.scalars(select(JobLease).where(JobLease.key == key)).one()
            now = datetime.now(UTC)
            return (
                as_utc(row.expires_at) < now
                and (now - as_utc(row.heartbeat_at)).total_seconds() >= 3
                and (now - as_utc(row.started_at)).total_seconds() >= 4
            )

    wait_until(lease_expired, 30, "the lease expired")

    status = lifecycle_env.run("status", "--json", timeout=60)
    report = json.loads(status.stdout)
    (job,) = [j for j in report["unfinished"]["jobs"] if j["task"].endswith("leased_work")]
    assert job["state"] == "stalled" and job["ids"] == "7,600"
    assert job["age_seconds"] >= 4 and job["heartbeat_age_seconds"] >= 3
    human = lifecycle_env.run("status", timeout=60).stdout
    assert "STALLED" in human and "leased_work" in human

    # Beat's watchdog sends it again; a fresh worker finishes it. No one re-triggered it.
    start_worker(lifecycle_env, queues=["testjobs"], concurrency=1, extra_args=args)
    beat = start_beat(lifecycle_env, tmp_path / "beat.log")
    try:
        wait_until(lambda: (_lease_row(key) or {}).get("state") == "done", 90, "the re-sent job")
    finally:
        beat.terminate()
        beat.wait(30)
    row = _lease_row(key)
    assert row is not None and row["redispatches"] == 1
    report = json.loads(lifecycle_env.run("status", "--json", timeout=60).stdout)
    assert report["unfinished"]["jobs"] == []


def test_wait_follows_a_re_sent_job_and_fails_at_once_with_its_reason(
    lifecycle_env: LifecycleEnv,
) -> None:
    from celery.result import AsyncResult

    from lifecycle.cli.waiting import JobFailed, wait_for_task
    from lifecycle.core import leases
    from workers.app import app

    # The first task was lost with its worker (its result stays PENDING forever); the watchdog
    # re-sent the job as task "second", which finished.
    lease = leases.acquire("lifecycle.sweep.run", "lifecycle.sweep.run", task_id="first")
    assert lease is not None
    leases.retrying(lease, 0)
    again = leases.acquire("lifecycle.sweep.run", "lifecycle.sweep.run", task_id="second")
    assert again is not None
    app.backend.store_result("second", {"run_id": 3, "batches": 2}, "SUCCESS")
    done = wait_for_task(AsyncResult("first", app=app), "sweep", timeout=30)
    assert done == {"run_id": 3, "batches": 2}

    # A job that failed is reported at once with its one-line reason, though the task the
    # caller holds never reported anything.
    failing = leases.acquire("lifecycle.purge.run", "lifecycle.purge.run", task_id="p1")
    assert failing is not None
    leases.finish(failing, "failed", "DataMapError: data map demo.yaml:3: unknown table")
    # (Had it waited for the task instead, the message would be "not finished after 60s".)
    with pytest.raises(JobFailed, match=r"purge failed: DataMapError: data map demo\.yaml:3"):
        wait_for_task(AsyncResult("p1", app=app), "purge", timeout=60)
