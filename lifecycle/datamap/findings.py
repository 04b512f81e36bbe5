"""The data-map checks' findings, stored: discovery (personal data found by pattern per
table.column, covered by the map or not) and linkage (rows linked to one member holding another
member's identity).

`lifecycle datamap discover` stores a discovery run, the linkage part of `lifecycle datamap
check` a linkage run, and the weekly beat job (:func:`scan`) both. Each run is a
``lifecycle_job_runs`` row; its findings name it. A new run of a kind closes the previous open
findings of that kind (the rows stay, ``closed_at`` set: the history of what was found when);
a discovery run that could not read every table closes only the findings of the tables it read.

An officer's acknowledgement of an uncovered discovery finding (the console, with a reason)
is carried over to the same table.column's finding in later runs while it stays uncovered, so a
weekly run does not bring back what was already looked at; the gauge and `lifecycle status`
count the uncovered ones nobody acknowledged. Names and counts only, never a value.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, inspect, select, update
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.datamap.current import current_datamap
from models.base import utcnow
from models.findings import DataMapFinding, FindingKind
from models.requests import JobRun

if TYPE_CHECKING:
    from lifecycle.datamap import linkage
    from lifecycle.datamap.discover import Report

log = logging.getLogger(__name__)

# Job names of the runs that store findings (lifecycle_job_runs.job).
JOB_DISCOVER = "datamap.discover"  # `lifecycle datamap discover`
JOB_LINKAGE = "datamap.linkage"  # the linkage part of `lifecycle datamap check`
JOB_SCAN = "datamap.scan"  # the weekly beat job: both
# The weekly job's discovery sample: what `datamap discover` reads by default.
SCAN_ROWS = 1000
SCAN_BUDGET_SECONDS = 600.0
WRONG_LINK = "wrong link"
MAX_REASON = 500


class ScanFailed(LifecycleError):
    """The weekly scan could not do all it was asked (one line, no data)."""


def start_run(s: Session, job: str, task_id: str | None = None) -> int:
    run = JobRun(job=job, task_id=task_id, outcome="running", started_at=utcnow())
    s.add(run)
    s.flush()
    return int(run.id)


def finish_run(s: Session, run_id: int, outcome: str, counts: dict[str, Any]) -> None:
    s.execute(
        update(JobRun)
        .where(JobRun.id == run_id)
        .values(outcome=outcome, finished_at=utcnow(), counts=counts)
    )


def _replace(
    s: Session,
    kind: str,
    run_id: int,
    new: list[DataMapFinding],
    now: datetime,
    tables: Collection[str] | None = None,
) -> None:
    """Close the open findings of ``kind`` (of ``tables`` only, when given) and add ``new``,
    carrying acknowledgements over to the same table.column while still uncovered."""
    q = select(DataMapFinding).where(
        DataMapFinding.kind == kind, DataMapFinding.closed_at.is_(None)
    )
    if tables is not None:
        q = q.where(DataMapFinding.table_name.in_(sorted(tables)))
    acked: dict[tuple[str, str], DataMapFinding] = {}
    for old in s.scalars(q.with_for_update()):
        old.closed_at = now
        old.closed_by_run = run_id
        if old.acknowledged_at is not None:
            acked[(old.table_name, old.column_name)] = old
    for f in new:
        prev = acked.get((f.table_name, f.column_name))
        if prev is not None and not f.covered:
            f.acknowledged_at = prev.acknowledged_at
            f.acknowledged_by = prev.acknowledged_by
            f.ack_reason = prev.ack_reason
        s.add(f)


def store_discovery(s: Session, report: Report, run_id: int) -> int:
    """The discovery findings of ``report``, replacing the open ones of the tables it read;
    returns how many are uncovered."""
    now = utcnow()
    new = [
        DataMapFinding(
            kind=FindingKind.DISCOVERY.value,
            table_name=f.table,
            column_name=f.column,
            patterns=dict(sorted(f.kinds.items())),
            rows=f.rows,
            coverage=f.coverage,
            covered=f.covered,
            run_id=run_id,
            found_at=now,
        )
        for f in report.findings
    ]
    # A complete scan replaces everything (a table dropped since is no longer found); a partial
    # one only what it read, so an unread table's findings stay open.
    tables = None if report.complete else report.scanned
    _replace(s, FindingKind.DISCOVERY.value, run_id, new, now, tables)
    return len(report.uncovered)


def store_linkage(s: Session, misfits: Iterable[linkage.Misfit], run_id: int) -> int:
    """The linkage findings (every one a wrong link), replacing the open ones; returns their
    number."""
    now = utcnow()
    new = [
        DataMapFinding(
            kind=FindingKind.LINKAGE.value,
            table_name=m.table,
            column_name=m.column,
            patterns={m.kind: m.rows},
            rows=m.rows,
            coverage=WRONG_LINK,
            covered=False,
            run_id=run_id,
            found_at=now,
        )
        for m in misfits
    ]
    _replace(s, FindingKind.LINKAGE.value, run_id, new, now)
    return len(new)


def open_findings(s: Session, kind: str | None = None) -> list[DataMapFinding]:
    q = select(DataMapFinding).where(DataMapFinding.closed_at.is_(None))
    if kind is not None:
        q = q.where(DataMapFinding.kind == kind)
    return list(
        s.scalars(q.order_by(DataMapFinding.covered, DataMapFinding.table_name, DataMapFinding.id))
    )


def open_counts(s: Session) -> dict[str, int]:
    """Open findings for the gauges and `lifecycle status`: uncovered discovery findings nobody
    acknowledged, acknowledged ones, and linkage findings."""
    f = DataMapFinding
    rows = s.execute(
        select(f.kind, f.covered, f.acknowledged_at.is_not(None), func.count())
        .where(f.closed_at.is_(None))
        .group_by(f.kind, f.covered, f.acknowledged_at.is_not(None))
    ).all()
    out = {"discovery_uncovered": 0, "discovery_acknowledged": 0, "linkage": 0}
    for kind, covered, acked, n in rows:
        if kind == FindingKind.LINKAGE.value:
            out["linkage"] += int(n)
        elif not covered:
            out["discovery_acknowledged" if acked else "discovery_uncovered"] += int(n)
    return out


def acknowledge(s: Session, finding_id: int, reason: str, by: str) -> DataMapFinding:
    """The officer has looked at an uncovered discovery finding and says why it may stay
    (a one-line UserError otherwise; nothing changed)."""
    reason = " ".join((reason or "").split())
    if not reason:
        raise UserError("확인 사유를 적어 주십시오.")
    if len(reason) > MAX_REASON:
        raise UserError(f"확인 사유는 {MAX_REASON}자 이내입니다.")
    f = s.get(DataMapFinding, finding_id, with_for_update=True)
    if f is None or f.closed_at is not None:
        raise UserError(f"점검 결과 {finding_id}번은 현재 열려 있지 않습니다.")
    if f.kind != FindingKind.DISCOVERY.value or f.covered:
        raise UserError(f"점검 결과 {finding_id}번은 확인 처리할 대상이 아닙니다.")
    if f.acknowledged_at is not None:
        raise UserError(f"점검 결과 {finding_id}번은 이미 확인되었습니다.")
    f.acknowledged_at = utcnow()
    f.acknowledged_by = by
    f.ack_reason = reason
    return f


def scan(task_id: str | None = None) -> dict[str, int]:
    """The weekly job: a discovery pass and the linkage check on the primary, both stored.
    Raises ScanFailed (the run recorded as failed) when it could not run or not read every
    table; what it did read is stored all the same."""
    # Imported here: `lifecycle status` reads this module's counts, and the scanners with the
    # access log (its keystore and cryptography) were a fifth of that command's start-up.
    from lifecycle.datamap import linkage
    from lifecycle.datamap.discover import discover
    from lifecycle.vault import accesslog

    with db.session("primary") as s:
        run_id = start_run(s, JOB_SCAN, task_id)
    try:
        dm = current_datamap()
        eng = db.engine("primary")
        report = discover(eng, dm, rows=SCAN_ROWS, budget_seconds=SCAN_BUDGET_SECONDS)
        shown = dm.expand(inspect(eng).get_table_names())
        misfits = linkage.check(shown, eng, shown.reflect(eng))
    except Exception as exc:
        with db.session("primary") as s:
            finish_run(s, run_id, "failed", {"error": type(exc).__name__})
        raise ScanFailed(
            f"data-map scan (run {run_id}) could not run: {type(exc).__name__}; "
            "see `lifecycle datamap check`"
        ) from None
    counts = {
        "run_id": run_id,
        "tables": report.tables_scanned,
        "rows": report.rows_read,
        "uncovered": len(report.uncovered),
        "linkage": len(misfits),
        "not_scanned": len(report.not_scanned) + (1 if report.stopped_early else 0),
    }
    with db.session("primary") as s:
        store_discovery(s, report, run_id)
        store_linkage(s, misfits, run_id)
        finish_run(s, run_id, "ok" if report.complete else "failed", counts)
    if report.rows_read:
        # Sampling reads members' data: on record as the command's pass is, counts only.
        accesslog.record_now(
            "lifecycle-worker", "read", "datamap discover",
            details={k: v for k, v in counts.items() if k != "run_id"},
        )  # fmt: skip
    if not report.complete:
        missed = sorted(report.not_scanned)
        raise ScanFailed(
            f"data-map scan (run {run_id}) did not read every table"
            + (f" (not scanned: {', '.join(missed)})" if missed else "")
            + ("; time budget used up" if report.stopped_early else "")
        )
    log.info("data-map scan %s: %s", run_id, counts)
    return counts
