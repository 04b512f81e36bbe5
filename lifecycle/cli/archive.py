"""`lifecycle archive retrieve MEMBER --basis TEXT --out FILE`: retrieval with a legal basis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.cli.members import HELP, member_id_from

archive_app = typer.Typer(help="The separate archive of retained records.", no_args_is_help=True)
app.add_typer(archive_app, name="archive")


@archive_app.command("retrieve")
def retrieve(
    member: Annotated[str, typer.Argument(metavar="MEMBER_ID", help=HELP)],
    basis: Annotated[
        str, typer.Option("--basis", help="Why the law allows producing it (required).")
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="New file for the records (created with mode 0600)."),
    ] = None,
    operator: Annotated[
        str, typer.Option("--operator", help="Who retrieves (default: the OS user).")
    ] = "",
) -> None:
    """Decrypt one member's retained records to a new file; the ledger names who and why."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.core.errors import UserError
    from lifecycle.vault import accesslog
    from lifecycle.vault.retrieval import check_basis, retrieve_member

    check_basis(basis)
    if out is None:
        raise UserError("--out FILE is required")
    member_id = member_id_from(member, former=True)
    who = current(operator)
    with db.session("archive") as a:
        got = retrieve_member(a, member_id, basis=basis, operator=who, out=out)
        # Same transaction as the ledger entry: both name the operator, or neither exists.
        accesslog.record(
            a, operator=who, kind="read", action="archive retrieve", member_id=member_id,
            details={"records": got.records, "categories": list(got.categories)},
        )  # fmt: skip
    typer.echo(
        f"{got.records} archived record(s) of member {member_id} written to {out}"
        + (f"; {got.destroyed} already destroyed" if got.destroyed else "")
    )
