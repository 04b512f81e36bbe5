"""`lifecycle up`: run worker, beat, Flower and the console as children; stop them all on
Ctrl-C/SIGTERM.

Each child gets its own session (process group), so a terminal's Ctrl-C reaches only us and we
stop the children in order: beat first (no new jobs), then the worker (warm shutdown finishes
the job in hand), then Flower. Anything still alive after the grace period is SIGKILLed by
process group, so no orphan survives (prefork children included).

Flower starts once the worker has said it is ready: a Flower that starts first asks a worker
that is not listening yet and logs "Inspect method ... failed" warnings, the wrong first thing
for an operator to read on a healthy start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lifecycle.core import queues
from lifecycle.core.settings import Settings

STOP_GRACE_SECONDS = 20.0
# Longer than a cold worker start on a loaded 2-core machine; Flower starts anyway after it.
FLOWER_WAIT_SECONDS = 30.0
# Celery's worker logs "<name> ready." at INFO once it consumes (celery.apps.worker).
READY_MARK = " ready."


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    pump: threading.Thread | None = field(default=None, repr=False)
    # Started once the worker has logged that it is ready (or FLOWER_WAIT_SECONDS passed).
    after_worker: bool = False


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.app", *args]


def plan(settings: Settings, *, concurrency: int, loglevel: str) -> list[Child]:
    """The processes `lifecycle up` starts (also what docker-compose runs, one per box)."""
    base_env = dict(os.environ)
    if "LIFECYCLE_LOG_JSON" not in base_env:
        # The children write to our pipe, never a terminal: they log JSON exactly when we
        # would (we are not on a terminal), else text for the person watching.
        from lifecycle.core.logging_setup import use_json

        base_env["LIFECYCLE_LOG_JSON"] = "true" if use_json() else "false"
    var = settings.var_dir
    var.mkdir(parents=True, exist_ok=True)
    worker = Child(
        "worker",
        _celery(
            "worker",
            "-Q",
            ",".join(queues.worker_queues(settings.host_name)),
            "-c",
            str(concurrency),
            "-n",
            f"lifecycle@{settings.host_name}",
            "--loglevel",
            loglevel,
        ),
        base_env,
    )
    beat = Child("beat", _celery("beat", "--loglevel", loglevel), base_env)
    flower_env = base_env | {
        "FLOWER_BASIC_AUTH": f"{settings.flower_user}:{settings.flower_password_value()}",
        # Stable cookie secret so a Flower restart does not log everyone out mid-incident.
        "FLOWER_COOKIE_SECRET": settings.flower_password_value() + ":cookie",
    }
    flower = Child(
        "flower",
        _celery(
            "flower",
            f"--conf={Path(__file__).with_name('flowerconfig.py')}",
            f"--port={settings.flower_port}",
            f"--address={settings.flower_address}",
            f"--db={var / 'flower.db'}",
            "--persistent=True",
        ),
        flower_env,
        # Below INFO the worker never logs its ready line, so there is nothing to wait for.
        after_worker=loglevel.upper() in ("DEBUG", "INFO"),
    )
    # The privacy office's console (lifecycle/console): its own process, so a console fault
    # never touches the worker; `console serve` binds LIFECYCLE_CONSOLE_BIND:PORT.
    console = Child(
        "console", [sys.executable, "-m", "lifecycle.cli.main", "console", "serve"], base_env
    )
    # Prometheus' endpoint (lifecycle/ops/metrics.py): a plain process, no Celery.
    metrics = Child(
        "metrics",
        [sys.executable, "-m", "lifecycle.cli.main", "metrics", "serve"],
        base_env,
    )
    return [worker, beat, flower, console, metrics]


def _pump(child: Child, out: Callable[[str], None], ready: threading.Event | None) -> None:
    assert child.proc is not None and child.proc.stdout is not None
    for raw in child.proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        if ready is not None and child.name == "worker" and READY_MARK in line:
            ready.set()
        # JSON log lines already name their service; a prefix would make them unparseable.
        out(line if line.startswith("{") else f"[{child.name}] {line}")


def start(
    children: list[Child], out: Callable[[str], None], ready: threading.Event | None = None
) -> None:
    for child in children:
        child.proc = subprocess.Popen(
            child.argv,
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.pump = threading.Thread(target=_pump, args=(child, out, ready), daemon=True)
        child.pump.start()


def _alive(child: Child) -> bool:
    return child.proc is not None and child.proc.poll() is None


def stop(children: list[Child], grace: float = STOP_GRACE_SECONDS) -> None:
    order = {"beat": 0, "worker": 1, "flower": 2, "console": 3, "metrics": 4}
    for child in sorted(children, key=lambda c: order.get(c.name, 9)):
        if not _alive(child):
            continue
        assert child.proc is not None
        # Only the main process: Celery's warm shutdown lets pool children finish their job.
        os.kill(child.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(grace)
    for child in children:
        if child.proc is None:
            continue
        # Prefork children or a stuck process: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.proc.pid, signal.SIGKILL)
        child.proc.wait()
        if child.pump is not None:
            child.pump.join(2)


def run_forever(children: list[Child], out: Callable[[str], None]) -> int:
    """Start the children and supervise until a signal or one of them exits; returns exit code."""
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    worker_ready = threading.Event()
    later = [c for c in children if c.after_worker]
    start([c for c in children if not c.after_worker], out, worker_ready)
    later_due = time.monotonic() + FLOWER_WAIT_SECONDS
    code = 0
    try:
        while not stopping.is_set():
            if later and (worker_ready.is_set() or time.monotonic() >= later_due):
                start(later, out)
                later = []
            dead = [c for c in children if c.proc is not None and not _alive(c)]
            if dead:
                c = dead[0]
                out(
                    f"[up] {c.name} exited with status {c.proc.returncode if c.proc else '?'}; "
                    "stopping the others"
                )
                code = 1
                break
            time.sleep(0.2)
    finally:
        out("[up] stopping beat, worker and Flower ...")
        stop(children)
        for s, h in old.items():
            signal.signal(s, h)
        out("[up] stopped")
    return code
