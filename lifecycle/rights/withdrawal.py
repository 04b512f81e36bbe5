"""회원탈퇴: carry out one withdrawal request, step by step, resumable from any state.

received/dispatched --validate, capture notice, restrict--> restricted
restricted --archive retained categories--> archived
archived --archive anything new, destroy the rest, delete--> destroyed
destroyed --release the completion notice--> completed

Every step runs in one primary-DB transaction that first locks the request row (so two
deliveries of the same request serialise and the second sees the state the first left) and
the member's row (so the sweep and other requests keep off), and ends by persisting the next
state. A worker killed at any line resumes from the last state written; a completed or failed
request is a no-op. Bad input (unknown member, member already withdrawn and processed, a
request that is not a withdrawal) fails the request with a one-line reason and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from lifecycle.core import db, dbkind, dispatch, leases
from lifecycle.core.errors import UserError
from lifecycle.core.timeutil import as_utc
from lifecycle.engine import residue, shared_parents
from lifecycle.engine.context import EngineContext
from lifecycle.engine.guests import shared_line, with_guests
from lifecycle.engine.ledger_outbox import flush_ledger_outbox
from lifecycle.engine.mover import MoveResult, Scope, move, send_shred_jobs
from lifecycle.engine.selection import subject_selections, unprocessed_clause
from lifecycle.notices.members import (
    capture_withdrawal_notice,
    discard_member_notice,
    enqueue_each,
    prepare_member_notice,
    send_member_notice,
)
from lifecycle.requests import holds, use_block
from lifecycle.requests import outbox as reqs
from lifecycle.requests import residue as verdicts
from lifecycle.requests.states import START, TERMINAL, mark_done, steps_done, transition
from lifecycle.rights import intake, residue_check
from lifecycle.rights.pipeline import Job, Pipeline, Step, refuse, run, run_together
from lifecycle.rights.telling import owe_deletions, recipients_of, send_owed
from lifecycle.vault import accesslog, keystore
from lifecycle.vault.keystore import KeyUnavailable
from models.requests import LifecycleRequest, RequestState
from models.shred import ShredItem, ShredItemState, ShredJob

log = logging.getLogger(__name__)

REASON = "회원 탈퇴 요청 (member withdrawal request)"
START_STATES = {*START, RequestState.NEEDS_ATTENTION.value}


def _now() -> datetime:
    return datetime.now(UTC)


def _lock_member(ctx: EngineContext, conn: Connection, member_id: int) -> Any:
    """``(key, withdrawn?, withdrawn at or None)`` of the member, locked; None if unknown."""
    return intake.lock_member(ctx.datamap.subject, ctx.subject_table, conn, member_id)


def kept_row_processed(ctx: EngineContext, conn: Connection, member_id: int) -> bool:
    """A member row the map keeps blank has already been cleared (its withdrawal is done)."""
    if not ctx.datamap.subject.keep_row:
        return False
    t = ctx.subject_table
    key = t.c[ctx.datamap.subject.key]
    q = select(key).where(key == member_id, unprocessed_clause(ctx))
    return conn.execute(q).first() is None


def resolve_member(ctx: EngineContext, raw: str) -> int:
    """The lifecycle's member id for what an operator typed (see :func:`intake.resolve_member`)."""
    with ctx.primary.connect() as conn:
        return intake.resolve_member(ctx.datamap.subject, ctx.subject_table, conn, raw)


def _already_processed_by(s: Session, req: LifecycleRequest) -> int | None:
    return s.scalar(
        select(LifecycleRequest.id)
        .where(
            LifecycleRequest.member_id == req.member_id,
            LifecycleRequest.kind == "withdrawal",
            LifecycleRequest.state.in_(
                [RequestState.DESTROYED.value, RequestState.COMPLETED.value]
            ),
            LifecycleRequest.id != req.id,
        )
        .order_by(LifecycleRequest.id)
        .limit(1)
    )


def _validate(ctx: EngineContext, s: Session, req: LifecycleRequest) -> tuple[Any, str | None]:
    """The member row (locked), or a one-line reason to refuse the request."""
    if req.kind != "withdrawal":
        return None, f"malformed request: kind {req.kind!r} is not a withdrawal"
    if not isinstance(req.member_id, int) or isinstance(req.member_id, bool) or req.member_id <= 0:
        return None, "malformed request: member id must be a positive integer"
    row = _lock_member(ctx, s.connection(), req.member_id)
    if row is None:
        earlier = _already_processed_by(s, req)
        if earlier is not None:
            return None, (
                f"member {req.member_id} was already withdrawn and processed (request {earlier})"
            )
        return None, f"unknown member {req.member_id}"
    return row, None


def _restrict(job: Job) -> None:
    ctx, s, req = job.run.ctx, job.s, job.req
    row, refusal = _validate(ctx, s, req)
    if refusal:
        refuse(job, refusal)
        return
    if not row[1]:
        # The Python client may be called without the site having flipped the status first:
        # the request is the member's decision, so record it in the site's own terms.
        ctx.datamap.subject.record_withdrawal(
            s.connection(), ctx.subject_table, req.member_id, row[2] or as_utc(req.created_at)
        )
    # Before anything is destroyed: the notice needs the address the member row holds.
    capture_withdrawal_notice(s, req.member_id, req.id)
    use_block.restrict(s, req.member_id, "withdrawal", req.id)
    transition(req, RequestState.RESTRICTED)


def _scope(ctx: EngineContext, req: LifecycleRequest, task_id: str | None) -> Scope:

    with Session(ctx.archive) as a, a.begin():
        ref = keystore.subject_ref(a, req.member_id)
    return Scope(
        key=f"req:{req.id}",
        purpose="withdrawal",
        reason=REASON,
        actor=ctx.actor,
        task_id=task_id,
        request_id=req.id,
        subject_ref=ref,
    )


# The part of the destroy step that can be done while the step fails (files refused).
ROWS_DESTROYED = "rows_destroyed"
# A shred item that ended so: the file is gone (``missing``: it was already gone).
_FILE_GONE = ("shredded", "missing")


def files_left(s: Session, request_id: int) -> tuple[int, list[int]]:
    """Files this request handed to the shredder that are not gone yet, and their jobs."""
    rows = s.execute(
        select(ShredItem.job_id)
        .join(ShredJob, ShredJob.id == ShredItem.job_id)
        .where(
            ShredJob.request_id == request_id,
            (ShredItem.state != ShredItemState.DONE.value)
            | ShredItem.status.is_(None)
            | ShredItem.status.not_in(_FILE_GONE),
        )
    ).all()
    return len(rows), sorted({r[0] for r in rows})


def _move(
    ctx: EngineContext, s: Session, req: LifecycleRequest, task_id: str | None, delete: bool
) -> tuple[MoveResult | None, str | None]:
    gone = ROWS_DESTROYED in steps_done(req)
    if gone and _lock_member(ctx, s.connection(), req.member_id) is None:
        # Retried after its rows went and its files were refused: nothing is left in the
        # primary DB to move; what is left is the files (checked by the destroy step).
        return MoveResult(), None
    row, refusal = _validate(ctx, s, req)
    if refusal:
        return None, refusal
    now = _now()
    ended = {req.member_id: row[2] or as_utc(req.created_at)}
    conn = s.connection()
    sels, shared = with_guests(ctx, conn, "withdrawal", ended, now,
                               subject_selections(ctx, "withdrawal", ended, now,
                                                  read=conn))  # fmt: skip
    # Read before the move: it deletes the parent rows that name them.
    via_shared = shared_parents.count(ctx, conn, [req.member_id]) if delete else {}
    moved = move(ctx, conn, sels, _scope(ctx, req, task_id), now=now, delete_rows=delete)
    if delete:
        # Said once, by the step that deletes (the archive step sees the same rows).
        moved.shared = {**{f.key: f.rows for f in shared}, **via_shared}
    return moved, None


def _archive(job: Job) -> None:
    moved, refusal = _move(job.run.ctx, job.s, job.req, job.run.task_id, delete=False)
    if refusal:
        refuse(job, refusal)
        return
    assert moved is not None
    _moved(job, moved)
    transition(job.req, RequestState.ARCHIVED)


def _destroy(job: Job) -> None:
    ctx = job.run.ctx
    ids = _capture(job)
    moved = _destroy_rows(job)
    if moved is None:
        return
    if ids is not None:
        residue_check.check(job, ctx.datamap, ids, residue.kept_in_withdrawal)
        del ids
    _destroyed(job, moved)


def _capture(job: Job) -> residue.Identities | None:
    """The member's identities, for the residue check after the destruction: captured from
    their row before it goes, kept in the caller's local only. A retry after the rows went has
    none (the run that destroyed them recorded its verdict)."""
    if ROWS_DESTROYED in steps_done(job.req):
        return None
    ctx = job.run.ctx
    return residue.capture_member(
        job.s.connection(), ctx.datamap, ctx.subject_table, job.req.member_id
    )


def _destroy_rows(job: Job) -> MoveResult | None:
    """Archive anything new, then delete: the moving part of the destroying step (None: the
    request was refused)."""
    # Archives again first: anything that reached the primary DB since the archive step is
    # archived now (parts already archived are skipped), so nothing is deleted unarchived.
    moved, refusal = _move(job.run.ctx, job.s, job.req, job.run.task_id, delete=True)
    if refusal:
        refuse(job, refusal)
        return None
    assert moved is not None
    return moved


def _destroyed(job: Job, moved: MoveResult, *, flush: bool = True, logged: bool = False) -> None:
    """The rest of the destroying step once the rows went and the residue verdict is recorded.
    ``flush``: the ledger outbox is flushed after the commit (a group flushes it once);
    ``logged``: the access-log line is written (a group writes them in one transaction)."""
    ctx, s, req = job.run.ctx, job.s, job.req
    # In the destroying transaction: recipients of a field destroyed now are owed a deletion
    # notice (a field retained for a legal period was archived, not destroyed, and stays).
    destroyed = [
        c
        for cat, cols in ctx.datamap.subject_table.columns.items()
        if ctx.datamap.rule(cat).period.is_zero
        for c in cols
    ]
    if ROWS_DESTROYED not in steps_done(req):
        # (Once: a retry after the rows went must not owe the recipients a second notice.)
        owe_deletions(s, req.member_id, req.id, recipients_of(s, req.member_id, destroyed))
    if not logged:
        _log_access(ctx, req, moved)
    _moved(job, moved)
    job.after.append(lambda: _tell(ctx, job.request_id, flush=flush))
    failure = moved.failure
    if failure is None and ROWS_DESTROYED in steps_done(req):
        # A retry: the rows went last time; the step is done once the refused files are.
        n, jobs = files_left(s, req.id)
        if n:
            failure = (
                f"{n} file(s) of this request not shredded yet (shred job(s) {jobs}): fix the "
                "storage roots (LIFECYCLE_FILE_ROOTS) or the map's site.root, run `lifecycle "
                f"shred --retry {jobs[0]} --wait`, then retry the request"
            )
    if failure:
        # The rows are gone (their files are kept in a shred job): the request must not end
        # "completed" for a file that was not destroyed. It says what was done, and
        # `lifecycle requests retry` resumes here.
        mark_done(req, ROWS_DESTROYED)
        transition(req, RequestState.FAILED, error=failure)
        log.error("withdrawal request %s failed: %s", req.id, failure)
        return
    # The member's own rows are gone; guest rows a live member's identity also names stay,
    # and the request says so to the end (lifecycle status lists it).
    transition(req, RequestState.DESTROYED, error=shared_line(moved.summary()) or req.error)


def _moved(job: Job, moved: MoveResult) -> None:
    """After the commit: hand the files to the shredder, and count what moved."""

    def after() -> None:
        send_shred_jobs(moved.shred_jobs)
        out = job.run.out
        for k, v in moved.summary().items():
            # Both moving steps see the same member: count them once.
            out[k] = max(out.get(k, 0), v) if k == "subjects" else out.get(k, 0) + v

    job.after.append(after)


def _tell(ctx: EngineContext, request_id: int, *, flush: bool = True) -> None:
    """After the destroying commit: the ledger outbox, then the recipients' deletion notices."""
    if flush:
        flush_ledger_outbox(ctx)
    try:
        send_owed(request_id)
    except Exception as exc:
        # Recorded as pending: beat's resend job enqueues them once the lease passes.
        log.warning("withdrawal %s: deletion notices not enqueued yet (%s)", request_id,
                    type(exc).__name__)  # fmt: skip


def _log_access(
    ctx: EngineContext, req: LifecycleRequest, moved: MoveResult | None, a: Session | None = None
) -> None:
    """The handler access log: who asked (the request's actor) had this member's data destroyed.

    Written in its own archive transaction (``a``: a group's, committed before theirs) before
    the primary one commits the new state: a crash in between re-runs the step and records it
    twice, never not at all.
    """
    summary = moved.summary() if moved is not None else {}
    if a is None:
        with Session(ctx.archive) as own, own.begin():
            _log_access(ctx, req, moved, own)
        return
    accesslog.record(
        a, operator=req.actor or "website", kind="destroy",
        action="withdrawal (carried out by worker)", member_id=req.member_id,
        request_id=req.id, details={k: int(v) for k, v in summary.items()},
    )  # fmt: skip


def _complete(job: Job) -> None:
    if _needs_attention(job):
        return
    # Released before the state is written: a crash in between re-sends (the notice job
    # dedupes), the other order could leave the member without their notice.
    _send_notice(job.member_id, job.request_id)
    transition(job.req, RequestState.COMPLETED)


def _needs_attention(job: Job) -> bool:
    why = verdicts.open_reason(job.req)
    if why is None:
        return False
    # The member's identities remain somewhere (or the check could not finish): not
    # completed, and no completion notice, until an operator has dealt with it.
    residue_check.show(job)
    transition(job.req, RequestState.NEEDS_ATTENTION, error=why)
    log.warning("withdrawal request %s needs attention: %s", job.request_id, why)
    return True


def _complete_group(jobs: list[Job]) -> None:
    """The completing step of the group's requests: each its own verdict, notice and state, the
    notices sent by one task for the group (one task each cost more than the notice)."""
    done = [j for j in _unheld(jobs, holdable=False) if not _needs_attention(j)]
    # As for one request: released and sent before the states are written.
    _send_notices(done)
    for job in done:
        transition(job.req, RequestState.COMPLETED)


def _watched(step: Step, *, holdable: bool = False) -> Step:
    """Every withdrawal step records its task; a ``holdable`` one waits out a legal hold."""

    def watched(job: Job) -> None:
        req = job.req
        if job.run.task_id:
            req.task_id = job.run.task_id[:64]
        held = holds.holds_on_member(job.s, req.member_id, job.run.ctx.today()) if holdable else []
        if held:
            # Restricted (처리정지) but neither archived nor destroyed while the hold lasts;
            # `lifecycle hold release` dispatches the request again. Not moving stops the run.
            ids = [h.id for h in held]
            job.run.out["held_by"] = ids
            until = max(h.until for h in held).isoformat()
            req.error = f"on legal hold {', '.join(map(str, ids))} until {until}"
            log.warning("withdrawal request %s: member on legal hold %s; stopped at %s",
                        req.id, ids, req.state)  # fmt: skip
            return
        if req.error and req.error.startswith("on legal hold"):
            req.error = None
        step(job)

    return watched


def _attention(job: Job) -> None:
    """Parked for its residue: waits for the operator (`lifecycle requests retry`); parked by
    an operator before anything was destroyed: starts again."""
    if verdicts.open_reason(job.req) is not None:
        residue_check.show(job)
        return
    _watched(_restrict)(job)


def _discard_notice(job: Job) -> None:
    discard_member_notice(job.s, "withdrawal_completed", job.request_id)


WITHDRAWAL = Pipeline(
    "withdrawal",
    {
        **dict.fromkeys(START_STATES, _watched(_restrict)),
        RequestState.RESTRICTED.value: _watched(_archive, holdable=True),
        RequestState.ARCHIVED.value: _watched(_destroy, holdable=True),
        RequestState.DESTROYED.value: _watched(_complete),
        RequestState.NEEDS_ATTENTION.value: _attention,
    },
    on_refuse=_discard_notice,
    strict=True,
    # A move that could not be accounted for (rows the map's key cannot tell apart, a column
    # that cannot be cleared): everything it did rolled back with it. The request says why;
    # the member stays marked withdrawn for a re-run once fixed.
    fails_on=(UserError,),
)


def carry_out(ctx: EngineContext, request_id: int, *, task_id: str | None = None) -> dict[str, Any]:
    """Run the request from its persisted state to the end. Returns counts, never data."""
    return run(WITHDRAWAL, request_id, task_id, ctx=ctx)


# -- groups: the withdrawals that arrive together, carried out together -------------------------
#
# A website sends withdrawals one by one, and the relay hands each to the withdraw task. The task
# that picks one up first claims up to GROUP_SIZE - 1 more dispatched withdrawals nobody has
# started (their rows skipped if locked: another worker has them) and carries them with its own:
# each request through its own restricting and archiving steps (its own transactions, state,
# attempts, ledger entries), then the destroying step of all of them in ONE transaction with one
# residue search per table for all their identities (each request its own verdict), then each
# request's completing step. The claimed requests' own tasks find them claimed by a live group
# and stand aside; once the group's task is gone (its lease expired), they run as before.
# Anything that goes wrong in the shared destroying transaction rolls it back whole and each
# request then takes its own destroying step: a member whose move fails, fails alone.

GROUP_SIZE = 50
# The claim written on a grouped request's ``task_id``: the request id that leads the group.
GROUP_MARK = "group:"


def _group_tag(leader: int) -> str:
    return f"{GROUP_MARK}{leader}"


def _claimed_by_live_group(req: LifecycleRequest, tag: str) -> bool:
    claim = req.task_id or ""
    if not claim.startswith(GROUP_MARK) or claim == tag or req.state in TERMINAL:
        return False
    leader = claim[len(GROUP_MARK) :]
    return leader.isdigit() and leases.live(leases.lease_key(dispatch.WITHDRAW, (int(leader),)))


def stands_aside(request_id: int) -> dict[str, Any] | None:
    """The withdraw task's answer without taking its lease, when another group has the request:
    claimed by a live group, or already finished by one (a request another group claimed
    never leads a group of its own, so nothing of it is left to this task). None: the task
    runs. One unlocked read: a burst sends a task per request, and most find their request
    taken by a group."""
    with db.session("primary") as s:
        seen = s.get(LifecycleRequest, request_id)
        if seen is None:
            return None
        claim = seen.task_id or ""
        mine = _group_tag(request_id)
        if not claim.startswith(GROUP_MARK) or claim == mine:
            return None
        if seen.state in TERMINAL:
            return {"request_id": request_id, "state": str(seen.state),
                    "skipped": "carried by a group"}  # fmt: skip
        if _claimed_by_live_group(seen, mine):
            return {"request_id": request_id, "state": "grouped",
                    "skipped": "claimed by a group"}  # fmt: skip
    return None


def claim_group(request_id: int, size: int = GROUP_SIZE) -> list[int] | None:
    """The group the task of ``request_id`` carries: the request itself first, then the
    dispatched withdrawals it claimed (ordered by id). None: another live group has claimed
    this request (its task stands aside). A re-run of the same task finds its own claims."""
    tag = _group_tag(request_id)
    with db.session("primary") as s:
        # Read first without a lock: a claimed request's row is locked for seconds while its
        # group destroys, and this task would hold a worker process waiting for nothing.
        seen = s.get(LifecycleRequest, request_id)
        if seen is not None and _claimed_by_live_group(seen, tag):
            return None
    with db.session("primary") as s:
        me = reqs.load_for_update(s, request_id)
        if me is None or me.kind != "withdrawal":
            return [request_id]
        if _claimed_by_live_group(me, tag):
            return None
        stmt = (
            select(LifecycleRequest)
            .where(
                LifecycleRequest.kind == "withdrawal",
                LifecycleRequest.id != request_id,
                (
                    (LifecycleRequest.state == RequestState.DISPATCHED.value)
                    & ~func.coalesce(LifecycleRequest.task_id, "").startswith(GROUP_MARK)
                )
                | (
                    (LifecycleRequest.task_id == tag)
                    & LifecycleRequest.state.not_in(sorted(TERMINAL))
                ),
            )
            .order_by(LifecycleRequest.id)
            .limit(max(size - 1, 0))
        )
        if me.state in TERMINAL:
            # A re-run after the group's worker died: only what it had claimed is left to do.
            stmt = stmt.where(LifecycleRequest.task_id == tag)
        others = list(s.scalars(dbkind.for_update(stmt, s, skip=True)))
        for req in [me, *others]:
            if req.state not in TERMINAL:
                req.task_id = tag
        return [request_id, *(int(r.id) for r in others)]


def carry_out_group(
    ctx: EngineContext, request_id: int, *, task_id: str | None = None, size: int = GROUP_SIZE
) -> dict[str, Any]:
    """The withdraw task: ``request_id`` and the group it claims (:func:`claim_group`), each
    request to the end. Every step runs for the group's requests together (:data:`STAGES`,
    one transaction each, :func:`run_together`); a request a step left behind (a hold, a
    refusal, a group step rolled back) takes its own steps. Returns ids, states and counts,
    never data. A request whose step raised is left where it stopped (re-runnable) while the
    others go on; the first such exception is raised at the end so the task is retried."""
    group = claim_group(request_id, size)
    if group is None:
        log.info("withdrawal request %s is carried by another group", request_id)
        return {"request_id": request_id, "state": "grouped", "skipped": "claimed by a group"}
    if len(group) == 1:
        return carry_out(ctx, request_id, task_id=task_id)
    tag = _group_tag(request_id)
    first: Exception | None = None
    counts: dict[str, int] = {}
    together: dict[str, int] = {}

    def add(out: dict[str, Any] | None) -> None:
        for k, v in (out or {}).items():
            if k not in ("request_id", "state") and isinstance(v, int):
                counts[k] = counts.get(k, 0) + v

    def each(rid: int, **kw: Any) -> dict[str, Any] | None:
        nonlocal first
        try:
            out = run(WITHDRAWAL, rid, tag, ctx=ctx, **kw)
        except KeyUnavailable as exc:
            fail_request(rid, str(exc))
            first = first or exc
        except Exception as exc:
            # Only this request stops here (its state says where); the task is retried.
            log.warning("withdrawal request %s (group of %s) stopped: %s", rid, request_id,
                        type(exc).__name__)  # fmt: skip
            first = first or exc
        else:
            add(out)
            return out
        return None

    states = _states(group)
    for i, (name, at, step) in enumerate(STAGES):
        here = [rid for rid in group if states.get(rid) in at]
        if len(here) > 1:
            try:
                done = run_together(WITHDRAWAL, here, tag, states=at, step=step, ctx=ctx)
            except Exception as exc:
                # Committed; what failed after the commit (a ledger flush, a message) is
                # retried with the task.
                first = first or exc
                done = {}
            together[name] = len(done)
            for out in done.values():
                add(out)
        # What the group step left behind goes alone as far as the next group step.
        later = frozenset().union(*(st for _n, st, _s in STAGES[i + 1 :]))
        for rid, st in _states(here).items():
            if st in at:
                each(rid, stop_at=later)
        states = _states(group)
    final: dict[int, str] = {}
    for rid in group:
        st = states.get(rid, "missing")
        if st not in TERMINAL:
            # Held, parked, or stopped by an error: its own run says where it stands.
            last = each(rid)
            st = str(last["state"]) if last is not None else "stopped"
        final[rid] = st
    if first is not None:
        raise first
    by_state: dict[str, int] = {}
    for st in final.values():
        by_state[st] = by_state.get(st, 0) + 1
    log.info("withdrawal group of %s: %d requests, %d destroyed together, %s", request_id,
             len(group), together.get("destroyed", 0), by_state)  # fmt: skip
    return {
        "request_id": request_id,
        "state": final[request_id],
        "group": {"requests": group, "destroyed_together": together.get("destroyed", 0),
                  "together": together, "states": by_state},
        **counts,
    }  # fmt: skip


def _states(request_ids: list[int]) -> dict[int, str]:
    with db.session("primary") as s:
        rows = s.execute(
            select(LifecycleRequest.id, LifecycleRequest.state).where(
                LifecycleRequest.id.in_(request_ids)
            )
        )
        return {int(r[0]): str(r[1]) for r in rows}


class _OneByOne(Exception):
    """A request of the group cannot be carried with the others: each takes its own step."""


def _unheld(jobs: list[Job], *, holdable: bool) -> list[Job]:
    """The jobs whose step may run: each gets its own step's bookkeeping (:func:`_watched`:
    its task, a legal hold named on it and the request left as it was)."""
    free: list[Job] = []
    for job in jobs:
        _watched(free.append, holdable=holdable)(job)
    return free


def _each(step: Step) -> Callable[[list[Job]], None]:
    """A group step that runs each request's own step in the group's transaction."""

    def group_step(jobs: list[Job]) -> None:
        for job in jobs:
            step(job)

    return group_step


def _archive_group(jobs: list[Job]) -> None:
    """The archiving step of the group's requests: their members' retained parts archived by
    the same set-based statements, each part and ledger entry filed under its own request."""
    jobs = _unheld(jobs, holdable=True)
    if not jobs:
        return
    ctx, s = jobs[0].run.ctx, jobs[0].s
    moved = _move_group(ctx, s, jobs, delete=False)
    for job in jobs:
        _moved(job, moved.by_subject.get(job.member_id) or MoveResult())
        transition(job.req, RequestState.ARCHIVED)


def _destroy_group(jobs: list[Job]) -> None:
    """The destroying step of the group's requests in one transaction: their members' rows
    moved by the same set-based statements as a sweep batch's, each row filed under its
    member's request (its ledger entries, archived parts, shred jobs), each request its own
    access-log line, deletion notices, residue verdict and state; one residue search for all
    their identities. A request retried after its files were refused takes its own step."""
    jobs = [j for j in _unheld(jobs, holdable=True) if ROWS_DESTROYED not in steps_done(j.req)]
    if len(jobs) < 2:
        return
    ctx, s = jobs[0].run.ctx, jobs[0].s
    mids = [j.member_id for j in jobs]
    # Before the rows go: afterwards the values are gone.
    ids = residue.capture_members(s.connection(), ctx.datamap, ctx.subject_table, mids)
    moved = _move_group(ctx, s, jobs, delete=True)
    own = {m: moved.by_subject.get(m) or MoveResult() for m in mids}
    captured = [(j, ids.get(j.member_id, residue.Identities())) for j in jobs]
    residue_check.check_many(
        [j for j, _ in captured], ctx.datamap, [i for _, i in captured],
        residue.kept_in_withdrawal,
    )  # fmt: skip
    del ids, captured
    with Session(ctx.archive) as a, a.begin():
        for job in jobs:
            _log_access(ctx, job.req, own[job.member_id], a)
    for job in jobs:
        _destroyed(job, own[job.member_id], flush=False, logged=True)

    # Once for the group, after its commit and before the files and notices go: the entries
    # of every request's move.
    def flush() -> None:
        flush_ledger_outbox(ctx)

    jobs[0].after.insert(0, flush)


def _move_group(ctx: EngineContext, s: Session, jobs: list[Job], *, delete: bool) -> MoveResult:
    """Archive (and ``delete``: then delete) every member's rows of ``jobs`` in ``s``'s
    transaction with the sweep batch's set-based statements, each row under its member's
    request (``move(scopes=...)``). Raises :class:`_OneByOne` for what one request's own step
    must decide: an unknown member (refused), guest rows a live member shares (counted per
    member)."""
    conn = s.connection()
    mids = [j.member_id for j in jobs]
    rows = intake.lock_members(ctx.datamap.subject, ctx.subject_table, conn, mids)
    if len(rows) != len(mids) or len(set(mids)) != len(mids):
        raise _OneByOne  # a member gone (its own step refuses it) or asked twice
    now = _now()
    ended = {j.member_id: rows[j.member_id][2] or as_utc(j.req.created_at) for j in jobs}
    check = holds.any_active(conn, ctx.local_date(now))
    sels = subject_selections(ctx, "withdrawal", ended, now, check_holds=check, conn=conn)
    sels, shared = with_guests(ctx, conn, "withdrawal", ended, now, sels, check_holds=check)
    if delete and (any(f.rows for f in shared)
                   or any(shared_parents.count(ctx, conn, sorted(ended)).values())):  # fmt: skip
        # Rows left for a live member are said per request by each request's own step.
        raise _OneByOne
    tag = jobs[0].run.task_id
    scopes = _scopes(ctx, [j.req for j in jobs], tag)
    whole = Scope(key=f"group:{tag}", purpose="withdrawal", reason=REASON, actor=ctx.actor,
                  task_id=tag)  # fmt: skip
    return move(ctx, conn, sels, whole, now=now, delete_rows=delete, scopes=scopes)


def _scopes(
    ctx: EngineContext, reqs: list[LifecycleRequest], task_id: str | None
) -> dict[int, Scope]:
    """Each request's :func:`_scope`, keyed by member, read in one archive transaction."""
    with Session(ctx.archive) as a, a.begin():
        refs = {int(r.member_id): keystore.subject_ref(a, r.member_id) for r in reqs}
    out: dict[int, Scope] = {}
    for r in reqs:
        out[int(r.member_id)] = Scope(
            key=f"req:{r.id}", purpose="withdrawal", reason=REASON, actor=ctx.actor,
            task_id=task_id, request_id=r.id, subject_ref=refs[int(r.member_id)],
        )  # fmt: skip
    return out


# The steps a group runs together, in order: (name, the states each starts from, the step).
STAGES: tuple[tuple[str, frozenset[str], Callable[[list[Job]], None]], ...] = (
    ("restricted", frozenset(START), _each(_watched(_restrict))),
    ("archived", frozenset({RequestState.RESTRICTED.value}), _archive_group),
    ("destroyed", frozenset({RequestState.ARCHIVED.value}), _destroy_group),
    ("completed", frozenset({RequestState.DESTROYED.value}), _complete_group),
)


def _send_notice(member_id: int, request_id: int) -> None:
    try:
        send_member_notice("withdrawal_completed", member_id, {"request_id": request_id})
    except Exception as exc:
        # The notice row stays held/pending in the DB; the notice job retries it. The
        # withdrawal itself is complete and must not be re-run for a mail problem.
        log.warning("withdrawal %s: completion notice not sent yet (%s)", request_id,
                    type(exc).__name__)  # fmt: skip


def _send_notices(jobs: list[Job]) -> None:
    """Each request's completion notice released (its own row), then one task sends them."""
    nids: list[int] = []
    mids: list[int] = []
    for job in jobs:
        try:
            nid = prepare_member_notice(
                "withdrawal_completed", job.member_id, {"request_id": job.request_id}
            )
        except Exception as exc:
            # Left held: beat releases a completed request's held notice and sends it.
            log.warning("withdrawal %s: completion notice not sent yet (%s)", job.request_id,
                        type(exc).__name__)  # fmt: skip
            continue
        nids.append(nid)
        mids.append(job.member_id)
    if not nids:
        return
    try:
        enqueue_each(nids, mids)
    except Exception as exc:
        # The rows are pending in the database: beat's stale-notice resume sends them.
        log.warning("withdrawal group: %d completion notices not sent yet (%s)", len(nids),
                    type(exc).__name__)  # fmt: skip


def submit_withdrawal(ctx: EngineContext, member_id: int, actor: str | None = None) -> int:
    """:func:`intake.submit_withdrawal` with the engine's context (the reflected member table,
    and the check that a kept row was already blanked). Returns the request id."""
    return intake.submit_withdrawal(
        ctx.datamap.subject,
        ctx.subject_table,
        member_id,
        actor=actor,
        kept_row_processed=lambda conn, mid: kept_row_processed(ctx, conn, mid),
    )


def fail_request(request_id: int, reason: str) -> bool:
    """Record a failure that stops the request before its own checks can run (e.g. the data
    map does not load). Nothing else is changed; returns False if it was already finished."""

    with db.session("primary") as s:
        req = reqs.load_for_update(s, request_id)
        if req is None or req.state in TERMINAL:
            return False
        transition(req, RequestState.FAILED, error=reason)
    log.error("withdrawal request %s failed: %s", request_id, reason.splitlines()[0])
    return True
