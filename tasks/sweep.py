"""Tasks: the nightly purpose-end sweep (a coordinator) and its batches (ids only)."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dbkind, dispatch, leases
from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.engine.context import get_context
from lifecycle.engine.sweep import (
    ANOTHER_SWEEP,
    BatchKey,
    BatchMembersBusy,
    run_batch,
    run_sweep,
)
from tasks.base import LifecycleTask
from workers.app import app

# The coordinator lives as long as the sweep; batches are short. The visibility timeout may
# hand a long coordinator's message to a second worker: that one finds the lock taken and stops.
SWEEP_TIME_LIMIT = 6 * 3600


@app.task(
    base=LifecycleTask,
    name=dispatch.SWEEP_RUN,
    bind=True,
    time_limit=SWEEP_TIME_LIMIT,
    soft_time_limit=SWEEP_TIME_LIMIT - 120,
    # One lease for the sweep whatever the trigger: the watchdog re-sends a coordinator that
    # died (a Redis restart cancels it, a worker is killed) with its run id, to resume it.
    lease="name",
)
def sweep_run(
    self: LifecycleTask, member_batch: int | None = None, run_id: int | None = None
) -> dict[str, Any]:

    # A database error here (the server restarting at pick-up) is retried by LifecycleTask.
    ctx = get_context()

    def on_run(new_run_id: int) -> None:
        lease = leases.current()
        if lease is not None:
            kwargs: dict[str, Any] = {"run_id": new_run_id}
            if member_batch:
                kwargs["member_batch"] = int(member_batch)
            leases.set_kwargs(lease, kwargs)

    def send_batch(key: BatchKey) -> None:
        # Flower and the log show "run=7 first=1001 last=1500 kind=withdrawal".
        kwargs: dict[str, Any] = {"kind": key.kind}
        if key.table:
            kwargs["table"] = key.table
        dispatch.send(dispatch.SWEEP_ARCHIVE_BATCH, key.run_id, key.first_id, key.last_id, **kwargs)

    # On SQLite (the embedded default) writers serialise anyway: the coordinator does it all.
    fan_out = send_batch if dbkind.row_locks(ctx.primary) else None
    out = run_sweep(
        ctx,
        task_id=self.request.id,
        dispatch=fan_out,
        report=self.progress,
        member_batch=int(member_batch) if member_batch else None,
        run_id=int(run_id) if run_id else None,
        on_run=on_run,
    )
    lease = leases.current()
    if lease is not None and out.get("skipped") == ANOTHER_SWEEP:
        # Another copy holds the sweep lock and runs the sweep: hand the one sweep lease back
        # rather than finish it (see leases.stand_down), so that, should that copy stop
        # before its heartbeat takes the lease, the watchdog still sends the sweep again.
        leases.stand_down(lease)
    return out


BUSY_RETRIES = 5


@app.task(
    base=LifecycleTask,
    name=dispatch.SWEEP_ARCHIVE_BATCH,
    bind=True,
    autoretry_for=(*TRANSIENT_DB_ERRORS, BatchMembersBusy),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=10,
    lease="args",
)
def archive_batch(
    self: LifecycleTask,
    run_id: int,
    first_id: int,
    last_id: int,
    kind: str = "withdrawal",
    table: str = "",
) -> dict[str, Any]:

    key = BatchKey(int(run_id), kind, table, int(first_id), int(last_id))
    # Retried on BatchMembersBusy with backoff (2, 4, 8, 16, 32 s: about a minute, as
    # BUSY_GRACE_SECONDS); the last tries take the members they can, and the run fails short.
    short = (self.request.retries or 0) >= BUSY_RETRIES
    counts = run_batch(get_context(), key, task_id=self.request.id, allow_short=short)
    if counts is None:
        return {"run_id": key.run_id, "skipped": "done already or being worked on"}
    return {"run_id": key.run_id, **counts}
