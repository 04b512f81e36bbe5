"""Faker is the optional `demo` extra: nothing but the demo seed may import it, and without it
`lifecycle demo seed` says which extra to install.

Each check runs in a fresh interpreter, since this test process has long imported the demo seed
(tests/helpers.py does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

# Every module of the project but the demo seed, and Flower's --conf file, which Flower executes
# (it reads Tornado's parsed options and exits without them; its imports are the workers').
WALK = """
import importlib, json, pkgutil, sys
from lifecycle.cli.main import run
try:
    run(["--help"])
except SystemExit:
    pass
after_help = "faker" in sys.modules
skip = {"lifecycle.ops.demo_seed", "workers.flowerconfig"}
seen = []
for top in ("lifecycle", "tasks", "workers", "schedules", "models"):
    pkg = importlib.import_module(top)
    for info in pkgutil.walk_packages(pkg.__path__, top + "."):
        if info.name not in skip:
            importlib.import_module(info.name)
            seen.append(info.name)
after_all = "faker" in sys.modules
import lifecycle.ops.demo_seed
print(json.dumps([after_help, after_all, "faker" in sys.modules, seen]))
"""


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LIFECYCLE_VAR_DIR": str(tmp_path / "var")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_only_the_demo_seed_imports_faker(tmp_path: Path) -> None:
    r = _python(WALK, tmp_path)
    assert r.returncode == 0, r.stderr
    after_help, after_all, after_demo, seen = json.loads(r.stdout.splitlines()[-1])
    assert not after_help, "`lifecycle --help` imported faker"
    assert not after_all, "a module other than lifecycle.ops.demo_seed imported faker"
    # The walk reached the task modules, and the check can see faker when it is imported.
    assert {"tasks.sweep", "workers.app", "lifecycle.cli.demo", "models.demo_site"} <= set(seen)
    assert after_demo


def test_demo_seed_without_faker_names_the_extra(tmp_path: Path) -> None:
    # None in sys.modules makes `import faker` raise ModuleNotFoundError, as when not installed.
    code = (
        "import sys; sys.modules['faker'] = None\n"
        "from lifecycle.cli.main import run\n"
        "run(['demo', 'seed', '--members', '5'])\n"
    )
    r = _python(code, tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    assert "install the demo extra" in r.stderr and "[demo]" in r.stderr
    assert "Traceback" not in r.stderr
    # Refused before anything was created.
    assert not (tmp_path / "var").exists()
