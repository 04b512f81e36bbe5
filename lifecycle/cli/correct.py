"""`lifecycle correct MEMBER_ID --set FIELD=VALUE ... [--wait]`: what the website does on a
correction request (정정 요구)."""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.cli.app import app


@app.command("correct")
def correct_cmd(
    member_id: Annotated[int, typer.Argument(help="The member's id.")],
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="FIELD=VALUE to correct (repeat for several fields). Dates as YYYY-MM-DD.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Block until done (third parties notified).")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 3600.0,
) -> None:
    """Correct a member's data. Every field and value is checked first; on any error nothing is
    created or changed. Third parties that received a changed field are told its new value."""
    from lifecycle.cli.operator import current, record
    from lifecycle.rights.correction import parse_assignments, submit_correction

    values = parse_assignments(assignments or [])
    who = current()
    request_id = submit_correction(member_id, values, actor=who)
    record("change", "correct (request)", member_id=member_id, request_id=request_id,
           details={"fields": sorted(values)})  # fmt: skip
    typer.echo(f"correction request {request_id} submitted for member {member_id}")
    if wait:
        from lifecycle.cli.waiting import wait_for_request

        state = wait_for_request(request_id, timeout=timeout)
        typer.echo(f"request {request_id} {state}")
