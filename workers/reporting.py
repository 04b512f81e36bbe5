"""Task failures to Sentry when ``LIFECYCLE_SENTRY_DSN`` is set (lifecycle/core/error_reports.py
builds and scrubs the report; this module only hears Celery's signals)."""

from __future__ import annotations

from typing import Any

from celery import signals

from lifecycle.core import error_reports
from lifecycle.core.settings import get_settings


def _on_task_failure(
    sender: Any = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    if exception is None:
        return
    error_reports.report(
        get_settings(), exception, task=getattr(sender, "name", None), task_id=task_id
    )


def _on_process_shutdown(**_: Any) -> None:
    error_reports.flush()


def connect_reporting() -> None:
    signals.task_failure.connect(_on_task_failure, weak=False)
    signals.worker_process_shutdown.connect(_on_process_shutdown, weak=False)
