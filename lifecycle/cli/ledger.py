"""`lifecycle ledger verify|checkpoint|export|register|paper|signoff|replay`: the destruction
ledger and the register (개인정보 파기 관리대장) read from it."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path
from typing import IO, Annotated
from zoneinfo import ZoneInfo

import typer

from lifecycle.cli.app import app
from lifecycle.cli.csvout import check_output, export_logged, write_csv, write_export
from lifecycle.core.errors import UserError

ledger_app = typer.Typer(
    help="The destruction ledger: verify the hash chain, export it, the register (파기 "
    "관리대장) with paper destructions and the privacy officer's sign-off.",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")


@ledger_app.command("verify")
def verify_cmd() -> None:
    """Check the hash chain against its head and every checkpoint, in one snapshot; exit
    non-zero naming the first bad entry after any tampering, truncation or wipe."""
    from lifecycle.core.db import check_reachable
    from lifecycle.vault import checkpoints, ledger

    check_reachable("archive")
    check_reachable("primary")
    result = checkpoints.verify()
    if not result.ok:
        raise ledger.LedgerBroken(result.message())
    typer.echo(result.message())
    # Keeping this line somewhere outside the database is what makes a rewrite of the whole
    # chain evident later.
    typer.echo(f"head hash: {result.head_hash}")


@ledger_app.command("checkpoint")
def checkpoint_cmd() -> None:
    """Verify the ledger and record its head in the primary DB and the checkpoint file (beat
    does this nightly); entries up to it can no longer disappear unnoticed."""
    from lifecycle.core.db import check_reachable
    from lifecycle.vault import checkpoints

    check_reachable("archive")
    check_reachable("primary")
    seq, digest = checkpoints.take()
    if seq == 0:
        typer.echo("ledger is empty: nothing to checkpoint")
        return
    typer.echo(f"ledger checkpoint: entry {seq}, hash {digest}")
    typer.echo(f"written to the primary DB and {checkpoints.checkpoint_file()}")


@ledger_app.command("export")
def export_cmd(
    fmt: str = typer.Option("csv", "--format", help="Output format (only csv)."),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write to this file instead of stdout (either way UTF-8 with BOM, for Excel).",
        ),
    ] = None,
) -> None:
    """Export the ledger with Korean column headings, times in Asia/Seoul."""
    from lifecycle.vault import ledger

    if fmt.lower() != "csv":
        raise UserError(f"unsupported --format {fmt!r}; only csv is supported")
    # Pseudonyms and counts only, but an export of who-was-destroyed-when: logged (제8조).
    export_logged(output, ledger.export_csv, action="ledger export", counted="entries",
                  noun="ledger entries")  # fmt: skip


def _day(raw: str | None, what: str) -> date | None:
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw.strip())
    except ValueError:
        raise UserError(f"{what} must be a date YYYY-MM-DD, not {raw!r}") from None


@ledger_app.command("register")
def register_cmd(
    member: Annotated[
        str | None,
        typer.Option(
            "--member",
            help="Only entries naming this member (MEMBER_ID as typed "
            "for `withdraw`: the site's login id when the map names one).",
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (site time).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (site time), included.")
    ] = None,
    kinds: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="destruction, archive-move or paper (repeat for several; default all three).",
        ),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="text (default), csv (the form's columns) or json.")
    ] = "text",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout."),
    ] = None,
) -> None:
    """The 개인정보 파기 관리대장: destructions, archive moves and paper destructions, each with
    who carried it out and the privacy officer's confirmation; csv has the columns of the
    표준 개인정보 보호지침's form first."""
    from lifecycle.cli.members import member_id_from
    from lifecycle.cli.operator import record
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import keystore, register

    fmt = fmt.lower()
    if fmt not in ("text", "csv", "json"):
        raise UserError(f"unsupported --format {fmt!r}; one of text, csv, json")
    chosen = tuple(dict.fromkeys(kinds or register.KINDS))
    bad = [k for k in chosen if k not in register.KINDS]
    if bad:
        raise UserError(f"unknown --kind {bad[0]!r}; one of {', '.join(register.KINDS)}")
    tz = get_settings().timezone
    lo, hi = register.day_window(_day(since, "--from"), _day(until, "--to"), tz)
    check_output(output)
    member_id = member_id_from(member, former=True) if member is not None else None
    check_reachable("archive")
    with session("archive") as s:
        ref = keystore.subject_ref(s, member_id) if member_id is not None else None
    flt = register.Filter(kinds=chosen, subject_ref=ref, since=lo, until=hi)
    zone = ZoneInfo(tz)

    def write(out: IO[str]) -> int:
        with session("archive") as s:
            rows = register.rows(s, flt)
            if fmt == "csv":
                w = csv.writer(out, lineterminator="\r\n")
                w.writerow(register.CSV_COLUMNS)
                n = 0
                for n, row in enumerate(rows, 1):
                    w.writerow(register.form_row(n, row, zone))
                return n
            if fmt == "json":
                items = [row.as_json(zone) for row in rows]
                json.dump({"entries": items}, out, ensure_ascii=False, indent=2)
                out.write("\n")
                return len(items)
            return _write_text(out, rows, zone)

    n = write_csv(output, write) if fmt == "csv" else write_export(output, write)
    if member_id is not None:
        # Whose destructions were looked up is itself an access to that member's records.
        record("read", "ledger register", member_id=member_id, details={"entries": n})
    if output is not None:
        typer.echo(f"wrote {n} register entries to {output}", err=True)


def _write_text(out: IO[str], rows: object, zone: ZoneInfo) -> int:
    from lifecycle.vault import register

    n = 0
    for row in rows:  # type: ignore[attr-defined]
        assert isinstance(row, register.Row)
        n += 1
        when = row.destroyed_at or row.occurred_at
        local = when.astimezone(zone).strftime("%Y-%m-%d %H:%M")
        what = row.what or ", ".join(row.tables) or "-"
        items = ", ".join(row.categories) or "-"
        s = row.signoff
        confirmed = (
            f"확인 {s.officer} {s.at.astimezone(zone):%Y-%m-%d}" if s else "보호책임자 미확인"
        )
        out.write(
            f"#{row.seq} {local} {register.KIND_LABELS[row.kind]} ({row.action}) {what} "
            f"[{items}] {row.rows}건 {row.subjects}명 | {row.method} | {row.reason} | "
            f"처리 {row.handler}"
            + (f" 입회 {row.witness}" if row.witness else "")
            + f" | {confirmed}\n"
        )
    out.write(f"{n} entries\n")
    return n


@ledger_app.command("paper")
def paper_cmd(
    what: Annotated[
        str,
        typer.Option(
            "--what",
            help="Which records, by kind and period (e.g. '2019년 상담 신청서 원본'), never whose.",
        ),
    ] = "",
    method: Annotated[str, typer.Option("--method", help="How: 파쇄, 소각, 용해, ...")] = "",
    handler: Annotated[str, typer.Option("--handler", help="Who destroyed them.")] = "",
    witness: Annotated[str, typer.Option("--witness", help="Who saw it done.")] = "",
    at: Annotated[
        str | None, typer.Option("--at", help="When, YYYY-MM-DD[THH:MM] (site time); default now.")
    ] = None,
    count: Annotated[int, typer.Option("--count", help="How many sheets, files or boxes.")] = 0,
    categories: Annotated[
        list[str] | None,
        typer.Option("--category", help="Items held (the map's categories), repeat for several."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (폐기사유).")] = "보유기간 경과",
) -> None:
    """Record a destruction of paper records (시행령 제16조①2호: 파쇄 또는 소각) in the
    ledger: what, how, when, by whom, and the witness."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.core.timeutil import as_utc
    from lifecycle.vault import register

    zone = ZoneInfo(get_settings().timezone)
    if at is None:
        when = datetime.now(zone)
    else:
        try:
            parsed = datetime.fromisoformat(at.strip())
        except ValueError:
            raise UserError(f"--at must be YYYY-MM-DD or YYYY-MM-DDTHH:MM, not {at!r}") from None
        when = parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)
    who = current()
    check_reachable("archive")
    with session("archive") as s:
        e = register.record_paper(
            s, what=what, method=method, handler=handler, witness=witness,
            destroyed_at=as_utc(when), recorded_by=who, categories=categories or [],
            count=count, reason=reason,
        )  # fmt: skip
        seq = e.seq
    record("destroy", "ledger paper", details={"entry": seq})
    typer.echo(f"ledger entry {seq}: paper destruction recorded")


@ledger_app.command("signoff")
def signoff_cmd(
    through: Annotated[
        str,
        typer.Option(
            "--through",
            help="The last entry confirmed: its "
            "number, or a date YYYY-MM-DD (every entry up to that day).",
        ),
    ] = "",
    officer: Annotated[
        str,
        typer.Option(
            "--officer",
            help="The privacy officer confirming "
            "(one of LIFECYCLE_PRIVACY_OFFICERS); default the operator.",
        ),
    ] = "",
) -> None:
    """The privacy officer (개인정보 보호책임자) confirms the register up to an entry
    (표준 개인정보 보호지침 제10조④): every entry since the last sign-off. Verifies the
    chain first; a tampered ledger is never signed off."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import checkpoints, ledger, register

    if not through.strip():
        raise UserError("--through ENTRY-or-DATE is required")
    settings = get_settings()
    who = current()
    # Refused before any database is asked (sign_off checks again under the ledger lock).
    name = register.check_officer(officer or who, settings.privacy_officers)
    check_reachable("archive")
    check_reachable("primary")
    with session("archive") as s:
        last = register.through_seq(s, through, settings.timezone)
    result = checkpoints.verify()
    if not result.ok:
        raise ledger.LedgerBroken(result.message() + "; nothing signed off")
    with session("archive") as s:
        signed, new = register.sign_off(
            s, through=last, officer=name, officers=settings.privacy_officers, operator=who
        )
    if not new:
        typer.echo(
            f"entries {signed.from_seq}-{signed.through_seq} were already signed off by "
            f"{signed.officer} (entry {signed.seq})"
        )
        return
    record("change", "ledger signoff", details={"entry": signed.seq, "through": last})
    typer.echo(
        f"signed off entries {signed.from_seq}-{signed.through_seq} by {signed.officer}: "
        f"ledger entry {signed.seq}, confirmed hash {signed.through_hash}"
    )


@ledger_app.command("replay")
def replay_cmd(
    since: Annotated[
        str, typer.Option("--since", help="The date of the restored backup, YYYY-MM-DD.")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be re-applied; change nothing.")
    ] = False,
    assume_restored: Annotated[
        bool,
        typer.Option(
            "--assume-restored",
            help="Re-apply erasures and consent withdrawals even where their request row says "
            "they were done in this DB (the site's tables were restored, the lifecycle_* "
            "tables were not).",
        ),
    ] = False,
) -> None:
    """After restoring the primary DB from a backup: re-apply what the ledger records since
    that date (withdrawals, item erasures, consent withdrawals, file shreds; matched by
    pseudonym) to what the restore brought back. Safe to run again."""
    from lifecycle.cli.operator import current, record
    from lifecycle.core.db import check_reachable
    from lifecycle.engine.context import get_context
    from lifecycle.engine.replay import parse_since, replay

    if not since:
        raise UserError("--since DATE is required (the date the restored backup was taken)")
    check_reachable("primary")
    check_reachable("archive")
    ctx = get_context()
    day = parse_since(since, ctx)
    who = current()
    rep = replay(
        ctx, day, dry_run=dry_run, actor=f"operator:{who}", assume_restored=assume_restored,
        consent_columns={n: p.column for n, p in ctx.datamap.consents.items() if p.column},
    )  # fmt: skip
    verb = "would re-apply" if dry_run else "re-applied"
    named, done = rep.named, rep.reapplied
    typer.echo(
        f"ledger since {day.isoformat()}: {rep.entries} entries; named: "
        f"{named['withdrawal']} withdrawn member(s), {named['erasure']} item erasure(s), "
        f"{named['consent']} consent withdrawal(s), {rep.file_refs} shredded file(s)"
    )
    typer.echo(
        f"{verb}: {rep.members_reapplied} member(s) the restore brought back "
        f"({done['withdrawal']} withdrawal(s), {done['erasure']} item erasure(s), "
        f"{done['consent']} consent withdrawal(s)), {rep.files_matched} file(s) found again "
        "under the storage roots"
        + ("" if not rep.shred_jobs else f" (shred jobs {', '.join(map(str, rep.shred_jobs))})")
    )
    if rep.archive_rows_deleted:
        typer.echo(
            f"archive: {rep.archive_rows_deleted} archived record(s) a withdrawn retention "
            "consent had kept were back (a restored archive DB) and were deleted again"
        )
    if rep.consent_unmapped:
        typer.echo(
            f"not re-applied: {rep.consent_unmapped} consent withdrawal(s) of a purpose the "
            "data map no longer declares"
        )
    if rep.not_restored:
        typer.echo(
            f"not restored: {rep.not_restored} act(s) on members of this DB whose request is "
            "finished here (no sign this DB predates them); left as they are "
            "(--assume-restored re-applies them)"
        )
    if rep.left_to_requests:
        typer.echo(
            f"left to their requests: {rep.left_to_requests} (not yet carried out in the "
            "restored DB; the relay sends them again)"
        )
    if rep.members_held:
        typer.echo(f"left alone: members under legal holds {sorted(set(rep.members_held))}")
    if rep.unnamed_destructions or rep.corrections or rep.identifier_destructions:
        typer.echo(
            f"not re-applied: {rep.unnamed_destructions} destruction entries name no member "
            "(sweep batches, age rules: the next sweep and purge redo them if the restored data "
            f"qualifies), {rep.corrections} correction(s) (values are never in the ledger: "
            f"correct them again), {rep.identifier_destructions} identifier destruction(s) "
            "(run lifecycle identifiers destroy again)"
        )
    if dry_run:
        typer.echo("dry run: nothing changed")
    else:
        record("destroy", "ledger replay", operator=who,
               details={"since": day.isoformat(), "members": rep.members_reapplied,
                        "files": rep.files_matched})  # fmt: skip
