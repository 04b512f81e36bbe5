"""`lifecycle hold add|list|release`: legal holds (보존 명령) on a member, request or category."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import UserError

hold_app = typer.Typer(
    help="Legal holds: keep a member's, a request's or a category's data from the purge, the "
    "sweep and withdrawals until released.",
    no_args_is_help=True,
)
app.add_typer(hold_app, name="hold")


def _parse_date(raw: str) -> date:
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise UserError(f"--until must be a date YYYY-MM-DD, not {raw!r}") from None


def _positive(raw: str | None, what: str) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise UserError(f"{what} must be a positive integer")
    return int(text)


@hold_app.command("add")
def add_cmd(
    member: Annotated[str | None, typer.Option("--member", help="A member's id.")] = None,
    request: Annotated[
        str | None, typer.Option("--request", help="A request's id (holds its member).")
    ] = None,
    category: Annotated[
        str | None, typer.Option("--category", help="A data-map category, e.g. payment.")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (a case number; no personal data).")
    ] = "",
    until: Annotated[str, typer.Option("--until", help="Last day of the hold, YYYY-MM-DD.")] = "",
) -> None:
    """Put data on legal hold: nothing of it is archived, destroyed or purged until released."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.rights import hold_actions

    if not until:
        raise UserError("--until DATE is required (the last day of the hold, YYYY-MM-DD)")
    day = _parse_date(until)
    mid = _positive(member, "--member")
    rid = _positive(request, "--request")
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    placed = hold_actions.add(
        who,
        member_id=mid,
        request_id=rid,
        category=category.strip() if category else None,
        reason=reason,
        until=day,
    )
    hid, scope = placed.hold_id, placed.scope
    typer.echo(f"hold {hid} ({scope}) active until {day.isoformat()}")


@hold_app.command("list")
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Released and expired holds too.")] = False,
) -> None:
    """Active holds (with --all: every hold)."""
    from sqlalchemy import select

    from lifecycle.cli.operator import record
    from lifecycle.core import db
    from lifecycle.engine.context import get_context
    from lifecycle.requests import holds
    from models.guards import LegalHold

    db.check_reachable("primary")
    today = get_context().today()
    with db.session("primary") as p:
        rows = (
            list(p.scalars(select(LegalHold).order_by(LegalHold.id)))
            if all_
            else holds.active(p, today)
        )
        lines = []
        for h in rows:
            what = (
                f"member {h.member_id}"
                if h.scope == "member"
                else f"request {h.request_id} (member {h.member_id})"
                if h.scope == "request"
                else f"category {h.category}"
            )
            state = (
                f"released {h.released_at:%Y-%m-%d} by {h.released_by}"
                if h.released_at
                else "expired"
                if h.until < today
                else "active"
            )
            lines.append(
                f"{h.id:>5}  {what:<32} until {h.until.isoformat()}  {state:<10} "
                f"by {h.created_by}: {h.reason}"
            )
        members = sorted({h.member_id for h in rows if h.member_id is not None})
    if not lines:
        typer.echo("no active holds" if not all_ else "no holds")
        return
    for ln in lines:
        typer.echo(ln)
    # The list names members: a read of personal data, logged like one.
    for m in members:
        record("read", "hold list", member_id=m)


@hold_app.command("release")
def release_cmd(hold_id: Annotated[str, typer.Argument(metavar="HOLD_ID")]) -> None:
    """Release a hold; the next purge and sweep destroy what it kept, held withdrawals resume."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db, dispatch
    from lifecycle.rights import hold_actions

    hid = _positive(hold_id, "HOLD_ID")
    assert hid is not None
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    parked = hold_actions.release(who, hid).parked_withdrawals
    typer.echo(f"hold {hid} released")
    for rid in parked:
        # Another hold may still cover the member: the request then stops again by itself.
        try:
            dispatch.send(dispatch.WITHDRAW, rid)
            typer.echo(f"withdrawal request {rid} dispatched again")
        except Exception as exc:
            typer.echo(
                f"withdrawal request {rid} not dispatched ({type(exc).__name__}); the relay "
                "re-sends stalled requests",
                err=True,
            )
