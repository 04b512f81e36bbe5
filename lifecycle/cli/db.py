"""`lifecycle db upgrade`: migrations for both databases."""

from __future__ import annotations

import typer

from lifecycle.cli.app import app

db_app = typer.Typer(help="Database migrations (primary and archive).", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def upgrade() -> None:
    """Apply migrations to the primary and archive databases (safe to run again)."""
    from lifecycle.core.db import check_reachable
    from lifecycle.core.migrate import current_heads, upgrade_all

    check_reachable("primary")
    check_reachable("archive")
    upgrade_all()
    for which in ("primary", "archive"):
        heads = ", ".join(sorted(current_heads(which)))
        typer.echo(f"{which} database at revision {heads}")
