"""The one state machine every request kind steps through.

Each kind declares its steps as data (:data:`KINDS`); :func:`transition` is the only code that
changes a request's state, and it refuses any move the kind did not declare. A new request kind
plugs in by adding a :class:`KindSpec` here and a task under its ``task`` name.

Moves every kind shares, so no kind repeats them:

- ``received`` → ``dispatched`` (the relay or the Python client handed it to a worker);
- from ``received`` or ``dispatched`` to the kind's first step (a worker may pick it up before
  the relay marks it dispatched, e.g. ``--wait`` in the embedded mode);
- from any open state to ``failed`` (refused or impossible, with a one-line reason).

``completed`` and ``failed`` are terminal unless a kind declares a way back (a correction whose
third-party delivery an operator replays goes back to ``notifying``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from lifecycle.core import dispatch
from lifecycle.core.errors import LifecycleError
from models.base import utcnow
from models.requests import LifecycleRequest, RequestKind, RequestState

S = RequestState

TERMINAL: frozenset[str] = frozenset({S.COMPLETED.value, S.FAILED.value})
# The states a worker starts a request from (before its first step).
START: frozenset[str] = frozenset({S.RECEIVED.value, S.DISPATCHED.value})


class IllegalTransition(LifecycleError):
    """A programming error: code tried a move its request kind does not declare."""


@dataclass(frozen=True)
class KindSpec:
    """One request kind: the task that carries it out and the moves it may make."""

    kind: str
    task: str
    # The happy path after ``dispatched``, in order; each step may move to the next.
    steps: tuple[str, ...]
    # Further moves beyond the happy path: from-state -> allowed to-states.
    extra: Mapping[str, frozenset[str]] = field(default_factory=dict)
    # The legal deadline in days from receipt; None: the destruction deadline of the settings
    # (5 days, 표준 개인정보 보호지침 제10조①).
    deadline_days: int | None = 10
    # Whether the law lets the operator postpone it with a recorded reason (열람 only:
    # 시행령 제41조④). Other kinds can be refused with a reason, never silently delayed.
    extendable: bool = False

    def allowed(self, frm: str) -> frozenset[str]:
        out: set[str] = set(self.extra.get(frm, ()))
        if frm == S.RECEIVED.value:
            out.add(S.DISPATCHED.value)
        if frm in START and self.steps:
            out.add(self.steps[0])
        if frm in self.steps:
            i = self.steps.index(frm)
            if i + 1 < len(self.steps):
                out.add(self.steps[i + 1])
        if frm not in TERMINAL:
            out.add(S.FAILED.value)
        return frozenset(out)


# A kind that tells third parties: a failed delivery parks it for the operator, and
# `lifecycle deliveries replay` re-opens it.
_NOTIFYING_EXTRA: Mapping[str, frozenset[str]] = {
    S.NOTIFYING.value: frozenset({S.NEEDS_ATTENTION.value}),
    S.NEEDS_ATTENTION.value: frozenset({S.COMPLETED.value, S.NOTIFYING.value}),
    S.COMPLETED.value: frozenset({S.NOTIFYING.value}),
}

KINDS: dict[str, KindSpec] = {
    spec.kind: spec
    for spec in (
        KindSpec(
            RequestKind.WITHDRAWAL.value,
            dispatch.WITHDRAW,
            (S.RESTRICTED, S.ARCHIVED, S.DESTROYED, S.COMPLETED),
            # An operator may park a withdrawal for attention; it resumes from the start.
            # A residue found after the destruction parks it before it completes.
            {
                S.NEEDS_ATTENTION.value: frozenset({S.RESTRICTED.value}),
                S.DESTROYED.value: frozenset({S.NEEDS_ATTENTION.value}),
            },
            deadline_days=None,
        ),
        KindSpec(
            RequestKind.CORRECTION.value,
            dispatch.CORRECT,
            (S.RESTRICTED, S.CORRECTED, S.NOTIFYING, S.COMPLETED),
            {
                # Some third party could not be told: the operator must act.
                S.NOTIFYING.value: frozenset({S.NEEDS_ATTENTION.value}),
                S.NEEDS_ATTENTION.value: frozenset({S.COMPLETED.value, S.NOTIFYING.value}),
                # `lifecycle deliveries replay` re-opens a finished correction.
                S.COMPLETED.value: frozenset({S.NOTIFYING.value}),
            },
        ),
        # 열람: collect everything into a package, then answer.
        KindSpec(
            RequestKind.ACCESS.value,
            dispatch.ACCESS,
            (S.PACKAGED, S.COMPLETED),
            extendable=True,
        ),
        # 삭제 of named items: restrict, erase in one transaction, ledger, tell third parties.
        KindSpec(
            RequestKind.ERASURE.value,
            dispatch.ERASE,
            (S.RESTRICTED, S.ERASED, S.NOTIFYING, S.COMPLETED),
            _NOTIFYING_EXTRA,
        ),
        KindSpec(RequestKind.SUSPENSION.value, dispatch.SUSPEND, (S.RESTRICTED, S.COMPLETED)),
        KindSpec(RequestKind.SUSPENSION_LIFT.value, dispatch.SUSPEND_LIFT, (S.COMPLETED,)),
        KindSpec(
            RequestKind.CONSENT_WITHDRAWAL.value,
            dispatch.CONSENT_WITHDRAW,
            (S.CONSENT_WITHDRAWN, S.NOTIFYING, S.COMPLETED),
            _NOTIFYING_EXTRA,
        ),
    )
}


def task_for(kind: str) -> str | None:
    """The task that carries out ``kind``, or None for a kind nobody declared."""
    spec = KINDS.get(kind)
    return spec.task if spec else None


def is_handler_task(name: str) -> bool:
    """Whether ``name`` is a request kind's task (its only argument is the request id)."""
    return any(spec.task == name for spec in KINDS.values())


def allowed(kind: str, frm: str) -> frozenset[str]:
    spec = KINDS.get(kind)
    if spec is None:
        # A row the website wrote with a kind we do not know can only be refused.
        return frozenset() if frm in TERMINAL else frozenset({S.FAILED.value})
    return spec.allowed(frm)


_KEEP = object()


def transition(req: LifecycleRequest, to: str, *, error: str | object | None = _KEEP) -> None:
    """Move ``req`` to state ``to`` (in the caller's transaction) or raise IllegalTransition.

    ``error`` sets the one-line reason (``None`` clears it); terminal states stamp
    ``completed_at``, leaving one clears it.
    """
    to = S(to).value
    frm = req.state
    if to not in allowed(req.kind, frm):
        raise IllegalTransition(f"request {req.id} ({req.kind}): {frm} -> {to} is not allowed")
    now = utcnow()
    spec = KINDS.get(req.kind)
    if spec is not None and to in spec.steps and to != S.COMPLETED.value:
        # Moving into a step's state means the step was done (the handlers persist the state
        # in the transaction that did the work).
        mark_done(req, to)
    req.state = to
    req.updated_at = now
    if error is not _KEEP:
        req.error = None if error is None else str(error).splitlines()[0][:500]
    req.completed_at = now if to in TERMINAL else None


def steps_done(req: LifecycleRequest) -> list[str]:
    """What the request has done so far, in order (kept when it fails)."""
    return [x for x in (req.steps_done or "").split(",") if x]


def mark_done(req: LifecycleRequest, step: str) -> None:
    """Record ``step`` as done (once); also for part of a step that failed after it
    (``rows_destroyed``: the rows went, their files were refused)."""
    done = steps_done(req)
    if step not in done:
        req.steps_done = ",".join([*done, step])[:200]


def resume_state(req: LifecycleRequest) -> str:
    """Where a failed request resumes: the state after its last completed step (whose next
    step is the one that failed), or ``received`` if no step was done."""
    spec = KINDS.get(req.kind)
    done = steps_done(req)
    if spec is None:
        return S.RECEIVED.value
    states = [str(st) for st in spec.steps]
    reached = [d for d in done if d in states]
    return reached[-1] if reached else S.RECEIVED.value


def reopen(req: LifecycleRequest) -> str:
    """Re-open a failed request at :func:`resume_state` (``lifecycle requests retry``).

    The one move out of ``failed``: the steps done stay done (a withdrawal whose rows are
    gone is not asked to find its member again); the failed step runs again. Raises
    IllegalTransition for a request that has not failed.
    """
    if req.state != S.FAILED.value:
        raise IllegalTransition(f"request {req.id} is {req.state}, not failed: nothing to retry")
    if req.kind not in KINDS:
        raise IllegalTransition(f"request {req.id} has unknown kind {req.kind!r}")
    to = resume_state(req)
    req.state = to
    req.updated_at = utcnow()
    req.completed_at = None
    req.error = None
    return to
