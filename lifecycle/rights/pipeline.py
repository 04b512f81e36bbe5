"""The one request runner: every request kind is a :class:`Pipeline`, a list of steps keyed by
the request state each starts from, and :func:`run` carries a request through them.

The step contract:

- A step runs in ONE primary-DB transaction that first locks the request row (SELECT … FOR
  UPDATE), so two deliveries of the same request serialise and the second sees what the first
  left. It is handed a :class:`Job` (the session, the locked request, the run).
- It ends by moving the request with :func:`~lifecycle.requests.states.transition` (which
  records the step in ``steps_done``) or by :func:`refuse`. The move commits with the step's
  work: a crash at any line loses the whole step (it runs again) or keeps it (the next runs).
- Work outside the primary DB (the archive's ledger, a file) is written so that a second run
  is harmless (a ledger dedup key, a ``.part`` file renamed) and before the state commits.
- What must wait for the commit (a Celery message) goes in ``job.after``.
- A step that leaves the state as it was stops the run (a legal hold: the request waits).

After the steps, the kind's ``finish`` functions run outside any step's transaction, each
idempotent: tell the recipients what is owed (:func:`tell`), answer the requester
(:func:`answer_requester`). Shared steps: :func:`restrict_step`, :func:`ledger_step`
(:func:`write_ledger` inside a bespoke step), :func:`refuse`.

A new request kind is a new ``Pipeline`` (plus its ``KindSpec`` in
:mod:`lifecycle.requests.states` and a task calling :func:`run`), not a new machine.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core import db, dbkind
from lifecycle.datamap.member_table import MemberTable, member_table
from lifecycle.requests.outbox import load_for_update
from lifecycle.requests.states import START, TERMINAL, transition
from lifecycle.requests.use_block import restrict
from lifecycle.rights.answers import answer
from lifecycle.rights.telling import send_owed, settle
from lifecycle.vault import accesslog, keystore, ledger
from models.archive import LedgerEntry
from models.requests import LifecycleRequest, RequestState

log = logging.getLogger(__name__)

MISSING = "missing"


@dataclass
class Run:
    """One call of :func:`run`: what its steps and finishers share."""

    pipeline: Pipeline
    request_id: int
    task_id: str | None = None
    # The engine context, for a kind that reads the data map's tables (withdrawal, access).
    ctx: Any = None
    # How messages are sent (None: :func:`lifecycle.core.dispatch.send`; a test may lose them).
    send: Callable[..., Any] | None = None
    state: str = MISSING
    # Counts (never data) the steps add to the task's result.
    out: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """What a step gets: the primary session, the locked request, the run."""

    s: Session
    req: LifecycleRequest
    run: Run
    # Called in order once the step's transaction committed (never after a rollback).
    after: list[Callable[[], None]] = field(default_factory=list)
    _mt: MemberTable | None = None

    @property
    def request_id(self) -> int:
        return int(self.req.id)

    @property
    def member_id(self) -> int:
        return int(self.req.member_id)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.req.payload) if isinstance(self.req.payload, dict) else {}

    @property
    def mt(self) -> MemberTable:
        if self._mt is None:
            self._mt = member_table(self.s.get_bind())  # type: ignore[arg-type]
        return self._mt


Step = Callable[[Job], None]
Finish = Callable[[Run], None]


@dataclass(frozen=True)
class Pipeline:
    kind: str
    # request state -> the step that starts from it (:func:`starting` for received/dispatched)
    steps: Mapping[str, Step]
    # Run after the steps, in order, whatever state they ended in (each checks it).
    finish: tuple[Finish, ...] = ()
    # Undo what a refused request holds, in the refusing transaction (a restriction, a notice).
    on_refuse: Callable[[Job], None] | None = None
    # Refuse a request of another kind, or in a state with no step, instead of leaving it alone
    # (withdrawal: its task is given whatever id the website wrote).
    strict: bool = False
    # Exceptions that fail the request with their one-line message instead of failing the task;
    # the step's transaction rolled back with everything it did.
    fails_on: tuple[type[Exception], ...] = ()


def starting(step: Step) -> dict[str, Step]:
    """``step`` for a request nobody has worked on yet (received or dispatched)."""
    return dict.fromkeys(START, step)


def refuse(job: Job, reason: str) -> None:
    """Fail the request with its one-line (Korean, for the answer) reason, in the step's
    transaction; the kind's ``on_refuse`` undoes what the request held."""
    transition(job.req, RequestState.FAILED, error=reason)
    if job.run.pipeline.on_refuse is not None:
        job.run.pipeline.on_refuse(job)
    log.warning("%s request %s refused: %s", job.req.kind, job.req.id, reason.splitlines()[0])


def run(
    pipeline: Pipeline,
    request_id: int,
    task_id: str | None = None,
    *,
    ctx: Any = None,
    send: Callable[..., Any] | None = None,
    steps: int | None = None,
    stop_at: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Carry the request from its persisted state as far as it can go now; safe to call any
    number of times. ``steps``: stop after that many steps and skip the finishers (a test
    stands for a worker that died there). ``stop_at``: stop before the step that starts from
    one of these states, without the finishers (a group of requests runs that step together,
    :mod:`lifecycle.rights.groups`). Returns ids, the state and counts, never data."""
    r = Run(pipeline, request_id, task_id, ctx, send)
    done = 0
    while steps is None or done < steps:
        try:
            moved, after = _one(r, stop_at)
        except pipeline.fails_on as exc:
            # The counts of the steps before it went with it: a failed run reports its state.
            r.out.clear()
            moved, after = _fail(r, str(exc)), []
        for fn in after:
            fn()
        if not moved:
            break
        done += 1
    if r.state == MISSING:
        return {"request_id": request_id, "state": MISSING}
    if steps is None and r.state not in stop_at:
        for fin in pipeline.finish:
            fin(r)
    return {"request_id": request_id, "state": r.state, **r.out}


def run_one(pipeline: Pipeline, request_id: int, **kw: Any) -> str:
    """Run the request's next step only; its state afterwards."""
    return str(run(pipeline, request_id, steps=1, **kw)["state"])


def _one(r: Run, stop_at: frozenset[str] = frozenset()) -> tuple[bool, list[Callable[[], None]]]:
    """The request's next step in one transaction: (whether it moved, what waits for commit)."""
    p = r.pipeline
    with db.session("primary") as s:
        req = load_for_update(s, r.request_id)
        if req is None:
            log.error("%s request %s does not exist; nothing to do", p.kind, r.request_id)
            r.state = MISSING
            return False, []
        if req.kind != p.kind and not p.strict:
            # Another kind's request is not this run's to touch, nor to answer.
            r.state = MISSING
            return False, []
        r.state = frm = req.state
        if frm in TERMINAL or frm in stop_at:
            return False, []
        job = Job(s, req, r)
        step = p.steps.get(frm) if req.kind == p.kind else None
        if step is not None:
            step(job)
        elif not p.strict:
            return False, []
        elif req.kind != p.kind:
            refuse(job, f"malformed request: kind {req.kind!r} is not a {p.kind}")
        else:
            refuse(job, f"malformed request: state {frm!r} is not a {p.kind} state")
        r.state = req.state
    if r.state != frm:
        log.info("%s request %s: %s -> %s", p.kind, r.request_id, frm, r.state)
    return r.state != frm, job.after


def run_together(
    pipeline: Pipeline,
    request_ids: list[int],
    task_id: str | None,
    *,
    states: frozenset[str],
    step: Callable[[list[Job]], None],
    ctx: Any = None,
) -> dict[int, dict[str, Any]]:
    """One step for several requests in ONE transaction (a group of withdrawals sent together):
    the requests of ``request_ids`` still in one of ``states`` are locked (a row another
    transaction holds is skipped: its own worker has it), ``step(jobs)`` carries each request
    its own :class:`Job` (its transition, ledger entries, ``after`` work), and one commit
    moves them all. A request the step leaves as it was (a legal hold) is left for its own
    run. Anything raised rolls all of it back and returns {}: each request then takes its own
    step, whose outcome is its own. Returns the moved requests' states and counts."""
    jobs: list[Job] = []
    try:
        with db.session("primary") as s:
            stmt = (
                select(LifecycleRequest)
                .where(
                    LifecycleRequest.id.in_(request_ids),
                    LifecycleRequest.kind == pipeline.kind,
                    LifecycleRequest.state.in_(sorted(states)),
                )
                .order_by(LifecycleRequest.id)
            )
            for req in s.scalars(dbkind.for_update(stmt, s, skip=True)):
                r = Run(pipeline, int(req.id), task_id, ctx, state=str(req.state))
                jobs.append(Job(s, req, r))
            if not jobs:
                return {}
            step(jobs)
            ended = {j.request_id: str(j.req.state) for j in jobs}
    except Exception as exc:
        log.warning("%s: %d requests from %s not carried together; each takes its own step "
                    "(%s)", pipeline.kind, len(request_ids), sorted(states),
                    type(exc).__name__)  # fmt: skip
        return {}
    moved = [j for j in jobs if ended[j.request_id] != j.run.state]
    for job in moved:
        log.info("%s request %s: %s -> %s", pipeline.kind, job.request_id, job.run.state,
                 ended[job.request_id])  # fmt: skip
        job.run.state = ended[job.request_id]
    first: Exception | None = None
    for job in jobs:
        for fn in job.after:
            # Each request's work after the commit is done even when another's failed.
            try:
                fn()
            except Exception as exc:
                first = first or exc
    if first is not None:
        raise first
    return {j.request_id: {"state": j.run.state, **j.run.out} for j in moved}


def _fail(r: Run, reason: str) -> bool:
    """Refuse after a step rolled back (``fails_on``); False if it had already ended."""
    with db.session("primary") as s:
        req = load_for_update(s, r.request_id)
        if req is None or req.state in TERMINAL:
            return False
        refuse(Job(s, req, r), reason)
        r.state = req.state
    return False


# -- shared steps ---------------------------------------------------------------------------------


def restrict_step(
    reason: str,
    check: Callable[[Job], str | None],
    *,
    override: bool = False,
) -> Step:
    """처리정지 while the request is carried out: ``check`` gives a reason to refuse, or None;
    otherwise the member is restricted (``reason``) → ``restricted``."""

    def step(job: Job) -> None:
        refusal = check(job)
        if refusal is not None:
            refuse(job, refusal)
            return
        restrict(job.s, job.member_id, reason, job.request_id, override=override)
        transition(job.req, RequestState.RESTRICTED)

    return step


def ledger_once(job: Job, build: Callable[[Session], dict[str, Any]]) -> dict[str, Any]:
    """The request's ledger entry, in its own archive transaction before the step's state
    commits: ``build(archive session)`` runs only when the entry is not there yet (what it does
    in the archive, an access-log line, a deletion, commits with the entry, once) and returns
    the entry (:func:`lifecycle.vault.ledger.append`'s wording). A crash in between re-runs into
    the entry already written, never none. Returns the entry's details."""
    key = f"{job.req.kind}:request{job.request_id}"
    with db.session("archive") as a:
        seen = a.execute(
            select(LedgerEntry.seq, LedgerEntry.details).where(LedgerEntry.dedup_key == key)
        ).first()
        if seen is not None:
            d = json.loads(seen[1]) if isinstance(seen[1], str) else seen[1]
            return dict(d) if isinstance(d, dict) else {}
        entry = build(a)
        entry.setdefault("tables", [job.mt.table.name])
        ledger.append(
            a,
            subjects=1,
            task_id=job.run.task_id,
            request_id=job.request_id,
            subject_ref=keystore.subject_ref(a, job.member_id),
            dedup_key=key,
            **entry,
        )
        return dict(entry.get("details") or {})


def write_ledger(job: Job, first: Callable[[Session], None] | None = None, **entry: Any) -> None:
    """:func:`ledger_once` with a fixed ``entry``; ``first`` runs in its archive transaction
    only when the entry is new (an access-log line, written once)."""

    def build(a: Session) -> dict[str, Any]:
        if first is not None:
            first(a)
        return dict(entry)

    ledger_once(job, build)


WEBSITE = "website"


def log_access(
    job: Job, a: Session, kind: str, action: str, details: Mapping[str, Any] | None = None
) -> None:
    """The handler access log's entry for what the worker did on this request (in the archive
    transaction ``a``; with :func:`ledger_once` it is written once). Who: the request's actor
    (the operator or console user who took it in), else the website that inserted it, with
    the requester and how the site verified them, the identity it authenticated; 접속지: this
    worker (:func:`lifecycle.vault.accesslog.origin`), as for every request a worker carries."""
    req = job.req
    accesslog.record(
        a, operator=req.actor or WEBSITE, kind=kind, action=action, member_id=job.member_id,
        request_id=job.request_id,
        details={**(details or {}), "submitted_by": "operator" if req.actor else WEBSITE,
                 "requester": req.requester_kind or "member",
                 "verified_by": req.verified_by or "login"},
    )  # fmt: skip


def ledger_step(
    to: RequestState,
    entry: Callable[[Job], dict[str, Any]],
    *,
    first: Callable[[Job, Session], None] | None = None,
) -> Step:
    """The ledger entry ``entry(job)`` describes, then → ``to``."""

    def step(job: Job) -> None:
        once = (lambda a: first(job, a)) if first is not None else None
        write_ledger(job, once, **entry(job))
        # Ending: a leftover one-line reason (a hold, an earlier failure) is not the outcome.
        transition(job.req, to, **({"error": None} if to.value in TERMINAL else {}))

    return step


# -- shared finishers ----------------------------------------------------------------------------

TELLING = frozenset({RequestState.NOTIFYING.value, RequestState.NEEDS_ATTENTION.value})


def tell(r: Run) -> None:
    """Send the deliveries the request owes recipients, and settle it once all finished."""
    sent = 0
    if r.state in TELLING:
        sent = send_owed(r.request_id, send=r.send)
        r.state = settle(r.request_id) or r.state
    r.out["deliveries_enqueued"] = sent


def answer_requester(r: Run) -> None:
    """The written answer (:func:`lifecycle.rights.answers.answer`: once, when answerable)."""
    answer(r.request_id)
