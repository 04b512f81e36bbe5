"""Flower, locked down: loaded by workers/flowerconfig.py inside the Flower process only.

1. Authentication is required: Flower refuses to start without basic auth or OAuth.
2. ``/metrics`` sits behind the same login (Flower 2.2 serves it to anyone).
3. Task fields are redacted as events arrive, before Flower stores, indexes, persists or serves
   them (UI, ``/api/tasks``, ``/api/task/info``): arguments keep ids and counts, results keep
   numbers and short ids, exceptions keep their message only for operator-safe errors.
   Tasks already send id-only reprs and safe exceptions (tasks/base.py); this is the second
   layer for anything that did not (a foreign client, an old persisted history).
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import re
import sys
from typing import Any

from flower.events import EventsState
from flower.views import monitor
from tornado import web

from lifecycle.core.errors import LifecycleError
from lifecycle.core.safe_errors import RedactedError  # noqa: F401 (its name is kept, below)
from workers.app import app
from workers.taskargs import _ID_STRING, _LOOKS_PERSONAL, is_safe_result_string

REDACTED = "<redacted>"

_VALUE = (
    r"(?:-?\d+(?:\.\d+)?|True|False|None|-?\d+\.\.-?\d+|\[(?:-?\d+(?:,-?\d+)*)?\]"
    r"|\d+ ids in -?\d+\.\.-?\d+|\d+ items|<redacted>|<key>|<[A-Za-z_]\w*>"
    r"|[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63})"
)
_TOKEN = rf"(?:[A-Za-z_]\w{{0,63}}={_VALUE}|{_VALUE})"
# The argsrepr grammar tasks/base.py produces: "request=42", "run=7 ids=1001..2000".
# The watchdog's note after the ids of a job it sent again (lifecycle/core/leases.py).
_NOTE = r"\(re-dispatched #\d+, stalled \d+ s\)"
_ARGSREPR = re.compile(rf"(?:{_TOKEN}(?: {_TOKEN})*)?(?: ?{_NOTE})?")
_EXC = re.compile(r"([A-Za-z_][\w.]*)\((.*)\)", re.S)
# Exceptions of these kinds carry no data in their message (Celery's own job-state errors).
_SAFE_EXC_NAMES = {
    "SoftTimeLimitExceeded",
    "TimeLimitExceeded",
    "WorkerLostError",
    "Terminated",
    "NotRegistered",
    "TaskRevokedError",
    "Retry",
    "Reject",
    "Ignore",
}


def _safe_leaf(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float):
        return True
    return (
        isinstance(value, str)
        and bool(_ID_STRING.fullmatch(value))
        and not _LOOKS_PERSONAL.fullmatch(value)
    )


def _scrub(value: Any, leaf_ok: Any = _safe_leaf) -> Any:
    """Keep numbers and short ids, replace everything else by <redacted> (recursively)."""
    if isinstance(value, dict):
        return {(k if _safe_leaf(k) else REDACTED): _scrub(v, leaf_ok) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_scrub(v, leaf_ok) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return value if leaf_ok(value) else REDACTED


def _safe_result_leaf(value: Any) -> bool:
    return _safe_leaf(value) or (isinstance(value, str) and is_safe_result_string(value))


def redact_args(text: Any) -> Any:
    """An args/kwargs string as Flower shows it: kept if it is ids only, else <redacted>."""
    if not isinstance(text, str) or not text:
        return text
    if _ARGSREPR.fullmatch(text):
        words = re.findall(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*", text)
        if not any(_LOOKS_PERSONAL.fullmatch(w.split("=")[-1]) for w in words):
            return text
        return REDACTED
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return REDACTED
    return text if _scrub(value) == value else REDACTED


def redact_result(text: Any) -> Any:
    """A result repr: numbers and short ids stay, other leaves become <redacted>."""
    if not isinstance(text, str) or not text:
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return REDACTED
    scrubbed = _scrub(value, _safe_result_leaf)
    return text if scrubbed == value else repr(scrubbed)


@functools.cache
def _safe_exception_names() -> frozenset[str]:
    # A class is known as a subclass only once its module is imported. Import every module the
    # app's tasks live in first, so the answer does not depend on what this process (Flower, a
    # test) happened to import before.
    app.loader.import_default_modules()
    names = set(_SAFE_EXC_NAMES)
    todo: list[type] = [LifecycleError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


def exception_is_safe(text: Any) -> bool:
    if not isinstance(text, str):
        return True
    m = _EXC.fullmatch(text.strip())
    return m is not None and m.group(1).rsplit(".", 1)[-1] in _safe_exception_names()


def redact_exception(text: Any) -> Any:
    if not isinstance(text, str) or not text or exception_is_safe(text):
        return text
    if text.strip() == "None":
        # A retry with no cause (Celery's repr of it): nothing to hide, nothing to show.
        return "Retry (no cause given)"
    m = _EXC.fullmatch(text.strip())
    name = m.group(1).rsplit(".", 1)[-1] if m else "Exception"
    return f"{name}({REDACTED})"


def redact_traceback(traceback: Any, exception: Any) -> Any:
    """Frames stay (code, not data); the exception lines at the end are replaced."""
    if not isinstance(traceback, str) or not traceback or exception_is_safe(exception):
        return traceback
    kept: list[str] = []
    after_frame = False
    for line in traceback.splitlines():
        if line.startswith("Traceback (most recent call last)"):
            kept.append(line)
            after_frame = False
        elif line.startswith("  File "):
            kept.append(line)
            after_frame = True
        elif after_frame and line.startswith("    "):
            kept.append(line)
            after_frame = False
        else:
            after_frame = False
    kept.append(f"{redact_exception(exception)} (details in the worker log)")
    return "\n".join(kept)


def redact_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Redact a task event (or a task's attribute dict) in place and return it."""
    for key in ("args", "kwargs"):
        if key in fields:
            fields[key] = redact_args(fields[key])
    if "result" in fields:
        fields["result"] = redact_result(fields["result"])
    if "traceback" in fields:
        fields["traceback"] = redact_traceback(fields["traceback"], fields.get("exception"))
    if "exception" in fields:
        fields["exception"] = redact_exception(fields["exception"])
    return fields


def format_task(task: Any) -> Any:
    """Flower's ``format_task`` hook: what the UI shows of a task (a copy Flower hands us)."""
    for key in ("args", "kwargs"):
        if hasattr(task, key):
            setattr(task, key, redact_args(getattr(task, key)))
    if hasattr(task, "result"):
        task.result = redact_result(task.result)
    if hasattr(task, "traceback"):
        task.traceback = redact_traceback(task.traceback, getattr(task, "exception", None))
    if hasattr(task, "exception"):
        task.exception = redact_exception(task.exception)
    return task


# -- installing into Flower ---------------------------------------------------------------------


def _fail(message: str) -> None:
    print(f"flower: refusing to start: {message}", file=sys.stderr)
    raise SystemExit(2)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def require_auth(options: Any) -> None:
    if _truthy(os.environ.get("FLOWER_UNAUTHENTICATED_API")):
        _fail("FLOWER_UNAUTHENTICATED_API is set; the API must stay behind authentication")
    basic = [c for c in (options.basic_auth or []) if c and ":" in c and c.split(":", 1)[1]]
    if options.auth:
        key = options.oauth2_key or os.environ.get("FLOWER_OAUTH2_KEY")
        secret = options.oauth2_secret or os.environ.get("FLOWER_OAUTH2_SECRET")
        if not (key and secret and options.auth_provider):
            _fail(
                "OAuth needs FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_KEY and FLOWER_OAUTH2_SECRET "
                "(and FLOWER_OAUTH2_REDIRECT_URI)"
            )
        return
    if not basic:
        _fail(
            "no authentication configured; set FLOWER_BASIC_AUTH=user:password (lifecycle up "
            "does) or OAuth (FLOWER_AUTH, FLOWER_AUTH_PROVIDER, FLOWER_OAUTH2_KEY/SECRET)"
        )


def _protect_metrics() -> None:

    get = monitor.Metrics.get
    if getattr(get, "_lifecycle_protected", False):
        return
    protected = web.authenticated(get)
    protected._lifecycle_protected = True  # type: ignore[attr-defined]
    monitor.Metrics.get = protected


def _redact_on_arrival() -> None:

    event = EventsState.event
    if getattr(event, "_lifecycle_redacting", False):
        return

    def redacting_event(self: Any, ev: dict[str, Any]) -> Any:
        if str(ev.get("type", "")).startswith("task-"):
            ev = redact_fields(dict(ev))
        return event(self, ev)

    redacting_event._lifecycle_redacting = True  # type: ignore[attr-defined]
    EventsState.event = redacting_event


def install(options: Any) -> None:
    """Called from flowerconfig.py once Flower has read env and command line options."""
    require_auth(options)
    _protect_metrics()
    _redact_on_arrival()
    address = options.address or os.environ.get("LIFECYCLE_FLOWER_ADDRESS", "127.0.0.1")
    if address not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("lifecycle.flower").warning(
            "Flower listens on %s, not loopback: serve it only behind TLS (a reverse proxy) "
            "and prefer OAuth (see README)",
            address,
        )
