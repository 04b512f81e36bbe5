"""`lifecycle datamap check`: validate the data map (and, by default, against the primary DB)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lifecycle.cli.app import app

if TYPE_CHECKING:
    from lifecycle.datamap.model import DataMapError

datamap_app = typer.Typer(
    help="The data map: which tables/columns hold which personal data, and for how long.",
    no_args_is_help=True,
)
app.add_typer(datamap_app, name="datamap")


@datamap_app.command("check")
def check_cmd(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Map to check (default: LIFECYCLE_DATA_MAP or the demo map)."),
    ] = None,
    offline: Annotated[
        bool, typer.Option("--offline", help="Do not compare with the primary database.")
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Offline: exit 1 when any flagged unique identifier has no statutory basis "
            "(against the database, live rows holding one always exit 1). Against the "
            "database: exit 1 when the quick discover pass finds personal data the map does "
            "not cover, a table several entries share holds rows no entry takes, rows "
            "name a member that no longer exists (orphans), or rows depend on a consent "
            "their member has not given.",
        ),
    ] = False,
) -> None:
    """Validate the map; against the primary database (default) prove what the engine relies
    on: tables and columns exist, keys unique, link types compatible, patterns expanded, no
    uncovered member-like column. Prints each table's categories, periods and legal bases,
    then one line per finding; exits 2 on any finding (a map that does not fit). Reports each
    flagged unique identifier (where, how many live rows hold a value, its basis); exits 1 when
    live rows hold one without a statutory basis (offline, only with --strict, when a flagged
    category has no basis). Once the map fits, a quick `datamap discover` pass (a small sample
    of every table) prints personal data the map does not cover as warnings, and rows naming a
    member that no longer exists (orphans) are counted per table (exit 1 with --strict)."""
    from lifecycle.datamap.loader import load_datamap

    dm = load_datamap(file)
    findings: list[str] = []
    shown = dm
    eng = None
    md = None  # the mapped tables, reflected once and shared by every pass below
    if not offline:
        from sqlalchemy import inspect

        from lifecycle.core.db import check_reachable, engine

        check_reachable("primary")
        eng = engine("primary")
        shown = dm.expand(inspect(eng).get_table_names())
        problems: list[DataMapError] = []
        shown.validate_against(eng, collect=problems)
        if not problems:
            # Only on a map that fits: the sample reads the columns the map names.
            from lifecycle.datamap.file_values import check_file_values

            md = shown.reflect(eng)
            problems = check_file_values(shown, eng, md)
        findings = [str(p) for p in problems]
        if dm.site_root:
            from lifecycle.core.settings import get_settings

            roots = [str(r).rstrip("/") for r in get_settings().file_roots]
            if not any(dm.site_root == r or dm.site_root.startswith(r + "/") for r in roots):
                why = (
                    f"site.root {dm.site_root} is not under a storage root (LIFECYCLE_FILE_ROOTS:"
                    f" {', '.join(roots) or 'none'}): the shredder would refuse every file under it"
                )
                findings.append(str(dm.error(why, "site", "root")))
        for pattern in dm.patterns:
            hits = [n for n, t in shown.tables.items() if t.pattern == pattern]
            if hits:
                typer.echo(f"pattern {pattern} -> {', '.join(hits)}")
    for t in shown.tables_in_dependency_order():
        ends = ", ".join(p.kind if p.kind != "age" else f"age({p.column})" for p in t.purpose_end)
        if t.age is None and t.expires_by_age:
            # Periods counted from the record's own date end active members' rows too.
            ends += f", age({t.age_column}: its periods over)"
        record = t.record_source
        if t.inherits_from is not None and record is not None:
            # No date of its own: it takes its parent row's, and goes when that row does.
            ends += f", age(inherits {record[0]}.{record[1]})"
        typer.echo(f"{t.name}  [purpose end: {ends}]{_rows_of(t)}")
        for cat in t.categories:
            r = t.retention_for(cat)
            src = " (default)" if r.default else ""
            typer.echo(f"  {cat:<14} {r.period!s:>5}{src}  {r.legal_basis}")
            if not r.period.is_zero:
                typer.echo(f"  {'':<14} {'':>5}  from {_anchor_text(t, cat)}; basis {r.basis_ref}")
    for table, reason in dm.handled_elsewhere.items():
        # The operator's statement, not something checked: shown so it is never silent.
        typer.echo(f"{table}  [handled elsewhere: {reason}]")
    typer.echo(f"business: {shown.business.describe()}")
    for note in shown.notes:
        typer.echo(f"note: {note}")
    if eng is not None:
        from lifecycle.datamap.guest_indexes import identity_gaps
        from lifecycle.datamap.indexes import missing_indexes

        # Advice, not a finding: the engine works without these indexes, only slower.
        for gap in missing_indexes(shown, eng):
            typer.echo(f"warning: {gap}")
        for ident in identity_gaps(shown, eng):
            typer.echo(f"warning: {ident}")
    unlawful = _identifiers(shown, eng)
    for line in findings:
        typer.echo(line, err=True)
    if findings:
        typer.echo(f"data map {dm.source}: {len(findings)} finding(s)")
        raise typer.Exit(2)
    where = "checked against the primary database" if not offline else "not compared with a DB"
    uncovered = unmatched = misfits = orphaned = unconsented = 0
    if eng is not None:
        md = md if md is not None else shown.reflect(eng)
        uncovered = _quick_discover(dm, eng)
        unmatched = _unmatched(shown, eng, md)
        misfits = _linkage(shown, eng, md)
        orphaned = _orphans(shown, eng, md)
        unconsented = _unconsented(shown, eng, md)
    if unlawful and eng is not None:
        # The map fits, but live rows are held against the law: never summed up as OK.
        typer.echo(
            f"data map {dm.source}: fits ({len(shown.tables)} tables, {where}), but live rows "
            f"hold unique identifiers without a statutory basis: {unlawful}"
        )
        raise typer.Exit(1)
    typer.echo(f"data map {dm.source}: OK ({len(shown.tables)} tables, {where})")
    if not strict:
        return
    # The first finding --strict fails on, in this order.
    for found, why in (
        (unlawful, f"unique identifiers without a statutory basis: {unlawful}"),
        (uncovered, f"{uncovered} column(s) hold personal data the map does not cover"),
        (unmatched, f"{unmatched} table(s) hold rows no entry of the map takes"),
        (misfits, f"{misfits} table column(s) link rows to the wrong member"),
        (orphaned, f"{orphaned} row(s) name a member that no longer exists"),
        (unconsented, f"{unconsented} row(s) depend on a consent their member has not given"),
    ):
        if found:
            typer.echo(f"strict: {why}")
            raise typer.Exit(1)


def _unconsented(dm: Any, eng: Any, md: Any) -> int:
    """Warn (stderr) about rows of consent-dependent categories whose live member gives no
    such consent, per purpose and table (counts only); returns how many rows."""
    from lifecycle.datamap.consents import count_unconsented

    with eng.connect() as conn:
        found = count_unconsented(dm, conn, md)
    for u in found:
        typer.echo(f"warning: {u.line()}", err=True)
    return sum(u.rows for u in found)


def _orphans(dm: Any, eng: Any, md: Any) -> int:
    """Warn (stderr) about rows whose member row is gone, per table and column (counts only);
    returns how many such rows there are."""
    from lifecycle.engine.orphans import count_orphans

    with eng.connect() as conn:
        found = count_orphans(dm, conn, md)
    for c in found:
        typer.echo(f"warning: {c.line()}", err=True)
    return sum(c.rows for c in found)


def _rows_of(t: Any) -> str:
    """`` (rows of wp_posts where post_type = 'attachment')`` for an entry sharing a table."""
    from lifecycle.datamap.entries import describe_where

    if not t.where and t.table == t.name:
        return ""
    only = f" where {describe_where(t.where)}" if t.where else ""
    return f"  (rows of {t.table}{only})"


def _unmatched(dm: Any, eng: Any, md: Any) -> int:
    """Warn (stderr) about rows of a shared table no entry takes and ``ignore_rows`` does
    not name, counted per discriminator value; returns how many tables have some."""
    from lifecycle.datamap.entries import shared_tables, unmatched_rows

    shared = shared_tables(((t.table, t.where) for t in dm.tables.values()), dm.ignore_rows)
    if not shared:
        return 0
    found = 0
    with eng.connect() as conn:
        for table, wheres in sorted(shared.items()):
            miss = unmatched_rows(conn, md.tables[table], wheres, dm.ignore_rows.get(table, ()))
            if miss is not None:
                found += 1
                typer.echo(f"warning: {miss.line()}", err=True)
    return found


def _linkage(dm: Any, eng: Any, md: Any) -> int:
    """Warn (stderr) about rows linked to one member that hold another's identity (counts and
    columns only); returns how many table columns have some."""
    from lifecycle.datamap import findings, linkage

    found = linkage.check(dm, eng, md)
    _store(lambda s, run_id: findings.store_linkage(s, found, run_id), "linkage", len(found))
    for m in found:
        typer.echo(f"warning: linkage: {m.line()}", err=True)
    return len(found)


# The quick pass of `datamap check`: a few rows per table, a few seconds in all.
QUICK_ROWS = 50
QUICK_BUDGET_SECONDS = 10.0


def _quick_discover(dm: Any, eng: Any) -> int:
    """Warn (stderr) about each column the quick sample finds uncovered; returns their number."""
    from lifecycle.datamap.discover import discover

    report = discover(eng, dm, rows=QUICK_ROWS, budget_seconds=QUICK_BUDGET_SECONDS)
    _record_discover(report)
    for f in report.uncovered:
        typer.echo(f"warning: discover: {f.describe()}", err=True)
    for name, why in sorted(report.not_scanned.items()):
        typer.echo(f"warning: discover: table {name} not scanned ({why})", err=True)
    if report.stopped_early:
        typer.echo(f"warning: discover: {report.stopped_early}", err=True)
    if report.uncovered:
        typer.echo(
            f"discover (quick, {QUICK_ROWS} rows per table): {len(report.uncovered)} column(s) "
            "with personal data the map does not cover; run `lifecycle datamap discover`",
            err=True,
        )
    return len(report.uncovered)


def _store(
    write: Callable[[Any, int], int], what: str, found: int, *, complete: bool = True
) -> None:
    """The run's findings into the lifecycle's own tables (the console's findings page, the
    metrics, `lifecycle status`), as a run of its own; the previous run's open ones close."""
    from sqlalchemy import inspect

    from lifecycle.core.db import engine, session
    from lifecycle.datamap import findings
    from models.findings import DataMapFinding

    if not inspect(engine("primary")).has_table(DataMapFinding.__tablename__):
        # A primary the lifecycle was not installed on yet: the check still reports.
        typer.echo(f"warning: {what}: findings not stored (run `lifecycle db upgrade`)", err=True)
        return
    job = findings.JOB_DISCOVER if what == "discover" else findings.JOB_LINKAGE
    with session("primary") as s:
        run_id = findings.start_run(s, job)
        write(s, run_id)
        findings.finish_run(s, run_id, "ok" if complete else "failed", {what: found})
    typer.echo(f"{what}: findings stored (run {run_id})", err=True)


def _record_discover(report: Any) -> None:
    """Sampling reads members' data: one access-log entry with counts only."""
    if not report.rows_read:
        return
    from lifecycle.cli.operator import record

    record("read", "datamap discover", details={
        "tables": report.tables_scanned, "rows": report.rows_read,
        "uncovered_columns": len(report.uncovered),
    })  # fmt: skip


@datamap_app.command("discover")
def discover_cmd(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Map to compare with (default: LIFECYCLE_DATA_MAP)."),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1 when personal data is found that the map does not cover, or when the "
            "scan could not read every table.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
    rows: Annotated[
        int, typer.Option("--rows", min=1, help="At most this many rows per table (newest).")
    ] = 1000,
    budget: Annotated[
        float,
        typer.Option("--budget", min=0.1, help="Stop after this many seconds in all (noted)."),
    ] = 120.0,
) -> None:
    """Sample every table of the primary (ignored ones too) for personal data by pattern:
    email, Korean mobile and landline numbers, RRNs (check digit), card numbers (Luhn), IPv4/6,
    Korean road addresses, and the same inside JSON or PHP-serialized values. Prints, per
    table.column, the kinds found and in how many sampled rows (never a value), and whether the
    map covers it: mapped under a category, handled elsewhere (the map's handled_elsewhere:
    reason), in an ignored table, or not covered."""
    import json

    from lifecycle.core.db import check_reachable, engine
    from lifecycle.datamap import findings
    from lifecycle.datamap.discover import discover
    from lifecycle.datamap.loader import load_datamap

    dm = load_datamap(file)
    check_reachable("primary")
    report = discover(engine("primary"), dm, rows=rows, budget_seconds=budget)
    _record_discover(report)
    _store(
        lambda s, run_id: findings.store_discovery(s, report, run_id),
        "discover",
        len(report.uncovered),
        complete=report.complete,
    )
    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, sort_keys=True))
    else:
        for f in report.findings:
            typer.echo(f.describe())
        for name in report.ignored_tables:
            typer.echo(f"ignored table {name}: scanned")
        for name, reason in report.handled_elsewhere.items():
            typer.echo(f"table {name}: scanned, handled elsewhere: {reason}")
        for name, why in sorted(report.not_scanned.items()):
            typer.echo(f"table {name}: not scanned ({why})", err=True)
        if report.stopped_early:
            typer.echo(f"stopped early: {report.stopped_early}", err=True)
        typer.echo(
            f"discover: {report.tables_scanned} of {report.tables_total} tables scanned, "
            f"{report.rows_read} rows (at most {rows} per table), {len(report.findings)} "
            f"column(s) with personal data, {len(report.uncovered)} not covered by {dm.source}"
        )
    if strict and report.uncovered:
        typer.echo(
            f"strict: {len(report.uncovered)} column(s) hold personal data the map does not "
            "cover: " + ", ".join(f"{f.table}.{f.column}" for f in report.uncovered),
            err=True,
        )
        raise typer.Exit(1)
    if strict and not report.complete:
        typer.echo("strict: the scan did not read every table (see above)", err=True)
        raise typer.Exit(1)


def _identifiers(dm: Any, eng: Any) -> str:
    """Print every flagged category (where, live rows holding a value, basis); returns the
    categories held unlawfully ("" if none): with a database, those with rows holding a value
    and no basis; offline, every one without a basis. Counting is recorded in the access log."""
    from lifecycle.datamap.identifiers import locations

    unlawful: list[str] = []
    counted: dict[str, int] = {}
    for cat, flag in sorted(dm.identifiers.items()):
        basis = f"basis: {flag.basis}" if flag.basis else "no statutory basis"
        typer.echo(f"unique identifier {cat} ({flag.label}, {flag.restriction}): {basis}")
        if eng is None:
            for table, cols in locations(dm, cat):
                typer.echo(f"  {table}.{','.join(cols)}: not counted (offline)")
            if not flag.basis:
                unlawful.append(cat)
            continue
        rows = 0
        found = _census(dm, eng, cat)
        for c in found:
            held = f" ({c.held} under a legal hold)" if c.held else ""
            typer.echo(f"  {c.table}.{','.join(c.columns)}: {c.rows} live rows hold a value{held}")
            rows += c.rows
        if not found:
            typer.echo("  not counted: none of its tables and columns is in the database")
            continue
        counted[cat] = rows
        if rows and not flag.basis:
            unlawful.append(cat)
            typer.echo(
                f"  held unlawfully: {rows} rows; destroy them with lifecycle identifiers "
                f"destroy {cat} --reason TEXT"
            )
    if counted:
        from lifecycle.cli.operator import record

        record("read", "datamap check", details={"identifier_rows": counted})
    return ", ".join(unlawful)


def _census(dm: Any, eng: Any, category: str) -> list[Any]:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from sqlalchemy import MetaData, inspect

    from lifecycle.core.settings import get_settings
    from lifecycle.engine.identifiers import census

    live = set(inspect(eng).get_table_names())
    md = MetaData()
    md.reflect(bind=eng, only=[t for t in dm.physical_tables if t in live])
    today = datetime.now(ZoneInfo(get_settings().timezone)).date()
    with eng.connect() as conn:
        return census(conn, dm, md, category, today, check_holds="lifecycle_holds" in live)


def _anchor_text(t, cat: str) -> str:  # type: ignore[no-untyped-def]
    anchor = t.anchor_of(cat)
    src = t.record_source
    col = ""
    if anchor != "purpose_end" and src is not None:
        how = "inherited, " if t.inherits_from is not None else ""
        col = f" ({how}{src[0]}.{src[1]})"
    extra = "; also the tax rule's, as tax evidence" if t.tax_evidence else ""
    return f"{anchor}{col}{extra}"


@datamap_app.command("explain")
def explain_cmd(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Map to explain (default: LIFECYCLE_DATA_MAP or the demo map)."
        ),
    ] = None,
) -> None:
    """One line per table and category: its period, what the period counts from (purpose end,
    the record's own date, the tax filing deadline), and what carries it (the listed statute
    ids, or the consent column). Reads the map only; no database."""
    from lifecycle.datamap.loader import describe, load_datamap

    dm = load_datamap(file)
    typer.echo(f"business: {dm.business.describe()}")
    for line in describe(dm):
        typer.echo(line)


@datamap_app.command("migrate")
def migrate_cmd(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", help="Map to migrate (default: LIFECYCLE_DATA_MAP or the demo map)."
        ),
    ] = None,
    write: Annotated[
        bool,
        typer.Option("--write", help="Rewrite the file (the old one is kept as FILE.bak)."),
    ] = False,
) -> None:
    """Rewrite deprecated spellings to today's: prints a unified diff; --write writes it.

    Comments, blank lines and the order of keys are kept. The result must load, to the same
    model as the original; exits 0 with "already current" when nothing needs rewriting."""
    from lifecycle.datamap.migrate import migrate, read_map, write_migrated
    from lifecycle.datamap.paths import map_path

    path = map_path(file)
    result = migrate(read_map(path), str(path))
    if result.current:
        typer.echo(f"data map {path}: already current")
        return
    typer.echo(result.diff(str(path)), nl=False)
    what = f"{len(result.edits)} deprecated spelling{'s' if len(result.edits) != 1 else ''}"
    if not write:
        typer.echo(f"data map {path}: {what}; run with --write to rewrite it", err=True)
        return
    backup = write_migrated(path, result.text)
    typer.echo(f"data map {path}: {what} rewritten; the old file is {backup}", err=True)
