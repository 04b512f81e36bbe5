"""Structured logs: JSON off a terminal, task and request ids on every task line, no values."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.helpers import REPO, LifecycleEnv, WorkerProc, wait_until
from tests.jobs import SECRET_EMAIL, SECRET_PHONE


def _wait(result: Any, timeout: float = 60) -> Any:
    wait_until(result.ready, timeout, f"task {result.id} done")
    return result


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line from the first log line on must be one JSON object."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    out = []
    for line in lines[first:]:
        if not line.strip():
            continue
        out.append(json.loads(line))  # fails the test on any non-JSON line
    return out


def test_worker_logs_json_off_a_terminal_with_task_and_request_ids(
    lifecycle_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    from workers.app import app

    # Not set: the worker decides from its stderr, which is a file here, not a terminal.
    worker = start_worker(
        lifecycle_env, concurrency=1, extra_args=["--include", "tests.jobs"], LIFECYCLE_LOG_JSON=""
    )
    batch = _wait(app.send_task("lifecycle.testjobs.batch", args=[3, [1, 2, 3]]))
    leaky = _wait(app.send_task("lifecycle.testjobs.leaky_failure", args=[77]))

    def failure_logged() -> bool:
        records = _json_lines(worker.output())
        return any(r["level"] == "ERROR" and r.get("task_id") == leaky.id for r in records)

    # The failure's log line, the last one about these tasks, follows its result.
    wait_until(failure_logged, 30, "the failure logged")
    records = _json_lines(worker.output())
    assert {r["service"] for r in records} == {"worker"}
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)

    done = [r for r in records if r["message"] == "batch done"]
    assert len(done) == 1
    assert done[0]["task_id"] == batch.id
    assert done[0]["task_name"] == "lifecycle.testjobs.batch"
    assert "request_id" not in done[0]

    working = [r for r in records if r["message"] == "working on the request"]
    assert len(working) == 1
    assert working[0]["task_id"] == leaky.id
    assert working[0]["request_id"] == 77

    # Celery's own lines about the task carry its id and the id-only argsrepr.
    received = [r for r in records if r["message"].endswith(" received")]
    assert {r["task_id"] for r in received} == {batch.id, leaky.id}
    assert {r.get("task_args") for r in received} == {"run=3 ids=1..3", "request=77"}
    failed = [r for r in records if r["level"] == "ERROR" and r.get("task_id") == leaky.id]
    assert failed, "the failure is logged with its task id"

    text = worker.output()
    assert SECRET_EMAIL not in text and SECRET_PHONE not in text


def test_worker_logs_text_when_asked(
    lifecycle_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    from workers.app import app

    worker = start_worker(
        lifecycle_env,
        concurrency=1,
        extra_args=["--include", "tests.jobs"],
        LIFECYCLE_LOG_JSON="false",
    )
    result = _wait(app.send_task("lifecycle.testjobs.batch", args=[3, [1, 2]]))
    line = wait_until(
        lambda: next((x for x in worker.output().splitlines() if x.endswith("batch done")), None),
        30,
        "the task's log line",
    )
    assert f"lifecycle.testjobs.batch[{result.id}]" in line
    assert not line.startswith("{")


@pytest.fixture
def captured_root() -> Iterator[io.StringIO]:
    from lifecycle.core.logging_setup import configure

    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    stream = io.StringIO()
    configure(logging.INFO, service="cli", stream=stream, json=True)
    yield stream
    for h in list(root.handlers):
        if getattr(h, "_lifecycle", False):
            root.removeHandler(h)
    for h in before[0]:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(before[1])


def test_logged_exceptions_show_stack_but_not_values(captured_root: io.StringIO) -> None:
    log = logging.getLogger("lifecycle.test")
    try:
        try:
            raise KeyError(SECRET_EMAIL)
        except KeyError as inner:
            raise RuntimeError(f"lookup failed for {SECRET_PHONE}") from inner
    except RuntimeError:
        log.exception("lookup failed")
    record = json.loads(captured_root.getvalue().splitlines()[-1])
    assert record["service"] == "cli" and record["message"] == "lookup failed"
    assert "test_logging.py" in record["exc_info"]
    assert (
        "builtins.KeyError" in record["exc_info"] and "builtins.RuntimeError" in record["exc_info"]
    )
    assert SECRET_EMAIL not in captured_root.getvalue()
    assert SECRET_PHONE not in captured_root.getvalue()


def test_request_binding_tags_lines(captured_root: io.StringIO) -> None:
    from lifecycle.core.logging_setup import bind_request

    log = logging.getLogger("lifecycle.test")
    with bind_request(12):
        log.warning("inside")
    log.warning("outside")
    inside, outside = (json.loads(x) for x in captured_root.getvalue().splitlines()[-2:])
    assert inside["request_id"] == 12
    assert "request_id" not in outside


def test_cli_logs_json_when_not_on_a_terminal(embedded_env: LifecycleEnv) -> None:
    code = (
        "import logging, sys; from lifecycle.cli import main; "
        "sys.argv=['lifecycle']; "
        "from lifecycle.core.logging_setup import configure; configure(logging.WARNING); "
        "logging.getLogger('lifecycle.x').warning('careful')"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        env=embedded_env.environ(LIFECYCLE_LOG_JSON=""),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    record = json.loads(r.stderr.strip().splitlines()[-1])
    assert record["message"] == "careful" and record["level"] == "WARNING"


def test_end_to_end_logs_hold_no_seeded_personal_values(
    lifecycle_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]
) -> None:
    """Seed demo members, withdraw them through the real workers, grep every log for them."""
    from sqlalchemy import inspect, select

    from lifecycle.core import db
    from workers.app import TASK_MODULES, app

    for module in TASK_MODULES:
        __import__(module)
    if "lifecycle.withdraw" not in app.tasks:
        pytest.skip("the withdrawal job is not on this branch yet")
    seeded = lifecycle_env.run("demo", "seed", "--members", "3")
    if seeded.returncode != 0 and "No such command" in seeded.stderr:
        pytest.skip("`lifecycle demo seed` is not on this branch yet")
    assert seeded.returncode == 0, seeded.stderr

    with db.session("primary") as s:
        from models.demo_site import members

        cols = [c["name"] for c in inspect(s.get_bind()).get_columns("members")]
        wanted = [
            c for c in ("name", "email", "mobile", "login_id", "rrn", "home_address") if c in cols
        ]
        rows = s.execute(select(members.c.id, *(members.c[c] for c in wanted))).all()
    values = {str(v) for row in rows for v in row[1:] if v and len(str(v)) >= 4}
    assert values

    worker = start_worker(lifecycle_env, concurrency=2)
    logs = [worker.output]
    for row in rows:
        r = lifecycle_env.run("withdraw", str(row[0]), "--wait", timeout=300)
        assert r.returncode == 0, r.stderr
        logs.append(lambda r=r: r.stdout + r.stderr)
    # The worker logs each withdrawal's end just after the result the CLI waited for.
    wait_until(
        lambda: (
            len(re.findall(r"lifecycle\.withdraw\[[^\]]+\] succeeded", worker.output()))
            >= len(rows)
        ),
        30,
        "every withdrawal's last log line",
    )
    text = "\n".join(read() for read in logs)
    leaked = sorted(v for v in values if v in text)
    assert not leaked, f"{len(leaked)} seeded personal values appear in the logs"
