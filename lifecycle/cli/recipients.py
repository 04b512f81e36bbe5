"""Third parties: `lifecycle recipients`, `lifecycle provide`, `lifecycle deliveries`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from lifecycle.cli.app import app
from lifecycle.core import dispatch

recipients_app = typer.Typer(
    help="Third parties that receive personal data (and corrections to it).",
    no_args_is_help=True,
)
app.add_typer(recipients_app, name="recipients")
deliveries_app = typer.Typer(
    help="Signed notifications owed to third parties: list, replay.", no_args_is_help=True
)
app.add_typer(deliveries_app, name="deliveries")


@recipients_app.command("add")
def recipients_add(
    name: Annotated[str, typer.Argument(help="A unique name for the third party.")],
    webhook: Annotated[
        str | None, typer.Option("--webhook", help="HTTPS endpoint for signed webhooks.")
    ] = None,
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret", help="Standard Webhooks secret (whsec_...); 'generate' makes one."
        ),
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="Address for email notices.")] = None,
    contact: Annotated[
        str | None, typer.Option("--contact", help="Who to call there (free text).")
    ] = None,
) -> None:
    """Register a third party reached by a signed webhook or by email."""
    from lifecycle.channels.webhooks import generate_secret
    from lifecycle.recipients.provisions import add_recipient

    generated = webhook is not None and secret == "generate"
    if generated:
        secret = generate_secret()
    rid = add_recipient(name, webhook=webhook, secret=secret, email=email, contact=contact)
    from lifecycle.cli.operator import record

    # Who may receive personal data from now on; the address itself is the recipient's row's.
    record("change", "recipients add",
           details={"recipient": name, "recipient_id": rid,
                    "channel": "webhook" if webhook else "email"})  # fmt: skip
    typer.echo(f"recipient {name} added (id {rid})")
    if generated:
        # Shown once: the receiver needs it to verify signatures.
        typer.echo(f"webhook secret (give it to the receiver): {secret}")


@recipients_app.command("list")
def recipients_list() -> None:
    """Recipients with their channel, provisions recorded and notifications pending."""
    from lifecycle.recipients.provisions import list_recipients

    rows = list_recipients()
    if not rows:
        typer.echo("no recipients")
        return
    typer.echo(f"{'id':>4}  {'name':<24} {'channel':<8} {'provisions':>10} {'pending':>7}  target")
    for r in rows:
        flag = "  (disabled)" if r.disabled else ""
        typer.echo(
            f"{r.id:>4}  {r.name:<24} {r.channel:<8} {r.provisions:>10} {r.pending:>7}  "
            f"{r.target}{flag}"
        )


@recipients_app.command("enable")
def recipients_enable(name: Annotated[str, typer.Argument()]) -> None:
    """Re-enable a recipient disabled after its endpoint answered 410 Gone."""
    from lifecycle.recipients.provisions import enable_recipient

    enable_recipient(name)
    typer.echo(f"recipient {name} enabled")


@app.command("provide")
def provide_cmd(
    member_id: Annotated[int, typer.Argument(help="The member's id.")],
    to: Annotated[str, typer.Option("--to", help="Recipient name (lifecycle recipients list).")],
    fields: Annotated[
        str, typer.Option("--fields", help="Comma-separated fields, e.g. name,mobile")
    ],
    basis: Annotated[str, typer.Option("--basis", help="consent or legal_request.")] = "consent",
    purpose: Annotated[
        str | None,
        typer.Option("--purpose", help="The consent purpose it was given under, e.g. marketing."),
    ] = None,
) -> None:
    """Record that a member's fields were provided to a third party (refused while restricted)."""
    from lifecycle.cli.operator import record
    from lifecycle.recipients.provisions import parse_fields, record_provision

    names = parse_fields(fields)
    pid = record_provision(member_id, to, names, basis, purpose=purpose)
    record("provide", "provide", member_id=member_id,
           details={"fields": sorted(names), "recipient": to, "provision": pid})  # fmt: skip
    typer.echo(f"provision {pid} recorded: member {member_id} -> {to}")


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


@deliveries_app.command("list")
def deliveries_list(
    failing: Annotated[
        bool, typer.Option("--failing", help="Only failed, disabled or retrying ones.")
    ] = False,
) -> None:
    """Deliveries, newest first (ids, recipients, states; never values)."""
    from lifecycle.recipients.deliveries import list_deliveries

    rows = list_deliveries(failing_only=failing)
    if not rows:
        typer.echo("no failing deliveries" if failing else "no deliveries")
        return
    typer.echo(
        f"{'id':>5}  {'recipient':<20} {'request':>7} {'state':<9} {'tries':>5} "
        f"{'last':<16} next attempt"
    )
    for d in rows:
        typer.echo(
            f"{d['id']:>5}  {d['recipient']:<20} {d['request_id'] or '-':>7} {d['state']:<9} "
            f"{d['attempts']:>5} {(d['last_status'] or '-'):<16} {_fmt_time(d['next_attempt_at'])}"
        )


@deliveries_app.command("replay")
def deliveries_replay(delivery_id: Annotated[int, typer.Argument()]) -> None:
    """Send a failed delivery again (a fresh round of the retry schedule)."""
    from lifecycle.recipients.deliveries import replay

    request_id = replay(delivery_id)
    dispatch.send(dispatch.NOTIFY_DELIVER, delivery_id)
    from lifecycle.cli.operator import record
    from lifecycle.core.db import session
    from models.recipients import Delivery, Recipient

    with session("primary") as s:
        d = s.get(Delivery, delivery_id)
        r = s.get(Recipient, d.recipient_id) if d is not None else None
        member_id, fields = (d.member_id, list(d.fields or [])) if d is not None else (None, [])
        kind = d.kind if d is not None else None
    # Sends the member's data (or a deletion notice naming fields) to a third party again.
    record("provide", "deliveries replay", member_id=member_id, request_id=request_id or None,
           details={"delivery": delivery_id, "kind": kind, "fields": sorted(fields),
                    "recipient": r.name if r is not None else None})  # fmt: skip
    typer.echo(f"delivery {delivery_id} queued for a new attempt")
