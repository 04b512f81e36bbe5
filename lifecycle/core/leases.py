"""Job leases: a long job says "still on it" in the database, and dead jobs are sent again.

Why: a job's broker message is not a reliable record of who is working on what. A Redis restart
makes the worker cancel a running task whose message then cannot be acknowledged; a killed
worker's message only comes back after the visibility timeout (over an hour); a task picked up
while the database was down fails before it could record anything. The lease row is the
record: the running job renews it every ``lease_seconds / 3``; a row still ``held`` after it
expired belongs to a job nobody is running, and :func:`redispatch_expired` (the watchdog, run
by the beat process) sends that job again with the same ids. Every job is idempotent, so a
second copy of a job that was in fact alive (a slow heartbeat during a database outage) does
no harm; the lease row itself keeps them from running side by side (:func:`acquire` refuses a
live lease held by someone else).

States: ``held`` (running), ``retrying`` (a Celery retry is scheduled), ``redispatched`` (the
watchdog re-sent it; waiting for a worker), ``done``, ``failed`` (the task failed visibly;
never re-sent: a human decides). Pure database logic; the Celery side is in
``tasks/base.py``.

Generations: the task that starts a job names it (``first_task_id``); every copy of that job
carries the name in its task id (the watchdog's copies are ``<first>~r<n>``, and a redelivered
or retried message keeps its id). A copy that arrives once its own generation finished (the
original message redelivered after a Redis restart, an older re-sent copy that waited its turn)
stands down without touching the row, so it cannot erase the finished job's history. Any other
task id (a new nightly run, an operator's re-run) starts a new generation.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from lifecycle.core import db
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from models.leases import JobLease

log = logging.getLogger("lifecycle.leases")

LIVE_STATES = ("held", "retrying", "redispatched")
FINISHED_STATES = ("done", "failed")
# A re-sent job that no worker picked up is sent again after this many lease periods,
# doubling each time (a queue that is simply long does not get flooded with copies).
REDISPATCH_GRACE_LEASES = 2
REDISPATCH_BACKOFF_CAP = 5
KEY_MAX = 200
# Joins a generation's first task id and the re-dispatch number in a re-sent copy's task id.
REDISPATCH_MARK = "~r"

_T = JobLease.__table__


def _now() -> datetime:
    return datetime.now(UTC)


def ttl() -> timedelta:
    return timedelta(seconds=get_settings().lease_seconds)


def lease_key(task: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
    """``lifecycle.sweep.archive_batch:7,1001,1500,kind=withdrawal`` (ids only, stable order)."""
    parts = [str(a) for a in args]
    parts += [f"{k}={v}" for k, v in sorted((kwargs or {}).items()) if v not in (None, "")]
    key = f"{task}:{','.join(parts)}" if parts else task
    if len(key) > KEY_MAX:  # long id lists: keep it unique, not readable
        key = key[: KEY_MAX - 41] + "#" + uuid.uuid5(uuid.NAMESPACE_URL, key).hex[:40]
    return key


@dataclass
class Lease:
    id: int
    key: str
    holder: str
    engine: Engine
    redispatches: int = 0
    stalled_seconds: int = 0
    # Taken from a holder that stopped renewing (its worker died): not a retry or a re-send.
    taken_over: bool = False
    # This copy handed the lease back (:func:`stand_down`): it no longer finishes or retries it.
    stood_down: bool = False


class AlreadyFinished(Exception):
    """This copy belongs to a generation of the job that has already finished."""


def generation(task_id: str) -> str:
    """The generation a task id belongs to: its first task's id."""
    return task_id.partition(REDISPATCH_MARK)[0]


def redispatch_task_id(first_task_id: str | None, number: int) -> str:
    first = generation(first_task_id) if first_task_id else str(uuid.uuid4())
    return f"{first}{REDISPATCH_MARK}{number}"


# -- the holder's side ---------------------------------------------------------------------------


def acquire(
    key: str,
    task: str,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    task_id: str | None = None,
    engine: Engine | None = None,
) -> Lease | None:
    """Take the lease (new, finished, expired, retrying or re-sent); None if someone holds it.

    Raises :class:`AlreadyFinished` for a copy of a generation that has finished (see the module
    docstring). Database errors propagate: the caller retries the task (the database is down).
    """
    eng = engine or db.engine("primary")
    holder = uuid.uuid4().hex
    now = _now()
    expires = now + ttl()
    takeable = (_T.c.state != "held") | (_T.c.expires_at < now)
    with eng.begin() as conn:
        prior = conn.execute(
            select(
                _T.c.id, _T.c.redispatches, _T.c.heartbeat_at, _T.c.state, _T.c.first_task_id
            ).where(_T.c.key == key)
        ).first()
    if prior is not None:
        lease_id, redispatches, beat, state, first = prior
        # A finished job sent again starts a new generation (a new nightly sweep, a manual
        # re-run), unless this copy is of the generation that finished; anything else is the
        # same job taken over. Decided here rather than with a CASE on ``state`` in the UPDATE:
        # MySQL/MariaDB evaluate SET left to right.
        fresh = state in FINISHED_STATES
        if fresh and task_id and first and generation(task_id) == generation(first):
            raise AlreadyFinished(key)
        values: dict[str, Any] = {
            "state": "held",
            "holder": holder,
            "task": task,
            "args": list(args),
            "kwargs": dict(kwargs or {}),
            "queue": queue,
            "task_id": task_id,
            "finished_at": None,
            "error": None,
            "heartbeat_at": now,
            "expires_at": expires,
        }
        if fresh:
            values.update(first_task_id=task_id, started_at=now, redispatches=0)
        with eng.begin() as conn:
            # ``state == state``: if another worker took it since we looked, we lost the race.
            res = conn.execute(
                update(_T)
                .where((_T.c.id == lease_id) & (_T.c.state == state) & takeable)
                .values(**values)
            )
        if not res.rowcount:
            return None
        if fresh:
            return Lease(lease_id, key, holder, eng)
        stalled = int((now - as_utc(beat)).total_seconds())
        return Lease(lease_id, key, holder, eng, int(redispatches), stalled, state == "held")
    try:
        with eng.begin() as conn:
            lease_id = conn.execute(
                insert(_T)
                .values(
                    key=key,
                    task=task,
                    args=list(args),
                    kwargs=dict(kwargs or {}),
                    queue=queue,
                    state="held",
                    holder=holder,
                    task_id=task_id,
                    first_task_id=task_id,
                    started_at=now,
                    heartbeat_at=now,
                    expires_at=expires,
                    redispatches=0,
                )
                .returning(_T.c.id)
            ).scalar_one()
    except IntegrityError:
        return None  # the row exists and its lease is live: someone else is on this job
    return Lease(int(lease_id), key, holder, eng)


def renew(lease: Lease) -> bool:
    """Heartbeat. Also takes the lease back if a duplicate took it meanwhile and handed it back
    (:func:`stand_down`: it found this job running) or finished it, and after a watchdog
    re-send that this holder, alive after all, beat to the lease."""
    now = _now()
    with lease.engine.begin() as conn:
        res = conn.execute(
            update(_T)
            .where(
                (_T.c.id == lease.id)
                & (
                    (_T.c.holder == lease.holder)
                    | _T.c.holder.is_(None)
                    | (_T.c.state != "held")
                    | (_T.c.expires_at < now)
                )
                & (_T.c.state != "failed")
            )
            .values(state="held", holder=lease.holder, heartbeat_at=now, expires_at=now + ttl())
        )
    return bool(res.rowcount)


def _ours(lease: Lease) -> Any:
    """This holder's row, or one handed back (held by nobody) that this running job takes."""
    return (_T.c.id == lease.id) & (
        (_T.c.holder == lease.holder) | (_T.c.holder.is_(None) & (_T.c.state == "held"))
    )


def finish(lease: Lease, state: str = "done", error: str | None = None) -> None:
    """Only the job's runner finishes a lease: its holder, or the job that is running while a
    duplicate handed the lease back. A duplicate that stood down does not."""
    assert state in FINISHED_STATES
    if lease.stood_down:
        return
    with lease.engine.begin() as conn:
        conn.execute(
            update(_T)
            .where(_ours(lease))
            .values(state=state, finished_at=_now(), error=(error or None) and error[:500])
        )


def retrying(lease: Lease, delay_seconds: float, error: str | None = None) -> None:
    """A Celery retry is scheduled: the watchdog waits for it (and one lease) before re-sending."""
    if lease.stood_down:
        return
    expires = _now() + timedelta(seconds=max(0.0, delay_seconds)) + ttl()
    with lease.engine.begin() as conn:
        conn.execute(
            update(_T)
            .where(_ours(lease))
            .values(state="retrying", holder=None, expires_at=expires, error=error and error[:500])
        )


def stand_down(lease: Lease) -> None:
    """This copy found the job run by someone else (the sweep's lock is taken): hand the lease
    back instead of finishing it.

    Finishing it would tell the watchdog the job is done while the other runner may yet die
    or stop before its heartbeat takes the lease back; then nothing would send it again. A
    handed-back lease is ``held`` by nobody for one more lease period: the runner's next
    heartbeat takes it, and if no runner does, it expires and the watchdog sends the job again.
    Database errors propagate (the task retries; the lease, still ours, then expires).
    """
    now = _now()
    with lease.engine.begin() as conn:
        conn.execute(
            update(_T)
            .where((_T.c.id == lease.id) & (_T.c.holder == lease.holder))
            .values(state="held", holder=None, expires_at=now + ttl())
        )
    lease.stood_down = True


def set_kwargs(lease: Lease, kwargs: dict[str, Any]) -> None:
    """What the job is to be re-sent with from now on (e.g. the sweep's run id, to resume it)."""
    with lease.engine.begin() as conn:
        conn.execute(update(_T).where(_ours(lease)).values(kwargs=dict(kwargs)))


# -- the heartbeat thread (one per process) ------------------------------------------------------

_current: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("lease", default=None)
_active: dict[int, Lease] = {}
_lock = threading.Lock()
_thread: threading.Thread | None = None
_thread_pid: int | None = None
_wake = threading.Event()


def current() -> Lease | None:
    """The lease of the job running in this thread, if any."""
    return _current.get()


def _beat_loop() -> None:
    while True:
        _wake.wait(max(0.2, get_settings().lease_seconds / 3))
        _wake.clear()
        with _lock:
            held = list(_active.values())
        for lease in held:
            try:
                if not renew(lease):
                    log.warning("lease %s is held by another worker now", lease.key)
            except Exception as exc:  # the database is down: the job itself decides what to do
                log.warning("could not renew lease %s (%s)", lease.key, type(exc).__name__)


def _ensure_thread() -> None:
    global _thread, _thread_pid
    # After a fork (prefork children) the parent's thread does not exist in the child.
    if _thread is not None and _thread_pid == os.getpid() and _thread.is_alive():
        return
    _thread = threading.Thread(target=_beat_loop, name="lease-heartbeat", daemon=True)
    _thread_pid = os.getpid()
    _thread.start()


@contextlib.contextmanager
def holding(lease: Lease) -> Iterator[Lease]:
    """Renew ``lease`` in the background while the block runs; expose it as :func:`current`."""
    with _lock:
        _active[lease.id] = lease
    _ensure_thread()
    token = _current.set(lease)
    try:
        yield lease
    finally:
        _current.reset(token)
        with _lock:
            _active.pop(lease.id, None)


# -- the watchdog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redispatch:
    key: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    number: int
    stalled_seconds: int
    task_id: str

    @property
    def note(self) -> str:
        return f"re-dispatched #{self.number}, stalled {self.stalled_seconds} s"


Sender = Callable[[Redispatch], Any]


def redispatch_expired(send: Sender, *, now: datetime | None = None, limit: int = 200) -> list[str]:
    """Send again every job whose lease expired; returns their keys.

    Each row is claimed with a conditional update before it is sent, so two watchdogs never
    both send it; if the send fails (broker down) the row expires again and is sent later.
    """
    now = now or _now()
    eng = db.engine("primary")
    with eng.connect() as conn:
        rows = conn.execute(
            select(
                _T.c.id, _T.c.key, _T.c.task, _T.c.args, _T.c.kwargs, _T.c.queue,
                _T.c.state, _T.c.expires_at, _T.c.heartbeat_at, _T.c.redispatches,
                _T.c.first_task_id,
            )
            .where(_T.c.state.in_(LIVE_STATES), _T.c.expires_at < now)
            .order_by(_T.c.expires_at)
            .limit(limit)
        ).all()  # fmt: skip
    sent: list[str] = []
    period = ttl()
    for lid, key, task, args, kwargs, queue, state, expires, beat, n, first in rows:
        number = int(n) + 1
        grace = period * REDISPATCH_GRACE_LEASES * 2 ** min(int(n), REDISPATCH_BACKOFF_CAP)
        with eng.begin() as conn:
            res = conn.execute(
                update(_T)
                .where((_T.c.id == lid) & (_T.c.state == state) & (_T.c.expires_at == expires))
                .values(
                    state="redispatched",
                    holder=None,
                    redispatches=number,
                    last_redispatch_at=now,
                    expires_at=now + grace,
                )
            )
        if not res.rowcount:
            continue  # taken by its job or another watchdog meanwhile
        job = Redispatch(
            key, task, list(args or []), dict(kwargs or {}), queue, number,
            int((now - as_utc(beat)).total_seconds()), redispatch_task_id(first, number),
        )  # fmt: skip
        try:
            send(job)
        except Exception as exc:  # broker down: the row expires again and is re-sent later
            log.warning("could not re-dispatch %s (%s)", key, type(exc).__name__)
            continue
        log.warning("re-dispatched %s (%s)", key, job.note)
        sent.append(key)
    return sent


def reopen(
    key: str,
    task: str,
    kwargs: dict[str, Any],
    *,
    queue: str | None = None,
    now: datetime | None = None,
    states: tuple[str, ...] = ("done",),
    mark: str = "",
) -> Redispatch | None:
    """Make the finished (or missing) lease ``key`` live again as re-sent, for a job its own
    records say is unfinished (a sweep run still ``running`` that nobody runs); returns what
    to send, or None if the lease is live (or in none of ``states``), or another watchdog got
    there first.

    The re-sent copy starts a generation of its own (its first task id starts with ``mark``),
    so the copies of the finished generation still stand down.
    """
    assert set(states) <= set(FINISHED_STATES)
    now = now or _now()
    eng = db.engine("primary")
    first = f"{mark}{uuid.uuid4()}"
    with eng.begin() as conn:
        prior = conn.execute(
            select(_T.c.id, _T.c.state, _T.c.redispatches, _T.c.heartbeat_at).where(_T.c.key == key)
        ).first()
        if prior is not None and prior[1] not in states:
            return None
        number = int(prior[2] or 0) + 1 if prior is not None else 1
        values: dict[str, Any] = {
            "task": task,
            "kwargs": dict(kwargs),
            "queue": queue,
            "state": "redispatched",
            "holder": None,
            "task_id": redispatch_task_id(first, number),
            "first_task_id": first,
            "finished_at": None,
            "error": None,
            "redispatches": number,
            "last_redispatch_at": now,
            "expires_at": now + ttl() * REDISPATCH_GRACE_LEASES,
        }
        if prior is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(_T).values(key=key, args=[], started_at=now, heartbeat_at=now,
                                          **values)
                    )  # fmt: skip
            except IntegrityError:
                return None
            beat = now
        else:
            res = conn.execute(
                update(_T).where((_T.c.id == prior[0]) & (_T.c.state == prior[1])).values(**values)
            )
            if not res.rowcount:
                return None
            beat = as_utc(prior[3])
    return Redispatch(
        key, task, [], dict(kwargs), queue, number, int((now - beat).total_seconds()),
        values["task_id"],
    )  # fmt: skip


def prune(days: int = 30, *, now: datetime | None = None) -> int:
    """Finished leases older than ``days`` go (their outcome is in Flower and the job tables)."""
    cutoff = (now or _now()) - timedelta(days=days)
    with db.engine("primary").begin() as conn:
        res = conn.execute(
            _T.delete().where(_T.c.state.in_(FINISHED_STATES), _T.c.finished_at < cutoff)
        )
    return int(res.rowcount or 0)


# -- readers (status, --wait) --------------------------------------------------------------------


def unfinished(conn: Any, *, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every job not finished yet, oldest first, with its age and whether it is stalled."""
    now = now or _now()
    rows = conn.execute(
        select(
            _T.c.task, _T.c.args, _T.c.kwargs, _T.c.state, _T.c.started_at, _T.c.heartbeat_at,
            _T.c.expires_at, _T.c.redispatches, _T.c.last_redispatch_at, _T.c.task_id,
        )
        .where(_T.c.state.in_(LIVE_STATES))
        .order_by(_T.c.started_at)
    ).all()  # fmt: skip
    out = []
    for task, args, kwargs, state, started, beat, expires, n, last, task_id in rows:
        stalled = state == "held" and as_utc(expires) < now
        out.append(
            {
                "task": task,
                "ids": ",".join([str(a) for a in args or []] + [
                    f"{k}={v}" for k, v in sorted((kwargs or {}).items())
                ]),
                "state": "stalled" if stalled else state,
                "age_seconds": int((now - as_utc(started)).total_seconds()),
                "heartbeat_age_seconds": int((now - as_utc(beat)).total_seconds()),
                "redispatches": int(n or 0),
                "last_redispatch_at": as_utc(last).isoformat() if last else None,
                "task_id": task_id,
            }
        )  # fmt: skip
    return out


@dataclass(frozen=True)
class Followed:
    state: str
    task_id: str | None
    redispatches: int
    error: str | None


def follow(first_task_id: str) -> Followed | None:
    """The job that task ``first_task_id`` started: its state and the task now running it."""
    with db.engine("primary").connect() as conn:
        row = conn.execute(
            select(_T.c.state, _T.c.task_id, _T.c.redispatches, _T.c.error)
            .where(_T.c.first_task_id == first_task_id)
            .limit(1)
        ).first()
    if row is None:
        return None
    return Followed(row[0], row[1], int(row[2] or 0), row[3])


def seconds_left(key: str) -> float | None:
    """Seconds until the lease ``key`` expires (0 if it has); None if there is no such lease."""
    with db.engine("primary").connect() as conn:
        expires = conn.execute(select(_T.c.expires_at).where(_T.c.key == key)).scalar()
    if expires is None:
        return None
    return max(0.0, (as_utc(expires) - _now()).total_seconds())


def live(key: str) -> bool:
    """Whether a job holds the lease ``key`` now (held, retrying or re-sent, not expired)."""
    with db.engine("primary").connect() as conn:
        row = conn.execute(select(_T.c.state, _T.c.expires_at).where(_T.c.key == key)).first()
    return row is not None and row[0] in LIVE_STATES and as_utc(row[1]) > _now()


def by_key(key: str) -> Followed | None:
    with db.engine("primary").connect() as conn:
        row = conn.execute(
            select(_T.c.state, _T.c.task_id, _T.c.redispatches, _T.c.error).where(_T.c.key == key)
        ).first()
    if row is None:
        return None
    return Followed(row[0], row[1], int(row[2] or 0), row[3])
