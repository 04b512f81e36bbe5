"""A real worker subprocess runs a job end to end on PostgreSQL + Redis."""

from __future__ import annotations

from tests.helpers import LifecycleEnv


def test_ping_job_runs_on_a_real_worker(lifecycle_env: LifecycleEnv, start_worker) -> None:
    from tasks.ping import ping

    start_worker(lifecycle_env)
    result = ping.delay()
    assert result.get(timeout=30) == {"pong": "ok"}
    assert result.state == "SUCCESS"
