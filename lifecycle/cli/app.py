"""The Typer application every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lifecycle",
    help="Personal-data lifecycle workers (PIPA): archive, destroy, shred, correct, notify.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _global_options(
    operator: str = typer.Option(
        "",
        "--operator",
        help="Who runs this command (default: the OS user); recorded in the ledger, the "
        "access log and the requests it creates.",
    ),
) -> None:
    """Personal-data lifecycle workers (PIPA): archive, destroy, shred, correct, notify."""
    from lifecycle.cli.operator import set_global

    set_global(operator)
