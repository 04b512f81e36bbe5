"""The README's "Without Docker" Flower command works as written, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import REPO, LifecycleEnv, free_port, wait_until


def _readme_flower_line() -> str:
    readme = (REPO / "README.md").read_text()
    block = readme.split("Without Docker:", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    [line] = [x for x in block.splitlines() if " flower " in x]
    return line.strip()


@pytest.mark.integration  # starts Flower's HTTP server against the embedded broker
def test_readme_flower_command_runs_as_written_and_stops_on_ctrl_c(
    embedded_env: LifecycleEnv, tmp_path: Path
) -> None:
    line = _readme_flower_line()
    words = shlex.split(line)
    auth = next(w for w in words if w.startswith("FLOWER_BASIC_AUTH="))
    user, password = auth.split("=", 1)[1].split(":", 1)
    # Run it as a shell would, from the checkout, with `celery` the venv's own and a var folder
    # that does not exist yet (Flower's state goes there).
    var = tmp_path / "fresh" / "var"
    port = free_port()
    env = embedded_env.environ(LIFECYCLE_VAR_DIR=str(var), FLOWER_PORT=str(port))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    assert (
        subprocess.run(
            [sys.executable, "-m", "lifecycle.cli.main", "db", "upgrade"],
            env=env,
            cwd=REPO,
            capture_output=True,
        ).returncode
        == 0
    )
    out = tmp_path / "flower.out"
    proc = subprocess.Popen(
        ["bash", "-c", line],
        env=env,
        cwd=REPO,
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert proc.poll() is None, out.read_text()[-2000:]
            try:
                return httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 60, "Flower to answer")
        assert httpx.get(f"{base}/api/workers", timeout=5).status_code == 401
        r = httpx.get(f"{base}/api/workers", auth=(user, password), timeout=10)
        assert r.status_code == 200
        # Ctrl-C: one SIGINT to the foreground process group, as a terminal sends it.
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    log = out.read_text()
    assert proc.returncode == 0, log[-2000:]
    assert "Traceback" not in log and "Failed to load state" not in log, log[-2000:]
    # Its state was saved where the README says.
    assert any(p.name.startswith("flower.db") for p in var.iterdir())
