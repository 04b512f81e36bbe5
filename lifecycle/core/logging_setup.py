"""One logging setup for the worker, beat and the CLI.

- JSON lines (python-json-logger) when stderr is not a terminal, or when
  ``LIFECYCLE_LOG_JSON=true``; readable text on a terminal (``LIFECYCLE_LOG_JSON=false`` forces it).
- Every record made while a task runs carries ``task_id``, ``task_name`` and, for jobs about one
  request, ``request_id`` (set from the task's ``request_id`` argument, or by `bind_request`).
- Tracebacks show frames and safe descriptions only (`lifecycle.core.safe_errors`): an exception's
  message is where personal values leak, so it is printed only for operator-safe errors.

Celery calls `configure` instead of configuring logging itself (the signal wiring is in
`workers.logsignals`, with the rest of the job runtime), so worker and beat share this.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any, TextIO

from lifecycle.core.safe_errors import safe_traceback

_task_id: ContextVar[str | None] = ContextVar("lifecycle_task_id", default=None)
_task_name: ContextVar[str | None] = ContextVar("lifecycle_task_name", default=None)
_request_id: ContextVar[int | None] = ContextVar("lifecycle_request_id", default=None)

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def use_json(stream: TextIO | None = None) -> bool:
    raw = os.environ.get("LIFECYCLE_LOG_JSON", "").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    stream = stream or sys.stderr
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


class TaskContextFilter(logging.Filter):
    """Adds task_id, task_name, request_id (when known) and drops Celery's raw ``data`` extra."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id, task_name = _task_id.get(), _task_name.get()
        # Celery's own task lines ("Task x[id] received/succeeded/raised") are logged with a
        # dict of the task's id and name, often outside the task's run (no context set).
        if isinstance(record.args, Mapping) and "id" in record.args and "name" in record.args:
            task_id = task_id or str(record.args["id"])
            task_name = task_name or str(record.args["name"])
        data = record.__dict__.pop("data", None)
        if isinstance(data, Mapping) and data.get("args"):
            # Already the id-only argsrepr (tasks.base); Celery's raw extras are not logged.
            record.task_args = str(data["args"])
        if task_id:
            record.task_id = task_id
        if task_name:
            record.task_name = task_name
        request_id = _request_id.get()
        if request_id is not None:
            record.request_id = request_id
        return True


class SafeJsonFormatter(logging.Formatter):
    """python-json-logger's formatter with safe tracebacks, built on the first record.

    Lazy because the import costs every command line start about 30 ms, and a CLI command
    (warnings only) mostly logs nothing at all.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self._args, self._kwargs = args, kwargs
        self._inner: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._inner is None:
            from pythonjsonlogger.json import JsonFormatter

            class _Safe(JsonFormatter):
                def formatException(self, ei: _ExcInfo) -> str:
                    return safe_traceback(*ei)

            self._inner = _Safe(*self._args, **self._kwargs)
        return self._inner.format(record)


class SafeTextFormatter(logging.Formatter):
    def formatException(self, ei: _ExcInfo) -> str:
        return safe_traceback(*ei)

    def format(self, record: logging.LogRecord) -> str:
        context = []
        if task_name := getattr(record, "task_name", None):
            context.append(f"{task_name}[{getattr(record, 'task_id', '?')}]")
        if (request_id := getattr(record, "request_id", None)) is not None:
            context.append(f"request={request_id}")
        record.lifecycle_context = (" " + " ".join(context)) if context else ""
        return super().format(record)


def _drop_kombu_no_hostname(record: logging.LogRecord) -> bool:
    # The embedded default's filesystem:// broker has no host by design; kombu warns about it
    # on every connection, which would greet every CLI command with a false alarm.
    return not (
        record.name == "kombu.connection" and str(record.msg).startswith("No hostname was supplied")
    )


def make_handler(
    *, json: bool | None = None, stream: TextIO | None = None, service: str = "cli"
) -> logging.Handler:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if use_json(stream) if json is None else json:
        handler.setFormatter(
            SafeJsonFormatter(
                "{asctime}{levelname}{name}{message}",
                style="{",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(
            SafeTextFormatter(
                "%(asctime)s %(levelname)s %(name)s%(lifecycle_context)s: %(message)s"
            )
        )
    handler.addFilter(TaskContextFilter())
    handler.addFilter(_drop_kombu_no_hostname)
    handler._lifecycle = True  # type: ignore[attr-defined]
    return handler


def configure(
    level: int | str = logging.INFO,
    *,
    service: str = "cli",
    stream: TextIO | None = None,
    logfile: str | None = None,
    json: bool | None = None,
) -> None:
    """Install the one handler on the root logger (replacing ours from an earlier call)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_lifecycle", False):
            root.removeHandler(h)
    if logfile:
        fh = open(logfile, "a", buffering=1)  # noqa: SIM115  (lives as long as the process)
        handler = make_handler(json=True if json is None else json, stream=fh, service=service)
    else:
        handler = make_handler(json=json, stream=stream, service=service)
    root.addHandler(handler)
    root.setLevel(level)
    # SQLAlchemy's echo/pool loggers would print statements with parameters at INFO.
    logging.getLogger("sqlalchemy").setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)


@contextlib.contextmanager
def bind_request(request_id: int | None) -> Iterator[None]:
    """Tag the log lines inside the block with a request id (for jobs that look it up)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def enter_task(task_id: str | None, task_name: str | None, request_id: int | None) -> None:
    """Tag the log lines made until `leave_task` with the running task (workers/logsignals.py)."""
    _task_id.set(task_id)
    _task_name.set(task_name)
    _request_id.set(request_id)


def leave_task() -> None:
    enter_task(None, None, None)
