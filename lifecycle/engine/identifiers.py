"""Destroying a unique identifier (고유식별정보) in LIVE rows: `lifecycle identifiers destroy`.

A category the data map flags under ``unique_identifiers:`` (see
``lifecycle.datamap.identifiers``) may not be held without a statute. Nothing else removes it
from rows whose purpose has not ended (active members), so this job clears its columns in
every mapped table: NULL where the column allows it, else its blank value (``''`` for text,
the column's default otherwise). The row and the member stay.

A run is a ``JobRun`` row (job ``identifiers_destroy``) holding the category, the operator's
reason and the running counts; the task gets only the run id. Each batch is ONE primary-DB
transaction: lock up to ``batch`` rows still holding a value (``FOR UPDATE``), clear them,
re-read them to verify none still holds a value (else the batch rolls back and the run
fails), park one ledger entry per member (keyed pseudonym, table, category, columns, never
values) in ``lifecycle_ledger_outbox`` and add to the run's counts; then the outbox is flushed
to the ledger. A crash at any line leaves either the whole batch (cleared + owed entries +
counts) or none of it, and a re-run (the CLI re-sends an unfinished run; the lease watchdog
re-sends a dead task) selects only rows still holding a value, so it finishes the job without
clearing or ledgering anything twice.

Rows an active legal hold covers (their member, or the category) are left and counted
(``held``); the run says so and a re-run after the release clears them.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    and_,
    func,
    insert,
    literal_column,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy import types as sqltypes
from sqlalchemy.orm import Session

from lifecycle.core import dbkind
from lifecycle.core.errors import LifecycleError, UserError
from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.datamap.identifiers import FlaggedCategory, destroyable, locations
from lifecycle.datamap.model import DataMap, TableMap
from lifecycle.engine.context import EngineContext
from lifecycle.engine.ledger_outbox import flush_ledger_outbox
from lifecycle.engine.mover import blank_value
from lifecycle.engine.selection import member_expr
from lifecycle.requests import holds
from lifecycle.vault import accesslog, crypto, keystore, ledger
from models.engine import LedgerOutbox
from models.requests import JobRun

log = logging.getLogger(__name__)

JOB = "identifiers_destroy"
BATCH = 500
MIN_REASON_CHARS = 4
METHOD = "DB 항목 삭제: 해당 칼럼을 NULL(또는 빈 값)으로 갱신, 행과 회원은 유지 (column cleared)"


class DestroyFailed(LifecycleError):
    """A batch did not verify cleared: rolled back, the run failed (one line, no values)."""


@dataclass(frozen=True)
class Census:
    """One table's rows holding the category: how many, and how many of them are held."""

    table: str
    columns: tuple[str, ...]
    rows: int
    held: int


def holding(table: str, col: Any) -> Any:
    """SQL: ``col`` holds a value (what clearing it would remove)."""
    if isinstance(col.type, sqltypes.String):
        return and_(col.is_not(None), col != "")
    if col.nullable:
        return col.is_not(None)
    blank = blank_value(table, col)  # raises for NOT NULL with no default: cannot be cleared
    return col != blank


def _holding_any(tm: TableMap, t: Any, columns: tuple[str, ...]) -> Any:
    return tm.scoped(t, or_(*(holding(tm.name, t.c[c]) for c in columns)))


def census(
    conn: Connection,
    dm: DataMap,
    metadata: Any,
    category: str,
    today: Any,
    *,
    check_holds: bool = True,
) -> list[Census]:
    """Rows of every table holding ``category`` with a value (counts only, never values).

    Tables or columns missing from ``metadata`` (a map the database does not fit) are skipped;
    ``datamap check`` reports those as findings of their own (and passes ``check_holds=False``
    before ``lifecycle db upgrade`` made the holds table).
    """
    out: list[Census] = []
    any_hold = check_holds and holds.any_active(conn, today)
    for name, cols in locations(dm, category):
        t = metadata.tables.get(dm.physical(name))
        if t is None or any(c not in t.c for c in cols):
            continue
        tm = dm.tables[name]
        cond = _holding_any(tm, t, cols)
        rows = conn.execute(select(func.count()).select_from(t).where(cond)).scalar_one()
        held = 0
        if any_hold and rows:
            member = dm.member_expr(name, metadata) if tm.links or tm.via or tm.owner else None
            free = holds.not_held([category], member, today)
            free_rows = conn.execute(
                select(func.count()).select_from(t).where(cond, free)
            ).scalar_one()
            held = int(rows) - int(free_rows)
        out.append(Census(name, cols, int(rows), held))
    return out


def check_clearable(ctx: EngineContext, category: str) -> None:
    """Every column of the category can be cleared (a UserError names the first that cannot)."""
    for name, cols in locations(ctx.datamap, category):
        t = ctx.table(name)
        for c in cols:
            blank_value(name, t.c[c])


def start(
    ctx: EngineContext, category: str, reason: str, operator: str, *, force: bool = False
) -> tuple[int, bool]:
    """Check the request and open a run (or find the unfinished one); ``(run id, resumed)``.

    Bad input is a one-line UserError and nothing is written: an unknown or unflagged category,
    one held under a statutory basis without ``force``, a column that cannot be cleared, a
    reason too short or shaped like personal data.
    """
    destroyable(ctx.datamap, category, force=force)
    check_clearable(ctx, category)
    text = " ".join((reason or "").split())
    if len(text) < MIN_REASON_CHARS:
        raise UserError("--reason is required (e.g. '제24조의2: 법적 근거 없는 주민등록번호 파기')")
    if len(text) > 200:
        raise UserError("--reason must be at most 200 characters")
    ledger.refuse_personal_shapes(reason=text)
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        for run_id, counts in conn.execute(
            select(jr.c.id, jr.c.counts).where(jr.c.job == JOB, jr.c.outcome == "running")
        ):
            if (counts or {}).get("category") == category:
                return int(run_id), True
        # One row: SQLAlchemy types the key Optional for executemany.
        run_id = conn.execute(  # type: ignore[index]
            insert(jr).values(
                job=JOB,
                started_at=datetime.now(UTC),
                outcome="running",
                counts={
                    "category": category,
                    "reason": text,
                    "operator": operator,
                    "forced": bool(force),
                    "cleared": 0,
                    "subjects": 0,
                    "batches": 0,
                },
            )
        ).inserted_primary_key[0]
    return int(run_id), False


def _run_row(ctx: EngineContext, run_id: int) -> Any:
    jr = JobRun.__table__
    with ctx.primary.connect() as conn:
        return conn.execute(select(jr).where(jr.c.id == run_id, jr.c.job == JOB)).first()


def _batch(
    ctx: EngineContext,
    run_id: int,
    flag: FlaggedCategory,
    tm: TableMap,
    cols: tuple[str, ...],
    params: dict[str, Any],
    ref_key: bytes,
    task_id: str | None,
    size: int,
) -> int:
    """Clear one batch of ``tm``; returns how many rows it cleared (0: the table is done)."""
    t = ctx.table(tm.name)
    keys = [t.c[k] for k in tm.keys]
    cond = _holding_any(tm, t, cols)
    linked = tm.links or tm.via or tm.owner or tm.name == ctx.datamap.subject.table
    member = member_expr(ctx, tm) if linked else None
    who = member if member is not None else literal_column("NULL")
    with ctx.primary.begin() as conn:
        today = ctx.today()
        free = holds.not_held([flag.category], member, today) if holds.any_active(conn, today) \
            else true()  # fmt: skip
        stmt = select(*keys, who).where(cond, free).order_by(*keys).limit(size)
        rows = conn.execute(dbkind.for_update(stmt, conn, of=t)).all()
        if not rows:
            return 0
        n = len(keys)
        ident = [tuple(r[:n]) for r in rows]
        where = tuple_(*keys).in_(ident) if n > 1 else keys[0].in_([i[0] for i in ident])
        blank = {c: blank_value(tm.name, t.c[c]) for c in cols}
        conn.execute(update(t).where(where).values(blank))
        left = conn.execute(select(func.count()).select_from(t).where(where, cond)).scalar_one()
        if left:
            # Rolls the batch back: no row is ledgered that was not verified cleared.
            raise DestroyFailed(
                f"{tm.name}: {left} of {len(rows)} rows still hold {flag.category} after the "
                "update; nothing of this batch was kept"
            )
        per_member: dict[Any, int] = defaultdict(int)
        for r in rows:
            per_member[r[n]] += 1
        now = datetime.now(UTC)
        entries = []
        for subject, count in per_member.items():
            entries.append(
                {
                    "token": uuid.uuid4().hex,
                    "created_at": now,
                    "entry": {
                        "action": "destroy",
                        "categories": [flag.category],
                        "tables": [tm.name],
                        "subjects": 0 if subject is None else 1,
                        "rows": count,
                        "reason": f"고유식별정보({flag.label}) 파기: {params['reason']}",
                        "legal_basis": f"{flag.restriction}, 제21조 (파기)",
                        "method": METHOD,
                        "actor": f"operator:{params['operator']}",
                        "task_id": task_id,
                        "request_id": None,
                        "subject_ref": None
                        if subject is None
                        else crypto.subject_ref(ref_key, subject),
                        "details": {
                            "run": run_id,
                            "columns": list(cols),
                            "kind": flag.kind,
                            "forced": bool(params.get("forced")),
                        },
                    },
                }
            )
        conn.execute(insert(LedgerOutbox.__table__), entries)
        jr = JobRun.__table__
        counts = conn.execute(select(jr.c.counts).where(jr.c.id == run_id)).scalar_one()
        counts = dict(counts or {})
        counts["cleared"] = int(counts.get("cleared", 0)) + len(rows)
        counts["subjects"] = int(counts.get("subjects", 0)) + sum(
            1 for s in per_member if s is not None
        )
        counts["batches"] = int(counts.get("batches", 0)) + 1
        conn.execute(update(jr).where(jr.c.id == run_id).values(counts=counts))
    return len(rows)


def run(
    ctx: EngineContext,
    run_id: int,
    *,
    task_id: str | None = None,
    report: Callable[..., None] | None = None,
    batch: int = BATCH,
) -> dict[str, Any]:
    """Carry out run ``run_id`` to the end; returns counts (safe for Flower and results)."""
    row = _run_row(ctx, run_id)
    if row is None:
        raise UserError(f"identifier destruction run {run_id} does not exist")
    if row.outcome != "running":
        return {"run_id": run_id, "skipped": f"run {run_id} is {row.outcome} already"}
    params = dict(row.counts or {})
    category = str(params.get("category"))
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        conn.execute(update(jr).where(jr.c.id == run_id).values(task_id=task_id))
    try:
        flag = destroyable(ctx.datamap, category, force=bool(params.get("forced")))
        with Session(ctx.archive) as a, a.begin():
            ref_key = keystore.ref_key(a)
        flush_ledger_outbox(ctx)  # entries a crash left parked
        with ctx.primary.connect() as conn:
            total = sum(c.rows - c.held for c in census(
                conn, ctx.datamap, ctx.metadata, category, ctx.today()))  # fmt: skip
        done = 0
        for name, cols in locations(ctx.datamap, category):
            tm = ctx.datamap.tables[name]
            while True:
                n = _batch(ctx, run_id, flag, tm, cols, params, ref_key, task_id, batch)
                if not n:
                    break
                flush_ledger_outbox(ctx)
                done += n
                if report is not None:
                    report(done, max(total, done))
        flush_ledger_outbox(ctx)
        with ctx.primary.connect() as conn:
            left = census(conn, ctx.datamap, ctx.metadata, category, ctx.today())
    except TRANSIENT_DB_ERRORS:
        raise  # the task retries; the run stays open and resumes
    except Exception as exc:
        _finish(ctx, run_id, "failed", {"error": type(exc).__name__})
        raise
    held = sum(c.held for c in left)
    remaining = sum(c.rows for c in left) - held
    counts = _finish(ctx, run_id, "done" if not remaining else "failed", {"held": held})
    result = {
        "run_id": run_id,
        "cleared": int(counts.get("cleared", 0)),
        "subjects": int(counts.get("subjects", 0)),
        "held": held,
    }
    with Session(ctx.archive) as a, a.begin():
        accesslog.record(
            a, operator=str(params.get("operator") or "lifecycle-worker"), kind="destroy",
            action="identifiers destroy", details={"category": category, **result},
        )  # fmt: skip
    if remaining:
        # New values written meanwhile by the site: say so rather than report a clean run.
        raise DestroyFailed(
            f"{remaining} rows still hold {category} (written during the run?); run "
            f"lifecycle identifiers destroy {category} again"
        )
    log.info("identifier run %s (%s): %s", run_id, category, result)
    return result


def _finish(ctx: EngineContext, run_id: int, outcome: str, extra: dict[str, Any]) -> dict[str, Any]:
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        counts = dict(conn.execute(select(jr.c.counts).where(jr.c.id == run_id)).scalar_one() or {})
        counts.update(extra)
        conn.execute(
            update(jr)
            .where(jr.c.id == run_id)
            .values(outcome=outcome, finished_at=datetime.now(UTC), counts=counts)
        )
    return counts
