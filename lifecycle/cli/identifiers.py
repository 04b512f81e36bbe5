"""`lifecycle identifiers destroy CATEGORY --reason TEXT [--dry-run] [--force] [--wait]`.

Clears a unique identifier (고유식별정보) the data map flags under ``unique_identifiers:`` in
every live row (active members too), as a Celery job visible in Flower; see
``lifecycle.engine.identifiers``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.core import dispatch

identifiers_app = typer.Typer(
    help="Unique identifiers (고유식별정보: 주민등록번호 ...) the data map flags.",
    no_args_is_help=True,
)
app.add_typer(identifiers_app, name="identifiers")


@identifiers_app.command("destroy")
def destroy_cmd(
    category: Annotated[str, typer.Argument(help="The flagged category, e.g. rrn.")],
    reason: Annotated[
        str, typer.Option("--reason", help="Why (recorded in the ledger; no personal data).")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be cleared; change nothing.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="Also for a category the map holds under a statute."),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=10_000)] = 500,
    wait: Annotated[bool, typer.Option("--wait", help="Block until done, with progress.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 6 * 3600.0,
) -> None:
    """Clear CATEGORY's columns in every live row (NULL, or the column's blank value), in
    batches, with a ledger entry per member (keyed pseudonym, never values). Refused for an
    unknown or unflagged category, and for one held under a statute unless --force. Re-running
    resumes an unfinished run."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable
    from lifecycle.datamap.identifiers import destroyable
    from lifecycle.engine.context import get_context
    from lifecycle.engine.identifiers import census, check_clearable, start

    check_reachable("primary")
    check_reachable("archive")
    who = current()
    ctx = get_context()
    if dry_run:
        destroyable(ctx.datamap, category, force=force)
        check_clearable(ctx, category)
        with ctx.primary.connect() as conn:
            found = census(conn, ctx.datamap, ctx.metadata, category, ctx.today())
        for c in found:
            held = f", {c.held} held by legal holds (left)" if c.held else ""
            typer.echo(f"{c.table}.{','.join(c.columns)}: {c.rows} rows hold a value{held}")
        rows = sum(c.rows - c.held for c in found)
        record("read", "identifiers destroy --dry-run",
               details={"category": category, "rows": rows})  # fmt: skip
        typer.echo(f"dry run: would clear {category} in {rows} rows; nothing changed")
        return
    from workers.broker import check_broker

    check_broker()
    run_id, resumed = start(ctx, category, reason, who, force=force)
    result = dispatch.send(dispatch.IDENTIFIERS_DESTROY, run_id, batch=batch_size)
    record("destroy", "identifiers destroy (started)",
           details={"category": category, "run": run_id, "task_id": result.id,
                    "resumed": resumed, "forced": force})  # fmt: skip
    what = "resumed" if resumed else "started"
    typer.echo(f"identifier destruction {what}: {category} (run {run_id}, task {result.id})")
    if wait:
        from lifecycle.cli.waiting import wait_for_task

        counts = wait_for_task(result, f"identifiers destroy {category}", timeout=timeout)
        if isinstance(counts, dict) and "skipped" in counts:
            typer.echo(f"identifiers destroy: skipped ({counts['skipped']})")
            return
        body = ", ".join(f"{k}={v}" for k, v in sorted(dict(counts or {}).items()))
        typer.echo(f"identifiers destroy done: {body}")
        if isinstance(counts, dict) and counts.get("held"):
            typer.echo(
                f"held: {counts['held']} rows kept by legal holds (lifecycle hold list); "
                f"re-run after the release"
            )
