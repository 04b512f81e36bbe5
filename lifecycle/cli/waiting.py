"""`--wait`: block until a request or a job is done, with a progress bar; fail non-zero."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis
from celery.exceptions import BackendGetMetaError
from kombu.exceptions import OperationalError as KombuOperationalError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from lifecycle.core import leases
from lifecycle.core.errors import BrokerUnavailable, LifecycleError
from lifecycle.core.settings import get_settings
from lifecycle.ops.wait_reasons import QUEUED, WaitReason, why_waiting
from lifecycle.requests.states import steps_done, task_for
from workers.transient import TRANSIENT_ERRORS

_console = Console(stderr=True)


class JobFailed(LifecycleError):
    exit_code = 1


class _Count(MofNCompleteColumn):
    """done/total once the job has said its total; nothing before (rich would show `0/?`)."""

    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else super().render(task)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        _Count(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=_console,
        transient=False,
        disable=not _console.is_terminal,
    )


# How far along each request state is, for the bar (the states are persisted by the handlers).
_REQUEST_STEPS = {
    "received": 0,
    "dispatched": 1,
    "restricted": 2,
    "corrected": 3,
    "archived": 3,
    "notifying": 4,
    "destroyed": 4,
    "needs_attention": 5,
    "completed": 5,
    "failed": 5,
}


def _say(line: str) -> None:
    """A progress line on stderr (also off a terminal, where the bar is off): a wait never
    goes silent while its reason changes."""
    _console.print(line, highlight=False, soft_wrap=True)


def _failed_text(req: Any) -> str:
    done = steps_done(req)
    after = f" after {', '.join(done)} (done)" if done else ""
    return f"request {req.id} failed{after}: {req.error or 'no reason recorded'}"


def _reason(req: Any) -> WaitReason | None:
    try:
        return why_waiting(req)
    except TRANSIENT_ERRORS:
        return None  # the database is restarting: ask again at the next poll


def wait_for_request(request_id: int, timeout: float = 3600, poll: float = 0.5) -> str:
    """Wait until the request reaches a terminal state; raise JobFailed if it failed.

    Says what the request waits for (a third party's answer, a legal hold, a missing SMTP
    server, a worker) each time that changes, and names it when the wait times out.
    """
    from lifecycle.requests.outbox import get

    deadline = time.monotonic() + timeout
    said: str | None = None
    reason: WaitReason | None = None
    next_reason = 0.0
    with _progress() as bar:
        task = bar.add_task(f"request {request_id}", total=5, state="received")
        while True:
            req = get(request_id)
            if req is None:
                raise JobFailed(f"request {request_id} does not exist")
            bar.update(task, completed=_REQUEST_STEPS.get(req.state, 0), state=req.state)
            if req.state in ("completed", "needs_attention"):
                break
            if req.state == "failed":
                raise JobFailed(_failed_text(req))
            failed = _failed_handler(req.kind, request_id)
            if failed is not None:
                raise JobFailed(f"request {request_id} failed ({req.state}): {failed}")
            now = time.monotonic()
            if now >= next_reason:
                next_reason = now + 1.0
                reason = _reason(req)
                key = f"{req.state}|{reason.key if reason else ''}"
                if reason is not None and key != said:
                    _say(f"request {request_id} ({req.state}): {reason.text}")
                said = key
                if reason is not None and reason.blocked:
                    raise JobFailed(
                        f"request {request_id} cannot complete ({req.state}): {reason.text}"
                    )
            if now > deadline:
                hint = "is a worker running? (lifecycle up, or lifecycle status)"
                if reason is None:
                    why = hint
                elif reason.key == QUEUED:
                    why = f"{reason.text}; {hint}"
                else:
                    why = reason.text
                raise JobFailed(
                    f"request {request_id} still '{req.state}' after {timeout:.0f}s: {why}"
                )
            time.sleep(poll)
    if req.state == "needs_attention":
        raise JobFailed(
            f"request {request_id} needs attention: {req.error or 'see lifecycle status'}"
        )
    return req.state


# What polling the result backend raises while Redis restarts or is gone.
_BACKEND_DOWN: tuple[type[BaseException], ...]
_BACKEND_DOWN = (redis.RedisError, KombuOperationalError, BackendGetMetaError, OSError)


def _stop_subscription(result: Any) -> None:
    """Drop the result's pub/sub subscription: the waiter polls, it never needs it.

    Left in place, Celery's Redis result consumer reconnects on its own when Redis goes away
    (20 logged retries, then a RuntimeError traceback from ``AsyncResult.__del__`` at exit).
    Unsubscribing while Redis is still up leaves nothing to reconnect.
    """
    consumer = getattr(getattr(result, "backend", None), "result_consumer", None)
    if consumer is None:
        return
    # Best effort: a failure here only means noisier output later.
    with contextlib.suppress(Exception):
        consumer.cancel_for(result.id)


def _lease(first_task_id: str) -> leases.Followed | None:
    try:
        return leases.follow(first_task_id)
    except TRANSIENT_ERRORS:
        return None  # the database is restarting: ask again at the next poll


def _run(job: str | None, first_id: str) -> tuple[int, str, dict[str, Any]] | None:
    """The persisted run (``lifecycle_job_runs``) the job's generation works on: (id,
    outcome, counts). The watchdog's copies carry ``<first>~r<n>`` and take the run over."""
    if job is None:
        return None
    from sqlalchemy import or_, select

    from lifecycle.core import db
    from models.requests import JobRun

    jr = JobRun.__table__
    try:
        with db.engine("primary").connect() as conn:
            row = conn.execute(
                select(jr.c.id, jr.c.outcome, jr.c.counts)
                .where(
                    jr.c.job == job,
                    or_(
                        jr.c.task_id == first_id,
                        jr.c.task_id.like(f"{first_id}{leases.REDISPATCH_MARK}%"),
                    ),
                )
                .order_by(jr.c.id.desc())
                .limit(1)
            ).first()
    except TRANSIENT_ERRORS:
        return None
    return None if row is None else (int(row[0]), str(row[1]), dict(row[2] or {}))


def _run_failed(label: str, run: tuple[int, str, dict[str, Any]], why: str | None) -> JobFailed:
    run_id, outcome, counts = run
    shown = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if isinstance(v, int))
    return JobFailed(
        f"{label} run {run_id} {outcome}"
        + (f" ({shown})" if shown else "")
        + (f": {why}" if why else "")
    )


def wait_for_task(
    result: Any,
    label: str,
    timeout: float = 6 * 3600,
    poll: float = 0.5,
    *,
    run_job: str | None = None,
) -> Any:
    """Wait for a job started as Celery AsyncResult ``result``, showing PROGRESS meta
    ({"done": n, "total": m}).

    Follows the job, not one task: when the watchdog re-sent it (its lease names the task now
    running it), and, with ``run_job``, its persisted run row, whose outcome is the verdict
    (a task cancelled by a Redis restart ends REVOKED while its run resumes as ``~r1``). A
    task that ended badly fails the wait only once the job's lease says it is over too. A
    result backend that stops answering (a Redis restart) is waited out for
    ``LIFECYCLE_WAIT_BROKER_GRACE_SECONDS``; after that, one line and exit status 3.
    """
    _stop_subscription(result)
    grace = get_settings().wait_broker_grace_seconds
    deadline = time.monotonic() + timeout
    lost_since: float | None = None
    first_id = result.id
    next_lease_check = 0.0
    lease: leases.Followed | None = None
    interrupted: str | None = None
    with _progress() as bar:
        task = bar.add_task(label, total=None, state="pending")
        while True:
            now = time.monotonic()
            if now >= next_lease_check:
                next_lease_check = now + 2.0
                run = _run(run_job, first_id)
                if run is not None and run[1] != "running":
                    if run[1] == "ok":
                        final = _final_count(run[2])
                        if final is not None:
                            bar.update(task, completed=final[0], total=final[1])
                        return run[2]
                    last = _lease(first_id)
                    why = last.error if last is not None and last.state == "failed" else None
                    raise _run_failed(label, run, why)
                lease = _lease(first_id)
                if lease is not None and lease.state == "failed":
                    raise JobFailed(f"{label} failed: {lease.error or 'no reason recorded'}")
                if lease is not None and lease.task_id and lease.task_id != result.id:
                    result = type(result)(lease.task_id, app=result.app)
                    _stop_subscription(result)
                    interrupted = None
                    bar.update(task, description=f"{label} (re-dispatched #{lease.redispatches})")
                    if not _console.is_terminal:
                        _say(f"{label}: following task {lease.task_id} (re-dispatched)")
            try:
                state = result.state
                info = result.info if state in ("PROGRESS", "FAILURE", "REVOKED") else None
            except (*_BACKEND_DOWN, *TRANSIENT_ERRORS) as exc:
                now = time.monotonic()
                lost_since = lost_since if lost_since is not None else now
                if now - lost_since >= grace:
                    raise BrokerUnavailable(
                        f"lost contact with the result backend while waiting for {label} "
                        f"(task {result.id}) for {now - lost_since:.0f}s "
                        f"({_one_line(exc)}); the {label} itself is not cancelled: once Redis "
                        "is back, check `lifecycle status` (or Flower) for its outcome"
                    ) from None
                bar.update(task, state="result backend unreachable, retrying")
                time.sleep(min(2.0, max(poll, 0.1)))
                continue
            lost_since = None
            if isinstance(info, dict) and "total" in info:
                bar.update(task, total=info.get("total"), completed=info.get("done", 0))
            bar.update(task, state=state.lower())
            if state == "SUCCESS":
                # The stored value, read like the state (``get`` would subscribe again).
                value = result.result
                final = _final_count(value)
                if final is not None:
                    bar.update(task, completed=final[0], total=final[1])
                return value
            if state in ("FAILURE", "REVOKED"):
                if lease is not None and lease.state in leases.LIVE_STATES:
                    # This task is over, the job is not: a worker that lost Redis cancels its
                    # task (REVOKED "terminated"), and the lease brings the job back.
                    why = _one_line(info)
                    if interrupted != result.id:
                        interrupted = result.id
                        _say(
                            f"{label}: task {result.id} ended {state.lower()} ({why}); the job "
                            "is not over (its lease is live): waiting for it to resume"
                        )
                    bar.update(task, state="interrupted, resuming")
                else:
                    raise JobFailed(f"{label} failed: {_one_line(info)}")
            if time.monotonic() > deadline:
                raise JobFailed(f"{label} not finished after {timeout:.0f}s (task {result.id})")
            time.sleep(poll)


def await_result(task_id: str, timeout: float) -> str | None:
    """Block until the task's result is stored (at most ``timeout`` s); no sleep loop.

    With the Redis result backend this is a pub/sub subscription, so it returns as soon as the
    worker publishes the result; other backends are polled every 50 ms. Returns the task's
    state once it is ready ("SUCCESS", "FAILURE", ...), or None when it is not ready yet or the
    backend cannot be reached (the caller falls back to what the database says).
    """
    from celery.exceptions import TimeoutError as ResultTimeout

    from workers.app import app

    result = app.AsyncResult(task_id)
    try:
        result.get(timeout=timeout, interval=0.05, propagate=False)
    except ResultTimeout:
        return None
    except Exception:
        # A result backend outage must not end the wait: the job's state lives in the database.
        time.sleep(min(timeout, 0.5))
        return None
    return str(result.state)


def _final_count(value: Any) -> tuple[int, int] | None:
    """(done, total) from a finished job's result. The last PROGRESS a poll saw may be older
    (and a sweep's total grows as each phase is planned): the bar must end at the result's."""
    if not isinstance(value, dict):
        return None
    for done_key, total_key in (("done", "total"), ("batches_done", "batches")):
        done, total = value.get(done_key), value.get(total_key)
        if isinstance(total, int) and isinstance(done, int):
            return done, total
    return None


def _one_line(info: Any) -> str:
    if isinstance(info, BaseException):
        return f"{type(info).__name__}: {str(info).splitlines()[0] if str(info) else ''}"
    return str(info).splitlines()[0] if info else "unknown error"


def _failed_handler(kind: str, request_id: int) -> str | None:
    """The handler task's one-line reason if it failed (the request row may not say so)."""
    name = task_for(kind)
    if name is None:
        return None
    try:
        lease = leases.by_key(leases.lease_key(name, [request_id]))
    except TRANSIENT_ERRORS:
        return None
    if lease is None or lease.state != "failed":
        return None
    return lease.error or "no reason recorded"


def wait_for_shred_job(job_id: int, timeout: float, *, started: float | None = None) -> None:
    """Wait on the job's task result (pub/sub, no polling delay); the database has the truth.

    The job row says which task carries the job now (a re-send gets a new task id) and whether
    it is done: a delivery that found the job running elsewhere ends without finishing it, and
    a job stored while the broker was down has no task until the beat sends it.
    ``started`` (``time.monotonic()``): when the command started waiting, if before this call
    (the short way hands its wait over here).
    """
    from sqlalchemy import func, select

    from lifecycle.core import db
    from lifecycle.shred.shredder import REASONS
    from models.shred import ShredItem, ShredJob

    deadline = (time.monotonic() if started is None else started) + timeout
    finished_tasks: set[str] = set()
    with _progress() as bar:
        task = bar.add_task(f"shred job {job_id}", total=None, state="pending")
        while True:
            with db.session("primary") as s:
                job = s.get(ShredJob, job_id)
                assert job is not None
                state, task_id = job.state, job.task_id
                counts = dict(
                    s.execute(
                        select(ShredItem.state, func.count())
                        .where(ShredItem.job_id == job_id)
                        .group_by(ShredItem.state)
                    ).all()
                )
            bar.update(
                task, total=sum(counts.values()), completed=counts.get("done", 0), state=state
            )
            if state == "done":
                break
            left = deadline - time.monotonic()
            if left <= 0:
                raise JobFailed(
                    f"shred job {job_id} still '{state}' after {timeout:.0f}s; is a worker "
                    f"consuming its host's shred queue? (lifecycle status)"
                )
            if task_id and task_id not in finished_tasks:
                # Wake at least every second to move the progress bar on a long job.
                outcome = await_result(task_id, min(left, 1.0))
                if outcome is not None:
                    finished_tasks.add(task_id)
                if outcome == "FAILURE":
                    from workers.app import app

                    # Workers store only redacted exceptions (lifecycle.safe_errors): the text
                    # names the original class and a log reference, never a path.
                    info = app.AsyncResult(task_id).info
                    raise JobFailed(
                        f"shred job {job_id}: the worker's task failed ({_one_line(info)}); "
                        "the beat sends it again, see lifecycle status"
                    )
            else:
                time.sleep(min(left, 0.2))
    with db.session("primary") as s:
        items = s.execute(
            select(ShredItem.status, ShredItem.reason, ShredItem.detail)
            .where(ShredItem.job_id == job_id)
            .order_by(ShredItem.id)
        ).all()
    counts_by_status: dict[str, int] = {}
    for i in items:
        counts_by_status[i.status] = counts_by_status.get(i.status, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts_by_status.items()))
    print(f"shred job {job_id} done: {summary}")
    bad = [(n, i) for n, i in enumerate(items, start=1) if i.status in ("refused", "failed")]
    for n, i in bad:
        text = REASONS.get(i.reason or "", i.reason or "")
        print(f"  path {n}: {i.status}: {text}" + (f" ({i.detail})" if i.detail else ""))
    if bad:
        raise JobFailed(f"shred job {job_id}: {len(bad)} of {len(items)} path(s) not shredded")
