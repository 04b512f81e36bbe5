"""The CLI while Redis goes away under a `--wait`: one line and an exit status that says what to
do, never a traceback; a restart within the grace period is waited out."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.helpers import LifecycleEnv, seed_site, start_redis, wait_until


def _cli(env: LifecycleEnv, *args: str, **more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", *args],
        env=env.environ(**more),
        cwd=env.var_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _own_redis(env: LifecycleEnv, tmp: Path, aof: bool = False):  # type: ignore[no-untyped-def]
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 20)
    server = start_redis(tmp, aof=aof)
    env.vars["LIFECYCLE_BROKER_URL"] = server.url
    env.vars["LIFECYCLE_RESULT_BACKEND"] = server.url
    return server


def _served(port: int) -> int:
    """Commands this Redis answered, not counting the INFO that asks."""
    stats = redis.Redis(port=port).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def _in_aof(directory: Path, needle: str) -> bool:
    return any(needle.encode() in f.read_bytes() for f in directory.rglob("*.aof"))


def _wait_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(prefix), line
    return line


def test_sweep_wait_while_redis_is_killed_is_one_line(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = _own_redis(lifecycle_env, tmp_path / "redis")
    proc = _cli(lifecycle_env, "sweep", "--wait", LIFECYCLE_WAIT_BROKER_GRACE_SECONDS="5")
    try:
        _wait_line(proc, "sweep started (task ")
        # Killed while the CLI polls the pending task (no worker: it stays pending).
        polled = _served(server.port)
        wait_until(lambda: _served(server.port) >= polled + 2, 30, "the CLI polling Redis")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lifecycle: error: lost contact with the result backend")
    assert "sweep (task " in lines[0] and "lifecycle status" in lines[0]


def test_sweep_with_redis_down_is_one_line(lifecycle_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = _own_redis(lifecycle_env, tmp_path / "redis")
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(10)
    r = lifecycle_env.run("sweep", "--wait", timeout=120)
    assert r.returncode == 3, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "broker unreachable" in r.stderr and "Redis is running" in r.stderr
    assert "sweep started" not in r.stdout


def test_purge_wait_rides_out_a_redis_restart(lifecycle_env, tmp_path, start_worker) -> None:  # type: ignore[no-untyped-def]
    server = _own_redis(lifecycle_env, tmp_path / "redis", aof=True)
    proc = _cli(lifecycle_env, "purge", "--wait", LIFECYCLE_WAIT_BROKER_GRACE_SECONDS="60")
    try:
        line = _wait_line(proc, "purge started (task ")
        task_id = re.search(r"\(task ([0-9a-f-]+)", line)
        assert task_id is not None, line
        # The queued message is in the AOF (what a SIGKILL leaves of it: Redis writes the file
        # before it answers the next command; only the fsync waits up to a second).
        wait_until(lambda: _in_aof(server.dir, task_id[1]), 30, "the queued message in the AOF")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(10)
        # Redis stays down for two of the waiting CLI's polls (0.5 s): it meets the outage.
        time.sleep(1)
        again = start_redis(tmp_path / "redis", port=server.port, aof=True)
        try:
            start_worker(lifecycle_env)
            out, err = proc.communicate(timeout=120)
        finally:
            assert again.proc is not None
            again.proc.terminate()
            again.proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "purge done: " in out
    assert "Traceback" not in err
