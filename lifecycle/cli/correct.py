"""`lifecycle correct MEMBER_ID --set FIELD=VALUE ... [--wait]`: what the website does on a
correction request (정정 요구)."""

from __future__ import annotations

from typing import Annotated

import typer

from lifecycle.cli.app import app


@app.command("correct")
def correct_cmd(
    member_id: Annotated[
        str,
        typer.Argument(
            help="The member's id: the site's own (e.g. lee_mh7) when the map names a login_column."
        ),
    ],
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
    requester: Annotated[
        str, typer.Option("--requester", help="Who asks: member, guardian, delegate.")
    ] = "member",
    requester_name: Annotated[
        str | None, typer.Option("--requester-name", help="The guardian's or delegate's name.")
    ] = None,
    requester_contact: Annotated[
        str | None, typer.Option("--requester-contact", help="Email for the written answer.")
    ] = None,
    verified_by: Annotated[
        str | None, typer.Option("--verified-by", help="login or document.")
    ] = None,
) -> None:
    """Correct a member's data. Every field and value is checked first; on any error nothing is
    created or changed. Third parties that received a changed field are told its new value."""
    from lifecycle.cli.members import member_id_from
    from lifecycle.cli.operator import current, record
    from lifecycle.rights.correction import parse_assignments, submit_correction
    from lifecycle.rights.intake import make_requester

    values = parse_assignments(assignments or [])
    who = make_requester(requester, requester_name, requester_contact, verified_by)
    mid = member_id_from(member_id)
    # Not waiting: the relay sends it, and the command never imports Celery.
    request_id = submit_correction(mid, values, who, actor=current(), dispatch=wait)
    record("change", "correct (request)", member_id=mid, request_id=request_id,
           details={"fields": sorted(values)})  # fmt: skip
    typer.echo(f"correction request {request_id} submitted for member {mid}")
    if wait:
        from lifecycle.cli.waiting import wait_for_request

        state = wait_for_request(request_id, timeout=timeout)
        typer.echo(f"request {request_id} {state}")
