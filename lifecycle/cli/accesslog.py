"""`lifecycle accesslog verify|checkpoint|export|prune|review`: the handler access log (접속기록).

``review --month YYYY-MM`` is the monthly check (안전성 확보조치 기준 제8조②): exit 0 when
nothing is flagged, 1 when something is (each flag to be checked with the operator named),
2 on bad input. The review is itself an entry of the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lifecycle.cli.app import app
from lifecycle.cli.csvout import export_logged
from lifecycle.core.errors import LifecycleError

accesslog_app = typer.Typer(
    help="The handler access log (개인정보처리시스템 접속기록): who read or changed whose data.",
    no_args_is_help=True,
)
app.add_typer(accesslog_app, name="accesslog")


class AccessLogBroken(LifecycleError):
    exit_code = 1


class ReviewFlagged(LifecycleError):
    exit_code = 1


@accesslog_app.command("verify")
def verify_cmd() -> None:
    """Check the hash chain (from the last prune on) against its head and every checkpoint;
    non-zero naming the first bad entry."""
    from lifecycle.core.db import check_reachable
    from lifecycle.vault import checkpoints

    check_reachable("primary")
    check_reachable("archive")
    res = checkpoints.verify(checkpoints.ACCESS_LOG)
    if not res.ok:
        raise AccessLogBroken(f"access log broken at entry {res.first_bad_seq}: {res.reason}")
    typer.echo(f"access log OK: {res.checked} entries")
    typer.echo(f"head hash: {res.head_hash}")


@accesslog_app.command("checkpoint")
def checkpoint_cmd() -> None:
    """Verify the access log and record its head in the primary DB and the checkpoint file (beat
    does this nightly with the ledger's)."""
    from lifecycle.core.db import check_reachable
    from lifecycle.vault import checkpoints

    check_reachable("primary")
    check_reachable("archive")
    seq, digest = checkpoints.take(checkpoints.ACCESS_LOG)
    if seq == 0:
        typer.echo("access log is empty: nothing to checkpoint")
        return
    typer.echo(f"access log checkpoint: entry {seq}, hash {digest}")
    typer.echo(f"written to the primary DB and {checkpoints.ACCESS_LOG.file()}")


@accesslog_app.command("export")
def export_cmd(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="A file (default stdout); UTF-8 with BOM."),
    ] = None,
) -> None:
    """Export as CSV with Korean headings, times in Asia/Seoul (for the privacy officer)."""
    from lifecycle.vault import accesslog

    export_logged(output, accesslog.export_csv, action="accesslog export", counted="rows",
                  noun="access log entries")  # fmt: skip


@accesslog_app.command("prune")
def prune_cmd() -> None:
    """Delete entries older than 2 years now (the nightly purge does this too)."""
    from lifecycle.cli.operator import current
    from lifecycle.core.db import check_reachable, session
    from lifecycle.vault import accesslog

    check_reachable("archive")
    with session("archive") as s:
        n = accesslog.prune(s, operator=current())
    typer.echo(f"pruned {n} access log entries older than 2 years")


@accesslog_app.command("review")
def review_cmd(
    month: Annotated[str, typer.Option("--month", help="The month to review, YYYY-MM.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the review as JSON.")] = False,
) -> None:
    """The monthly review: totals per operator and action, and flags for bulk exports,
    off-hours use and repeated downloads of one member; exit 1 when anything is flagged."""
    import json

    from lifecycle.cli.operator import current
    from lifecycle.core.db import check_reachable, session
    from lifecycle.core.settings import get_settings
    from lifecycle.vault import accesslog, accessreview

    settings = get_settings()
    t = accessreview.Thresholds.from_settings(settings)
    start, end = accessreview.month_bounds(month, t.tz)
    who = current()
    check_reachable("archive")
    with session("archive") as s:
        r = accessreview.review(accesslog.iter_month(s, start, end), month.strip(), t)
        accesslog.record(s, operator=who, kind="read", action="accesslog review", details={
            "month": r.month, "entries": r.entries, "flags": len(r.flags)})  # fmt: skip
    if as_json:
        typer.echo(json.dumps(r.as_dict(), ensure_ascii=False, indent=2))
    else:
        for line in r.lines():
            typer.echo(line)
    if r.flags:
        raise ReviewFlagged(f"access log review {r.month}: {len(r.flags)} flag(s) to check")
