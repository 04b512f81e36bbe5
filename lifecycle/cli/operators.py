"""`lifecycle operators add|list|disable`: the register of operators the access log names.

See :mod:`lifecycle.vault.operators`: once anyone is registered, every command resolves to the
registered operator of the OS account running it, and an unregistered account is refused.
"""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.cli.app import app

operators_app = typer.Typer(
    help="Registered operators (처리자): the OS accounts the access log names.",
    no_args_is_help=True,
)
app.add_typer(operators_app, name="operators")


@operators_app.command("add")
def add_cmd(
    login: Annotated[str, typer.Argument(help="The OS account (as `whoami` prints it).")],
    name: Annotated[str, typer.Option("--name", help="The person's name, as the log shows it.")],
) -> None:
    """Register an OS account as an operator (or re-enable a disabled one)."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable, session
    from lifecycle.vault import operators

    check_reachable("primary")
    current()  # once the register has anyone, only a registered operator adds the next
    with session("primary") as s:
        info = operators.add(s, login, name)
    record("change", "operators add", details={"operator_id": info.id})
    typer.echo(f"operator {info.id} registered: {info.recorded}")


@operators_app.command("disable")
def disable_cmd(login: Annotated[str, typer.Argument(help="The OS account.")]) -> None:
    """Disable an operator: their account is refused from now on; old entries keep the name."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable, session
    from lifecycle.vault import operators

    check_reachable("primary")
    current()
    with session("primary") as s:
        info = operators.disable(s, login)
    record("change", "operators disable", details={"operator_id": info.id})
    typer.echo(f"operator {info.id} disabled: {info.recorded}")


@operators_app.command("list")
def list_cmd() -> None:
    """Every registered operator, active or disabled."""
    from lifecycle.core.db import check_reachable, session
    from lifecycle.vault import operators

    check_reachable("primary")
    with session("primary") as s:
        rows = operators.listing(s)
    if not rows:
        typer.echo("no operators registered: commands record --operator or the OS user")
        return
    for o in rows:
        state = f"disabled {o.disabled_at:%Y-%m-%d}" if o.disabled_at else "active"
        typer.echo(f"{o.id:>4}  {o.login:<20} {o.name:<20} {state}")
