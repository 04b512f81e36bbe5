"""`lifecycle sweep --wait` on a terminal: the bar counts batches and ends at the run's total,
on a PostgreSQL and on a MariaDB primary.

Run under a pseudo-terminal, as a person would see it (off a terminal the bar is not drawn).
"""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from typing import Any

from lifecycle.engine.context import clear_context_cache
from tests.helpers import LifecycleEnv, seed_site, withdraw_all

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _run_on_a_terminal(env: LifecycleEnv, *args: str, timeout: float = 240) -> tuple[int, str]:
    leader, follower = pty.openpty()
    environ = env.environ(TERM="xterm", COLUMNS="160", LINES="40")
    environ.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lifecycle.cli.main", *args],
        env=environ,
        cwd=env.var_dir.parent,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the command exited
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(30)
    return code, ANSI.sub("", out.decode(errors="replace")).replace("\r", "\n")


def test_sweep_bar_counts_batches_to_the_real_total(
    primary_env: LifecycleEnv, start_worker: Any
) -> None:
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 120)
    withdraw_all(primary, "id % 4 = 0")
    clear_context_cache()
    start_worker(env, concurrency=2)
    code, screen = _run_on_a_terminal(env, "sweep", "--wait", "--batch-size", "5")
    assert code == 0, screen
    done = re.search(r"sweep done: .*\bbatches=(\d+), batches_done=(\d+)", screen)
    assert done, screen
    total = int(done.group(1))
    assert total > 3 and int(done.group(2)) == total
    bars = re.findall(r"^sweep .*\d:\d\d:\d\d\s*$", screen, re.M)  # ends in elapsed time
    assert bars, screen
    assert not [b for b in bars if "/?" in b], bars  # never a count without its total
    assert re.search(rf"\b{total}/{total}\b", bars[-1]), bars[-1]
