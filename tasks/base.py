"""Conventions every lifecycle task follows, applied with one argument to the decorator:

    @app.task(base=LifecycleTask, name="lifecycle.sweep.archive_batch")
    def archive_batch(run_id: int, ids: list[int]) -> dict[str, int]: ...

- Arguments are ids: anything else is refused when the task is sent (`UnsafeTaskArgument`), and
  Flower and the worker log show ``run=7 ids=1001..2000`` instead of a Python repr.
- Results are counts and ids (`UnsafeTaskResult` otherwise: a programming error to fix).
- Failures carry no personal data: an exception whose message is not known to be safe reaches
  the result backend, Flower and ``--wait`` as `RedactedError("IntegrityError (details in worker
  log, ref=1a2b3c4d)")`; the worker log gets the stack and database error codes under that ref.
- ``self.progress(done, total, archived=n)`` reports progress to ``--wait`` (result backend
  state PROGRESS) and to Flower (a ``task-progress`` event).

The send-time part also covers ``app.send_task`` by name (the relay), through `LifecycleAMQP`,
which `workers.app` installs as the app's message factory.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.app.amqp import AMQP
from celery.exceptions import Retry

from lifecycle.core import safe_errors
from lifecycle.core.taskargs import check_task_args, check_task_result, param_names, render_args
from lifecycle.requests.states import is_handler_task

log = logging.getLogger("lifecycle.tasks")

PREFIX = "lifecycle."


def _task_param_names(app: Any, name: str) -> list[str]:
    if is_handler_task(name):
        # The request handlers' contract: they receive the request id and nothing else.
        return ["request_id"]
    task = app.tasks.get(name)
    if task is None and name.startswith(PREFIX) and not getattr(app, "_lifecycle_imported", False):
        # Sending by name from a process that never imported the task modules (the CLI's
        # relay call): import them once so Flower shows parameter names.
        app._lifecycle_imported = True
        try:
            app.loader.import_default_modules()
        except Exception:  # names are cosmetic; never fail a send over them
            log.warning("could not import task modules to name the arguments of %s", name)
        task = app.tasks.get(name)
    return param_names(getattr(task, "run", None)) if task is not None else []


class LifecycleAMQP(AMQP):
    """Builds every task message with id-only ``argsrepr``/``kwargsrepr`` and the ids-only check.

    Celery builds both ``apply_async`` and ``send_task`` messages here, so this one place covers
    tasks sent by name too. The reprs also go into the ``task-sent`` event Flower reads.
    """

    def as_task_v2(  # type: ignore[override]
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *rest: Any,
        **options: Any,
    ) -> Any:
        ours = name.startswith(PREFIX)
        if ours:
            check_task_args(name, args, kwargs)
        if ours or options.get("argsrepr") is None or options.get("kwargsrepr") is None:
            argsrepr, kwargsrepr = render_args(args, kwargs, _task_param_names(self.app, name))
            # Our tasks always get our reprs: a caller-supplied argsrepr is not checked.
            if ours or options.get("argsrepr") is None:
                options["argsrepr"] = argsrepr
            if ours or options.get("kwargsrepr") is None:
                options["kwargsrepr"] = kwargsrepr
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)


class LifecycleTask(Task):
    """Base class of every ``lifecycle.*`` task (see the module docstring)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, *a: Any, **options: Any) -> Any:
        # Checked here as well as in LifecycleAMQP so eager mode (tests) refuses the same input.
        check_task_args(self.name, args, kwargs)
        options["argsrepr"], options["kwargsrepr"] = render_args(
            args, kwargs, param_names(self.run)
        )
        return super().apply_async(args, kwargs, *a, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Called as a plain function (tests, other code): the caller gets the real exception;
        # nothing leaves the process.
        direct = self.request.called_directly
        try:
            result = super().__call__(*args, **kwargs)
            if not direct:
                check_task_result(self.name, result)
            return result
        except Retry as exc:
            if direct or exc.exc is None or safe_errors.is_safe(exc.exc):
                raise
            # Celery puts the cause's repr into the retry event and the log: replace the cause.
            safe = self._redacted(exc.exc)
            raise Retry(None, safe, exc.when, is_eager=exc.is_eager, sig=exc.sig) from None
        except Exception as exc:
            if direct or safe_errors.is_safe(exc):
                raise
            raise self._redacted(exc) from None

    def _redacted(self, exc: BaseException) -> BaseException:
        try:
            safe = safe_errors.redact(exc)
            ref = getattr(safe, "ref", "")
            # The only place the original is described: class, database codes and the stack.
            log.error(
                "task %s[%s] failed (ref=%s): %s\n%s",
                self.name,
                self.request.id,
                ref,
                safe_errors.describe(exc),
                safe_errors.safe_traceback(type(exc), exc, exc.__traceback__),
            )
            return safe
        except Exception:  # never let a bug here put the original exception on the wire
            ref = safe_errors.new_ref()
            log.error(
                "task %s[%s] failed (ref=%s); describing it failed too",
                self.name,
                self.request.id,
                ref,
            )
            return safe_errors.RedactedError(
                safe_errors.public_message(exc, ref), type(exc).__name__, ref
            )

    def progress(self, done: int, total: int | None, **counts: int) -> None:
        """Report progress: ``--wait`` reads the PROGRESS state, Flower the task-progress event.

        Counts only (ints); a no-op when the task was called as a plain function.
        """
        values = {"done": done, "total": total, **counts}
        for key, value in values.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"progress {key} must be an int")
        if self.request.called_directly or not self.request.id:
            return
        self.update_state(state="PROGRESS", meta=values)
        try:
            self.send_event("task-progress", retry=False, **values)
        except Exception:  # a monitoring event must never fail the job itself
            log.warning("could not send the progress event of %s[%s]", self.name, self.request.id)
