"""scripts/install.sh runs pip only when pyproject.toml or the set's lock changed since the last
good install, and installs from the lock (hash-checked) before the project (no resolution).

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
    (tmp_path / "requirements").mkdir()
    for name in ("runtime", "demo", "test"):
        (tmp_path / "requirements" / f"{name}.txt").write_text(f"{name}==1 --hash=sha256:00\n")
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


def _installs(root: Path) -> list[tuple[str, str]]:
    """(lock step, project step) per install: pip is called twice per install."""
    calls = _calls(root)
    assert len(calls) % 2 == 0, calls
    return list(zip(calls[::2], calls[1::2], strict=True))


def test_pip_runs_once_per_pyproject_or_lock_change(tmp_path: Path) -> None:
    root = _project(tmp_path)
    assert _install(root).returncode == 0
    [(lock, project)] = _installs(root)
    assert "--require-hashes -r requirements/runtime.txt" in lock
    assert "--no-deps" in project and "--no-build-isolation" in project
    assert project.endswith("-e .")
    assert _install(root).returncode == 0
    assert len(_installs(root)) == 1  # unchanged: no pip
    # Each set is its own install, from its own lock.
    assert _install(root, "test").returncode == 0
    assert "-r requirements/test.txt" in _installs(root)[-1][0] and len(_installs(root)) == 2
    assert _install(root, "test").returncode == 0
    assert len(_installs(root)) == 2
    assert _install(root, "demo").returncode == 0
    assert "-r requirements/demo.txt" in _installs(root)[-1][0] and len(_installs(root)) == 3
    # A changed dependency list installs again.
    (root / "pyproject.toml").write_text('[project]\nname = "x"\ndependencies = ["y"]\n')
    assert _install(root).returncode == 0
    assert len(_installs(root)) == 4
    # So does a re-locked set, and only that set.
    (root / "requirements" / "test.txt").write_text("test==2 --hash=sha256:01\n")
    assert _install(root).returncode == 0
    assert len(_installs(root)) == 4
    assert _install(root, "test").returncode == 0
    assert len(_installs(root)) == 5


def test_unknown_set_or_missing_lock_is_refused_without_pip(tmp_path: Path) -> None:
    root = _project(tmp_path)
    r = _install(root, "test,demo")
    assert r.returncode == 2 and "unknown set 'test,demo'" in r.stderr
    (root / "requirements" / "demo.txt").unlink()
    r = _install(root, "demo")
    assert r.returncode == 2 and "requirements/demo.txt is missing" in r.stderr
    assert _calls(root) == []


def test_failed_pip_fails_the_start_and_is_retried(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / ".venv" / "pip-exit").write_text("1")
    r = _install(root)
    assert r.returncode == 1 and "pip failed" in r.stderr
    # The lock step failed: the project step is not attempted.
    assert len(_calls(root)) == 1
    (root / ".venv" / "pip-exit").write_text("0")
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 3
    assert _install(root).returncode == 0
    assert len(_calls(root)) == 3
