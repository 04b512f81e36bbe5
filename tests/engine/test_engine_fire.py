"""Invariant 1 under fire: a sweep of 20,000 withdrawn members while workers are SIGKILLed at
random points and restarted, Redis is restarted and PostgreSQL crashes and recovers.

Throwaway servers only (a private PostgreSQL from initdb and a private Redis, on free ports).
Throughout, a monitor checks that every retained record is in the primary DB or the archive
(read in that order, so a move in between can never look like a loss). At the end every record
that left the primary DB is, per category, archived exactly once or destroyed with a ledger
entry; none lost, none duplicated; and the ledger's hash chain verifies.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from lifecycle.engine.context import clear_context_cache
from tests.helpers import (
    LifecycleEnv,
    RedisServer,
    accounting,
    apply_env,
    check_exact_accounting,
    free_port,
    remaining_rows,
    seed_site,
    snapshot_site,
    start_redis,
    wait_until,
    withdraw_all,
    write_master_key,
)
from tests.pg_server import PgServer, start_postgres

MEMBERS = 20_000
# Rows the sweep must archive, never destroy: contracts (5y), and counselling records (10y) of
# the members who gave the separate retention consent (the others are destroyed: not watched).
WATCHED = ("contracts", "counselling_records")


def retained_rows(primary: str, rows: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """The snapshot's rows of each watched table that the sweep must archive."""
    eng = create_engine(primary)
    try:
        with eng.begin() as c:
            # The members who consented to processing also gave the separate retention consent
            # (kept in the lifecycle's own table: the demo site has no column for it).
            c.execute(
                text(
                    "INSERT INTO lifecycle_consents (member_id, purpose, text_version, given_at, "
                    "source, recorded_at) SELECT id, 'counselling_retention', 'v1', "
                    "counselling_consent_at, 'lifecycle', counselling_consent_at FROM members "
                    "WHERE counselling_consent_at IS NOT NULL"
                )
            )
        with eng.connect() as c:
            consented = {
                str(r[0])
                for r in c.execute(
                    text(
                        "SELECT cr.id FROM counselling_records cr JOIN lifecycle_consents lc "
                        "ON lc.member_id = cr.member_id WHERE lc.purpose = "
                        "'counselling_retention' AND lc.withdrawn_at IS NULL"
                    )
                )
            }
    finally:
        eng.dispose()
    expected = {t: {pk for (tt, pk) in rows if tt == t} for t in WATCHED}
    expected["counselling_records"] &= consented
    assert expected["counselling_records"], "the seed recorded no consent: nothing is watched"
    return expected


@pytest.fixture
def fire_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[LifecycleEnv, PgServer, RedisServer]]:
    pg = start_postgres(free_port())
    redis = start_redis(tmp_path / "redis", free_port(), aof=True)
    try:
        pg.create_database("site")
        pg.create_database("archive")
        var, files = tmp_path / "var", tmp_path / "files"
        var.mkdir()
        files.mkdir()
        write_master_key(var / "master.key")
        env = LifecycleEnv(
            vars={
                "LIFECYCLE_VAR_DIR": str(var),
                "LIFECYCLE_PRIMARY_DATABASE_URL": pg.url("site"),
                "LIFECYCLE_ARCHIVE_DATABASE_URL": pg.url("archive"),
                "LIFECYCLE_BROKER_URL": redis.url,
                "LIFECYCLE_RESULT_BACKEND": redis.url,
                "LIFECYCLE_FILE_ROOTS": str(files),
                "LIFECYCLE_HOST_NAME": "firehost",
                "LIFECYCLE_LOG_JSON": "true",
            },
            var_dir=var,
            file_root=files,
        )
        apply_env(monkeypatch, env)
        clear_context_cache()
        yield env, pg, redis
    finally:
        from workers.app import reconfigure

        monkeypatch.undo()
        reconfigure()
        clear_context_cache()
        if redis.proc is not None:
            redis.proc.kill()
            redis.proc.wait(10)
        pg.destroy()


class Monitor(threading.Thread):
    """Every few hundred ms: each watched row is in the primary DB or in the archive."""

    def __init__(self, primary: str, archive: str, expected: dict[str, set[str]]) -> None:
        super().__init__(daemon=True)
        self.p = create_engine(primary, pool_pre_ping=True)
        self.a = create_engine(archive, pool_pre_ping=True)
        self.expected = expected
        self.checks = 0
        self.violations: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.check()
            except Exception:  # a server is down right now: try again later
                self.halt.wait(0.3)
            self.halt.wait(0.2)

    def check(self) -> None:
        # Primary first: a row that leaves it was committed to the archive before.
        with self.p.connect() as c:
            live = {t: {str(r[0]) for r in c.execute(text(f"SELECT id FROM {t}"))} for t in WATCHED}
        with self.a.connect() as c:
            kept = {
                t: {
                    r[0]
                    for r in c.execute(
                        text("SELECT source_pk FROM archive_records WHERE source_table = :t"),
                        {"t": t},
                    )
                }
                for t in WATCHED
            }
        for t in WATCHED:
            lost = self.expected[t] - live[t] - kept[t]
            if lost:
                self.violations.append(f"{len(lost)} {t} rows in neither database")
        self.checks += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(30)
        self.p.dispose()
        self.a.dispose()


def _withdrawn_left(primary: str) -> int:
    eng = create_engine(primary)
    try:
        with eng.connect() as c:
            return int(
                c.execute(
                    text("SELECT count(*) FROM members WHERE status = 'withdrawn'")
                ).scalar_one()
            )
    finally:
        eng.dispose()


@pytest.mark.slow
@pytest.mark.integration  # starts its own PostgreSQL and Redis
@pytest.mark.timeout(420)
def test_sweep_survives_sigkill_redis_restart_and_postgres_crash(
    fire_env: tuple[LifecycleEnv, PgServer, RedisServer], start_worker
) -> None:  # type: ignore[no-untyped-def]
    env, pg, redis = fire_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    archive = env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"]
    up = env.run("db", "upgrade")
    assert up.returncode == 0, up.stderr
    seed_site(primary, MEMBERS)
    assert withdraw_all(primary) == MEMBERS
    snap = snapshot_site(primary)
    expected = retained_rows(primary, snap.rows)
    monitor = Monitor(primary, archive, expected)
    monitor.start()

    from workers.app import app

    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    print(f"chaos seed {seed}")
    queues = ["archive"]
    workers = {
        "a": start_worker(env, queues=queues, concurrency=2, name="fire-a"),
        "b": start_worker(env, queues=queues, concurrency=1, name="fire-b"),
    }
    app.send_task("lifecycle.sweep.run", kwargs={"member_batch": 250})

    def restart(which: str) -> None:
        workers[which].kill()
        workers[which] = start_worker(
            env, queues=queues, concurrency=2 if which == "a" else 1, name=f"fire-{which}"
        )

    events = [
        ("kill worker a", lambda: restart("a")),
        ("kill worker b", lambda: restart("b")),
        ("restart redis", lambda: _restart_redis(redis)),
        ("crash postgres", pg.crash_and_restart),
        ("kill worker a", lambda: restart("a")),
        ("kill both workers", lambda: (restart("a"), restart("b"))),
    ]

    def moved_on(since: int, step: int) -> bool:
        try:
            return _withdrawn_left(primary) <= max(0, since - step)
        except Exception:  # PostgreSQL still recovering
            return False

    left = MEMBERS
    for what, do in events:
        # Each fault lands at a random point of a sweep that is moving: after 1 to 3 more
        # batches were archived since the previous fault (a random amount of work, not time).
        step = rng.randint(1, 3) * 250
        wait_until(lambda s=left, n=step: moved_on(s, n), 120, f"{step} more members swept")
        left = _withdrawn_left(primary)
        print(f"{what} ({left} withdrawn members left)")
        do()
        # A fault may have killed the coordinator with nothing here to re-send it: trigger
        # again (skipped while a sweep still runs; else it supersedes the dead run).
        with contextlib.suppress(Exception):
            app.send_task("lifecycle.sweep.run", kwargs={"member_batch": 250})

    # Trigger again until everything is done (a killed coordinator leaves its run behind;
    # the next run supersedes it). A trigger while another sweep still runs is skipped.
    def finished() -> bool:
        try:
            res = app.send_task("lifecycle.sweep.run", kwargs={"member_batch": 250})
            out = res.get(timeout=180, interval=0.5)
        except Exception as exc:  # e.g. the coordinator was cancelled; try again
            print(f"trigger failed: {type(exc).__name__}")
            return False
        return "skipped" not in out and _withdrawn_left(primary) == 0

    wait_until(finished, 240, "the sweep finished", interval=1)
    monitor.stop()
    eng = create_engine(primary)
    with eng.connect() as c:
        runs = c.execute(
            text("SELECT outcome, count(*) FROM lifecycle_job_runs GROUP BY 1 ORDER BY 1")
        ).all()
    eng.dispose()
    print(f"sweep runs by outcome: {runs}; monitor checks: {monitor.checks}")
    assert monitor.checks > 5
    assert monitor.violations == []

    remaining = remaining_rows(primary, snap)
    assert not any(t in WATCHED for t, _ in remaining)
    acc = accounting(primary, archive)
    check_exact_accounting(snap, remaining, acc)
    for t in WATCHED:
        assert {pk for (tt, pk, _c) in acc.records if tt == t} == expected[t]
    assert len(acc.records) > MEMBERS


def _restart_redis(redis: RedisServer) -> None:
    assert redis.proc is not None
    redis.proc.terminate()
    redis.proc.wait(20)
    # The outage itself: for half a second the workers find nothing listening, as in a real
    # restart, rather than a new server already there when they notice the dropped connection.
    time.sleep(0.5)
    fresh = start_redis(redis.dir, redis.port, aof=True)
    redis.proc = fresh.proc
