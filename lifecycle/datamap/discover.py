"""Find personal data the data map does not cover: sample every table of the primary by pattern.

``lifecycle datamap discover`` and the quick pass of ``datamap check`` call :func:`discover`:
every table of the primary (the lifecycle's own tables excepted; ignored tables included,
marked as such; tables under ``handled_elsewhere:`` too, with the operator's reason) is read,
at most ``rows`` rows each, newest first by primary key, within an overall time budget;
every text or JSON column's values go through :func:`lifecycle.datamap.patterns.kinds_in`.
The report says, per table.column, which kinds were found in how many sampled rows and
whether the map covers the column. Values stay in this function: the report, the logs and any
exception carry names and counts only.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from sqlalchemy import column, inspect, select, table
from sqlalchemy import types as sqltypes
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lifecycle.datamap.model import DataMap
from lifecycle.datamap.patterns import kinds_in

# Coverage of a column holding personal data.
MAPPED = "mapped"  # listed under a category
KEY = "key"  # a key, member link or member-table marker of a mapped table: goes with the row
IGNORED = "ignored"  # the table is under ignore_tables: on purpose, but still personal data
# The operator states the table's people (not members) are handled outside the lifecycle:
# accounted for, so --strict passes, but the reason is shown in every report.
HANDLED_ELSEWHERE = "handled elsewhere"
NON_PERSONAL = "non_personal"  # the map says it holds none: not covered
UNMAPPED = "not covered"  # table or column the map does not name
COVERED = (MAPPED, KEY, HANDLED_ELSEWHERE)

OWN_TABLES = ("lifecycle_", "alembic_version")


@dataclass(frozen=True)
class Finding:
    table: str
    column: str
    kinds: dict[str, int]  # kind -> sampled rows holding it
    rows: int  # rows sampled from the table
    coverage: str
    category: str | None = None
    reason: str | None = None  # why it is handled elsewhere (the operator's words)

    @property
    def covered(self) -> bool:
        return self.coverage in COVERED

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {n}/{self.rows}" for k, n in sorted(self.kinds.items()))
        cov = {
            MAPPED: f"mapped ({self.category})",
            KEY: "mapped (key or member column)",
            IGNORED: "ignored table (ignore_tables), not covered",
            HANDLED_ELSEWHERE: f"handled elsewhere: {self.reason}",
            NON_PERSONAL: "listed non_personal, not covered",
            UNMAPPED: "NOT COVERED",
        }[self.coverage]
        return f"{self.table}.{self.column}: {kinds}; {cov}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "column": self.column,
            "kinds": dict(sorted(self.kinds.items())),
            "rows_sampled": self.rows,
            "coverage": self.coverage,
            "category": self.category,
            "reason": self.reason,
            "covered": self.covered,
        }


@dataclass
class Report:
    rows_per_table: int
    budget_seconds: float
    tables_total: int = 0
    tables_scanned: int = 0
    rows_read: int = 0
    findings: list[Finding] = field(default_factory=list)
    ignored_tables: list[str] = field(default_factory=list)
    handled_elsewhere: dict[str, str] = field(default_factory=dict)  # table -> reason
    not_scanned: dict[str, str] = field(default_factory=dict)  # table -> why
    scanned: list[str] = field(default_factory=list)  # the tables read (stored findings)
    stopped_early: str | None = None

    @property
    def uncovered(self) -> list[Finding]:
        return [f for f in self.findings if not f.covered]

    @property
    def complete(self) -> bool:
        return self.stopped_early is None and not self.not_scanned

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_per_table": self.rows_per_table,
            "budget_seconds": self.budget_seconds,
            "tables_total": self.tables_total,
            "tables_scanned": self.tables_scanned,
            "rows_read": self.rows_read,
            "ignored_tables": self.ignored_tables,
            "handled_elsewhere": self.handled_elsewhere,
            "not_scanned": self.not_scanned,
            "stopped_early": self.stopped_early,
            "complete": self.complete,
            "uncovered": len(self.uncovered),
            "findings": [f.as_dict() for f in self.findings],
        }


def _scannable(t: Any) -> bool:
    """Text and JSON columns: where the patterns can occur (numbers and dates cannot hold an
    email or an address; a phone number stored as an integer is not looked for)."""
    return isinstance(t, sqltypes.String | sqltypes.JSON) and not isinstance(t, sqltypes.Enum)


def _coverage(dm: DataMap, name: str, col: str) -> tuple[str, str | None]:
    if any(fnmatchcase(name, ig) for ig in dm.ignore_tables):
        return IGNORED, None
    if dm.handled_elsewhere_reason(name) is not None:
        return HANDLED_ELSEWHERE, None
    # Entries sharing the table (a meta table's keys) each map it: the column is covered
    # under a category if any of them lists it so.
    entries = dm.entries_on(name)
    for tm in entries:
        for cat, cols in tm.columns.items():
            if col in cols:
                return MAPPED, cat
    s = dm.subject
    special = {s.status_column, s.withdrawn_at_column, s.marker_column, s.login_column}
    for tm in entries:
        if col in tm.key_columns or (name == s.table and col in special):
            return KEY, None
    if any(col in tm.non_personal for tm in entries):
        return NON_PERSONAL, None
    return UNMAPPED, None


def discover(
    eng: Engine,
    dm: DataMap,
    *,
    rows: int = 1000,
    budget_seconds: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> Report:
    """Sample every table of ``eng`` (``dm`` expanded against it here) and report what personal
    data each text column holds and whether ``dm`` covers it. Stops at the time budget, saying
    so in :attr:`Report.stopped_early`; a table that cannot be read is named in
    :attr:`Report.not_scanned` with the error's class (never its text, which may quote data)."""
    if rows < 1:
        raise ValueError("rows must be at least 1")
    start = clock()
    insp = inspect(eng)
    names = sorted(n for n in insp.get_table_names() if not n.startswith(OWN_TABLES))
    dm = dm.expand(names)
    report = Report(rows, budget_seconds, tables_total=len(names))
    for i, name in enumerate(names):
        if clock() - start > budget_seconds:
            report.stopped_early = (
                f"time budget of {budget_seconds:g}s used up after {i} of {len(names)} tables; "
                f"not scanned: {', '.join(names[i:])}"
            )
            break
        if any(fnmatchcase(name, ig) for ig in dm.ignore_tables):
            report.ignored_tables.append(name)
        reason = dm.handled_elsewhere_reason(name)
        if reason is not None:
            report.handled_elsewhere[name] = reason
        try:
            cols = [c["name"] for c in insp.get_columns(name) if _scannable(c["type"])]
            pk = insp.get_pk_constraint(name).get("constrained_columns") or []
            if not cols:
                report.tables_scanned += 1
                report.scanned.append(name)
                continue
            t = table(name, *(column(c) for c in {*cols, *pk}))
            stmt = select(*(t.c[c] for c in cols)).limit(rows)
            if pk:
                # Newest rows first: what the site is collecting now.
                stmt = stmt.order_by(*(t.c[c].desc() for c in pk))
            counts: dict[str, Counter[str]] = {c: Counter() for c in cols}
            n = 0
            with eng.connect() as conn:
                for row in conn.execute(stmt):
                    n += 1
                    for c, value in zip(cols, row, strict=True):
                        counts[c].update(kinds_in(value))
                conn.rollback()
        except SQLAlchemyError as exc:
            report.not_scanned[name] = type(exc).__name__
            continue
        report.tables_scanned += 1
        report.scanned.append(name)
        report.rows_read += n
        for c in cols:
            if counts[c]:
                cov, cat = _coverage(dm, name, c)
                report.findings.append(Finding(name, c, dict(counts[c]), n, cov, cat, reason))
    return report
