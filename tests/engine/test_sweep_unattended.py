"""A sweep run left `running` with nobody able to finish it is never silent: `status` flags it
in one line, and beat's watchdog sends the coordinator again with the run's id, which resumes
and finishes that run. On a PostgreSQL and on a MariaDB primary.

The state is made directly (a run row, no live lease), whatever cause left it: the lease
watchdog alone re-sends only leases that expire, and a finished or missing lease never does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, insert

from lifecycle.core import db, leases
from lifecycle.core.locks import JobLock
from lifecycle.engine.sweep import LOCK_NAME
from lifecycle.engine.sweep_watch import SWEEP_LEASE_KEY, redispatch_unattended
from models.leases import JobLease
from models.requests import JobRun
from tests.helpers import (
    LifecycleEnv,
    WorkerProc,
    apply_env,
    free_port,
    seed_site,
    sql_one,
    sql_rows,
    wait_until,
    withdraw_all,
)

MEMBERS = 120


def _status(env: LifecycleEnv) -> dict[str, object]:
    r = env.run("status", "--json", LIFECYCLE_FLOWER_PORT=str(free_port()))
    assert r.returncode in (0, 1), r.stdout + r.stderr
    report: dict[str, object] = json.loads(r.stdout)
    return report


def _flagged(report: dict[str, object], run_id: int) -> list[str]:
    attention = report["attention"]
    assert isinstance(attention, list)
    return [a for a in attention if f"sweep run {run_id} still running" in a]


@pytest.mark.timeout(300)
def test_running_sweep_run_with_no_live_lease_is_flagged_and_finished_by_the_watchdog(
    primary_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    from schedules import housekeeping

    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, MEMBERS)
    assert withdraw_all(primary) == MEMBERS
    eng = create_engine(primary)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    with eng.begin() as c:
        run_id = c.execute(
            insert(JobRun.__table__).values(
                job="sweep", task_id="gone", started_at=long_ago, outcome="running", counts={}
            )
        ).inserted_primary_key[0]
    eng.dispose()

    # No lease row at all (a run opened by no leased task).
    report = _status(env)
    (line,) = _flagged(report, run_id)
    assert "(no lease, sweep lock free)" in line and report["ok"] is False
    assert "\n" not in line

    # A coordinator connected and holding the sweep lock is working on it: not flagged.
    lock = JobLock(db.engine("primary"), LOCK_NAME)
    assert lock.acquire()
    try:
        assert _flagged(_status(env), run_id) == []
        sent: list[leases.Redispatch] = []
        assert redispatch_unattended(sent.append) == []
    finally:
        lock.release()

    # What the chaos test left: the sweep's lease finished while its run still ran.
    with db.engine("primary").begin() as c:
        c.execute(
            insert(JobLease.__table__).values(
                key=SWEEP_LEASE_KEY, task="lifecycle.sweep.run", args=[],
                kwargs={"run_id": run_id, "member_batch": 20}, queue="archive", state="done",
                holder="x", task_id="gone", first_task_id="gone", started_at=long_ago,
                heartbeat_at=long_ago, expires_at=long_ago, finished_at=long_ago,
                redispatches=0,
            )
        )  # fmt: skip
    (line,) = _flagged(_status(env), run_id)
    assert "(its lease done, sweep lock free)" in line
    unfinished = _status(env)["unfinished"]
    assert isinstance(unfinished, dict)
    assert [u["run_id"] for u in unfinished["unattended_runs"]] == [run_id]

    # The watchdog sends the coordinator again for that run, once; a worker finishes it.
    start_worker(env, queues=["archive"], concurrency=2, name="unattended")
    assert housekeeping.watchdog() == 1
    assert housekeeping.watchdog() == 0  # the lease is live again: nothing more to send

    def finished() -> bool:
        return sql_rows(primary, "SELECT outcome FROM lifecycle_job_runs WHERE job = 'sweep'") == [
            ("ok",)
        ]

    wait_until(finished, 180, "the re-sent coordinator finishing the run")
    assert sql_one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0
    ((state, redispatches, kwargs),) = sql_rows(
        primary,
        "SELECT state, redispatches, kwargs FROM lifecycle_job_leases WHERE task = :k",
        k="lifecycle.sweep.run",
    )
    assert (state, redispatches) == ("done", 1)
    kwargs = json.loads(kwargs) if isinstance(kwargs, str) else kwargs
    assert kwargs == {"run_id": run_id, "member_batch": 20}
    # Resumed, not replaced: the same run did the work, in batches of the run's size.
    ((counts,),) = sql_rows(
        primary, "SELECT counts FROM lifecycle_job_runs WHERE id = :i", i=run_id
    )
    counts = json.loads(counts) if isinstance(counts, str) else counts
    assert counts["withdrawal_subjects"] == MEMBERS
    assert counts["batches"] >= MEMBERS // 20  # member_batch 20 carried over
    report = _status(env)
    assert _flagged(report, run_id) == []
    assert housekeeping.watchdog() == 0


@pytest.mark.timeout(300)
def test_a_coordinator_copy_that_finds_the_sweep_running_hands_the_lease_back(
    primary_env: LifecycleEnv,
    start_worker: Callable[..., WorkerProc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The root of the chaos test's failure: a copy that stood down marked the one sweep lease
    done, so once the runner holding the lock stopped, nothing sent the sweep again."""
    from schedules import housekeeping
    from workers.app import app

    env = primary_env
    env.vars["LIFECYCLE_LEASE_SECONDS"] = "3"
    apply_env(monkeypatch, env)
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, MEMBERS)
    assert withdraw_all(primary) == MEMBERS
    start_worker(env, queues=["archive"], concurrency=1, name="standdown")

    # Another runner holds the sweep lock (this test stands in for it).
    lock = JobLock(db.engine("primary"), LOCK_NAME)
    assert lock.acquire()
    try:
        copy = app.send_task("lifecycle.sweep.run", kwargs={"member_batch": 20})
        assert copy.get(timeout=120) == {"skipped": "another sweep is running"}
        ((state, holder),) = sql_rows(
            primary, "SELECT state, holder FROM lifecycle_job_leases WHERE task = :t",
            t="lifecycle.sweep.run",
        )  # fmt: skip
        # Handed back, live for one more lease period: not finished.
        assert (state, holder) == ("held", None)
    finally:
        lock.release()  # and the runner stops without its heartbeat having taken the lease

    def resent() -> bool:
        return housekeeping.watchdog() == 1

    wait_until(resent, 30, "the watchdog re-sending the handed-back sweep lease")

    def finished() -> bool:
        rows = sql_rows(primary, "SELECT outcome FROM lifecycle_job_runs WHERE job = 'sweep'")
        return rows == [("ok",)]

    wait_until(finished, 180, "the re-sent coordinator finishing the sweep")
    assert sql_one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0


def test_a_run_whose_coordinator_lease_failed_is_sent_again_once(
    primary_env: LifecycleEnv,
) -> None:
    """The chaos test's own case: the coordinator's lease `failed` (a termination masked by a
    driver error) while its run still ran. Re-sent once; failing again, it waits for a person."""
    from lifecycle.engine.sweep_watch import RESENT_MARK, unattended_runs

    env = primary_env
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    with db.engine("primary").begin() as c:
        run_id = c.execute(
            insert(JobRun.__table__).values(
                job="sweep", task_id="t1", started_at=long_ago, outcome="running", counts={}
            )
        ).inserted_primary_key[0]
        c.execute(
            insert(JobLease.__table__).values(
                key=SWEEP_LEASE_KEY, task="lifecycle.sweep.run", args=[],
                kwargs={"run_id": run_id}, state="failed", holder="x", task_id="t1",
                first_task_id="t1", started_at=long_ago, heartbeat_at=long_ago,
                expires_at=long_ago, finished_at=long_ago, redispatches=0,
                error="RedactedError: ProgrammingError (details in worker log, ref=1)",
            )
        )  # fmt: skip
    (line,) = _flagged(_status(env), run_id)
    assert "coordinator failed (RedactedError: ProgrammingError" in line
    assert line.endswith("the watchdog sends it again once")
    sent: list[leases.Redispatch] = []
    assert redispatch_unattended(sent.append) == [run_id]
    (job,) = sent
    assert job.kwargs == {"run_id": run_id} and job.task_id.startswith(RESENT_MARK)
    assert redispatch_unattended(sent.append) == []  # live again: the lease watchdog's now

    # That copy failed too: flagged, not sent again.
    with db.engine("primary").begin() as c:
        c.execute(
            JobLease.__table__.update()
            .where(JobLease.__table__.c.key == SWEEP_LEASE_KEY)
            .values(state="failed", finished_at=long_ago, heartbeat_at=long_ago)
        )
    with db.engine("primary").connect() as c:
        (again,) = unattended_runs(c, datetime.now(UTC))
    assert not again.resend and again.reason.endswith("re-run it with lifecycle sweep")
    assert redispatch_unattended(sent.append) == []
    (line,) = _flagged(_status(env), run_id)
    assert "failed again" in line
