"""The nightly purpose-end sweep: plan batches, run them, survive crashes and double triggers.

A run is a ``JobRun`` row (job ``sweep``) plus its ``lifecycle_sweep_batches`` rows. The
coordinator holds the sweep lock (:mod:`lifecycle.core.locks`) for the whole run, so a
second trigger (two beats, a manual run, a late run after downtime) returns at once. It plans
id-range batches, hands them out (``dispatch``) and also works through pending batches itself
until none is left, so the run finishes even when the workers holding batch messages were
killed (a killed worker's message only comes back after the broker's visibility timeout) or
there is only one worker process.

Phases run in order: withdrawn members, members the site deleted itself whose rows are left
(orphans, :mod:`lifecycle.engine.orphans`), dormant members (if the map enables dormancy), then
rows past their own age rule (e.g. access logs older than 3 months), table by table, parents
first (:func:`_stages` says why). Member batches lock their
members' rows (``FOR UPDATE SKIP LOCKED``), so two runners can never move the same member.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from lifecycle.core import dbkind
from lifecycle.core.errors import LifecycleError
from lifecycle.core.locks import JobLock, job_lock
from lifecycle.core.settings import get_settings
from lifecycle.core.timeutil import as_utc
from lifecycle.core.transient import TRANSIENT_DB_ERRORS
from lifecycle.engine import orphans, shared_parents, text_keys
from lifecycle.engine.context import EngineContext
from lifecycle.engine.guests import SHARED_ROWS, shared_line, with_guests
from lifecycle.engine.ledger_outbox import flush_ledger_outbox
from lifecycle.engine.mover import MoveResult, Scope, move, send_shred_jobs
from lifecycle.engine.preview import held_summary
from lifecycle.engine.selection import (
    age_selection,
    age_selections,
    dormant_subjects_query,
    subject_selections,
    withdrawn_subjects_query,
)
from lifecycle.engine.sweep_watch import LOCK_NAME as LOCK_NAME
from lifecycle.requests import holds
from models.engine import SweepBatch
from models.requests import JobRun

log = logging.getLogger(__name__)

MEMBER_BATCH = 500
# On a MySQL/MariaDB primary a batch makes some forty round trips whatever its size, and on a
# busy machine each one waits for a core: four times the members per batch is a quarter of the
# round trips per member (docs/engine.md). Its lists, rows and memory stay bounded (10,000
# values per IN list, DELETE_CHUNK rows per DELETE).
MYSQL_MEMBER_BATCH = 2000
AGE_BATCH = 5000
# What a trigger that found another runner on the sweep returns (and then stands down).
ANOTHER_SWEEP = "another sweep is running"
# Keys of a member batch's counts: the members its plan named, and those it locked and
# worked on (``subjects`` counts members whose rows moved: a dormant member may have none).
PLANNED = "planned_members"
MEMBERS = "members"

REASONS = {
    "withdrawal": "회원 탈퇴에 따른 처리목적 달성 (member withdrew)",
    "dormancy": "장기 미이용(휴면) 회원 정책 (dormancy, operator option)",
    "age": "보존기간 경과 (the row's own retention period ended)",
    "orphan": orphans.REASON,
}


@dataclass(frozen=True)
class BatchKey:
    run_id: int
    kind: str  # withdrawal | orphan | dormancy | age
    table: str  # "" for member batches
    first_id: int
    last_id: int

    def scope_key(self) -> str:
        t = f":{self.table}" if self.table else ""
        # ".." rather than "-": two long ids joined by a dash look like an RRN to the ledger's
        # personal-data guard.
        return f"sweep:{self.run_id}:{self.kind}{t}:{self.first_id}..{self.last_id}"


class SweepIncomplete(LifecycleError):
    """The sweep did all it could but not all it was asked (one line, no personal data)."""

    exit_code = 1


# How long a batch waits for members another transaction holds before it takes the rest and
# lets the run fail short of its plan: long enough for InnoDB to free a killed worker's locks.
BUSY_GRACE_SECONDS = 60.0


class SweepLockLost(Exception):
    """Another runner took the sweep lock while this one rode out a database outage."""


class BatchMembersBusy(LifecycleError):
    """Some of a batch's members are locked by another transaction: the batch is left pending
    (its transaction rolls back) and tried again, never recorded done without them."""


def _now() -> datetime:
    return datetime.now(UTC)


def member_batch_size(ctx: EngineContext) -> int:
    """Members per batch when the trigger names none: the setting, else by primary."""
    configured = get_settings().sweep_member_batch
    if configured:
        return configured
    return MYSQL_MEMBER_BATCH if dbkind.is_mysql(ctx.primary) else MEMBER_BATCH


# -- planning ------------------------------------------------------------------------------------


def _ranges(ids: Any, size: int) -> list[tuple[int, int, int]]:
    """(first id, last id, how many ids) of consecutive slices of ``size`` ids."""
    out: list[tuple[int, int, int]] = []
    first = last = None
    n = 0
    for (i,) in ids:
        if first is None:
            first = i
        last = i
        n += 1
        if n == size:
            out.append((first, last, n))
            first, n = None, 0
    if first is not None:
        out.append((first, last, n))  # type: ignore[arg-type]
    return out


def plan_member_ranges(
    ctx: EngineContext, conn: Connection, kind: str, now: datetime, size: int
) -> list[tuple[int, int, int]]:
    """(first id, last id, members) of each member batch the run will have."""
    if kind == "orphan":
        due = orphans.due_query(ctx, now)
        return _ranges(conn.execute(due.with_only_columns(due.selected_columns[0])), size)
    if kind == "withdrawal":
        q = withdrawn_subjects_query(ctx)
    else:
        q = dormant_subjects_query(ctx, now)
        if q is None:
            return []
    key = q.selected_columns[0]
    ids = conn.execute(
        execution_options={"stream_results": True, "yield_per": 20_000},
        statement=q.with_only_columns(key),
    )
    return _ranges(ids, size)


def plan_age_ranges(
    ctx: EngineContext, conn: Connection, now: datetime, size: int
) -> dict[str, list[tuple[Any, Any, int]]]:
    """(first key, last key, rows) of each table's age batches: integers, or text for a table
    keyed by text (:mod:`lifecycle.engine.text_keys`)."""
    out: dict[str, list[tuple[Any, Any, int]]] = {}
    for tm in ctx.ordered_tables:
        if not tm.expires_by_age:
            continue
        sel = age_selection(ctx, tm, now)
        t = ctx.table(tm.name)
        q = select(t.c[tm.key]).where(sel.where).order_by(t.c[tm.key])
        ids = conn.execute(
            execution_options={"stream_results": True, "yield_per": 20_000}, statement=q
        )
        ranges = _ranges(ids, size)
        if ranges:
            out[tm.name] = ranges
    return out


# -- one batch -----------------------------------------------------------------------------------


def _lock_members(
    ctx: EngineContext, conn: Connection, kind: str, first: int, last: int, now: datetime,
    allow_short: bool = False,
) -> dict[Any, datetime]:  # fmt: skip
    q = (
        withdrawn_subjects_query(ctx, first, last)
        if kind == "withdrawal"
        else dormant_subjects_query(ctx, now, first, last)
    )
    if q is None:
        return {}
    expected: int | None = None
    if dbkind.is_mysql(conn):
        by_ids = _by_ids_mysql(ctx, conn, kind, q, now)
        if by_ids is None:
            return {}
        q, expected = by_ids
    q = dbkind.for_update(q, conn, skip=True, of=ctx.subject_table)
    out: dict[Any, datetime] = {}
    subject = ctx.datamap.subject
    d = subject.dormancy
    for key, when in conn.execute(q):
        if when is None:
            out[key] = now
        elif kind == "dormancy":
            out[key] = d.inactive_for.add_to(as_utc(when))
        else:
            out[key] = subject.withdrawn_at(when) or now
    if expected is not None and len(out) < expected and not allow_short:
        # SKIP LOCKED passed over members another transaction holds: a copy of this batch
        # still dying with its worker (InnoDB frees its locks once it sees the connection
        # gone), or another statement's shared locks. Taking the rest and recording the batch
        # done would leave those members until tomorrow; roll back and try the batch again.
        raise BatchMembersBusy(
            f"sweep batch {first}..{last}: {expected - len(out)} of {expected} member(s) "
            "locked by another transaction; the batch is tried again"
        )
    return out


def _by_ids_mysql(
    ctx: EngineContext, conn: Connection, kind: str, ranged: Any, now: datetime
) -> tuple[Any, int] | None:
    """The batch's member query by the ids the range holds now, not by the range itself.

    InnoDB's locking read of an id range also locks the index record just past its end
    (next-key locking, REPEATABLE and READ COMMITTED alike): the first member of the next
    batch. A neighbour batch running at the same moment then passed over that member with
    ``SKIP LOCKED`` and the run ended with it still there. So the ids are read first without
    locks (a consistent read takes none), then locked by primary-key lookups, which lock
    those records only; the conditions are checked again under the lock. Returns the query
    and how many members the unlocked read found.
    """
    ids = [row[0] for row in conn.execute(ranged)]
    if not ids:
        return None
    q = withdrawn_subjects_query(ctx) if kind == "withdrawal" else dormant_subjects_query(ctx, now)
    assert q is not None  # a batch of a kind is planned only when its query exists
    t = ctx.subject_table
    key = t.c[ctx.datamap.subject.key]
    q = q.where(key.in_(ids))
    if key.primary_key:
        # On a small table the optimiser may prefer a full scan for an IN list, and a locking
        # full scan locks every row it reads, other batches' members too.
        q = q.with_hint(t, "FORCE INDEX (PRIMARY)", dialect_name=conn.dialect.name)
    return q, len(ids)


def process_members(
    ctx: EngineContext,
    conn: Connection,
    kind: str,
    first: int,
    last: int,
    scope: Scope,
    now: datetime,
    allow_short: bool = False,
) -> tuple[MoveResult, int]:
    """Move every table's rows of the withdrawn (or dormant) members in ``first..last``;
    returns the result and how many members the batch locked and worked on."""
    if kind == "orphan":
        return _process_orphans(ctx, conn, first, last, scope, now, allow_short)
    ended = _lock_members(ctx, conn, kind, first, last, now, allow_short)
    if not ended:
        return MoveResult(), 0
    check = holds.any_active(conn, ctx.local_date(now))
    sels = subject_selections(ctx, kind, ended, now, check_holds=check, conn=conn)
    sels, shared = with_guests(ctx, conn, kind, ended, now, sels, check_holds=check)
    # Read before the move: it deletes the parent rows that name them.
    via_shared = shared_parents.count(ctx, conn, sorted(ended))
    res = move(ctx, conn, sels, scope, now=now)
    res.shared = {**{f.key: f.rows for f in shared}, **via_shared}
    return res, len(ended)


def _process_orphans(
    ctx: EngineContext, conn: Connection, first: int, last: int, scope: Scope, now: datetime,
    allow_short: bool,
) -> tuple[MoveResult, int]:  # fmt: skip
    """Members the site deleted itself, taken as withdrawn at the time the lifecycle first saw
    them gone (lifecycle.engine.orphans)."""
    ended, expected = orphans.lock_orphans(ctx, conn, first, last, now)
    if len(ended) < expected and not allow_short:
        raise BatchMembersBusy(
            f"sweep batch {first}..{last}: {expected - len(ended)} of {expected} orphaned "
            "member(s) locked by another transaction; the batch is tried again"
        )
    if not ended:
        return MoveResult(), 0
    check = holds.any_active(conn, ctx.local_date(now))
    sels = subject_selections(ctx, "withdrawal", ended, now, check_holds=check, conn=conn)
    res = move(ctx, conn, sels, scope, now=now)
    orphans.forget_taken(ctx, conn, sorted(ended))
    return res, len(ended)


def process_age(
    ctx: EngineContext, conn: Connection, table: str, first: Any, last: Any, scope: Scope,
    now: datetime,
) -> MoveResult:  # fmt: skip
    tm = ctx.datamap.table(table)
    if not tm.expires_by_age:
        return MoveResult()
    check = holds.any_active(conn, ctx.local_date(now))
    # The rows of tables inheriting this one's date go with it, children first.
    sels = age_selections(ctx, tm, now, first, last, check_holds=check, conn=conn)
    return move(ctx, conn, sels, scope, now=now)


def _claim(ctx: EngineContext, conn: Connection, key: BatchKey) -> dict[str, Any] | None:
    """Take the batch for this transaction and return what its plan stored (``{}`` if
    nothing); None if done or someone else is on it."""
    t = SweepBatch.__table__
    where = (
        (t.c.run_id == key.run_id)
        & (t.c.kind == key.kind)
        & (t.c.table_name == key.table)
        & (t.c.first_id == key.first_id)
        & (t.c.state == "pending")
    )
    if dbkind.skip_locked(conn):
        got = conn.execute(
            select(t.c.id, t.c.counts).where(where).with_for_update(skip_locked=True)
        ).first()
        return None if got is None else dict(got[1] or {})
    # SQLite has no row locks: writing first takes the database's write lock instead. A server
    # without SKIP LOCKED (MariaDB < 10.6) waits on the row lock here and then finds the batch
    # done (0 rows), which is the same answer later.
    res = conn.execute(update(t).where(where).values(updated_at=_now()))
    if not res.rowcount:
        return None
    return dict(conn.execute(select(t.c.counts).where(where)).scalar() or {})


def run_batch(
    ctx: EngineContext,
    key: BatchKey,
    *,
    task_id: str | None = None,
    actor: str | None = None,
    allow_short: bool = False,
) -> dict[str, int] | None:
    """Process one batch if it is still pending; returns its counts, or None if skipped.

    Raises `BatchMembersBusy` while another transaction holds some of its members, unless
    ``allow_short`` (after `BUSY_GRACE_SECONDS` of that): then it takes the others, and the
    run, short of its plan, fails with the count.
    """  # fmt: skip
    now = _now()
    scope = Scope(
        key=key.scope_key(),
        purpose=key.kind,
        reason=REASONS[key.kind],
        actor=actor or ctx.actor,
        task_id=task_id,
    )
    with ctx.primary.begin() as conn:
        plan = _claim(ctx, conn, key)
        if plan is None:
            return None
        if key.kind == "age":
            first, last = text_keys.bounds(plan, key.first_id, key.last_id)
            res = process_age(ctx, conn, key.table, first, last, scope, now)
            counts = res.summary()
        else:
            res, members = process_members(
                ctx, conn, key.kind, key.first_id, key.last_id, scope, now, allow_short
            )
            counts = {**res.summary(), MEMBERS: members}
        if PLANNED in plan:
            counts[PLANNED] = int(plan[PLANNED])
        t = SweepBatch.__table__
        conn.execute(
            update(t)
            .where(
                (t.c.run_id == key.run_id)
                & (t.c.kind == key.kind)
                & (t.c.table_name == key.table)
                & (t.c.first_id == key.first_id)
            )
            .values(state="done", counts=counts, updated_at=_now())
        )
    send_shred_jobs(res.shred_jobs)
    # The batch's destruction entries stay parked in the outbox (committed with the DELETE):
    # the coordinator moves them to the ledger once per phase, saving two commits a batch.
    return counts


# -- the run -------------------------------------------------------------------------------------


def _insert_batches(
    ctx: EngineContext, conn: Connection, run_id: int, kind: str, table: str,
    ranges: list[tuple[Any, Any, int]],
) -> list[BatchKey]:  # fmt: skip
    if not ranges:
        return []
    now = _now()
    plans: list[dict[str, Any]] = [{} for _r in ranges]
    if kind == "age" and text_keys.is_text_key(ctx.table(table).c[ctx.datamap.table(table).key]):
        ranges, plans = text_keys.numbered(ranges)
    # A member batch keeps how many members its plan named: the run is ok only if it took
    # them all (see _shortfall).
    conn.execute(
        insert(SweepBatch.__table__),
        [
            {"run_id": run_id, "kind": kind, "table_name": table, "first_id": a, "last_id": b,
             "state": "pending", "updated_at": now,
             "counts": (plan or None) if kind == "age" else {PLANNED: n}}
            for (a, b, n), plan in zip(ranges, plans, strict=True)
        ],
    )  # fmt: skip
    return [BatchKey(run_id, kind, table, a, b) for a, b, _n in ranges]


def _batches(ctx: EngineContext, run_id: int, state: str | None = None) -> list[BatchKey]:
    t = SweepBatch.__table__
    q = select(t.c.kind, t.c.table_name, t.c.first_id, t.c.last_id).where(t.c.run_id == run_id)
    if state:
        q = q.where(t.c.state == state)
    with ctx.primary.connect() as conn:
        return [BatchKey(run_id, k, tb, a, b) for k, tb, a, b in conn.execute(q.order_by(t.c.id))]


def progress(ctx: EngineContext, run_id: int) -> tuple[int, int]:
    t = SweepBatch.__table__
    with ctx.primary.connect() as conn:
        rows = conn.execute(
            select(t.c.state, func.count()).where(t.c.run_id == run_id).group_by(t.c.state)
        ).all()
    by: dict[str, int] = {state: n for state, n in rows}
    return int(by.get("done", 0)), int(sum(by.values()))


def totals(ctx: EngineContext, run_id: int) -> dict[str, int]:
    t = SweepBatch.__table__
    out: dict[str, int] = {}
    with ctx.primary.connect() as conn:
        for kind, state, counts in conn.execute(
            select(t.c.kind, t.c.state, t.c.counts).where(t.c.run_id == run_id)
        ):
            for k, v in (counts or {}).items():
                if k == PLANNED:
                    # What the plan named, done or not: ``{kind}_planned``.
                    out[f"{kind}_planned"] = out.get(f"{kind}_planned", 0) + int(v)
                    continue
                if state != "done":
                    continue
                if k == MEMBERS:
                    out[f"{kind}_members"] = out.get(f"{kind}_members", 0) + int(v)
                    continue
                out[k] = out.get(k, 0) + int(v)
                if k == "subjects" and kind != "age":
                    out[f"{kind}_subjects"] = out.get(f"{kind}_subjects", 0) + int(v)
    return out


def _shortfall(counts: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Member phases that took fewer members than their plan named: {kind: (done, planned)}.

    A member the plan named and the batch did not take is still withdrawn (or dormant) with
    its rows, e.g. passed over as locked by someone else; the next run retries it, but this
    run did not do all it was asked and must not look ok.
    """
    out: dict[str, tuple[int, int]] = {}
    for kind in ("withdrawal", "orphan", "dormancy"):
        planned = int(counts.get(f"{kind}_planned", 0))
        done = int(counts.get(f"{kind}_members", 0))
        if done < planned:
            out[kind] = (done, planned)
    return out


def _supersede_stale_runs(
    ctx: EngineContext, conn: Connection, task_id: str | None, keep: int | None = None
) -> None:
    """Runs whose coordinator died (we hold the lock, so nobody runs them) are closed."""
    jr, b = JobRun.__table__, SweepBatch.__table__
    stale = [
        r[0]
        for r in conn.execute(
            select(jr.c.id).where(jr.c.job == "sweep", jr.c.outcome == "running", jr.c.id != keep)
        )
    ]
    if not stale:
        return
    conn.execute(
        update(b).where(b.c.run_id.in_(stale), b.c.state == "pending").values(state="superseded")
    )
    conn.execute(
        update(jr).where(jr.c.id.in_(stale)).values(outcome="abandoned", finished_at=_now())
    )
    log.warning("sweep runs %s were interrupted; their remaining work is redone now", stale)


class _Retry:
    """Ride out a database restart: retry for up to ``window`` seconds, then give up."""

    def __init__(self, window: float = 180.0) -> None:
        self.window = window
        self.since: float | None = None

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
        if now - self.since > self.window:
            raise exc
        log.warning("database unavailable (%s); retrying", type(exc).__name__)
        time.sleep(1.0)

    def ok(self) -> None:
        self.since = None


def run_sweep(
    ctx: EngineContext,
    *,
    task_id: str | None = None,
    dispatch: Callable[[BatchKey], None] | None = None,
    report: Callable[[int, int], None] | None = None,
    member_batch: int | None = None,
    age_batch: int = AGE_BATCH,
    run_id: int | None = None,
    on_run: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The whole sweep; returns counts (no personal data). ``dispatch`` fans batches out.
    ``member_batch``: members per batch (None: :func:`member_batch_size`).

    ``run_id``: resume that run (the watchdog re-sends a run whose coordinator died with it),
    keeping its batches and counts. ``on_run`` is told the run id as soon as it exists.
    """
    with job_lock(ctx.primary, LOCK_NAME) as lock:
        if lock is None:
            log.info("another sweep is running; this trigger does nothing")
            return {"skipped": ANOTHER_SWEEP}
        size = member_batch or member_batch_size(ctx)
        try:
            return _run_locked(
                ctx, lock, task_id, dispatch, report, size, age_batch, run_id, on_run
            )
        except SweepLockLost:
            # The other runner resumes the same run (it is in the lease); not a failure.
            log.warning("the sweep lock went to another runner during a database outage; "
                        "it carries the run on and this one stops")  # fmt: skip
            return {"skipped": ANOTHER_SWEEP}


def _open_run(ctx: EngineContext, task_id: str | None, resume: int | None) -> tuple[int, bool]:
    """The run to work on, and whether it is a resumed one."""
    jr = JobRun.__table__
    with ctx.primary.begin() as conn:
        if resume is not None:
            running = conn.execute(
                select(jr.c.id).where(
                    jr.c.id == resume, jr.c.job == "sweep", jr.c.outcome == "running"
                )
            ).first()
            if running is not None:
                _supersede_stale_runs(ctx, conn, task_id, keep=resume)
                conn.execute(update(jr).where(jr.c.id == resume).values(task_id=task_id))
                log.warning("sweep run %s resumed after its coordinator stopped", resume)
                return resume, True
        _supersede_stale_runs(ctx, conn, task_id)
        # inserted_primary_key rather than RETURNING: MySQL 8 has no INSERT ... RETURNING.
        # One row: SQLAlchemy types the key Optional for executemany.
        run_id = conn.execute(  # type: ignore[index]
            insert(jr).values(
                job="sweep", task_id=task_id, started_at=_now(), outcome="running", counts={}
            )
        ).inserted_primary_key[0]
    return int(run_id), False


def _planning_counts(ctx: EngineContext, run_id: int) -> dict[str, int]:
    """What planning said in the run's counts (orphan rows the sweep cannot take)."""
    jr = JobRun.__table__
    with ctx.primary.connect() as conn:
        counts = conn.execute(select(jr.c.counts).where(jr.c.id == run_id)).scalar() or {}
    return {k: int(v) for k, v in counts.items() if k == orphans.UNHANDLED}


def _planned_phases(ctx: EngineContext, run_id: int) -> set[str]:
    t = SweepBatch.__table__
    with ctx.primary.connect() as conn:
        return {k for (k,) in conn.execute(select(t.c.kind).where(t.c.run_id == run_id).distinct())}


def _run_locked(
    ctx: EngineContext,
    lock: JobLock,
    task_id: str | None,
    dispatch: Callable[[BatchKey], None] | None,
    report: Callable[[int, int], None] | None,
    member_batch: int,
    age_batch: int,
    resume: int | None = None,
    on_run: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    jr = JobRun.__table__
    if resume is not None:
        with ctx.primary.connect() as conn:
            outcome = conn.execute(select(jr.c.outcome).where(jr.c.id == resume)).scalar()
        if outcome is not None and outcome != "running":
            # Finished (or superseded) since it was re-sent: nothing left of it to do.
            return {"run_id": int(resume), "skipped": f"run {resume} is {outcome} already"}
    run_id, resumed = _open_run(ctx, task_id, resume)
    if on_run is not None:
        on_run(run_id)
    flush_ledger_outbox(ctx)
    # A phase is planned in one transaction with all its batches: a resumed run re-plans only
    # the phases that never got that far (the rest is in its pending batches).
    planned = _planned_phases(ctx, run_id) if resumed else set()
    retry = _Retry()
    phases: list[str] = ["withdrawal", "orphan"]
    if ctx.datamap.subject.dormancy.enabled:
        phases.append("dormancy")
    phases.append("age")
    for phase in phases:
        if phase in planned:
            keys = _batches(ctx, run_id, "pending")
            keys = [k for k in keys if k.kind == phase]
        while phase not in planned:
            try:
                keys = _plan_phase(ctx, run_id, phase, member_batch, age_batch)
                retry.ok()
                break
            except TRANSIENT_DB_ERRORS as exc:
                retry.failed(exc)
                _check_lock(lock)
        for stage in _stages(ctx, phase, keys):
            for key in stage:
                if dispatch is not None:
                    try:
                        dispatch(key)
                    except Exception as exc:  # broker down: we work through them ourselves
                        log.warning("could not dispatch sweep batches (%s)", type(exc).__name__)
                        dispatch = None
            only = {k.table for k in stage} if phase == "age" else None
            _drain(ctx, lock, run_id, task_id, report, retry, only)
    while True:
        try:
            flush_ledger_outbox(ctx)
            counts = {**_planning_counts(ctx, run_id), **totals(ctx, run_id)}
            done, total = progress(ctx, run_id)
            counts.update({"run_id": run_id, "batches": total, "batches_done": done})
            # Said in the result (Flower, --wait, status): what legal holds kept back.
            counts.update(held_summary(ctx))
            refused = int(counts.get("files_refused", 0))
            short = _shortfall(counts)
            if short:
                counts["members_short"] = sum(p - d for d, p in short.values())
            # Guest rows a live member's identity also names were taken for nobody.
            shared = shared_line(counts)
            if shared:
                counts[SHARED_ROWS] = sum(
                    int(v) for k, v in counts.items() if k.startswith(SHARED_ROWS + ":")
                )
            with ctx.primary.begin() as conn:
                conn.execute(
                    update(jr)
                    .where(jr.c.id == run_id)
                    .values(
                        outcome="failed" if refused or short or shared else "ok",
                        finished_at=_now(),
                        counts=counts,
                    )
                )
            if short:
                said = ", ".join(f"{k} {d:,} of {p:,}" for k, (d, p) in short.items())
                raise SweepIncomplete(
                    f"sweep run {run_id}: took fewer members than planned ({said}); "
                    f"{counts['members_short']:,} still hold their rows (the next run retries them)"
                )
            if refused:
                # The rows went, their paths are kept in shred jobs: the run must not look ok.
                raise SweepIncomplete(
                    f"sweep run {run_id}: {refused} file(s) refused by the shredder; their paths "
                    "are kept in shred jobs (lifecycle status): fix the storage roots or the "
                    "map's site.root and re-run those jobs"
                )
            if shared:
                raise SweepIncomplete(f"sweep run {run_id}: {shared}")
            return counts
        except TRANSIENT_DB_ERRORS as exc:
            retry.failed(exc)


def _plan_phase(
    ctx: EngineContext, run_id: int, phase: str, member_batch: int, age_batch: int
) -> list[BatchKey]:
    now = _now()
    with ctx.primary.begin() as conn:
        if phase == "age":
            keys: list[BatchKey] = []
            for table, ranges in plan_age_ranges(ctx, conn, now, age_batch).items():
                keys += _insert_batches(ctx, conn, run_id, "age", table, ranges)
            return keys
        if phase == "orphan":
            # In the phase's own planning transaction: a resumed run keeps what it recorded.
            said = orphans.record_orphans(ctx, conn, now)
            jr = JobRun.__table__
            conn.execute(update(jr).where(jr.c.id == run_id).values(counts=said))
        ranges = plan_member_ranges(ctx, conn, phase, now, member_batch)
        return _insert_batches(ctx, conn, run_id, phase, "", ranges)


def _stages(ctx: EngineContext, phase: str, keys: list[BatchKey]) -> list[list[BatchKey]]:
    """The phase's batches in the order they must run; each stage is drained before the next
    is dispatched.

    Age batches run table by table, parents before the tables referencing them. An age row
    another mapped table still references is not taken (``age_selection``), and a batch
    re-applies that test when it runs: were a referencing table's batches to run first, a row
    referenced when the run was planned (a payment its tax invoice points at) would be freed
    and taken in the same run, which neither the plan nor the dry run can foresee, and which
    rows that catches would depend on batch order and id ranges. Parents first, a batch sees
    the references the plan saw, so the run takes exactly the rows that were free when it was
    planned, the ones the dry run lists; a row freed tonight goes next night, within the
    five days of 표준 개인정보 보호지침 제10조①. It holds across crashes: a resumed run drains
    the earliest table with pending batches first, and a later table's batches are never
    dispatched before an earlier one is done.
    """
    if phase != "age":
        return [keys]
    by: dict[str, list[BatchKey]] = {}
    for k in keys:
        by.setdefault(k.table, []).append(k)
    return [by[tm.name] for tm in reversed(ctx.ordered_tables) if tm.name in by] or [[]]


def _check_lock(lock: JobLock) -> None:
    """After a database error: stop if another runner took the lock meanwhile."""
    try:
        held = lock.reacquire()
    except TRANSIENT_DB_ERRORS:
        return  # the server is still down; the retry window decides when to give up
    if not held:
        raise SweepLockLost(LOCK_NAME)


def _drain(
    ctx: EngineContext,
    lock: JobLock,
    run_id: int,
    task_id: str | None,
    report: Callable[[int, int], None] | None,
    retry: _Retry,
    only: set[str] | None = None,
) -> None:
    """Work through this run's pending batches until every one is done (``only``: the age
    batches of these tables, a stage of :func:`_stages`)."""

    def tell() -> None:
        if report is None:
            return
        try:
            done, total = progress(ctx, run_id)
            report(done, total)
        except Exception:  # the result backend (or DB) being down must not stop the sweep
            log.debug("progress report failed", exc_info=True)

    busy: dict[BatchKey, float] = {}  # batches found with members held, since when
    while True:
        try:
            pending = _batches(ctx, run_id, "pending")
            if only is not None:
                pending = [k for k in pending if k.kind == "age" and k.table in only]
            retry.ok()
        except TRANSIENT_DB_ERRORS as exc:
            retry.failed(exc)
            _check_lock(lock)
            continue
        tell()
        if not pending:
            flush_ledger_outbox(ctx)
            return
        worked = False
        last_report = time.monotonic()
        # From the last batch down, while the workers take the dispatched ones from the first
        # up: neighbouring batches share rows (a memo between consecutive members, the
        # next-key lock at the end of a batch's range of ids) and one waits on the other's
        # commit when both run at once, which, walking the same way, they nearly always did.
        for key in reversed(pending):
            try:
                first_busy = busy.get(key)
                short = (
                    first_busy is not None and time.monotonic() - first_busy > BUSY_GRACE_SECONDS
                )
                # None: done already, or a batch task holds it right now.
                if run_batch(ctx, key, task_id=task_id, allow_short=short) is not None:
                    worked = True
                retry.ok()
            except BatchMembersBusy:
                busy.setdefault(key, time.monotonic())
            except TRANSIENT_DB_ERRORS as exc:
                retry.failed(exc)
                _check_lock(lock)
                break
            if time.monotonic() - last_report > 1.0:
                tell()
                last_report = time.monotonic()
        if not worked:
            time.sleep(0.5)  # the rest are being worked on by batch tasks right now
