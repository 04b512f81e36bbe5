"""`lifecycle ledger verify|checkpoint|export`: the destruction ledger (파기 관리대장)."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.cli.csvout import check_output, write_csv
from lifecycle.core.errors import UserError

ledger_app = typer.Typer(
    help="The destruction ledger (파기 관리대장): verify the hash chain, export for the "
    "privacy officer.",
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
    from lifecycle.cli.operator import current
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import accesslog, ledger

    if fmt.lower() != "csv":
        raise UserError(f"unsupported --format {fmt!r}; only csv is supported")
    check_output(output)
    check_reachable("archive")
    tz = get_settings().timezone
    who = current()

    def write(out: IO[str]) -> int:
        # Pseudonyms and counts only, but an export of who-was-destroyed-when: logged (제8조).
        with session("archive") as s:
            n = ledger.export_csv(s, out, tz=tz)
            accesslog.record(s, operator=who, kind="export", action="ledger export",
                             details={"entries": n})  # fmt: skip
        return n

    n = write_csv(output, write)
    if output is None:
        return
    typer.echo(f"wrote {n} ledger entries to {output}", err=True)


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
    from lifecycle.rights.consent import PURPOSES

    if not since:
        raise UserError("--since DATE is required (the date the restored backup was taken)")
    check_reachable("primary")
    check_reachable("archive")
    ctx = get_context()
    day = parse_since(since, ctx)
    who = current()
    rep = replay(
        ctx, day, dry_run=dry_run, actor=f"operator:{who}", assume_restored=assume_restored,
        consent_columns={name: p.column for name, p in PURPOSES.items()},
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
