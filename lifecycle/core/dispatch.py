"""The registry of task names, and the one way domain code sends a job (:func:`send`).

Every task name is written once, here: the ``@app.task(name=...)`` declarations in
``tasks/``, beat's schedule (``schedules/beat.py``), the routes
(``workers/config.py``) and every sender use these constants, and
tests/workers/test_registry.py holds the Celery app and beat to :data:`NAMES`. The registry sits
in core, below the domain packages, because they send jobs by name; the rest of the job runtime
(the app, the task wrappers, beat) is the ``workers`` package above them.

Domain packages never import the Celery app (it sits above them: ``workers`` builds it from the
task modules in ``tasks/``). :func:`send` finds the app by its module name, as ``celery -A``
does, so a process that never imported the workers (the CLI, the website's Python client) still
sends with the same message factory, routes and id-only argument checks.

Names are part of the wire format: messages already in a broker carry them, so they never
change (a renamed task keeps its old name registered as an alias).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

# Requests (one per request kind; each receives only the request id).
WITHDRAW = "lifecycle.withdraw"
CORRECT = "lifecycle.correct"
ACCESS = "lifecycle.rights.access"
ERASE = "lifecycle.rights.erase"
SUSPEND = "lifecycle.rights.suspend"
SUSPEND_LIFT = "lifecycle.rights.suspend_lift"
CONSENT_WITHDRAW = "lifecycle.rights.consent_withdraw"
# Written answers a crash left unsent (beat).
ANSWER_PENDING = "lifecycle.rights.answer_pending"
# The outbox relay and its safety net.
RELAY = "lifecycle.relay"
RELAY_REDISPATCH_STALE = "lifecycle.relay.redispatch_stale"
CHECK_DEADLINES = "lifecycle.requests.check_deadlines"
# The engine.
SWEEP_RUN = "lifecycle.sweep.run"
SWEEP_ARCHIVE_BATCH = "lifecycle.sweep.archive_batch"
PURGE_RUN = "lifecycle.purge.run"
LEDGER_CHECKPOINT = "lifecycle.ledger.checkpoint"
# The data map's discovery and linkage findings, kept current (weekly).
DATAMAP_SCAN = "lifecycle.datamap.scan"
# Unique identifiers (고유식별정보) cleared in live rows; gets the run id only.
IDENTIFIERS_DESTROY = "lifecycle.identifiers.destroy"
# Secure deletion (routed to the queue of the host holding the files).
SHRED_FILES = "lifecycle.shred.files"
SHRED_RESEND_PENDING = "lifecycle.shred.resend_pending"
SHRED_SWEEP_ORPHANS = "lifecycle.shred.sweep_orphans"
# Third parties.
NOTIFY_DELIVER = "lifecycle.notify.deliver"
NOTIFY_RESEND_DUE = "lifecycle.notify.resend_due"
# Notices to members.
NOTICE_FANOUT = "lifecycle.notice.fanout"
NOTICE_SEND_BATCH = "lifecycle.notice.send_batch"
NOTICE_SEND_EACH = "lifecycle.notice.send_each"
NOTICE_RESUME_STALE = "lifecycle.notice.resume_stale"
NOTICE_DORMANCY_ADVANCE = "lifecycle.notice.dormancy_advance"
# Health.
PING = "lifecycle.ping"

# Each task's positional parameters, for the id-only argsrepr Flower shows (``job_id=7``): a
# process that sends by name (the CLI) then names them without importing every task module
# (a fifth of a second of each command). tests/core/test_task_conventions.py holds them to the
# tasks.
_NO_PARAMS: tuple[str, ...]
_NO_PARAMS = (ANSWER_PENDING, RELAY, RELAY_REDISPATCH_STALE, CHECK_DEADLINES, PURGE_RUN)
_NO_PARAMS += (LEDGER_CHECKPOINT, SHRED_RESEND_PENDING, SHRED_SWEEP_ORPHANS, NOTIFY_RESEND_DUE)
_NO_PARAMS += (NOTICE_RESUME_STALE, NOTICE_DORMANCY_ADVANCE, PING, DATAMAP_SCAN)
_REQUEST_HANDLERS = (WITHDRAW, CORRECT, ACCESS, ERASE, SUSPEND, SUSPEND_LIFT, CONSENT_WITHDRAW)
PARAMS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_REQUEST_HANDLERS, ("request_id",)),
    **dict.fromkeys(_NO_PARAMS, ()),
    SWEEP_RUN: ("member_batch", "run_id"),
    SWEEP_ARCHIVE_BATCH: ("run_id", "first_id", "last_id", "kind", "table"),
    SHRED_FILES: ("job_id",),
    IDENTIFIERS_DESTROY: ("run_id", "batch"),
    NOTIFY_DELIVER: ("delivery_id",),
    NOTICE_FANOUT: ("notice_id",),
    NOTICE_SEND_BATCH: ("notice_id", "first", "last"),
    NOTICE_SEND_EACH: ("notice_ids", "member_ids"),
}

# Every task name, and nothing else: the registry the tests compare with the Celery app.
NAMES: frozenset[str] = frozenset(PARAMS)

# Where the Celery app lives; importing it registers every task module.
APP_MODULE = "workers.app"


def celery_app() -> Any:
    """The process's Celery app (imported on first use)."""
    return importlib.import_module(APP_MODULE).app


def send(
    name: str,
    *args: int | str | list[int],
    task_id: str | None = None,
    queue: str | None = None,
    countdown: float | None = None,
    note: str | None = None,
    **kwargs: int | str | bool | None,
) -> Any:
    """Send task ``name`` with id-only arguments; returns Celery's ``AsyncResult``.

    The message factory refuses anything that is not an id (see ``tasks/base.py``), so
    personal data cannot reach the broker through here. ``note`` (ints and fixed words only, e.g.
    the watchdog's "re-dispatched #2, stalled 75 s") is shown after the ids in Flower.
    """
    options: dict[str, Any] = {}
    if task_id is not None:
        options["task_id"] = task_id
    if queue is not None:
        options["queue"] = queue
    if countdown is not None:
        options["countdown"] = countdown
    if note:
        options["lifecycle_note"] = note
    return celery_app().send_task(name, args=list(args), kwargs=kwargs or None, **options)


def send_many(name: str, arg_lists: Iterable[Sequence[int | str]]) -> int:
    """Send ``name`` once per argument list over one broker connection; returns how many."""
    app = celery_app()
    n = 0
    with app.producer_or_acquire() as producer:
        for args in arg_lists:
            app.send_task(name, args=list(args), producer=producer)
            n += 1
    return n
