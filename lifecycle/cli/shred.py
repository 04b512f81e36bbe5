"""`lifecycle shred PATH... [--wait]`: secure deletion of managed files, on their host."""

from __future__ import annotations

import os
import time

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import UserError

DEFAULT_REASON = "operator request (lifecycle shred)"
DEFAULT_BASIS = "개인정보 보호법 제21조 (파기)"


def _absolute(paths: list[str]) -> list[str]:
    out = []
    for i, p in enumerate(paths, start=1):
        if not p or "\x00" in p:
            raise UserError(f"path {i} is empty")
        if ".." in p.split("/"):
            raise UserError(f"path {i}: the path contains '..'")
        out.append(p if os.path.isabs(p) else os.path.join(os.getcwd(), p))
    return out


@app.command("shred")
def shred(
    paths: list[str] | None = typer.Argument(  # noqa: B008
        None, help="Files under the storage roots (directories with --recursive)."
    ),
    retry: int | None = typer.Option(
        None,
        "--retry",
        min=1,
        metavar="JOB",
        help="Instead of paths: try a finished job's refused and failed files again, once what "
        "refused them is fixed (storage roots, the map's site.root, permissions).",
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait until done; non-zero if any refused."),
    host: str | None = typer.Option(
        None, "--host", help="Host holding the files (default: LIFECYCLE_HOST_NAME)."
    ),
    passes: int = typer.Option(1, "--passes", min=1, max=35, help="Random passes."),
    zero: bool = typer.Option(False, "--zero", help="Finish with a pass of zeros."),
    verify: bool = typer.Option(False, "--verify", help="Read back the last pass."),
    recursive: bool = typer.Option(
        False, "--recursive", "-r", help="Shred every entry of the given directories."
    ),
    reason: str = typer.Option(DEFAULT_REASON, "--reason", help="Reason, for the ledger."),
    legal_basis: str = typer.Option(
        DEFAULT_BASIS, "--legal-basis", help="Legal basis, for the ledger."
    ),
    timeout: float = typer.Option(3600, "--timeout", min=1, help="Seconds --wait waits."),
) -> None:
    """Overwrite, rename, truncate and unlink files, by a worker on the host that holds them.

    Every path is checked first (under a storage root, no '..', no symlink, no other hard
    links, not a directory without --recursive, exists); on any error nothing is queued.
    """
    from lifecycle.core.db import check_reachable
    from lifecycle.core.queues import shred_queue
    from lifecycle.core.settings import get_settings
    from lifecycle.shred.jobs import enqueue_shred

    if retry is not None:
        if paths:
            raise UserError("give either paths or --retry JOB, not both")
        _retry(retry, wait, timeout)
        return
    if not paths:
        raise UserError("no path given (or --retry JOB)")
    settings = get_settings()
    absolute = _absolute(paths)
    check_reachable("primary")
    job_id = enqueue_shred(
        absolute,
        host=host,
        reason=reason,
        legal_basis=legal_basis,
        passes=passes,
        zero=zero,
        verify=verify,
        recursive=recursive,
        origin="cli",
        strict=True,
    )
    target = host or settings.host_name
    count = len(dict.fromkeys(absolute))
    from lifecycle.cli.operator import record

    record("destroy", "shred", details={"shred_job": job_id, "paths": count})
    typer.echo(f"shred job {job_id}: {count} path(s) queued on {shred_queue(target)}")
    if wait:
        _wait(job_id, timeout)


def _retry(job_id: int, wait: bool, timeout: float) -> None:
    from lifecycle.cli.operator import record
    from lifecycle.core.db import check_reachable
    from lifecycle.shred.jobs import retry_refused

    check_reachable("primary")
    n = retry_refused(job_id)
    record("destroy", "shred retry", details={"shred_job": job_id, "paths": n})
    typer.echo(f"shred job {job_id}: {n} refused or failed file(s) queued again")
    if wait:
        _wait(job_id, timeout)


def _wait(job_id: int, timeout: float) -> None:
    """Wait on the job's task result (pub/sub, no polling delay); the database has the truth.

    The job row says which task carries the job now (a re-send gets a new task id) and whether
    it is done: a delivery that found the job running elsewhere ends without finishing it, and
    a job stored while the broker was down has no task until the beat sends it.
    """
    from sqlalchemy import func, select

    from lifecycle.cli.waiting import JobFailed, _one_line, _progress, await_result
    from lifecycle.core import db
    from lifecycle.shred.shredder import REASONS
    from models.shred import ShredItem, ShredJob

    deadline = time.monotonic() + timeout
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
    typer.echo(f"shred job {job_id} done: {summary}")
    bad = [(n, i) for n, i in enumerate(items, start=1) if i.status in ("refused", "failed")]
    for n, i in bad:
        text = REASONS.get(i.reason or "", i.reason or "")
        typer.echo(f"  path {n}: {i.status}: {text}" + (f" ({i.detail})" if i.detail else ""))
    if bad:
        raise JobFailed(f"shred job {job_id}: {len(bad)} of {len(items)} path(s) not shredded")
