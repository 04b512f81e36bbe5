"""The request state machine on its own (no server): which moves each kind declares, what a
move stamps, and how a failed request is re-opened after its last completed step."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lifecycle.requests.states import (
    KINDS,
    START,
    TERMINAL,
    IllegalTransition,
    allowed,
    is_handler_task,
    mark_done,
    reopen,
    resume_state,
    steps_done,
    task_for,
    transition,
)
from models.requests import LifecycleRequest, RequestKind, RequestState

S = RequestState
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def _req(kind: str, state: str = S.RECEIVED.value, **kw: object) -> LifecycleRequest:
    return LifecycleRequest(id=7, kind=kind, member_id=1, state=state, **kw)


def _walk(req: LifecycleRequest, *states: str) -> None:
    for st in states:
        transition(req, st)


def test_every_request_kind_is_declared_with_its_task() -> None:
    assert set(KINDS) == {k.value for k in RequestKind}
    for kind, spec in KINDS.items():
        assert task_for(kind) == spec.task
        assert is_handler_task(spec.task)
        assert spec.steps[-1] == S.COMPLETED.value, kind
    assert task_for("no-such-kind") is None
    assert not is_handler_task("lifecycle.ping")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_walks_its_happy_path_and_records_each_step(kind: str) -> None:
    spec = KINDS[kind]
    req = _req(kind)
    transition(req, S.DISPATCHED)
    assert req.completed_at is None
    for step in spec.steps:
        transition(req, step)
        assert req.state == step
    assert req.completed_at is not None
    # Every step but the final ``completed`` counts as done, in order.
    assert steps_done(req) == [str(s) for s in spec.steps[:-1]]


@pytest.mark.parametrize("frm", sorted(START))
def test_a_worker_may_start_from_received_or_dispatched(frm: str) -> None:
    req = _req(RequestKind.WITHDRAWAL.value, frm)
    transition(req, S.RESTRICTED)
    assert req.state == S.RESTRICTED.value


def test_steps_cannot_be_skipped_nor_taken_backwards() -> None:
    req = _req(RequestKind.WITHDRAWAL.value)
    with pytest.raises(IllegalTransition, match=r"received -> archived is not allowed"):
        transition(req, S.ARCHIVED)
    assert req.state == S.RECEIVED.value and req.steps_done is None  # nothing changed
    _walk(req, S.RESTRICTED, S.ARCHIVED)
    with pytest.raises(IllegalTransition):
        transition(req, S.RESTRICTED)
    with pytest.raises(IllegalTransition):
        transition(req, S.COMPLETED)  # destroyed comes first
    # Only ``received`` moves to ``dispatched``.
    with pytest.raises(IllegalTransition):
        transition(req, S.DISPATCHED)
    # A step of another kind is not a step of this one.
    with pytest.raises(IllegalTransition):
        transition(_req(RequestKind.ACCESS.value), S.RESTRICTED)


def test_an_unknown_state_name_is_refused() -> None:
    with pytest.raises(ValueError):
        transition(_req(RequestKind.ACCESS.value), "teleported")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_any_open_state_may_fail_and_failed_is_terminal(kind: str) -> None:
    spec = KINDS[kind]
    for frm in (S.RECEIVED.value, S.DISPATCHED.value, *[str(s) for s in spec.steps[:-1]]):
        assert S.FAILED.value in allowed(kind, frm), (kind, frm)
    assert allowed(kind, S.FAILED.value) == frozenset()
    if S.COMPLETED.value not in spec.extra:
        assert allowed(kind, S.COMPLETED.value) == frozenset()


def test_failing_stamps_the_one_line_reason_and_completed_at() -> None:
    req = _req(RequestKind.WITHDRAWAL.value)
    transition(req, S.RESTRICTED)
    transition(req, S.FAILED, error="member row locked\nTraceback (most recent call last): ...")
    assert req.state == S.FAILED.value
    assert req.error == "member row locked"
    assert req.completed_at is not None
    assert steps_done(req) == ["restricted"]  # kept when it fails


def test_error_is_kept_unless_given_and_cleared_with_none() -> None:
    req = _req(RequestKind.CORRECTION.value, error="earlier trouble")
    transition(req, S.DISPATCHED)
    assert req.error == "earlier trouble"
    transition(req, S.RESTRICTED, error=None)
    assert req.error is None
    transition(req, S.CORRECTED, error="x" * 900)
    assert req.error == "x" * 500


def test_a_replayed_notification_reopens_a_completed_request() -> None:
    """`lifecycle deliveries replay`: completed -> notifying -> needs_attention -> completed."""
    for kind in (RequestKind.CORRECTION, RequestKind.ERASURE, RequestKind.CONSENT_WITHDRAWAL):
        spec = KINDS[kind.value]
        req = _req(kind.value)
        _walk(req, *spec.steps)
        assert req.completed_at is not None
        transition(req, S.NOTIFYING)
        assert req.completed_at is None  # leaving a terminal state clears it
        assert steps_done(req).count(S.NOTIFYING.value) == 1  # recorded once
        transition(req, S.NEEDS_ATTENTION)
        transition(req, S.COMPLETED)
        assert req.completed_at is not None
    # A withdrawal or an access request declares no way back.
    for kind in (RequestKind.WITHDRAWAL, RequestKind.ACCESS, RequestKind.SUSPENSION):
        assert allowed(kind.value, S.COMPLETED.value) == frozenset()


def test_a_parked_withdrawal_resumes_at_the_restriction() -> None:
    assert allowed(RequestKind.WITHDRAWAL.value, S.NEEDS_ATTENTION.value) == {
        S.RESTRICTED.value,
        S.FAILED.value,
    }


def test_a_kind_nobody_declared_can_only_fail() -> None:
    assert allowed("telepathy", S.RECEIVED.value) == {S.FAILED.value}
    assert allowed("telepathy", S.FAILED.value) == frozenset()
    req = _req("telepathy")
    with pytest.raises(IllegalTransition):
        transition(req, S.DISPATCHED)
    transition(req, S.FAILED, error="unknown kind")
    assert req.state == S.FAILED.value


def test_mark_done_records_each_step_once_in_order() -> None:
    req = _req(RequestKind.WITHDRAWAL.value)
    assert steps_done(req) == []
    mark_done(req, "restricted")
    mark_done(req, "rows_destroyed")
    mark_done(req, "restricted")
    assert req.steps_done == "restricted,rows_destroyed"
    assert steps_done(req) == ["restricted", "rows_destroyed"]


def test_steps_done_stays_within_its_column() -> None:
    req = _req(RequestKind.WITHDRAWAL.value)
    for i in range(40):
        mark_done(req, f"partial_step_{i:02d}")
    assert req.steps_done is not None and len(req.steps_done) <= 200


@pytest.mark.parametrize(
    ("kind", "done", "expected"),
    [
        (RequestKind.WITHDRAWAL.value, None, "received"),
        (RequestKind.WITHDRAWAL.value, "restricted", "restricted"),
        (RequestKind.WITHDRAWAL.value, "restricted,archived", "archived"),
        # A partial step that is not a state does not move the resume point.
        (RequestKind.WITHDRAWAL.value, "restricted,archived,rows_destroyed", "archived"),
        (RequestKind.ACCESS.value, "packaged", "packaged"),
        (RequestKind.ERASURE.value, "restricted,erased,notifying", "notifying"),
        # Steps of another kind (a corrupt row) are not this kind's states.
        (RequestKind.ACCESS.value, "restricted,archived", "received"),
        ("telepathy", "restricted", "received"),
    ],
)
def test_resume_state_is_the_last_completed_step(
    kind: str, done: str | None, expected: str
) -> None:
    assert resume_state(_req(kind, S.FAILED.value, steps_done=done)) == expected


def test_reopen_resumes_after_the_last_step_and_the_failed_step_runs_again() -> None:
    req = _req(RequestKind.WITHDRAWAL.value)
    _walk(req, S.DISPATCHED, S.RESTRICTED, S.ARCHIVED)
    transition(req, S.FAILED, error="file server unreachable")
    req.updated_at = LONG_AGO
    assert reopen(req) == S.ARCHIVED.value
    assert req.state == S.ARCHIVED.value
    assert req.error is None and req.completed_at is None
    assert req.updated_at > LONG_AGO
    assert steps_done(req) == ["restricted", "archived"]  # the steps done stay done
    # From there the step that failed is the next legal move.
    transition(req, S.DESTROYED)
    transition(req, S.COMPLETED)
    assert req.state == S.COMPLETED.value


def test_reopen_with_no_step_done_starts_from_received() -> None:
    req = _req(RequestKind.ACCESS.value)
    transition(req, S.FAILED, error="member not found")
    assert reopen(req) == S.RECEIVED.value
    transition(req, S.DISPATCHED)  # and is dispatched again like a new request


@pytest.mark.parametrize(
    "state", [S.RECEIVED.value, S.RESTRICTED.value, S.COMPLETED.value, S.NEEDS_ATTENTION.value]
)
def test_reopen_refuses_a_request_that_has_not_failed(state: str) -> None:
    req = _req(RequestKind.WITHDRAWAL.value, state, steps_done="restricted")
    with pytest.raises(IllegalTransition, match="not failed"):
        reopen(req)
    assert req.state == state


def test_reopen_refuses_an_unknown_kind() -> None:
    req = _req("telepathy", S.FAILED.value, error="unknown kind")
    with pytest.raises(IllegalTransition, match="unknown kind"):
        reopen(req)
    assert req.state == S.FAILED.value and req.error == "unknown kind"


def test_terminal_and_start_sets() -> None:
    assert {S.COMPLETED.value, S.FAILED.value} == TERMINAL
    assert {S.RECEIVED.value, S.DISPATCHED.value} == START
