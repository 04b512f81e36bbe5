"""`lifecycle notice policy ...`: individual notice of a privacy-policy change to every member."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo

import typer

from lifecycle.cli.app import app
from lifecycle.core import dispatch
from lifecycle.core.errors import LifecycleError, UserError, reading

notice_app = typer.Typer(help="Individual notices to members.", no_args_is_help=True)
app.add_typer(notice_app, name="notice")


class NoticeFailed(LifecycleError):
    exit_code = 1


def _read_body(path: Path) -> str:
    with reading(path, "body file"):
        body = path.read_text(encoding="utf-8")
    if not body.strip():
        raise UserError(f"body file {path} is empty")
    return body


def _parse_date(text: str | None) -> date:
    from lifecycle.core.settings import get_settings

    if text is None:
        from datetime import datetime

        return datetime.now(ZoneInfo(get_settings().timezone)).date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise UserError("--effective-date must be a date YYYY-MM-DD") from None


@notice_app.command("policy")
def policy_cmd(
    version: Annotated[str, typer.Option("--version", help="The policy version, e.g. 2.1.")],
    title: Annotated[str, typer.Option("--title", help="One-line summary of the change.")],
    body_file: Annotated[
        Path, typer.Option("--body-file", help="UTF-8 text file: what changes and why.")
    ],
    effective_date: Annotated[
        str | None,
        typer.Option("--effective-date", help="YYYY-MM-DD the new policy applies (default today)."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Block until every notice is sent.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 6 * 3600.0,
    record_only: Annotated[
        bool,
        typer.Option(
            "--record-only",
            help="No mail server on purpose: record the notice, every member as not sent (they "
            "are sent once one is configured, or with `notice resend ID --not-sent`).",
        ),
    ] = False,
) -> None:
    """Send every active member an individual notice of a policy change (batched, rate-limited).

    Running it again with the same version resumes the same notice: nobody gets it twice, and
    members recorded "not sent" for want of a mail server are sent now if there is one."""
    from lifecycle.channels.mailer import smtp_config
    from lifecycle.notices.members import (
        check_policy_input,
        create_policy_notice,
        requeue_not_sent,
    )

    body = _read_body(body_file)
    eff = _parse_date(effective_date)
    check_policy_input(version, title, body)
    if smtp_config() is None and not record_only:
        raise UserError(_NO_CHANNEL)
    notice_id, created = create_policy_notice(version, title, body, eff)
    if not created and smtp_config() is not None:
        # Here rather than only in the fan-out job, so --wait below never reads the notice
        # as finished before the job has put these rows back.
        requeue_not_sent(notice_id)
    from lifecycle.cli.operator import record

    # The fan-out reads every member's contact: the operator who started it is on record.
    record("read", "notice policy (fan-out)", details={"notice_id": notice_id})
    result = dispatch.send(dispatch.NOTICE_FANOUT, notice_id)
    verb = "created" if created else "resumed"
    typer.echo(f"policy notice {notice_id} (version {version}) {verb}; fan-out job {result.id}")
    if wait:
        _wait_notice(notice_id, timeout, record_only=record_only)


_NO_CHANNEL = (
    "no mail server: LIFECYCLE_SMTP_URL is not set, so no member would receive this notice; "
    "set it (for the workers too), or pass --record-only to record it as not sent for now"
)


@notice_app.command("resend")
def resend_cmd(
    notice_id: Annotated[int, typer.Argument(help="The notice to send on.")],
    not_sent: Annotated[
        bool,
        typer.Option(
            "--not-sent",
            help="Send the rows recorded 'not sent' (no mail server then, or no address): "
            "they never reached a server, so nobody gets a second copy.",
        ),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the notice is done.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 6 * 3600.0,
) -> None:
    """Send a notice's rows that were recorded as not sent (exit 2 and nothing changed if no
    mail server is configured)."""
    from lifecycle.channels.mailer import smtp_config
    from lifecycle.core.db import session
    from lifecycle.notices.members import (
        NO_ADDRESS,
        NO_CHANNEL,
        enqueue_batch,
        pending_ranges,
        requeue_not_sent,
    )
    from models.notices import Notice

    if not not_sent:
        raise UserError("say what to resend: --not-sent (in-doubt rows: `notice reconcile`)")
    if smtp_config() is None:
        raise UserError(_NO_CHANNEL.replace("this notice", "it"))
    with session("primary") as s:
        if s.get(Notice, notice_id) is None:
            raise UserError(f"notice {notice_id} does not exist")
    rows = requeue_not_sent(notice_id, (NO_CHANNEL, NO_ADDRESS)).get(notice_id, 0)
    ranges = pending_ranges(notice_id)
    for first, last in ranges:
        enqueue_batch(notice_id, first, last)
    typer.echo(
        f"notice {notice_id}: {rows} not-sent row(s) queued again; {len(ranges)} batch(es) enqueued"
    )
    if wait:
        _wait_notice(notice_id, timeout)


def _wait_notice(
    notice_id: int, timeout: float, poll: float = 1.0, record_only: bool = False
) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from lifecycle.notices.members import progress

    console = Console(stderr=True)
    deadline = time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task(f"notice {notice_id}", total=None, state="pending")
        while True:
            p = progress(notice_id)
            done = p["sent"] + p["not_sent"] + p["failed"] + p["in_doubt"]
            bar.update(task, total=p["total"] or None, completed=done, state=p["state"])
            if p["state"] == "completed" and not p["pending"]:
                break
            if time.monotonic() > deadline:
                raise NoticeFailed(
                    f"notice {notice_id} still sending after {timeout:.0f}s ({done} of "
                    f"{p['total']} done); is a worker running? (lifecycle status)"
                )
            time.sleep(poll)
    typer.echo(
        f"notice {notice_id}: {p['sent']} sent, {p['not_sent']} not sent, {p['failed']} failed "
        f"of {p['total']}"
    )
    problems = []
    if p["no_channel"] and not record_only:
        # The worker that ran the batches has no mail server: a legal notice that reached
        # nobody must not look like success.
        problems.append(
            f"{p['no_channel']} not sent because the worker has no mail server "
            f"(LIFECYCLE_SMTP_URL); configure it and run `lifecycle notice resend {notice_id} "
            "--not-sent`"
        )
    elif p["not_sent"]:
        typer.echo(
            "warning: some notices were not sent (no SMTP server configured in "
            "LIFECYCLE_SMTP_URL, or the member has no usable email address)",
            err=True,
        )
    if p["in_doubt"]:
        # Exit 1 like refused addresses: the notice is done, but only the operator can settle
        # these (reconcile), and a script running --wait must notice.
        typer.echo(
            f"notice {notice_id}: {p['in_doubt']} in doubt (the mail server may or may not "
            f"have accepted them; not resent). Resolve with: lifecycle notice reconcile "
            f"{notice_id} --mail-log FILE (or --assume-delivered / --resend)"
        )
        problems.append(f"{p['in_doubt']} notice(s) in doubt, need reconcile")
    if p["failed"]:
        problems.append(f"{p['failed']} address(es) refused by the mail server")
    if problems:
        raise NoticeFailed(f"notice {notice_id}: " + "; ".join(problems))


@notice_app.command("reconcile")
def reconcile_cmd(
    notice_id: Annotated[int, typer.Argument(help="The notice whose in-doubt rows to settle.")],
    mail_log: Annotated[
        list[Path] | None,
        typer.Option(
            "--mail-log",
            help="The MTA's log (e.g. Postfix's maillog; repeat for rotated files). Members "
            "whose Message-ID it shows accepted are marked sent; the others are sent again.",
        ),
    ] = None,
    assume_delivered: Annotated[
        bool,
        typer.Option("--assume-delivered", help="No log: mark every in-doubt row sent."),
    ] = False,
    resend: Annotated[
        bool,
        typer.Option("--resend", help="No log: send every in-doubt row again (may duplicate)."),
    ] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Block until the notice is done.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 6 * 3600.0,
) -> None:
    """Settle the rows of a notice that are in doubt (a session or worker died after the end of
    DATA, so the mail server may or may not have accepted the message).

    Exactly one of --mail-log, --assume-delivered, --resend."""
    from lifecycle.notices.reconcile import reconcile

    r = reconcile(
        notice_id, mail_logs=mail_log or None, assume_delivered=assume_delivered, resend=resend
    )
    if not r.in_doubt:
        typer.echo(f"notice {notice_id}: nothing in doubt")
    else:
        typer.echo(
            f"notice {notice_id}: {r.in_doubt} in doubt: {r.delivered} marked sent, "
            f"{r.resend} to be sent again"
        )
    if r.batches:
        typer.echo(f"notice {notice_id}: {r.batches} batch(es) enqueued")
    if wait:
        _wait_notice(notice_id, timeout)
