"""`lifecycle datamap check`: validate the data map (and, by default, against the primary DB)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lifecycle.cli.app import app

datamap_app = typer.Typer(
    help="The data map: which tables/columns hold which personal data, and for how long.",
    no_args_is_help=True,
)
app.add_typer(datamap_app, name="datamap")


@datamap_app.command("check")
def check_cmd(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Map to check (default: LIFECYCLE_DATA_MAP or the demo map)."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not compare with the primary database.")
    ] = False,
) -> None:
    """Validate the map; print each table's categories, periods and legal bases."""
    from lifecycle.datamap.loader import load_datamap

    dm = load_datamap(file)
    if not offline:
        from lifecycle.core.db import check_reachable, engine

        check_reachable("primary")
        dm.validate_against(engine("primary"))
    for t in dm.tables_in_dependency_order():
        ends = ", ".join(p.kind if p.kind != "age" else f"age({p.column})" for p in t.purpose_end)
        typer.echo(f"{t.name}  [purpose end: {ends}]")
        for cat in t.categories:
            r = t.retention_for(cat)
            src = " (default)" if r.default else ""
            typer.echo(f"  {cat:<14} {r.period!s:>5}{src}  {r.legal_basis}")
    where = "checked against the primary database" if not offline else "not compared with a DB"
    typer.echo(f"data map {dm.source}: OK ({len(dm.tables)} tables, {where})")
