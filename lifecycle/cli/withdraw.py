"""`lifecycle withdraw MEMBER_ID [--wait]`: what the website does when a member withdraws."""

from __future__ import annotations

import typer

from lifecycle.cli.app import app
from lifecycle.cli.members import HELP, member_id_from


@app.command("withdraw")
def withdraw(
    member_id: str = typer.Argument(
        ...,
        metavar="MEMBER_ID",
        help=HELP,
    ),
    wait: bool = typer.Option(False, "--wait", help="Block until done, with progress."),
    timeout: float = typer.Option(3600, help="With --wait: give up after this many seconds."),
    requester: str = typer.Option("member", "--requester", help="member, guardian, delegate."),
    requester_name: str | None = typer.Option(None, "--requester-name", help="Who asks."),
    requester_contact: str | None = typer.Option(None, "--requester-contact", help="Email."),
    verified_by: str | None = typer.Option(None, "--verified-by", help="login or document."),
) -> None:
    """Withdraw a member (회원탈퇴): mark withdrawn and request the lifecycle to carry it out."""
    from lifecycle.core.db import check_reachable
    from lifecycle.engine.context import get_context
    from lifecycle.requests.client import dispatch_now
    from lifecycle.rights.common import check_requester_now, make_requester, record_requester
    from lifecycle.rights.withdrawal import submit_withdrawal

    who = make_requester(requester, requester_name, requester_contact, verified_by)
    mid = member_id_from(member_id)
    check_reachable("primary")
    from lifecycle.cli.operator import current, record

    ctx = get_context()
    if who.kind != "member":
        check_requester_now(mid, who)
    request_id = submit_withdrawal(ctx, mid, actor=current())
    # Recorded before the dispatch below; the withdrawal job itself does not read it.
    record_requester(request_id, who)
    record("destroy", "withdraw (request)", member_id=mid, request_id=request_id)
    if dispatch_now(request_id):
        typer.echo(f"withdrawal request {request_id} for member {mid} submitted")
    else:
        # Committed already: the relay sends it once the broker is back.
        typer.echo(
            f"withdrawal request {request_id} for member {mid} stored; broker unreachable, "
            "the relay will dispatch it",
            err=True,
        )
    if wait:
        from lifecycle.cli.waiting import wait_for_request

        state = wait_for_request(request_id, timeout=timeout)
        typer.echo(f"withdrawal request {request_id}: {state}")
