"""scripts/install.sh runs pip only when pyproject.toml changed since the last good install.

pip itself is replaced by a stand-in that records its calls: what is under test is when the
script calls it, and a real install of this project takes a minute and the network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.helpers import REPO

STUB = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/../pip-calls"
exit "$(cat "$(dirname "$0")/../pip-exit" 2>/dev/null || echo 0)"
"""


def _project(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = []\n')
    bindir = tmp_path / ".venv" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "python").write_text(STUB)
    (bindir / "python").chmod(0o755)
    return tmp_path


def _install(root: Path, *extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "install.sh"), *extras],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _calls(root: Path) -> list[str]:
    f = root / ".venv" / "pip-calls"
    return f.read_text().splitlines() if f.exists() else []


def test_pip_runs_once_per_pyproject_change(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 1 and "-e ." in _calls(root)[0]
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 1  # unchanged: no pip
    # The test extra is its own install.
    assert _install(root, "test").returncode == 0
    assert _calls(root)[-1].endswith("-e .[test]") and len(_calls(root)) == 2
    assert _install(root, "test").returncode == 0
    assert len(_calls(root)) == 2
    # A changed dependency list installs again.
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["y"]\n')
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 3


def test_failed_pip_fails_the_start_and_is_retried(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / ".venv" / "pip-exit").write_text("1")
    r = _install(root)
    assert r.returncode == 1 and "pip failed" in r.stderr
    (root / ".venv" / "pip-exit").write_text("0")
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 2
