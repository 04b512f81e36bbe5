"""`lifecycle withdraw MEMBER_ID [--wait]`: what the website does when a member withdraws."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from lifecycle.cli.app import app
from lifecycle.cli.members import HELP, member_id_from

if TYPE_CHECKING:
    from sqlalchemy import Connection


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
    # The submit path (the website runs it for every withdrawal) imports neither the engine nor
    # Celery: they would triple its start-up. The request goes to the outbox, and the relay
    # sends it to a worker, which checks the whole map against the database when it runs it.
    from lifecycle.cli.operator import current, record
    from lifecycle.cli.submit_plan import ACTION, SUBMITTED, store_plan
    from lifecycle.core.db import check_reachable
    from lifecycle.datamap.current import current_datamap
    from lifecycle.rights.intake import make_requester, subject_table, submit_withdrawal

    who = make_requester(requester, requester_name, requester_contact, verified_by)
    mid = member_id_from(member_id)
    check_reachable("primary")
    subject = current_datamap().subject
    if who.kind != "member":
        # A guardian's name is checked against the map's guardian tables: the full context.
        from lifecycle.rights.common import check_requester_now

        check_requester_now(mid, who)
    request_id = submit_withdrawal(
        subject,
        subject_table(subject),
        mid,
        actor=current(),
        requester=who,
        kept_row_processed=_kept_row_processed if subject.keep_row else None,
    )
    record("destroy", ACTION, member_id=mid, request_id=request_id)
    # The next plain `withdraw MEMBER_ID` may then skip this module's libraries.
    store_plan(subject)
    submitted = SUBMITTED.format(request_id=request_id, member_id=mid)
    if not wait:
        typer.echo(submitted)
        return
    # Waiting anyway: send it now rather than on the relay's next tick.
    from lifecycle.requests.client import dispatch_now

    if dispatch_now(request_id):
        typer.echo(submitted)
    else:
        # Committed already: the relay sends it once the broker is back.
        typer.echo(
            f"withdrawal request {request_id} for member {mid} stored; broker unreachable, "
            "the relay will dispatch it",
            err=True,
        )
    from lifecycle.cli.waiting import wait_for_request

    state = wait_for_request(request_id, timeout=timeout)
    typer.echo(f"withdrawal request {request_id}: {state}")


def _kept_row_processed(conn: Connection, member_id: int) -> bool:
    """Whether a member already marked withdrawn, on a map that keeps the member row blank, had
    that row blanked already. Only then is the whole map (the engine's context) needed."""
    from lifecycle.engine.context import get_context
    from lifecycle.rights.withdrawal import kept_row_processed

    return kept_row_processed(get_context(), conn, member_id)
