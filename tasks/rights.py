"""Tasks for the rights requests (열람·삭제·처리정지·동의 철회); each gets the request id only."""

from __future__ import annotations

from typing import Any

from lifecycle.core import dispatch
from lifecycle.rights.access import run_access
from lifecycle.rights.answers import answer_pending as _answer_pending
from lifecycle.rights.consent import run_consent_withdrawal
from lifecycle.rights.erase import run_erasure
from lifecycle.rights.suspension import run_lift, run_suspension
from tasks.base import RESUMABLE_TASK, LifecycleTask
from workers.app import app


@app.task(name=dispatch.ACCESS, **RESUMABLE_TASK)
def access(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_access(int(request_id), self.request.id)


@app.task(name=dispatch.ERASE, **RESUMABLE_TASK)
def erase(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_erasure(int(request_id), self.request.id)


@app.task(name=dispatch.SUSPEND, **RESUMABLE_TASK)
def suspend(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_suspension(int(request_id), self.request.id)


@app.task(name=dispatch.SUSPEND_LIFT, **RESUMABLE_TASK)
def suspend_lift(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_lift(int(request_id), self.request.id)


@app.task(name=dispatch.CONSENT_WITHDRAW, **RESUMABLE_TASK)
def consent_withdraw(self: LifecycleTask, request_id: int) -> dict[str, Any]:
    return run_consent_withdrawal(int(request_id), self.request.id)


@app.task(base=LifecycleTask, name=dispatch.ANSWER_PENDING, ignore_result=True)
def answer_pending() -> dict[str, int]:
    """Beat: answers a crash left unsent."""
    return {"answered": _answer_pending()}
