"""The console script leaves without Python's teardown (lifecycle.cli.main.main): its output,
exit status and exit handlers must be as with a normal exit, and a live thread is waited for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded default's var dir is relative to the working directory: keep it in tmp_path.
    monkeypatch.chdir(tmp_path)


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env["PYTHONPATH"] = str(REPO)
    env["LIFECYCLE_VAR_DIR"] = str(Path.cwd() / "var")
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "lifecycle.cli.main"]
    return subprocess.run(
        [*cmd, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_output_and_status_survive_the_quick_exit() -> None:
    r = _run("--help")
    assert r.returncode == 0, r.stderr
    assert "shred" in r.stdout  # written to a pipe (buffered) and still flushed


def test_an_error_keeps_its_status_and_message() -> None:
    r = _run("shred")
    assert r.returncode == 2
    assert "no path given" in r.stderr


def test_exit_handlers_run() -> None:
    code = (
        "import atexit, sys\n"
        "import lifecycle.cli.main as m\n"
        "atexit.register(lambda: print('exit handler ran'))\n"
        "sys.argv = ['lifecycle', '--help']\n"
        "m.main()\n"
    )
    r = _run(code=code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.rstrip().endswith("exit handler ran")


def test_a_live_thread_is_waited_for() -> None:
    # A non-daemon thread still working when the command returns: the exit waits for it, as
    # Python's own exit does (os._exit would cut it off and its line would be missing).
    code = (
        "import sys, threading\n"
        "import lifecycle.cli.main as m\n"
        "go = threading.Event()\n"
        "def late():\n"
        "    go.wait()\n"
        "    print('thread finished', flush=True)\n"
        "threading.Thread(target=late).start()\n"
        "threading.Timer(0.2, go.set).start()\n"
        "sys.argv = ['lifecycle', 'shred']\n"
        "m.main()\n"
    )
    r = _run(code=code)
    assert r.returncode == 2, r.stderr
    assert "thread finished" in r.stdout
