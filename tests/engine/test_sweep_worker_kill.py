"""A sweep of parallel batches whose worker is SIGKILLed mid-run (main and pool processes) ends,
on another worker, with every withdrawn member gone and the run's member count equal to its
dry run's, on a PostgreSQL and on a MariaDB primary.

On MariaDB the run used to end `ok` a couple of members short: a batch's locking read of its id
range also locked the next batch's first member, which that batch passed over (SKIP LOCKED).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.engine.preview import sweep_preview
from tests.helpers import (
    LifecycleEnv,
    WorkerProc,
    accounting,
    apply_env,
    check_exact_accounting,
    remaining_rows,
    seed_site,
    snapshot_site,
    sql_one,
    sql_rows,
    stop_group,
    wait_until,
    withdraw_all,
)

MEMBERS = 1500
MEMBER_BATCH = 50  # 30 batches: enough in flight at once to meet at their boundaries
LEASE_SECONDS = "4"
TICK_SCALE = "0.2"  # the lease watchdog every 3 s


@pytest.fixture
def beat(primary_env: LifecycleEnv, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Starts celery beat (its lease watchdog re-sends the dead worker's jobs); stops it after."""
    procs: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "beat.log"

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", "INFO"],
            env=primary_env.environ(),
            cwd=primary_env.var_dir.parent,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        stop_group(p)


def _run_state(primary: str) -> tuple[int, int, int] | None:
    """(run id, batches done, batches pending) of the latest sweep run, if any."""
    rows = sql_rows(
        primary,
        "SELECT r.id, sum(CASE WHEN b.state = 'done' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN b.state = 'pending' THEN 1 ELSE 0 END) FROM lifecycle_job_runs r "
        "JOIN lifecycle_sweep_batches b ON b.run_id = r.id WHERE r.job = 'sweep' "
        "GROUP BY r.id ORDER BY r.id DESC LIMIT 1",
    )
    return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None


def _finished(primary: str) -> list[tuple[Any, ...]] | None:
    runs = sql_rows(
        primary, "SELECT id, outcome, counts FROM lifecycle_job_runs WHERE job = 'sweep'"
    )
    if runs and all(o != "running" for _i, o, _c in runs):
        return runs
    return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_killed_mid_sweep_run_still_takes_every_planned_member(
    primary_env: LifecycleEnv,
    start_worker: Callable[..., WorkerProc],
    beat: Callable[[], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = primary_env
    env.vars["LIFECYCLE_LEASE_SECONDS"] = LEASE_SECONDS
    env.vars["LIFECYCLE_TICK_SCALE"] = TICK_SCALE
    apply_env(monkeypatch, env)
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    seed_site(primary, MEMBERS)
    withdraw_all(primary)
    clear_context_cache()
    snap = snapshot_site(primary)
    # The dry run's member count: what the run must take.
    planned = max(
        line.subjects
        for line in sweep_preview(get_context())
        if line.phase == "withdrawal" and line.table == "members"
    )
    assert planned == MEMBERS

    from workers.app import app

    beat()
    first = start_worker(env, queues=["archive"], concurrency=3, name="kill-a")
    app.send_task("lifecycle.sweep.run", kwargs={"member_batch": MEMBER_BATCH})

    def under_way() -> bool:
        state = _run_state(primary)
        return state is not None and state[1] >= 2 and state[2] >= 5

    wait_until(under_way, timeout=120, what="sweep batches under way")
    run_id, _done, _pending = _run_state(primary)  # type: ignore[misc]
    # The worker's main process and its pool processes, coordinator and batches among them.
    first.kill(signal.SIGKILL)
    start_worker(env, queues=["archive"], concurrency=3, name="kill-b")

    runs = wait_until(lambda: _finished(primary), timeout=300, what="the sweep run finished")
    by_id = {int(i): (o, json.loads(c) if isinstance(c, str) else c) for i, o, c in runs}
    outcome, counts = by_id[run_id]
    assert counts["batches"] >= 5 and counts["batches_done"] == counts["batches"]
    # No withdrawn member holds rows: the members and everything hanging off them are gone.
    assert sql_one(primary, "SELECT count(*) FROM members WHERE status = 'withdrawn'") == 0
    # The run's own count is its dry run's, and its plan's.
    assert counts["withdrawal_subjects"] == planned, counts
    assert counts["withdrawal_members"] == counts["withdrawal_planned"] == planned, counts
    assert outcome == "ok", (outcome, counts)
    remaining = remaining_rows(primary, snap)
    check_exact_accounting(snap, remaining, accounting(primary, archive))
