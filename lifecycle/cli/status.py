"""`lifecycle status`: open requests by state, overdue ones, the last sweep.

Minimal on purpose; the listing logic lives in ``lifecycle.status_report`` so a fuller status
(queues, workers) can build on it.
"""

from __future__ import annotations

import typer

from lifecycle.cli.app import app


@app.command("status")
def status() -> None:
    """Open requests by state, requests past the 5-day deadline, and the last sweep."""
    from lifecycle import db
    from lifecycle.settings import get_settings
    from lifecycle.status_report import (
        last_job_runs,
        ledger_entries_owed,
        open_requests_by_state,
        overdue_requests,
    )

    db.check_reachable("primary")
    days = get_settings().destruction_deadline_days
    with db.session("primary") as s:
        by_state = open_requests_by_state(s)
        overdue = overdue_requests(s, days=days)
        runs = last_job_runs(s, ("sweep",))
        owed = ledger_entries_owed(s)
    total = sum(by_state.values())
    typer.echo(f"open requests: {total}")
    for state, n in sorted(by_state.items()):
        typer.echo(f"  {state:<16} {n}")
    if overdue:
        typer.echo(f"OVERDUE (open longer than {days} days): {len(overdue)}")
        for r in overdue:
            typer.echo(f"  request {r.id} ({r.kind}, {r.state}) open {r.age_days} days")
    else:
        typer.echo(f"overdue (open longer than {days} days): none")
    if owed:
        typer.echo(f"ledger entries waiting in the outbox: {owed} (moved by the next sweep/flush)")
    for run in runs:
        counts = run.counts or {}
        typer.echo(
            f"last {run.job}: run {run.id} {run.outcome}, started {run.started_at:%Y-%m-%d %H:%M} "
            f"UTC, subjects {counts.get('subjects', 0)}, batches {counts.get('batches', 0)}"
        )
