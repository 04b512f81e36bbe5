"""`lifecycle sweep` and `lifecycle purge` (each with --dry-run and --wait)."""

from __future__ import annotations

from typing import Any

import typer

from lifecycle.cli.app import app
from lifecycle.core import dispatch


def _print_counts(label: str, counts: Any) -> None:
    if not isinstance(counts, dict):
        typer.echo(f"{label}: {counts}")
        return
    if "skipped" in counts:
        typer.echo(f"{label}: skipped ({counts['skipped']})")
        return
    body = ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    typer.echo(f"{label} done: {body}")


@app.command("sweep")
def sweep(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would happen; change nothing."
    ),
    wait: bool = typer.Option(False, "--wait", help="Block until done, with progress."),
    batch_size: int = typer.Option(
        0, "--batch-size", min=0, help="Members per batch (0: default)."
    ),
) -> None:
    """Nightly purpose-end sweep, now: archive or destroy every record whose purpose ended."""
    from lifecycle.core.db import check_reachable
    from lifecycle.engine.context import get_context

    check_reachable("primary")
    check_reachable("archive")
    ctx = get_context()
    if dry_run:
        from lifecycle.engine.preview import describe_held, held_summary, sweep_preview

        lines = sweep_preview(ctx)
        held = describe_held(held_summary(ctx))
        if held:
            typer.echo(f"held: {held}")
        if not lines:
            typer.echo("dry run: nothing to do (no record's purpose has ended)")
            return
        typer.echo(f"{'phase':<11} {'table':<22} {'category':<14} {'action':<8} "
                   f"{'rows':>9} {'subjects':>9}  retention")  # fmt: skip
        for ln in lines:
            typer.echo(
                f"{ln.phase:<11} {ln.table:<22} {ln.category:<14} {ln.action:<8} "
                f"{ln.rows:>9} {ln.subjects:>9}  {ln.retention}"
            )
        arch = sum(ln.rows for ln in lines if ln.action == "archive")
        dest = sum(ln.rows for ln in lines if ln.action == "destroy")
        typer.echo(f"dry run: would archive {arch} and destroy {dest} row parts; nothing changed")
        return
    from workers.broker import check_broker

    check_broker()  # one line (nothing started) rather than a send that retries and fails
    kwargs: dict[str, Any] = {"member_batch": batch_size} if batch_size else {}
    from lifecycle.cli.operator import record

    result = dispatch.send(dispatch.SWEEP_RUN, **kwargs)
    record("destroy", "sweep (started)", details={"task_id": result.id})
    typer.echo(f"sweep started (task {result.id})")
    if wait:
        from lifecycle.cli.waiting import wait_for_task

        # The run row is the verdict: the coordinator task may be cancelled (a Redis restart)
        # and its run resumed by the watchdog's copy.
        _print_counts("sweep", wait_for_task(result, "sweep", run_job="sweep"))


@app.command("purge")
def purge(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print what would happen; change nothing."
    ),
    wait: bool = typer.Option(False, "--wait", help="Block until done, with progress."),
) -> None:
    """Destroy archived data whose retention period ended, and its keys (crypto-shredding)."""
    from lifecycle.core.db import check_reachable
    from lifecycle.engine.context import get_context

    check_reachable("primary")
    check_reachable("archive")
    if dry_run:
        from lifecycle.engine.purge import purge_preview

        ctx = get_context()
        buckets = purge_preview(ctx)
        if not buckets:
            typer.echo(
                f"dry run: nothing to purge (no retention period ended before {ctx.today()})"
            )
            return
        typer.echo(f"{'key':>6} {'category':<14} {'retain_until':<12} {'rows':>9} "
                   f"{'subjects':>9} {'held':>6}  tables")  # fmt: skip
        for b in buckets:
            held = f"{b.held_rows}" if b.held_rows else "-"
            typer.echo(
                f"{b.key_id:>6} {b.category:<14} {b.retain_until.isoformat():<12} {b.rows:>9} "
                f"{b.subjects:>9} {held:>6}  {', '.join(b.tables)}"
            )
        held_rows = sum(b.held_rows for b in buckets)
        hold_ids = sorted({i for b in buckets for i in b.held_by})
        if held_rows:
            typer.echo(
                f"held: {held_rows} archived rows kept by legal holds "
                f"{', '.join(map(str, hold_ids))} (re-encrypted under the hold's key)"
            )
        typer.echo(
            f"dry run: would delete {sum(b.rows for b in buckets) - held_rows} archived rows "
            f"and destroy {sum(1 for b in buckets if b.key_live)} keys; nothing changed"
        )
        return
    from lifecycle.cli.operator import record
    from workers.broker import check_broker

    check_broker()
    result = dispatch.send(dispatch.PURGE_RUN)
    record("destroy", "purge (started)", details={"task_id": result.id})
    typer.echo(f"purge started (task {result.id})")
    if wait:
        from lifecycle.cli.waiting import wait_for_task

        _print_counts("purge", wait_for_task(result, "purge"))
