"""`lifecycle incident open|list|show|notify|report|submitted|close`: personal-data breaches
(개인정보 유출등, 개인정보 보호법 제34조) and their 72-hour clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from lifecycle.cli.app import app
from lifecycle.core.errors import LifecycleError, UserError, reading
from lifecycle.core.timeutil import as_utc

incident_app = typer.Typer(
    help="Personal-data breaches (개인정보 유출등, 제34조): who is affected, telling them, the "
    "report to the regulator, the 72-hour clock.",
    no_args_is_help=True,
)
app.add_typer(incident_app, name="incident")


class IncidentUnfinished(LifecycleError):
    exit_code = 1


def _tz() -> ZoneInfo:
    from lifecycle.core.settings import get_settings

    return ZoneInfo(get_settings().timezone)


def _when(raw: str, what: str) -> datetime:
    """An ISO date-time; without an offset it is the site's local time (Asia/Seoul)."""
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise UserError(
            f"{what} must be a date-time YYYY-MM-DDTHH:MM[+09:00], not {raw!r}"
        ) from None
    # UTC from here on: a naive DATETIME on MariaDB holds UTC, and PyMySQL drops the offset.
    return as_utc(value if value.tzinfo else value.replace(tzinfo=_tz()))


def _incident_id(raw: str) -> int:
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0 or len(text) > 18:
        raise UserError("ID must be a positive integer")
    return int(text)


def _read(path: Path, what: str) -> str:
    with reading(path, what):
        text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise UserError(f"{what} {path} is empty")
    return text


def _split(values: list[str] | None) -> list[str]:
    return [v for raw in values or [] for v in raw.split(",")]


def _local(iso: str | None) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(_tz()).strftime("%Y-%m-%d %H:%M")


def _report(r: dict[str, Any]) -> str:
    """The report's state in a few words: drafting is not submitting."""
    state = r["report_state"]
    if state == "submitted":
        receipt = f", 접수번호 {r['submission_receipt']}" if r["submission_receipt"] else ""
        return f"submitted {_local(r['submitted_at'])} to {r['submitted_to']}{receipt}"
    if state == "drafted":
        due = "due, " if r["report_grounds"] else ""
        return f"drafted {_local(r['reported_at'])} ({due}not submitted)"
    return "due, not drafted" if state == "due" else "-"


def _left(seconds: int) -> str:
    s = abs(int(seconds))
    text = f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{text} left" if seconds >= 0 else f"overdue by {text}"


@incident_app.command("open")
def open_cmd(
    categories: Annotated[
        list[str] | None,
        typer.Option(
            "--categories", help="Data-map categories exposed (comma-separated or repeated)."
        ),
    ] = None,
    tables: Annotated[
        list[str] | None,
        typer.Option("--tables", help="Tables exposed (default: every table holding a category)."),
    ] = None,
    occurred_from: Annotated[
        str, typer.Option("--from", help="Start of the exposure, YYYY-MM-DDTHH:MM (site time).")
    ] = "",
    occurred_to: Annotated[str, typer.Option("--to", help="End of the exposure.")] = "",
    detected_at: Annotated[
        str, typer.Option("--detected-at", help="When it was found out: the 72 hours start here.")
    ] = "",
    description_file: Annotated[
        Path | None,
        typer.Option(
            "--description-file",
            help="UTF-8 text with sections [how] (경위), [advice] (정보주체 조치), [measures] "
            "(대응조치), [contact] (연락처); no member's data.",
        ),
    ] = None,
    external_access: Annotated[
        bool,
        typer.Option("--external-access", help="Unlawful access from outside (시행령 제40조①3호)."),
    ] = False,
) -> None:
    """Open an incident: find the affected members from the data map, start the 72-hour clock,
    record it in the ledger and the access log."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.engine.context import get_context
    from lifecycle.incidents import actions, breach
    from models.base import utcnow

    for value, opt in ((occurred_from, "--from"), (occurred_to, "--to"),
                       (detected_at, "--detected-at")):  # fmt: skip
        if not value:
            raise UserError(f"{opt} is required")
    if description_file is None:
        raise UserError("--description-file is required")
    start, end = _when(occurred_from, "--from"), _when(occurred_to, "--to")
    detected = _when(detected_at, "--detected-at")
    now = utcnow()
    breach.check_times(start, end, detected, now)
    description = _read(description_file, "description file")
    breach.parse_description(description)
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    ctx = get_context()
    scope = breach.check_scope(ctx.datamap, _split(categories), _split(tables))
    opened = actions.open_incident(
        who, scope=scope, occurred_from=start, occurred_to=end, detected_at=detected,
        description=description, external_access=external_access,
    )  # fmt: skip
    iid, members, rows = opened.incident_id, opened.members, opened.rows
    grounds, deadline, no_contact = opened.report_grounds, opened.deadline_at, opened.no_contact
    former = (opened.former_in_window, opened.former_archived_before)
    typer.echo(
        f"incident {iid} opened: {members} member(s) affected ({rows} row(s) in "
        f"{', '.join(scope.tables)}); notify by {_local(deadline.isoformat())} "
        "(72 h from detection)"
    )
    for t in scope.whole_tables:
        typer.echo(f"  {t}: no record date in the data map: every row taken as affected")
    if no_contact:
        typer.echo(
            f"  {no_contact} affected member(s) have no usable e-mail address: they cannot be "
            "told individually (post the notice on the website, 시행령 제39조)"
        )
    if former[0]:
        typer.echo(
            f"  {former[0]} former member(s) whose rows of these tables were archived during or "
            "after the window: they have no live contact; reach them by the website notice"
        )
    if former[1]:
        typer.echo(
            f"  {former[1]} former member(s) have such rows in the archive from before the window "
            "(affected only if the archive itself was exposed)"
        )
    if grounds:
        typer.echo(f"  report to the regulator due (시행령 제40조①): {'; '.join(grounds)}")
    typer.echo(f"next: lifecycle incident notify {iid} --wait; lifecycle incident report {iid}")


@incident_app.command("list")
def list_cmd(
    all_: Annotated[bool, typer.Option("--all", help="Closed incidents too.")] = False,
) -> None:
    """Incidents (open ones, or with --all every one) with their clock."""
    from sqlalchemy import select

    from lifecycle.core import db
    from lifecycle.engine.context import get_context
    from lifecycle.incidents import breach
    from models.base import utcnow
    from models.incidents import Incident, IncidentState

    db.check_reachable("primary")
    now = utcnow()
    # The map says which categories make a report due (시행령 제40조①2호).
    dm = get_context().datamap
    with db.session("primary") as p:
        stmt = select(Incident).order_by(Incident.id)
        if not all_:
            stmt = stmt.where(Incident.state == IncidentState.OPEN.value)
        rows = [breach.summary(p, inc, now, dm) for inc in p.scalars(stmt)]
    if not rows:
        typer.echo("no open incidents" if not all_ else "no incidents")
        return
    for r in rows:
        n = r["notices"]
        clock = (
            _left(r["seconds_left"]) if r["state"] == "open" else f"closed {_local(r['closed_at'])}"
        )
        typer.echo(
            f"{r['id']:>5}  {r['state']:<6} detected {_local(r['detected_at'])}  {clock:<22} "
            f"affected {n['affected']}, notified {n['sent']}, unsent {n['unsent']}  "
            f"report {_report(r)}  {','.join(r['categories'])}"
        )


@incident_app.command("show")
def show_cmd(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    members: Annotated[
        bool, typer.Option("--members", help="Each affected member's notice state (logged).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """One incident: scope, clock, affected counts, notice states, report, closing."""
    import json

    from sqlalchemy import select

    from lifecycle.cli.operator import record
    from lifecycle.core import db
    from lifecycle.engine.context import get_context
    from lifecycle.incidents import breach
    from models.base import utcnow
    from models.incidents import IncidentMember
    from models.notices import NoticeRecipient

    iid = _incident_id(incident_id)
    db.check_reachable("primary")
    now = utcnow()
    per_member: list[tuple[int, str]] = []
    with db.session("primary") as p:
        inc = breach.get(p, iid)
        r = breach.summary(p, inc, now, get_context().datamap)
        # The officer's own words, like the closing record: shown here, not in `status`.
        r["no_report_reason"] = inc.no_report_reason
        if members:
            im, nr = IncidentMember, NoticeRecipient
            stmt = (
                select(im.member_id, nr.state, nr.error_class)
                .outerjoin(nr, (nr.member_id == im.member_id) & (nr.notice_id == inc.notice_id))
                .where(im.incident_id == iid)
                .order_by(im.member_id)
            )
            per_member = [
                (int(m), f"{st or 'not notified'}{f' ({err})' if err else ''}")
                for m, st, err in p.execute(stmt)
            ]
    if members:
        r["members"] = [{"member_id": m, "state": st} for m, st in per_member]
    if as_json:
        typer.echo(json.dumps(r, ensure_ascii=False, indent=2))
    else:
        n = r["notices"]
        typer.echo(f"incident {r['id']} ({r['state']})")
        typer.echo(f"  categories: {', '.join(r['categories'])}")
        typer.echo(f"  tables: {', '.join(r['tables'])}")
        if r["whole_tables"]:
            typer.echo(f"  taken whole (no record date): {', '.join(r['whole_tables'])}")
        typer.echo(f"  exposed: {_local(r['occurred_from'])} ~ {_local(r['occurred_to'])}")
        typer.echo(f"  detected: {_local(r['detected_at'])}; deadline {_local(r['deadline_at'])}")
        if r["state"] == "open":
            typer.echo(f"  clock: {_left(r['seconds_left'])} of 72 h")
        typer.echo(f"  affected: {r['affected']} member(s), {r['affected_rows']} row(s)")
        typer.echo(
            f"  former members in the archive: {r['former_in_window']} archived during or after "
            f"the window (no live contact), {r['former_archived_before']} before it"
        )
        typer.echo(
            f"  notices: {n['sent']} sent, {n['pending']} pending, {n['no_address']} without an "
            f"address, {n['failed']} refused, {n['in_doubt']} in doubt; {n['unsent']} not "
            "notified"
            + ("" if r["notice_id"] else " (not notified yet: lifecycle incident notify)")
        )
        typer.echo(f"  report: {_report(r)}")
        if r["submission_revision"]:
            typer.echo(f"  submission record corrected {r['submission_revision']} time(s) "
                       "(the ledger keeps each version)")  # fmt: skip
        if r["report_grounds"]:
            typer.echo(f"  report due (시행령 제40조①): {'; '.join(r['report_grounds'])}")
        if r["closed_at"]:
            typer.echo(f"  closed {_local(r['closed_at'])} by {r['closed_by']}")
        if r["no_report_reason"]:
            typer.echo(f"  closed without a submitted report: {r['no_report_reason']}")
        for m, st in per_member:
            typer.echo(f"  member {m}: {st}")
    if members:
        record("read", "incident show --members", details={"incident_id": iid,
               "members": len(per_member)})  # fmt: skip


@incident_app.command("notify")
def notify_cmd(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    wait: Annotated[bool, typer.Option("--wait", help="Block until every notice is done.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 3600.0,
) -> None:
    """Send each affected member the 제34조① items by e-mail (batched, exactly once each: run it
    again to resume; nobody gets a second copy). Exit 1 with --wait if anyone was not reached."""
    from lifecycle.channels.mailer import smtp_config
    from lifecycle.cli.notice import _NO_CHANNEL, _wait_notice
    from lifecycle.cli.operator import current
    from lifecycle.core import db, dispatch
    from lifecycle.incidents import actions
    from lifecycle.notices.members import requeue_not_sent

    iid = _incident_id(incident_id)
    if smtp_config() is None:
        raise UserError(_NO_CHANNEL.split("; set it")[0] + "; set it (for the workers too)")
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    notified = actions.notify(who, iid, _tz())
    notice_id, created, affected = notified.notice_id, notified.created, notified.affected
    # Rows recorded "not sent" only because a worker had no mail server go out now.
    requeue_not_sent(notice_id)
    result = dispatch.send(dispatch.NOTICE_FANOUT, notice_id)
    verb = "started" if created else "resumed"
    typer.echo(
        f"incident {iid}: notice {notice_id} to {affected} member(s) {verb}; "
        f"fan-out job {result.id}"
    )
    if not wait:
        return
    try:
        _wait_notice(notice_id, timeout)
    except LifecycleError:
        # Its one line (refused addresses, in doubt, timeout) stays the error; the counts too.
        _report_unreached(iid, fail=False)
        raise
    _report_unreached(iid)


def _report_unreached(iid: int, *, fail: bool = True) -> None:
    from lifecycle.core import db
    from lifecycle.incidents import breach
    from models.base import utcnow

    with db.session("primary") as p:
        r = breach.summary(p, breach.get(p, iid), utcnow())
    n = r["notices"]
    typer.echo(f"incident {iid}: {n['sent']} of {n['affected']} affected member(s) notified")
    if n["no_address"] and fail:
        raise IncidentUnfinished(
            f"incident {iid}: {n['no_address']} affected member(s) have no usable e-mail address; "
            "tell them by the substitute notice (website, 시행령 제39조) and say so in the "
            "closing record"
        )


@incident_app.command("report")
def report_cmd(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The file to write (UTF-8).")],
) -> None:
    """Draft the report to 개인정보보호위원회/KISA (법 제34조③, 시행령 제40조) into a file."""
    from lifecycle.cli.csvout import check_output
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.incidents import actions
    from models.base import utcnow

    iid = _incident_id(incident_id)
    check_output(output)
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    now = utcnow()
    tmp = output.with_name(f".{output.name}.part")

    def write(text: str) -> None:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)

    actions.report(who, iid, _tz(), now, deliver=write)
    typer.echo(
        f"incident {iid}: report drafted in {output}; check it, submit it, then record the "
        f"submission: lifecycle incident submitted {iid} --to pipc|kisa [--receipt 접수번호]"
    )


@incident_app.command("submitted")
def submitted_cmd(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Who received it: pipc (개인정보보호위원회) or kisa (한국인터넷진흥원)."
        ),
    ] = "",
    at: Annotated[
        str,
        typer.Option(
            "--at", help="When it was submitted, YYYY-MM-DD HH:MM (site time; default now)."
        ),
    ] = "",
    receipt: Annotated[
        str | None, typer.Option("--receipt", help="The 접수번호 given on submission, if any.")
    ] = None,
    correct: Annotated[
        bool,
        typer.Option("--correct", help="Replace a recorded submission (both stay in the ledger)."),
    ] = False,
) -> None:
    """Record that the drafted report was submitted to the regulator (법 제34조③, 시행령
    제40조): when, to whom, the 접수번호. Until then a due report keeps the incident under
    attention. The same values again change nothing."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.incidents import actions, breach
    from models.base import utcnow

    iid = _incident_id(incident_id)
    if not to.strip():
        raise UserError(f"--to is required: {' or '.join(breach.RECIPIENTS)}")
    recipient = breach.check_recipient(to)
    when = breach.minute(_when(at, "--at") if at.strip() else utcnow())
    submission = breach.Submission(when, recipient, breach.check_receipt(receipt))
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    done = actions.submitted(who, iid, submission, _tz(), correct=correct)
    what = f"report submitted {submission.text(_tz())}"
    if done.outcome == "unchanged":
        typer.echo(f"incident {iid}: already recorded: {what}; nothing changed")
    elif done.outcome == "corrected" and done.previous is not None:
        typer.echo(
            f"incident {iid}: corrected to {what} (was {done.previous.text(_tz())}; the ledger "
            "keeps both)"
        )
    else:
        typer.echo(f"incident {iid}: recorded: {what}")


@incident_app.command("close")
def close_cmd(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    record_file: Annotated[
        Path | None,
        typer.Option(
            "--record-file",
            help="UTF-8 text: what was done, including for members "
            "not reached by e-mail; kept with the incident.",
        ),
    ] = None,
    no_report_reason: Annotated[
        str | None,
        typer.Option(
            "--no-report-reason",
            help="Why it closes with a due report not recorded as submitted (kept with it).",
        ),
    ] = None,
) -> None:
    """Close an incident with a record (kept with it; its counts go in the ledger). Refused
    while a report is due (시행령 제40조①) and not recorded as submitted, unless
    --no-report-reason says why."""
    from lifecycle.cli.operator import current
    from lifecycle.core import db
    from lifecycle.incidents import actions

    iid = _incident_id(incident_id)
    if record_file is None:
        raise UserError("--record-file is required (what was done, for the record)")
    text = _read(record_file, "record file")
    who = current()
    db.check_reachable("primary")
    db.check_reachable("archive")
    if no_report_reason is not None and not no_report_reason.strip():
        raise UserError("--no-report-reason is empty")
    n = actions.close(who, iid, text, no_report_reason=no_report_reason)
    typer.echo(
        f"incident {iid} closed: {n['sent']} of {n['affected']} member(s) notified by e-mail"
    )
