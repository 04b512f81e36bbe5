"""`lifecycle up` on the embedded default: worker, beat and Flower come up, run a job, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import REPO, LifecycleEnv, free_port, wait_port, wait_until
from tests.upstack import wait_text


def compose_services() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]


def _processes_with_env(marker: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            if marker.encode() in (p / "environ").read_bytes():
                pids.append(int(p.name))
        except OSError:
            continue
    return pids


def _is_flower(line: str) -> bool:
    return line.startswith("[flower]") or '"service": "flower"' in line


@pytest.mark.integration  # starts a worker, beat and Flower's HTTP server
def test_up_runs_worker_beat_flower_and_stops_cleanly(
    embedded_env: LifecycleEnv, tmp_path: Path
) -> None:
    port = free_port()
    marker = f"LIFECYCLE_VAR_DIR={embedded_env.var_dir}"
    out = tmp_path / "up.out"
    err = tmp_path / "up.err"
    env = embedded_env.environ(LIFECYCLE_FLOWER_PORT=str(port))
    metrics_port = int(env["LIFECYCLE_METRICS_PORT"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", "up", "-c", "1"],
        env=env,
        cwd=tmp_path,
        stdout=out.open("wb"),
        stderr=err.open("wb"),
        start_new_session=True,
    )
    try:
        banner = wait_text(out, "Flower: http://127.0.0.1:", proc, 60)
        login = banner.split("login: ", 1)[1].splitlines()[0]
        user, password = (x.strip() for x in login.split(" / "))
        warning = wait_text(err, "EMBEDDED MODE", proc, 5)
        assert "NOT crash-safe" in warning
        wait_text(err, " ready.", proc, 60)
        # Flower only shows events sent after it subscribed (it keeps no history), and it now
        # starts after the worker is ready: send the job once its event consumer is connected.
        wait_until(
            lambda: (
                proc.poll() is not None
                or any(_is_flower(x) and "Connected to" in x for x in err.read_text().splitlines())
            ),
            60,
            "Flower's event consumer connected",
        )
        assert proc.poll() is None, err.read_text()[-3000:]

        done = embedded_env.run("ping", "--wait", timeout=120)
        assert done.returncode == 0, done.stderr
        task_id = done.stdout.split("task ", 1)[1].split()[0]

        # Flower sees the job, but only behind its password.
        base = f"http://127.0.0.1:{port}"

        def seen_done() -> dict[str, Any] | None:
            r = httpx.get(f"{base}/api/tasks", auth=(user, password), timeout=5)
            task = r.json().get(task_id) if r.status_code == 200 else None
            return task if task is not None and task["state"] == "SUCCESS" else None

        task = wait_until(seen_done, 30, "the job listed as done in Flower")
        assert task["state"] == "SUCCESS"
        assert task["name"] == "lifecycle.ping"
        # Flower started after the worker said it was ready, so it had nothing to complain of.
        log = err.read_text()
        lines = log.splitlines()
        flower_lines = [i for i, x in enumerate(lines) if _is_flower(x)]
        ready_line = next(i for i, x in enumerate(lines) if " ready." in x)
        assert flower_lines and ready_line < flower_lines[0], log[-3000:]
        assert "Inspect method" not in log, log[-3000:]
        # redbeat's start-up handler, connected for every scheduler, leaves the embedded one be.
        assert "lock_key" not in log, log[-3000:]
        denied = httpx.get(f"{base}/api/tasks", auth=(user, "wrong"), timeout=5)
        assert denied.status_code == 401
        assert task_id not in denied.text

        # The beat that `up` runs touches the same heartbeat compose's healthcheck reads.
        beat_check = [sys.executable, "-m", "workers.beat_heartbeat", "--check", "--max-age", "30"]
        wait_until(
            lambda: subprocess.run(beat_check, env=env, capture_output=True).returncode == 0,
            30,
            "the beat heartbeat check to pass under lifecycle up",
        )

        children = _processes_with_env(marker)
        assert len(children) >= 5  # worker (+ pool child), beat, flower, console, metrics

        # The privacy office's console, on its own port, loopback only.
        console_port = env["LIFECYCLE_CONSOLE_PORT"]
        assert f"Console: http://127.0.0.1:{console_port}/" in out.read_text()

        def console_up() -> bool:
            try:
                url = f"http://127.0.0.1:{console_port}/healthz"
                return httpx.get(url, timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(console_up, 60, "the console answering under lifecycle up")
        login = httpx.get(f"http://127.0.0.1:{console_port}/requests", timeout=5)
        assert login.status_code == 302 and login.headers["location"].endswith("/login")

        # The metrics endpoint, behind the login `up` printed, reads the embedded stores too.
        text = wait_text(out, "Metrics: http://127.0.0.1:", proc, 5)
        mline = next(x for x in text.splitlines() if x.startswith("Metrics: "))
        mpassword = mline.split("login: prometheus / ", 1)[1].strip()
        murl = f"http://127.0.0.1:{metrics_port}/metrics"
        wait_port(metrics_port, 30)
        assert httpx.get(murl, timeout=30).status_code == 401
        scraped = httpx.get(murl, auth=("prometheus", mpassword), timeout=60)
        assert scraped.status_code == 200
        assert 'lifecycle_up{store="primary"} 1.0' in scraped.text

        # A second shell, without the port `up` was given, still finds this Flower.
        status = embedded_env.run("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["flower"] == {"url": f"{base}/", "reachable": True}
        # ...unless it names another port itself.
        other = embedded_env.run("status", "--json", LIFECYCLE_FLOWER_PORT=str(free_port()))
        assert json.loads(other.stdout)["flower"]["reachable"] is False

        # docker-compose's Flower healthcheck passes against a real Flower, login or not.
        check = compose_services()["flower"]["healthcheck"]["test"]
        assert check[0] == "CMD" and check[1] == "python"
        argv = [sys.executable, *(a.replace(":5555/", f":{port}/") for a in check[2:])]
        assert subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
        argv_off = [a.replace(f":{port}/", f":{free_port()}/") for a in argv]
        assert subprocess.run(argv_off, capture_output=True, timeout=30).returncode != 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, err.read_text()[-2000:]
    assert "[up] stopped" in err.read_text()
    # `up` waited for its children; the kernel may list them a moment longer.
    wait_until(lambda: _processes_with_env(marker) == [], 5, "no processes left after up stopped")
    assert not (embedded_env.var_dir / "flower.url").exists()


def test_up_refuses_bad_settings_with_one_line(embedded_env: LifecycleEnv) -> None:
    r = embedded_env.run("up", LIFECYCLE_ARCHIVE_DATABASE_URL="mysql://x@127.0.0.1/db")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1, r.stderr
    assert "LIFECYCLE_ARCHIVE_DATABASE_URL" in r.stderr
    assert "Traceback" not in r.stderr


def test_up_reports_unreachable_broker(embedded_env: LifecycleEnv) -> None:
    r = embedded_env.run("up", LIFECYCLE_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert r.returncode == 3
    assert "broker" in r.stderr and "unreachable" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
