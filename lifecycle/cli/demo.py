"""`lifecycle demo seed`: fill the demo website's tables with fake Korean members."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import UserError

demo_app = typer.Typer(help="The demo counselling centre's website.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@demo_app.command("seed")
def seed_cmd(
    members: Annotated[
        int, typer.Option("--members", help="How many members to add (at least 1).")
    ],
    files: Annotated[
        bool,
        typer.Option("--files", help="Also write small uploaded files under the first file root."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 0,
) -> None:
    """Add N fake members with their counselling, payments, logs, ... (after the highest id)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from lifecycle.core.db import check_reachable, engine
    from lifecycle.core.settings import get_settings

    if members < 1:
        raise UserError(f"--members must be at least 1, got {members}")
    # Imported here, not at the top: demo_seed needs Faker, which only the optional `demo` extra
    # installs, and every other command must work without it.
    try:
        from lifecycle.ops.demo_seed import create_schema
        from lifecycle.ops.demo_seed import seed as run_seed
    except ModuleNotFoundError as exc:
        if exc.name != "faker":
            raise
        raise UserError(
            "the demo needs Faker, which is not installed; install the demo extra: "
            "pip install -e '.[demo]' (or bash scripts/install.sh demo)"
        ) from None
    settings = get_settings()
    check_reachable("primary")
    eng = engine("primary")
    create_schema(eng)
    root = settings.file_roots[0]
    started = time.monotonic()
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task("seeding members", total=members)
        counts = run_seed(
            eng,
            members,
            files=files,
            file_root=root,
            seed=seed,
            progress=lambda done: bar.update(task, completed=done),
        )
    elapsed = time.monotonic() - started
    rows = sum(v for k, v in counts.items() if k != "files")
    typer.echo(f"seeded {members} members: {rows} rows in {elapsed:.1f}s")
    for name, n in counts.items():
        if name != "files":
            typer.echo(f"  {name}: {n}")
    if files:
        typer.echo(f"  files written under {root}: {counts['files']}")
