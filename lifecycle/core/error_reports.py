"""Optional error reporting to Sentry, scrubbed of personal data by construction.

Nothing the SDK would gather on its own is sent: no global ``sentry_sdk.init`` (so no
integration hooks logging, the excepthook or Celery), no local variables, request bodies,
breadcrumbs or ``sys.argv``. A report is an event this module builds from parts that cannot hold
a member's data: the exception's class, its message only when `safe_errors` vouches for it (an
operator-safe `LifecycleError`; anything else becomes ``<Class> (details in worker log,
ref=...)``), the stack as file, function and line (code, never values), and the task's name and
id. ``before_send`` drops any event that is not one of these and keeps only whitelisted keys, so
an SDK upgrade that starts adding context cannot leak it either.

Off unless ``LIFECYCLE_SENTRY_DSN`` is set; the ``sentry`` extra installs the SDK.
"""

from __future__ import annotations

import logging
import threading
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

from lifecycle import __version__
from lifecycle.core import safe_errors

log = logging.getLogger(__name__)

_MARK = "lifecycle_report"
# What an event may carry to Sentry; everything else is removed in before_send.
_KEYS = frozenset(
    {
        "event_id",
        "timestamp",
        "platform",
        "level",
        "logger",
        "exception",
        "tags",
        "release",
        "environment",
        "server_name",
        "sdk",
    }
)
_client: Any = None
_lock = threading.Lock()


def build_event(
    exc: BaseException,
    *,
    task: str | None = None,
    task_id: str | None = None,
    service: str = "worker",
) -> dict[str, Any]:
    """The whole report for ``exc`` (pure: tests read it without a Sentry)."""
    safe = safe_errors.redact(exc)
    frames = [
        {"filename": f.filename, "function": f.name, "lineno": f.lineno, "in_app": True}
        for f in traceback.extract_tb(exc.__traceback__)
    ]
    value: dict[str, Any] = {
        "type": type(safe).__name__,
        "module": type(safe).__module__,
        "value": str(safe).splitlines()[0] if str(safe) else "",
    }
    if frames:
        value["stacktrace"] = {"frames": frames}
    tags = {_MARK: "1", "service": service}
    if task:
        tags["task"] = task
    if task_id:
        tags["task_id"] = task_id
    return {
        "event_id": uuid.uuid4().hex,
        "timestamp": datetime.now(UTC).isoformat(),
        "platform": "python",
        "level": "error",
        "logger": "lifecycle",
        "exception": {"values": [value]},
        "tags": tags,
    }


def only_ours(event: Any, _hint: Any = None) -> Any:
    """``before_send``: our events, whitelisted keys only; anything else is not sent."""
    if (event.get("tags") or {}).get(_MARK) != "1":
        return None
    return {k: v for k, v in event.items() if k in _KEYS}


def _get_client(settings: Any) -> Any:
    global _client
    with _lock:
        if _client is None:
            # Lazy: the SDK is an optional extra, imported only where a DSN is set.
            import sentry_sdk

            _client = sentry_sdk.Client(
                settings.sentry_dsn.get_secret_value(),
                default_integrations=False,
                auto_enabling_integrations=False,
                auto_session_tracking=False,
                send_client_reports=False,
                max_breadcrumbs=0,
                attach_stacktrace=False,
                before_send=only_ours,
                release=f"pipa-lifecycle@{__version__}",
                environment=settings.sentry_environment,
                server_name=settings.host_name,
            )
        return _client


def report(settings: Any, exc: BaseException, **where: Any) -> None:
    """Send ``exc`` to Sentry when a DSN is configured; never raises (a reporting outage must
    not turn into a second failure of the job)."""
    if settings.sentry_dsn is None:
        return
    try:
        _get_client(settings).capture_event(build_event(exc, **where))
    except Exception as e:
        log.warning("error report not sent: %s", type(e).__name__)


def flush(timeout: float = 2.0) -> None:
    """Wait for queued reports (worker shutdown)."""
    if _client is not None:
        try:
            _client.flush(timeout=timeout)
        except Exception as e:
            log.warning("error reports not flushed: %s", type(e).__name__)
