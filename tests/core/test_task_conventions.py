"""Task conventions: names, the base class, ids-only arguments, safe failures, progress."""

from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import weakref
from collections.abc import Callable

import pytest
import redis

from tests.helpers import LifecycleEnv, WorkerProc, wait_until
from tests.jobs import SECRET_EMAIL, SECRET_PHONE
from workers.taskargs import UnsafeTaskArgument, check_task_args, render_args

# -- every registered task follows the naming and base-class convention ------------------------


def test_every_task_is_named_lifecycle_and_uses_the_base_class() -> None:
    from tasks.base import LifecycleTask
    from workers.app import TASK_MODULES, app

    for module in TASK_MODULES:
        importlib.import_module(module)
    ours = {name: t for name, t in app.tasks.items() if not name.startswith("celery.")}
    assert ours, "no tasks registered"
    for name, task in ours.items():
        if task.__module__.startswith("tests."):
            continue
        assert name.startswith("lifecycle."), f"task {name} must be named lifecycle.<area>.<what>"
        assert isinstance(task, LifecycleTask), (
            f"task {name} must use @app.task(base=LifecycleTask, ...)"
        )


def test_dispatch_names_every_task_and_its_parameters() -> None:
    # The CLI names a task's arguments from dispatch.PARAMS without importing the tasks: a task
    # whose signature changed without the table would show unnamed ids in Flower.
    from lifecycle.core import dispatch
    from workers.app import TASK_MODULES, app
    from workers.taskargs import param_names

    for module in TASK_MODULES:
        importlib.import_module(module)
    ours = {n: t for n, t in app.tasks.items() if n.startswith("lifecycle.")}
    constants = {v for k, v in vars(dispatch).items() if k.isupper() and isinstance(v, str)}
    for name, task in ours.items():
        if task.__module__.startswith("tests."):
            continue
        assert name in constants, f"{name} has no constant in lifecycle/core/dispatch.py"
        assert dispatch.PARAMS.get(name) == tuple(param_names(task.run)), name


# -- ids only ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [42],
        [7, [1, 2, 3]],
        [None, True, 1.5],
        ["testhost", "v2024-01", "0b9c4f1e-3f0a-4d47-9b7e-2f0d4c3a1b2c"],
    ],
)
def test_ids_flags_and_short_id_strings_are_accepted(args: list[object]) -> None:
    check_task_args("lifecycle.x", args, {"dry_run": True})


@pytest.mark.parametrize(
    "bad",
    [
        "hong@example.com",
        "010-1234-5678",
        "900101-1234567",
        "홍길동",
        "a b",
        "x" * 65,
        {"email": "a@b.c"},
        ["ok", "hong@example.com"],
        [[1, 2]],
        b"bytes",
        float("nan"),
    ],
)
def test_anything_but_ids_is_refused_without_echoing_it(bad: object) -> None:
    with pytest.raises(UnsafeTaskArgument) as err:
        check_task_args("lifecycle.withdraw", [1, bad], None)
    message = str(err.value)
    assert "lifecycle.withdraw" in message and "#2" in message
    for needle in ("hong", "1234", "홍길동", "a@b.c", "xxxx"):
        assert needle not in message
    with pytest.raises(UnsafeTaskArgument):
        check_task_args("lifecycle.withdraw", None, {"member": bad})


def test_too_long_id_lists_are_refused() -> None:
    with pytest.raises(UnsafeTaskArgument, match="at most"):
        check_task_args("lifecycle.sweep.archive_batch", [1, list(range(20_000))], None)


def test_argsrepr_names_ids_and_ranges() -> None:
    assert render_args([42], {}, ["request_id"]) == ("request=42", "")
    assert render_args([7, list(range(1001, 2001))], {}, ["run_id", "ids"]) == (
        "run=7 ids=1001..2000",
        "",
    )
    assert render_args([[5, 9, 2]], {"dry_run": True}, ["ids"]) == ("ids=[5,9,2]", "dry_run=True")
    assert render_args([[1, 5, 9, 20, 30, 44, 50]], None, ["ids"])[0] == "ids=7 ids in 1..50"
    # Without parameter names (a task unknown to the sender) values still show.
    assert render_args([3], None, []) == ("3", "")
    # A value that is not an id never shows, even if the check was skipped.
    assert render_args(["hong@example.com"], {"x": "010-1234-5678"}, ["member"]) == (
        "member=<redacted>",
        "x=<redacted>",
    )


def test_refused_arguments_never_reach_the_broker(lifecycle_env: LifecycleEnv) -> None:
    from workers.app import app

    r = redis.Redis.from_url(lifecycle_env.vars["LIFECYCLE_BROKER_URL"])
    with pytest.raises(UnsafeTaskArgument):
        app.send_task("lifecycle.withdraw", args=["hong@example.com"])
    from tasks.ping import ping

    with pytest.raises(UnsafeTaskArgument):
        ping.apply_async(args=[{"email": "hong@example.com"}])
    with pytest.raises(UnsafeTaskArgument):
        ping.delay("hong@example.com")
    for key in r.keys("*"):
        if r.type(key) == b"list":
            assert b"hong@example.com" not in b"".join(r.lrange(key, 0, -1))


def test_relay_style_send_by_name_gets_request_argsrepr(lifecycle_env: LifecycleEnv) -> None:
    from workers.app import app

    r = redis.Redis.from_url(lifecycle_env.vars["LIFECYCLE_BROKER_URL"])
    app.send_task("lifecycle.withdraw", args=[42], task_id="request-42-1")
    raw = r.lrange("requests", 0, -1)
    assert len(raw) == 1
    headers = json.loads(raw[0])["headers"]
    assert headers["argsrepr"] == "request=42"
    assert headers["kwargsrepr"] == ""


def test_a_process_sending_by_name_names_the_arguments_without_importing_tasks(
    lifecycle_env: LifecycleEnv,
) -> None:
    # What the CLI does: send through dispatch from a fresh process that never imported the
    # task modules (tasks/).
    code = (
        "import sys\n"
        "from lifecycle.core import dispatch\n"
        "dispatch.send(dispatch.SHRED_FILES, 7, queue='shred.nowhere', task_id='shred-7-1')\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.startswith(('tasks.', 'schedules.'))))\n"
    )
    env = {**os.environ, **lifecycle_env.vars}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "tasks.shred" not in out and "schedules.housekeeping" not in out, out
    r = redis.Redis.from_url(lifecycle_env.vars["LIFECYCLE_BROKER_URL"])
    [raw] = r.lrange("shred.nowhere", 0, -1)
    assert json.loads(raw)["headers"]["argsrepr"] == "job=7"


# -- failures carry no personal data (real worker, real result backend) ------------------------


@pytest.fixture
def test_worker(lifecycle_env: LifecycleEnv, start_worker: Callable[..., WorkerProc]) -> WorkerProc:
    return start_worker(lifecycle_env, concurrency=1, extra_args=["--include", "tests.jobs"])


def _wait(result, timeout: float = 60):  # type: ignore[no-untyped-def]
    wait_until(result.ready, timeout, f"task {result.id} done")
    return result


@pytest.mark.parametrize("job", ["leaky_failure", "db_failure", "leaky_retry"])
def test_failures_are_redacted_in_backend_and_log(
    job: str, lifecycle_env: LifecycleEnv, test_worker: WorkerProc
) -> None:
    from lifecycle.core.safe_errors import RedactedError
    from workers.app import app

    result = _wait(app.send_task(f"lifecycle.testjobs.{job}", args=[5]))
    assert result.state == "FAILURE"
    exc = result.result
    assert isinstance(exc, RedactedError), repr(exc)
    expected = {"leaky_failure": "ValueError", "db_failure": "IntegrityError"}.get(
        job, "ConnectionError"
    )
    assert str(exc).startswith(f"{expected} (details in worker log, ref=")
    ref = str(exc).rsplit("ref=", 1)[1].rstrip(")")
    stored = redis.Redis.from_url(lifecycle_env.vars["LIFECYCLE_RESULT_BACKEND"]).get(
        f"celery-task-meta-{result.id}"
    )
    # The log line of the failure is written right after the result.
    wait_until(lambda: f"ref={ref}" in test_worker.output(), 30, "the failure's log line")
    log = test_worker.output()
    for where in (stored.decode(), result.traceback or "", log):
        assert SECRET_EMAIL not in where
        assert SECRET_PHONE not in where
    # The worker log has the stack under the same ref for the developer who must fix it.
    assert f"ref={ref}" in log
    assert "tests/jobs.py" in log
    if job == "db_failure":
        assert "sqlstate=23505" in log


def test_operator_safe_errors_keep_their_message(test_worker: WorkerProc) -> None:
    from lifecycle.core.errors import LifecycleError
    from workers.app import app

    result = _wait(app.send_task("lifecycle.testjobs.safe_failure", args=[9]))
    assert result.state == "FAILURE"
    assert isinstance(result.result, LifecycleError)
    assert str(result.result) == "request 9 refused: member is restricted"


def test_results_other_than_counts_and_ids_are_refused(
    lifecycle_env: LifecycleEnv, test_worker: WorkerProc
) -> None:
    from workers.app import app
    from workers.taskargs import UnsafeTaskResult

    result = _wait(app.send_task("lifecycle.testjobs.leaky_result", args=[4]))
    assert result.state == "FAILURE"
    assert isinstance(result.result, UnsafeTaskResult)
    stored = redis.Redis.from_url(lifecycle_env.vars["LIFECYCLE_RESULT_BACKEND"]).get(
        f"celery-task-meta-{result.id}"
    )
    assert SECRET_EMAIL not in stored.decode() and SECRET_EMAIL not in test_worker.output()


def test_progress_and_counts_result(test_worker: WorkerProc) -> None:
    from workers.app import app

    result = _wait(app.send_task("lifecycle.testjobs.batch", args=[3, [10, 11, 12, 13]]))
    assert result.get(timeout=5) == {"archived": 4, "skipped": 0}


def test_progress_is_visible_while_running(test_worker: WorkerProc) -> None:
    from workers.app import app

    result = app.send_task("lifecycle.testjobs.slow_batch", args=[3, [1, 2, 3, 4]])
    seen = []

    def finished() -> bool:
        if result.state == "PROGRESS":
            seen.append(dict(result.info))
        return bool(result.ready())

    wait_until(finished, 60, "the slow batch finished")
    assert seen, "no PROGRESS state observed"
    assert all(set(m) == {"done", "total", "archived"} and m["total"] == 4 for m in seen)
    assert result.get(timeout=5) == {"archived": 4}


def test_calling_a_task_directly_raises_the_real_exception() -> None:
    from tests.jobs import leaky_failure

    with pytest.raises(ValueError):
        leaky_failure(1)


def test_result_check_allows_status_words_not_names() -> None:
    from workers.taskargs import UnsafeTaskResult, check_task_result

    for ok in (
        None,
        7,
        {"archived": 3, "failed": 0},
        {"job": 5, "skipped": "unknown job"},
        {"pong": "ok"},
        {"ids": [1, 2], "at": "2025-01-02T03:00:00+09:00"},
    ):
        check_task_result("lifecycle.x", ok)
    for bad in (
        {"owner": "Kim Minji"},
        {"email": "a@b.example"},
        {"mobile": "010-1234-5678"},
        "홍길동",
        {"when": object()},
    ):
        with pytest.raises(UnsafeTaskResult):
            check_task_result("lifecycle.x", bad)


# -- a failure leaves nothing of the failed job's data behind in the pool process ---------------


class _Rows:
    """Stands for what a failing job held in its locals (rows read, a parsed map)."""


def _fail_holding(refs: list[weakref.ref[_Rows]]) -> None:
    rows = _Rows()
    refs.append(weakref.ref(rows))
    raise KeyError("member 7")


def test_a_redacted_failure_releases_what_the_failed_frames_held() -> None:
    from tasks.sweep import archive_batch

    refs: list[weakref.ref[_Rows]] = []
    try:
        _fail_holding(refs)
    except KeyError as exc:
        original = exc
    safe = archive_batch._redacted(original)
    assert "member 7" not in str(safe)
    # The original stays reachable (it becomes the raised copy's __context__), so its frames'
    # locals must be gone, or every failed task would keep its data in the worker.
    gc.collect()
    assert refs[0]() is None
    assert original.__traceback__ is not None  # the stack itself is still there for the log


def test_worker_processes_are_replaced_above_a_memory_cap() -> None:
    from lifecycle.core.settings import get_settings
    from workers.config import WORKER_MAX_MEMORY_KIB, celery_config

    assert celery_config(get_settings())["worker_max_memory_per_child"] == WORKER_MAX_MEMORY_KIB
    assert 256 * 1024 <= WORKER_MAX_MEMORY_KIB <= 1024 * 1024


def test_a_termination_masked_by_a_later_error_is_recognised() -> None:
    """Celery's SIGTERM raised SystemExit inside the driver's pre-ping; the driver's cleanup
    then raised a ProgrammingError that replaced it, and the coordinator's lease was recorded
    failed (never re-sent) though nothing was wrong with the job."""
    from tasks.base import _terminated_by

    def masked() -> None:
        try:
            raise SystemExit(-15)
        finally:
            raise ValueError("can't change 'autocommit' now")

    try:
        try:
            masked()
        except ValueError as exc:
            raise RuntimeError("redacted") from exc
    except RuntimeError as outer:
        stop = _terminated_by(outer)
    assert isinstance(stop, SystemExit) and stop.code == -15
    assert _terminated_by(RuntimeError("a real failure")) is None
