"""The request runner itself (lifecycle.rights.pipeline), on both primaries: a step that dies
half-way leaves the request at its last persisted state and a re-run finishes it; a refusal
ends it failed with its reason, in the refusing transaction."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import LifecycleEnv, create_demo_schema


class WorkerDied(Exception):
    pass


def _request(kind: str = "erasure") -> int:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit

    with session("primary") as s:
        return submit(s, kind, 1, {"fields": ["hobbies"]})


def _row(request_id: int) -> Any:
    from lifecycle.core.db import session
    from models.requests import LifecycleRequest

    with session("primary") as s:
        req = s.get(LifecycleRequest, request_id)
        assert req is not None
        s.expunge(req)
        return req


def test_a_step_that_dies_half_way_leaves_the_last_state_and_a_rerun_finishes(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.states import transition
    from lifecycle.requests.use_block import is_restricted, lift
    from lifecycle.rights.pipeline import Job, Pipeline, restrict_step, run, starting
    from models.requests import RequestState

    create_demo_schema()
    deaths = [1]  # the worker dies once, mid-step
    after: list[str] = []

    def erase(job: Job) -> None:
        job.req.payload = {"fields": ["hobbies"], "erased": ["hobbies"]}
        lift(job.s, job.member_id, "erasure")
        job.after.append(lambda: after.append("sent"))
        if deaths:
            deaths.pop()
            raise WorkerDied("killed between two lines of the step")
        transition(job.req, RequestState.ERASED)

    def ledger(job: Job) -> None:
        transition(job.req, RequestState.NOTIFYING)

    kind = Pipeline(
        "erasure",
        {
            **starting(restrict_step("erasure", lambda job: None)),
            RequestState.RESTRICTED.value: erase,
            RequestState.ERASED.value: ledger,
        },
    )
    rid = _request()
    with pytest.raises(WorkerDied):
        run(kind, rid)
    req = _row(rid)
    # The restrict step committed; the dead step's work went with its transaction.
    assert (req.state, req.steps_done) == ("restricted", "restricted")
    assert req.payload == {"fields": ["hobbies"]}
    with session("primary") as s:
        assert is_restricted(s, 1)
    assert after == []  # nothing waiting for a commit that never came was sent

    out = run(kind, rid)
    assert out == {"request_id": rid, "state": "notifying"}
    req = _row(rid)
    assert req.steps_done == "restricted,erased,notifying"
    assert req.payload["erased"] == ["hobbies"]
    with session("primary") as s:
        assert not is_restricted(s, 1)
    assert after == ["sent"]
    # Finished as far as its steps go: a third run changes nothing.
    assert run(kind, rid)["state"] == "notifying"
    assert _row(rid).steps_done == "restricted,erased,notifying" and after == ["sent"]


def test_a_refusing_step_ends_the_request_failed_with_its_reason(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.rights.pipeline import Job, Pipeline, refuse, run, run_one, starting

    finished: list[str] = []

    def undo(job: Job) -> None:
        job.req.payload = None

    kind = Pipeline(
        "erasure",
        starting(lambda job: refuse(job, "삭제할 수 없는 항목입니다 (reason)")),
        finish=(lambda r: finished.append(r.state),),
        on_refuse=undo,
    )
    rid = _request()
    assert run(kind, rid) == {"request_id": rid, "state": "failed"}
    req = _row(rid)
    assert (req.state, req.error, req.payload) == (
        "failed",
        "삭제할 수 없는 항목입니다 (reason)",
        None,
    )
    assert req.completed_at is not None and not req.steps_done
    assert finished == ["failed"]  # the finishers (the answer) still run for a refused request
    assert run_one(kind, rid) == "failed"  # terminal: a re-run is a no-op

    # A strict kind refuses a request of another kind it is handed; a lax one leaves it alone.
    other = _request("suspension")
    assert run(kind, other)["state"] == "missing" and _row(other).state == "received"
    strict = Pipeline("erasure", {}, strict=True)
    assert run(strict, other)["state"] == "failed"
    assert _row(other).error == "malformed request: kind 'suspension' is not a erasure"


def test_an_error_the_kind_fails_on_rolls_the_step_back_and_fails_the_request(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.core.errors import UserError
    from lifecycle.requests.use_block import is_restricted, restrict
    from lifecycle.rights.pipeline import Job, Pipeline, run, starting

    undone: list[int] = []

    def step(job: Job) -> None:
        restrict(job.s, job.member_id, "erasure", job.request_id)
        raise UserError("rows the map's key cannot tell apart")

    kind = Pipeline(
        "erasure",
        starting(step),
        on_refuse=lambda job: undone.append(job.request_id),
        fails_on=(UserError,),
    )
    rid = _request()
    assert run(kind, rid) == {"request_id": rid, "state": "failed"}
    req = _row(rid)
    assert (req.state, req.error) == ("failed", "rows the map's key cannot tell apart")
    assert undone == [rid]
    with session("primary") as s:
        assert not is_restricted(s, 1)  # the step's work went with its transaction
