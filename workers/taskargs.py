"""What may travel as a task argument, and how it is shown in Flower and logs.

Jobs carry ids only (DESIGN invariant 3). `check_task_args` refuses anything else at send time,
so a mistake (a member's email passed where an id belongs) fails in the caller's hands instead
of landing in the broker, the result backend, Flower and the worker log. `render_args` makes
the ``argsrepr``/``kwargsrepr`` that Flower and the worker log show: ``request=42``,
``run=7 ids=1001..2000``. No Celery in here: `tasks.base` wires it in.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lifecycle.core.errors import LifecycleError

# Short machine identifiers: a host name for a shred queue, a notice version, a uuid. Letters,
# digits and a few separators; no spaces, no '@', no Hangul, at most 64 characters.
_ID_STRING = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
# Strings that fit the pattern above but look like personal data: phone numbers, resident
# registration numbers, card numbers. Refused even though they are "short ids".
_LOOKS_PERSONAL = re.compile(
    r"(?:0\d{1,2}[-.]?\d{3,4}[-.]?\d{4})"  # Korean phone numbers
    r"|(?:\d{6}-?[1-8]\d{6})"  # 주민등록번호
    r"|(?:\d{4}-?\d{4}-?\d{4}-?\d{4})"  # card numbers
)
MAX_LIST = 10_000
# Lists up to this length are shown in full; longer ones as a range and a count.
SHOW_LIST = 5


class UnsafeTaskArgument(LifecycleError):
    """A task was sent something other than ids; nothing was enqueued.

    This is a programming error in the caller, so the message names the task and the argument
    position or name and the offending type, never the value.
    """

    exit_code = 2


def _is_id_scalar(value: Any) -> bool:
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return bool(_ID_STRING.fullmatch(value)) and not _LOOKS_PERSONAL.fullmatch(value)
    return False


def _check_value(task: str, where: str, value: Any) -> None:
    if _is_id_scalar(value):
        return
    if isinstance(value, list | tuple):
        if len(value) > MAX_LIST:
            raise UnsafeTaskArgument(
                f"task {task}: argument {where} holds {len(value)} items (at most {MAX_LIST}); "
                "send a batch id or a range instead"
            )
        for item in value:
            if not _is_id_scalar(item):
                raise UnsafeTaskArgument(
                    f"task {task}: argument {where} holds a {type(item).__name__} that is not "
                    "an id; tasks carry ids only (ints or short id strings)"
                )
        return
    kind = "string that is not a short id" if isinstance(value, str) else type(value).__name__
    raise UnsafeTaskArgument(
        f"task {task}: argument {where} is a {kind}; tasks carry ids only "
        "(ints, lists of ints, or short id strings)"
    )


def check_task_args(
    task: str, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> None:
    """Raise `UnsafeTaskArgument` unless every argument is an id, a flag or a list of ids."""
    for i, value in enumerate(args or ()):
        _check_value(task, f"#{i + 1}", value)
    for key, value in (kwargs or {}).items():
        if not isinstance(key, str) or not _ID_STRING.fullmatch(key):
            raise UnsafeTaskArgument(f"task {task}: keyword argument names must be identifiers")
        _check_value(task, repr(key), value)


class UnsafeTaskResult(LifecycleError):
    """A task returned something other than counts and ids; the message names its type only."""


# Results may also say why a job did nothing ("unknown job", "other host") or when
# ("2025-01-02T03:00:00+09:00"): short ASCII, no '@', and words with spaces only in lower case
# (so "Kim Minji" is refused; a status word is not a name).
_RESULT_STRING = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+\- ]{0,79}")
_LOOKS_PERSONAL_ANYWHERE = re.compile(_LOOKS_PERSONAL.pattern)


def is_safe_result_string(value: str) -> bool:
    if _is_id_scalar(value):
        return True
    return (
        bool(_RESULT_STRING.fullmatch(value))
        and (" " not in value or value == value.lower())
        and not _LOOKS_PERSONAL_ANYWHERE.search(value)
    )


def _result_ok(value: Any, depth: int = 0) -> bool:
    if depth > 4:
        return False
    if _is_id_scalar(value):
        return True
    if isinstance(value, str):
        return is_safe_result_string(value)
    if isinstance(value, list | tuple):
        return all(_result_ok(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, str) and bool(_ID_STRING.fullmatch(k)) and _result_ok(v, depth + 1)
            for k, v in value.items()
        )
    return False


def check_task_result(task: str, value: Any) -> None:
    """Results go to the result backend and Flower: counts, ids and short status words only."""
    if not _result_ok(value):
        raise UnsafeTaskResult(
            f"task {task} returned a {type(value).__name__} holding something other than counts "
            "and ids; results carry counts and ids only"
        )


def _label(param: str) -> str:
    # request_id=42 reads better as request=42; plural lists keep their name (ids=...).
    return param.removesuffix("_id") or param


def _render_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            lo, hi = min(value), max(value)
            contiguous = hi - lo + 1 == len(value) and len(set(value)) == len(value)
            if contiguous and len(value) > 2:
                return f"{lo}..{hi}"
            if len(value) > SHOW_LIST:
                return f"{len(value)} ids in {lo}..{hi}"
        if len(value) > SHOW_LIST:
            return f"{len(value)} items"
        return "[" + ",".join(_render_value(v) for v in value) + "]"
    if isinstance(value, str) and not _is_id_scalar(value):
        return "<redacted>"
    if isinstance(value, float) and not math.isfinite(value):
        return "<redacted>"
    if value is None or isinstance(value, bool | int | float | str):
        return str(value)
    return f"<{type(value).__name__}>"


def param_names(fn: Callable[..., Any] | None) -> list[str]:
    """Positional parameter names of a task's run function (``self`` of bound tasks dropped)."""
    if fn is None:
        return []
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if getattr(fn, "__self__", None) is None and names[:1] == ["self"]:
        names = names[1:]
    return names


def render_args(
    args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None, names: Sequence[str] = ()
) -> tuple[str, str]:
    """(argsrepr, kwargsrepr) for Flower and the worker log: ``request=42``, ``ids=1..500``.

    Values that are not ids are replaced by ``<redacted>`` so even a task that skipped the
    send-time check (a foreign client) shows nothing personal.
    """
    parts = []
    for i, value in enumerate(args or ()):
        shown = _render_value(value)
        parts.append(f"{_label(names[i])}={shown}" if i < len(names) else shown)
    kw = [
        f"{_label(k) if isinstance(k, str) and _ID_STRING.fullmatch(k) else '<key>'}"
        f"={_render_value(v)}"
        for k, v in (kwargs or {}).items()
    ]
    return " ".join(parts), " ".join(kw)
