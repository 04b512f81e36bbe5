"""Sweep runs nobody is running: shown by ``status`` and sent again by the watchdog.

The lease watchdog (:func:`lifecycle.core.leases.redispatch_expired`) re-sends a job whose
lease expired. It cannot see a sweep run left ``running`` while the sweep's lease is finished
or missing: a coordinator copy that stood down after finishing the lease, a run opened outside
a leased task, a cause nobody has thought of yet. Such a run would wait for the next nightly
trigger, silently. The check here asks the run's own records: a run still ``running``, no live
sweep lease, the sweep lock free (no coordinator connected), for longer than
:data:`UNATTENDED_AFTER_LEASES` lease periods since anything happened to it. Then ``status``
says so in one line and the watchdog sends the coordinator again with the run's id, to resume it.

A sweep lease that ``failed`` while its run is still ``running`` did not fail the run (a
coordinator that fails the run records it); the failure may come from a fault around it (a
termination masked by a database error). The watchdog sends such a run again once; if that
copy fails too, ``status`` keeps naming the error and a person decides, as for every failed job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select

from lifecycle.core import db, dispatch, leases, locks
from lifecycle.core.timeutil import as_utc
from models.engine import SweepBatch
from models.leases import JobLease
from models.requests import JobRun

log = logging.getLogger(__name__)

# The sweep's job lock, named here rather than in lifecycle.engine.sweep: `lifecycle status`
# asks whether it is held, and importing the sweep (the mover, the shredder's jobs, kombu) for
# a name was a quarter of that command's start-up.
LOCK_NAME = "lifecycle-sweep"
UNATTENDED_AFTER_LEASES = 2
# Starts the first task id of the generations this watchdog sends (one re-send after a failure).
RESENT_MARK = "unattended-"
SWEEP_LEASE_KEY = leases.lease_key(dispatch.SWEEP_RUN)


@dataclass(frozen=True)
class Unattended:
    run_id: int
    idle_seconds: int
    lease_state: str | None  # done | failed | None (no lease row)
    lease_error: str | None
    kwargs: dict[str, Any]
    # The lease's generation was sent by this watchdog already.
    resent: bool = False

    @property
    def resend(self) -> bool:
        return self.lease_state != "failed" or not self.resent

    @property
    def reason(self) -> str:
        """One line, ids and states only."""
        if self.lease_state == "failed":
            then = (
                "the watchdog sends it again once"
                if self.resend
                else "it failed again after the watchdog sent it again: re-run it with "
                "lifecycle sweep"
            )
            return (
                f"sweep run {self.run_id} still running but its coordinator failed "
                f"({self.lease_error or 'no reason recorded'}); {then}"
            )
        lease = f"its lease {self.lease_state}" if self.lease_state else "no lease"
        return (
            f"sweep run {self.run_id} still running with nobody on it for {self.idle_seconds} s "
            f"({lease}, sweep lock free); the watchdog sends it again"
        )


def unattended_runs(conn: Connection, now: datetime) -> list[Unattended]:
    """The newest sweep run still ``running`` if nobody can finish it (see the module doc)."""
    jr, b, lt = JobRun.__table__, SweepBatch.__table__, JobLease.__table__
    run = conn.execute(
        select(jr.c.id, jr.c.started_at)
        .where(jr.c.job == "sweep", jr.c.outcome == "running")
        .order_by(jr.c.id.desc())
        .limit(1)
    ).first()
    if run is None:
        return []
    lease = conn.execute(
        select(
            lt.c.state,
            lt.c.heartbeat_at,
            lt.c.finished_at,
            lt.c.error,
            lt.c.kwargs,
            lt.c.first_task_id,
        ).where(lt.c.key == SWEEP_LEASE_KEY)
    ).first()
    if lease is not None and lease[0] in leases.LIVE_STATES:
        return []  # a coordinator holds it, or the lease watchdog re-sends it when it expires
    if locks.is_held(conn, LOCK_NAME):
        return []  # a coordinator is connected and working
    run_id, started = int(run[0]), as_utc(run[1])
    last_batch = conn.execute(select(func.max(b.c.updated_at)).where(b.c.run_id == run_id)).scalar()
    seen = [last_batch, *((lease[1], lease[2]) if lease is not None else ())]
    moments = [started, *(as_utc(t) for t in seen if t is not None)]
    idle = int((now - max(moments)).total_seconds())
    if idle < UNATTENDED_AFTER_LEASES * leases.ttl().total_seconds():
        return []
    kwargs: dict[str, Any] = {"run_id": run_id}
    if lease is None:
        return [Unattended(run_id, idle, None, None, kwargs)]
    old = dict(lease[4] or {})
    if old.get("member_batch"):
        kwargs["member_batch"] = int(old["member_batch"])
    resent = str(lease[5] or "").startswith(RESENT_MARK)
    return [Unattended(run_id, idle, str(lease[0]), lease[3], kwargs, resent)]


def redispatch_unattended(
    send: Callable[[leases.Redispatch], Any], now: datetime | None = None
) -> list[int]:
    """Send the coordinator again for each unattended run (not a failed one); their run ids."""
    now = now or datetime.now(UTC)
    with db.engine("primary").connect() as conn:
        found = unattended_runs(conn, now)
    sent: list[int] = []
    for run in found:
        if not run.resend:
            continue
        job = leases.reopen(
            SWEEP_LEASE_KEY, dispatch.SWEEP_RUN, run.kwargs, now=now,
            states=("done", "failed"), mark=RESENT_MARK,
        )  # fmt: skip
        if job is None:
            continue  # another watchdog, or a coordinator, got there first
        log.warning("%s", run.reason)
        try:
            send(job)
        except Exception as exc:  # broker down: the reopened lease expires and is re-sent
            log.warning("could not re-send sweep run %s (%s)", run.run_id, type(exc).__name__)
            continue
        sent.append(run.run_id)
    return sent
