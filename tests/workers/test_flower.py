"""Flower behind `lifecycle up` on PostgreSQL + Redis: redacted, authenticated, persistent."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import tests.jobs  # noqa: F401  (the sender knows the test jobs, so it names their arguments)
from tests.helpers import REPO, LifecycleEnv, WorkerProc, free_port
from tests.upstack import start_up, submit_withdrawal

FOREIGN_EMAIL = "kim.minji.private@example.com"
FOREIGN_PHONE = "010-2468-1357"
PROTECTED = [
    "/",
    "/workers",
    "/tasks",
    "/broker",
    "/api/tasks",
    "/api/workers",
    "/api/task/types",
    "/api/queues/length",
    "/metrics",
]


def test_flower_shows_jobs_redacted_only_behind_login_and_keeps_history(
    lifecycle_env: LifecycleEnv, tmp_path: Path, start_worker: Callable[..., WorkerProc]
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from lifecycle.core import db, leases
    from models.leases import JobLease
    from workers.app import app

    # Housekeeping ticks fast (relay every 0.5 s, watchdog every 1.5 s): none may show up.
    lifecycle_env.vars["LIFECYCLE_TICK_SCALE"] = "0.1"
    port = free_port()
    stack = start_up(lifecycle_env, port, tmp_path)
    # A second worker with the test-only jobs, on its own queue.
    start_worker(lifecycle_env, queues=["testjobs"], extra_args=["--include", "tests.jobs"])
    try:
        # Long jobs show their progress in Flower while they run.
        batch = app.send_task(
            "lifecycle.testjobs.slow_batch", args=[9, [5, 6, 7, 8]], queue="testjobs"
        )
        running = stack.wait_task(lambda t: t["uuid"] == batch.id and t["state"] == "PROGRESS")
        assert running["args"] == "run=9 ids=5..8"
        # ...as done/total.
        assert "'done': " in running["result"] and "'total': 4" in running["result"]
        done = stack.wait_task(lambda t: t["uuid"] == batch.id and t["state"] == "SUCCESS")
        assert done["result"] == "{'archived': 4}"

        request_id = submit_withdrawal(4242)
        ping = lifecycle_env.run("ping", "--wait", timeout=120)
        assert ping.returncode == 0, ping.stderr
        ping_id = ping.stdout.split("task ", 1)[1].split()[0]
        # A foreign client that bypasses our conventions: personal data in its reprs, sent to
        # a queue no worker reads. Flower must not show it.
        foreign = app.send_task(
            "foreign.echo",
            args=[1],
            argsrepr=f"('{FOREIGN_EMAIL}',)",
            kwargsrepr=f"{{'phone': '{FOREIGN_PHONE}'}}",
            queue="nobody",
        )

        # The relay (beat, every 5 s) dispatched the request: Flower shows which one, by id.
        withdraw = stack.wait_task(lambda t: t["name"] == "lifecycle.withdraw")
        assert withdraw["args"] == f"request={request_id}"
        assert withdraw["kwargs"] == ""
        pong = stack.wait_task(lambda t: t["uuid"] == ping_id and t["state"] == "SUCCESS")
        assert pong["name"] == "lifecycle.ping" and pong["result"] == "{'pong': 'ok'}"
        # A job whose worker died: the watchdog sends it again, and Flower says so.
        lost = leases.acquire("lifecycle.ping", "lifecycle.ping", task_id="lost-ping")
        assert lost is not None
        with db.session("primary") as s:
            s.execute(
                update(JobLease)
                .where(JobLease.key == "lifecycle.ping")
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        again = stack.wait_task(lambda t: "re-dispatched" in (t["args"] or ""))
        assert again["name"] == "lifecycle.ping"
        assert again["args"].startswith("(re-dispatched #1, stalled ")
        # The relay dispatched the withdrawal, and ran every 0.5 s meanwhile, but Flower lists
        # no housekeeping tick at all: only the jobs.
        names = {t["name"] for t in stack.tasks().values()}
        assert not names & {
            "lifecycle.relay",
            "lifecycle.relay.redispatch_stale",
            "lifecycle.notify.resend_due",
            "lifecycle.shred.resend_pending",
            "lifecycle.notice.resume_stale",
        }, names
        shown = stack.wait_task(lambda t: t["uuid"] == foreign.id)
        assert shown["args"] == "<redacted>" and shown["kwargs"] == "<redacted>"
        for path in ("/api/tasks", f"/api/task/info/{foreign.id}", f"/task/{foreign.id}"):
            body = stack.get(path).text
            assert FOREIGN_EMAIL not in body and FOREIGN_PHONE not in body, path
        info = stack.get(f"/api/task/info/{withdraw['uuid']}").json()
        assert info["args"] == f"request={request_id}"

        # Wrong password, other user, or none: 401 and nothing else, on every page and API.
        secret_words = ("lifecycle.", ping_id, "testhost", "flower_")
        for path in [*PROTECTED, f"/api/task/info/{ping_id}", f"/task/{ping_id}"]:
            for auth in ((stack.user, "wrong"), ("root", stack.password), None):
                r = httpx.get(f"{stack.base}{path}", auth=auth, timeout=10)
                assert r.status_code == 401, (path, auth, r.status_code)
                assert not any(w in r.text for w in secret_words), (path, r.text[:200])
        # ...while the right login sees them, /metrics included (for Prometheus).
        for path in PROTECTED:
            assert stack.get(path).status_code == 200, path
        metrics = stack.get("/metrics").text
        assert 'flower_events_total{task="lifecycle.ping"' in metrics or (
            "lifecycle.ping" in metrics
        )
        # The liveness probe is open and says nothing else.
        health = httpx.get(f"{stack.base}/healthcheck", timeout=10)
        assert health.status_code == 200 and health.text == "OK"
    finally:
        code = stack.stop()
    assert code == 0, stack.logs()[-3000:]

    # Every child logged JSON lines that name it (worker, beat, flower).
    services = set()
    for line in stack.err.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            services.add(json.loads(line)["service"])
    assert {"worker", "beat", "flower"} <= services
    assert FOREIGN_EMAIL not in stack.logs()

    # Persistent mode: after a restart the earlier jobs are still listed.
    again = start_up(lifecycle_env, port, tmp_path, tag="up2")
    try:
        tasks = again.tasks()
        assert ping_id in tasks and tasks[ping_id]["state"] == "SUCCESS"
        assert tasks[withdraw["uuid"]]["args"] == f"request={request_id}"
    finally:
        assert again.stop() == 0


def _flower_alone(env: LifecycleEnv, **extra: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in env.environ(**extra).items() if not k.startswith("FLOWER_")}
    environ.update({k: v for k, v in extra.items() if k.startswith("FLOWER_")})
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers.app",
            "flower",
            f"--conf={REPO / 'workers' / 'flowerconfig.py'}",
            f"--port={free_port()}",
        ],
        env=environ,
        cwd=env.var_dir.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, "no authentication configured"),
        ({"FLOWER_BASIC_AUTH": "admin:"}, "no authentication configured"),
        ({"FLOWER_AUTH": r".*@maumteo\.example"}, "OAuth needs"),
        (
            {"FLOWER_BASIC_AUTH": "admin:pw", "FLOWER_UNAUTHENTICATED_API": "true"},
            "FLOWER_UNAUTHENTICATED_API",
        ),
    ],
)
def test_flower_refuses_to_start_without_authentication(
    embedded_env: LifecycleEnv, extra: dict[str, str], reason: str
) -> None:
    r = _flower_alone(embedded_env, **extra)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"flower: refusing to start: {reason}" in r.stderr
