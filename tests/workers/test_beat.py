"""Beat: the schedule is what ops expect, two beat processes on Redis fire only once, and a
Redis restart neither stops beat nor leaves two beats scheduling."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import redis
from celery.schedules import crontab

from tests.helpers import LifecycleEnv, free_port, kill_group, start_beat, start_redis, wait_until


def test_schedule_is_in_seoul_time(lifecycle_env: LifecycleEnv) -> None:
    from schedules.housekeeping import relay_pending
    from schedules.ticker import ticks
    from workers.app import app

    assert app.conf.timezone == "Asia/Seoul"
    sched = app.conf.beat_schedule
    # The relay is a tick of beat's own thread, not a task (it would flood Flower).
    assert not any(e["task"] == "lifecycle.relay" for e in sched.values())
    (relay,) = [t for t in ticks() if t.fn is relay_pending]
    assert relay.every <= 10
    # The old names stay registered for messages already queued under them.
    app.loader.import_default_modules()
    for name in (
        "lifecycle.relay",
        "lifecycle.notify.resend_due",
        "lifecycle.shred.resend_pending",
    ):
        assert name in app.tasks, name
    crons = [e for e in sched.values() if isinstance(e["schedule"], crontab)]
    nightly = [e for e in crons if e["schedule"].day_of_week == set(range(7))]
    assert nightly
    for entry in nightly:
        assert entry["schedule"].hour == {3}, entry
    # The weekly data-map scan: Sunday night, before the nightly jobs.
    (weekly,) = [e for e in crons if e not in nightly]
    assert weekly["task"] == "lifecycle.datamap.scan"
    assert (weekly["schedule"].day_of_week, weekly["schedule"].hour) == ({0}, {2})


def test_redbeat_on_redis_and_file_scheduler_embedded(
    lifecycle_env: LifecycleEnv,
) -> None:
    from workers.app import app

    assert app.conf.beat_scheduler == "schedules.scheduler:Scheduler"
    assert app.conf.redbeat_redis_url == lifecycle_env.vars["LIFECYCLE_BROKER_URL"]


def test_two_beats_only_one_fires(lifecycle_env: LifecycleEnv, tmp_path: Path) -> None:
    logs = [tmp_path / "beat1.log", tmp_path / "beat2.log"]
    procs = [start_beat(lifecycle_env, logs[0], "DEBUG")]

    def ticks(i: int) -> int:
        return logs[i].read_text(errors="replace").count("housekeeping tick relay")

    try:
        wait_until(lambda: "beat: Acquired lock" in logs[0].read_text(), 40, "first beat's lock")
        procs.append(start_beat(lifecycle_env, logs[1], "DEBUG"))
        wait_until(lambda: "beat: Acquiring lock" in logs[1].read_text(), 40, "second beat waits")
        # Several relay intervals (5 s) with the second beat standing by.
        start = ticks(0)
        wait_until(lambda: ticks(0) >= start + 3, 60, "three relay ticks of the first beat")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    texts = [log.read_text(errors="replace") for log in logs]
    ticked = [t.count("housekeeping tick relay") for t in texts]
    assert ticked[0] >= 2, texts[0][-2000:]
    assert ticked[1] == 0, texts[1][-2000:]
    # The ticks are not Celery tasks: beat sent none of them.
    assert "Sending due task" not in texts[0] or "lifecycle.relay" not in texts[0]


def test_celery_settings_for_jobs_never_lost_nor_doubled(lifecycle_env: LifecycleEnv) -> None:
    from workers.app import app

    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost
    assert c.worker_prefetch_multiplier == 1
    assert c.accept_content == ["json"] and c.task_serializer == "json"
    assert c.result_extended is False
    assert c.worker_send_task_events and c.task_send_sent_event
    limit = c.task_time_limit
    for vt in (
        c.broker_transport_options["visibility_timeout"],
        c.result_backend_transport_options["visibility_timeout"],
        c.visibility_timeout,
    ):
        assert vt > limit
    queues = {q.name for q in c.task_queues}
    assert {"requests", "archive", "notify", "shred.testhost"} <= queues


def test_beat_rides_out_a_redis_restart_that_loses_its_lock_and_schedule(
    lifecycle_env: LifecycleEnv, tmp_path: Path
) -> None:
    # A throwaway Redis without persistence: its restart loses the lock and RedBeat's entries.
    server = start_redis(tmp_path / "redis", free_port(), aof=False)
    lifecycle_env.vars["LIFECYCLE_BROKER_URL"] = server.url
    lifecycle_env.vars["LIFECYCLE_RESULT_BACKEND"] = server.url
    logs = [tmp_path / "beat1.log", tmp_path / "beat2.log"]
    procs: list[subprocess.Popen[bytes]] = []

    def text(i: int) -> str:
        return logs[i].read_text(errors="replace")

    def entries() -> list[bytes]:
        return list(redis.Redis(port=server.port).keys("lifecycle:redbeat*sweep-nightly"))

    try:
        procs.append(start_beat(lifecycle_env, logs[0], "DEBUG"))
        wait_until(lambda: "housekeeping tick relay" in text(0), 40, "first beat ticking")
        assert entries()
        procs.append(start_beat(lifecycle_env, logs[1], "DEBUG"))  # waits on the lock
        wait_until(lambda: "beat: Acquiring lock" in text(1), 40, "second beat waits")
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(10)

        def ticks_in_outage() -> int:
            log = text(0)
            return (
                log.split("Redis unreachable", 1)[1].count("beat: Waking up")
                if ("Redis unreachable" in log)
                else 0
            )

        # More than one tick in the outage: RedBeat alone would have exited at the first.
        wait_until(lambda: ticks_in_outage() >= 2, 40, "two beat ticks with Redis down")
        assert [p.poll() for p in procs] == [None, None], text(0)[-3000:]
        server = start_redis(tmp_path / "redis", server.port, aof=False)

        wait_until(entries, 40, "schedule restored")
        wait_until(lambda: any("answers again" in text(i) for i in (0, 1)), 40, "Redis back")
        # One beat took the lock again (the first one took it once before the restart).
        wait_until(
            lambda: sum(text(i).count("beat: Acquired lock") for i in (0, 1)) >= 2,
            40,
            "the lock taken again",
        )
        before = [text(i).count("housekeeping tick relay") for i in (0, 1)]
        # More than two relay intervals (5 s).
        wait_until(
            lambda: (
                sum(text(i).count("housekeeping tick relay") for i in (0, 1)) >= sum(before) + 3
            ),
            60,
            "three relay ticks after the restart",
        )
        after = [text(i).count("housekeeping tick relay") for i in (0, 1)]
        assert [p.poll() for p in procs] == [None, None]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                kill_group(p, signal.SIGKILL)
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait(10)
    assert "Redis unreachable" in text(0)
    assert "beat raised exception" not in text(0) + text(1)
    # Exactly one beat schedules after the restart: the one that took the lock again.
    ticking = [a - b for a, b in zip(after, before, strict=True)]
    assert sorted(t > 0 for t in ticking) == [False, True], (ticking, text(0)[-2000:])
