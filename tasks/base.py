"""Conventions every lifecycle task follows, applied with one argument to the decorator:

    @app.task(base=LifecycleTask, name=dispatch.SWEEP_ARCHIVE_BATCH)
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
import traceback
from datetime import UTC, datetime
from typing import Any

from celery import Task
from celery.app.amqp import AMQP
from celery.exceptions import Retry

from lifecycle.core import dispatch, leases, safe_errors
from lifecycle.core.errors import JobDeferred
from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.requests.states import is_handler_task
from workers.taskargs import check_task_args, check_task_result, param_names, render_args
from workers.transient import TRANSIENT_ERRORS

log = logging.getLogger("lifecycle.tasks")

PREFIX = "lifecycle."
# A copy of a job whose lease is held checks back this many times, each once the lease would
# have expired, before it stands down for good (see LifecycleTask._wait_for_lease).
LEASE_WAIT_RETRIES = 3


def _task_param_names(app: Any, name: str) -> list[str]:
    if is_handler_task(name):
        # The request handlers' contract: they receive the request id and nothing else.
        return ["request_id"]
    task = app.tasks.get(name)
    if task is None:
        # Sent by name from a process that never imported the task modules (the CLI).
        return list(dispatch.PARAMS.get(name, ()))
    return param_names(getattr(task, "run", None))


def _delay_seconds(when: Any) -> float:
    if isinstance(when, datetime):
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    try:
        return float(when or 0)
    except (TypeError, ValueError):
        return 0.0


def _reason(exc: BaseException) -> str:
    """One line for the lease row: the (already safe) message, or the class name."""
    inner = getattr(exc, "exc", None) if isinstance(exc, Retry) else exc
    if inner is None:
        return "retry"
    if not safe_errors.is_safe(inner):
        if isinstance(inner, OSError):
            # "ConnectionRefusedError: connection refused": the errno's words, not the text.
            return f"{type(inner).__name__}: {safe_errors.connection_reason(inner)}"
        return type(inner).__name__
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__


def _terminated_by(exc: BaseException) -> BaseException | None:
    """The SystemExit (or KeyboardInterrupt) behind ``exc``, if a signal ended the task.

    Celery terminates a running task whose message cannot be acknowledged after a broker
    connection loss (SIGTERM to the pool process, which raises SystemExit wherever the task
    is). Raised inside a database call, the driver's own cleanup can fail on the half-sent
    query and raise an error of its own (psycopg's ProgrammingError "can't change autocommit
    now") that replaces it: the task would then be recorded as failed by its own fault.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        if isinstance(e, SystemExit | KeyboardInterrupt):
            return e
        seen.add(id(e))
        todo += [e.__cause__, e.__context__]
    return None


class LifecycleAMQP(AMQP):
    """Builds every task message with id-only ``argsrepr``/``kwargsrepr`` and the ids-only check.

    Celery builds both ``apply_async`` and ``send_task`` messages here, so this one place covers
    tasks sent by name too. The reprs also go into the ``task-sent`` event Flower reads.
    """

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        *rest: Any,
        **options: Any,
    ) -> Any:
        ours = name.startswith(PREFIX)
        # The watchdog's "re-dispatched #2, stalled 75 s": shown after the ids in Flower.
        note = options.pop("lifecycle_note", None)
        if ours:
            check_task_args(name, args, kwargs)
        if ours or options.get("argsrepr") is None or options.get("kwargsrepr") is None:
            argsrepr, kwargsrepr = render_args(args, kwargs, _task_param_names(self.app, name))
            # Our tasks always get our reprs: a caller-supplied argsrepr is not checked.
            if ours or options.get("argsrepr") is None:
                options["argsrepr"] = argsrepr
            if ours or options.get("kwargsrepr") is None:
                options["kwargsrepr"] = kwargsrepr
        if ours and note and isinstance(note, str) and note.isprintable() and len(note) < 80:
            options["argsrepr"] = f"{options['argsrepr']} ({note})".strip()
        return super().as_task_v2(task_id, name, args, kwargs, *rest, **options)


class LifecycleTask(Task[Any, Any]):
    """Base class of every ``lifecycle.*`` task (see the module docstring)."""

    def apply_async(self, args: Any = None, kwargs: Any = None, *a: Any, **options: Any) -> Any:
        # Checked here as well as in LifecycleAMQP so eager mode (tests) refuses the same input.
        check_task_args(self.name, args, kwargs)
        options["argsrepr"], options["kwargsrepr"] = render_args(
            args, kwargs, param_names(self.run)
        )
        return super().apply_async(args, kwargs, *a, **options)

    # "args": the task holds a lease keyed by its name and ids while it runs (see
    # lifecycle/core/leases.py); "name": one lease for the task whatever its arguments (a job
    # of which only one runs at a time, like the sweep). None: no lease (short jobs).
    lease: str | None = None
    # Transient database/broker errors (a server restarting) are retried this many times,
    # backing off to a minute, in every task that does not set its own autoretry.
    transient_retries: int = 30

    def before_lease(self, *args: Any, **kwargs: Any) -> Any:
        """The job's answer when it has nothing to do and need not take its lease (None: it
        takes the lease and runs). A read only: whatever it sees, running would do nothing."""
        return None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Called as a plain function (tests, other code): the caller gets the real exception;
        # nothing leaves the process.
        direct = self.request.called_directly
        if direct or not self.lease:
            return self._call_safely(direct, args, kwargs)
        try:
            early = self.before_lease(*args, **kwargs)
        except TRANSIENT_ERRORS:
            early = None  # the lease and the job say what the database does
        if early is not None:
            log.info("%s[%s]: nothing to do here (%s)", self.name, self.request.id,
                     early.get("skipped") if isinstance(early, dict) else "done")  # fmt: skip
            return early
        try:
            lease = self._take_lease(args, kwargs)
        except leases.AlreadyFinished:
            # A late copy (redelivered, or re-sent and then overtaken): the job it belongs to
            # is finished, and its lease row keeps that generation's history.
            log.info("%s[%s]: this job already finished", self.name, self.request.id)
            return {"skipped": "this job already finished"}
        except TRANSIENT_ERRORS as exc:
            # The database is down at pick-up: try again later (the message is not lost).
            self._retry_transient(exc)
            raise self._redacted(exc) from None
        if lease is None:
            self._wait_for_lease(args, kwargs)
            log.info("%s[%s]: another worker holds this job's lease", self.name, self.request.id)
            return {"skipped": "another worker holds this job's lease"}
        with leases.holding(lease):
            try:
                result = self._call_safely(direct, args, kwargs)
            except Retry as exc:
                self._quietly(leases.retrying, lease, _delay_seconds(exc.when), _reason(exc))
                raise
            except Exception as exc:
                stop = _terminated_by(exc)
                if stop is not None:
                    # Not the job failing: the worker terminated it, and a secondary error
                    # masked that. A failed lease is never re-sent and the job would stay
                    # unfinished; a live one expires and the watchdog sends the job again.
                    log.warning(
                        "%s[%s]: terminated by the worker (%s); the job is sent again",
                        self.name,
                        self.request.id,
                        type(exc).__name__,
                    )
                    self._quietly(leases.retrying, lease, 0.0, "terminated by the worker")
                    raise stop from None
                if getattr(self.request, "lifecycle_transient", False):
                    # The retry could not even be sent (broker down): the watchdog re-sends.
                    self._quietly(leases.retrying, lease, 0.0, _reason(exc))
                else:
                    self._quietly(leases.finish, lease, "failed", _reason(exc))
                raise
            self._quietly(leases.finish, lease, "done")
            return result

    def _lease_key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if self.lease == "name":
            return leases.lease_key(self.name)
        return leases.lease_key(self.name, args, kwargs)

    def _wait_for_lease(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Someone holds the lease: try again once it would have expired, a few times.

        The holder may have just died (an operator's or a beat resend right after a crash):
        then this copy runs the job as soon as the lease expires, without waiting for the
        watchdog. A holder that is alive keeps renewing, and this copy stands down.
        """
        retries = int(self.request.retries or 0)
        if retries >= LEASE_WAIT_RETRIES:
            return
        try:
            left = leases.seconds_left(self._lease_key(args, kwargs))
        except TRANSIENT_ERRORS:
            left = None
        wait = 1.0 + (left if left is not None else leases.ttl().total_seconds())
        why = JobDeferred(f"another worker holds this job's lease; checking again in {wait:.0f} s")
        raise self.retry(exc=why, countdown=wait, max_retries=retries + 1)

    def _take_lease(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> leases.Lease | None:
        key = self._lease_key(args, kwargs)
        delivery = self.request.delivery_info or {}
        lease = leases.acquire(
            key,
            self.name,
            list(args),
            dict(kwargs),
            queue=delivery.get("routing_key") or None,
            task_id=self.request.id,
        )
        if lease is not None and lease.taken_over:
            # Ops reading the log after a crash see which jobs were picked up, and how late.
            log.warning(
                "%s[%s]: took over the job from a holder silent for %d s",
                self.name,
                self.request.id,
                lease.stalled_seconds,
            )
        return lease

    def _quietly(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # the lease then expires and the watchdog decides
            log.warning("%s[%s]: lease not updated (%s)", self.name, self.request.id, exc)

    def _retry_transient(self, exc: BaseException) -> None:
        """Raise Retry for a transient error if retries are left; return if not possible."""
        retries = int(self.request.retries or 0)
        if retries >= self.transient_retries:
            return
        # Celery's request Context takes any attribute; celery-types declares only its own.
        self.request.lifecycle_transient = True  # type: ignore[attr-defined]
        log.warning(
            "%s[%s]: %s, retrying (%d)", self.name, self.request.id, type(exc).__name__, retries + 1
        )
        try:
            self.retry(
                exc=exc if safe_errors.is_safe(exc) else self._redacted(exc),  # type: ignore[arg-type]
                countdown=min(60, 2**retries),
                max_retries=self.transient_retries,
            )
        except Retry:
            raise
        except Exception as send_exc:  # the broker is down too: fail; the lease brings it back
            log.warning("%s: could not schedule the retry (%s)", self.name, type(send_exc).__name__)

    def _call_safely(self, direct: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            result = super().__call__(*args, **kwargs)
            if not direct:
                check_task_result(self.name, result)
            return result
        except Retry as exc:
            if direct:
                raise
            # Celery logs a retry at INFO as "Retry in 60s", without its cause: say it at
            # WARNING with the cause's class and safe reason.
            log.warning(
                "%s[%s]: retry in %.0f s: %s",
                self.name,
                self.request.id,
                _delay_seconds(exc.when),
                _reason(exc),
            )
            if exc.exc is None or safe_errors.is_safe(exc.exc):
                raise
            # Celery puts the cause's repr into the retry event and the log: replace the cause.
            safe = self._redacted(exc.exc)
            # celery-types omits the is_eager/sig that Retry.__init__ sets, and types the cause
            # as Exception where Celery takes any exception.
            raise Retry(
                None,
                safe,  # type: ignore[arg-type]
                exc.when,
                is_eager=exc.is_eager,  # type: ignore[attr-defined]
                sig=exc.sig,  # type: ignore[attr-defined]
            ) from None
        except Exception as exc:
            if direct:
                raise
            if isinstance(exc, TRANSIENT_ERRORS):
                self._retry_transient(exc)
            if safe_errors.is_safe(exc):
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
            # The redacted copy is raised inside the handler, so the original stays its
            # __context__, and Celery clears only the raised exception's frames: without this,
            # each failure's inner frames (and every object their locals hold, rows included)
            # outlive the task in the pool process.
            traceback.clear_frames(exc.__traceback__)
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
        values: dict[str, Any] = {"done": done, "total": total, **counts}
        for key, value in values.items():
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise TypeError(f"progress {key} must be an int")
        if self.request.called_directly or not self.request.id:
            return
        self.update_state(state="PROGRESS", meta=values)
        try:
            # Flower lists a task's "result" column and detail from its events: while it runs,
            # that is "{'done': 3, 'total': 12}"; the real result replaces it at the end.
            self.send_event("task-progress", retry=False, result=repr(values), **values)
        except Exception:  # a monitoring event must never fail the job itself
            log.warning("could not send the progress event of %s[%s]", self.name, self.request.id)


# Options of the jobs that resume from their persisted state (the request handlers, the
# identifier destruction): a database restart or a deadlock with the sweep is retried with
# backoff, and the retry carries on where the last committed step left off.
RESUMABLE_TASK: dict[str, Any] = {
    "base": LifecycleTask,
    "bind": True,
    "autoretry_for": TRANSIENT_DB_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "max_retries": 20,
}
