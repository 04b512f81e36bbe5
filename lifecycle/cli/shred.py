"""`lifecycle shred PATH... [--wait]`: secure deletion of managed files, on their host."""

from __future__ import annotations

import typer

from lifecycle.cli import shred_plan
from lifecycle.cli.app import app
from lifecycle.core.errors import UserError
from lifecycle.shred.paths import absolute as absolute_paths

# The short way (shred_plan) writes the same defaults; one definition for both.
DEFAULT_REASON = shred_plan.DEFAULT_REASON
DEFAULT_BASIS = shred_plan.DEFAULT_BASIS


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
    timeout: float = typer.Option(
        shred_plan.DEFAULT_TIMEOUT, "--timeout", min=1, help="Seconds --wait waits."
    ),
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
    absolute = absolute_paths(paths)
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

    record("destroy", shred_plan.ACTION, details={"shred_job": job_id, "paths": count})
    if host is None or host == settings.host_name:
        # The next `shred PATH...` on this host takes the short way (shred_plan).
        shred_plan.store_plan()
    typer.echo(shred_plan.QUEUED.format(job_id=job_id, count=count, queue=shred_queue(target)))
    if wait:
        from lifecycle.cli.waiting import wait_for_shred_job

        wait_for_shred_job(job_id, timeout)


def _retry(job_id: int, wait: bool, timeout: float) -> None:
    from lifecycle.cli.operator import record
    from lifecycle.core.db import check_reachable
    from lifecycle.shred.jobs import retry_refused

    check_reachable("primary")
    n = retry_refused(job_id)
    record("destroy", "shred retry", details={"shred_job": job_id, "paths": n})
    typer.echo(f"shred job {job_id}: {n} refused or failed file(s) queued again")
    if wait:
        from lifecycle.cli.waiting import wait_for_shred_job

        wait_for_shred_job(job_id, timeout)
