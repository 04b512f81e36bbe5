"""Celery's logging signals: worker and beat log through `lifecycle.core.logging_setup`.

Connecting ``setup_logging`` tells Celery to leave logging to us; the task signals tag every
record made while a task runs with its id, name and, for jobs about one request, the request id.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from celery import signals

from lifecycle.core.logging_setup import configure, enter_task, leave_task
from workers.taskargs import param_names


def _service_from_argv() -> str:
    for word in ("worker", "beat", "flower"):
        if word in sys.argv[1:]:
            return word
    return "celery"


def _celery_setup_logging(
    loglevel: int | str | None = None, logfile: str | None = None, **_kw: Any
) -> None:
    configure(loglevel or logging.INFO, service=_service_from_argv(), logfile=logfile or None)


def _request_id_from(task: Any, args: Any, kwargs: Any) -> int | None:
    if isinstance(kwargs, Mapping) and isinstance(kwargs.get("request_id"), int):
        return int(kwargs["request_id"])

    names = param_names(getattr(task, "run", None))
    if "request_id" in names and args:
        i = names.index("request_id")
        if i < len(args) and isinstance(args[i], int) and not isinstance(args[i], bool):
            return int(args[i])
    return None


def _on_task_prerun(
    task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_kw: Any
) -> None:
    enter_task(task_id, getattr(task, "name", None), _request_id_from(task, args, kwargs))


def _on_task_postrun(**_kw: Any) -> None:
    leave_task()


def connect_celery() -> None:
    """Called by `workers.app`: worker and beat log through `configure`."""

    signals.setup_logging.connect(_celery_setup_logging, weak=False)
    signals.task_prerun.connect(_on_task_prerun, weak=False)
    signals.task_postrun.connect(_on_task_postrun, weak=False)
