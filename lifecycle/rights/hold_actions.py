"""Placing and releasing a legal hold (보존 명령), one function each, for the CLI
(`lifecycle hold add|release`) and the console alike: the calls of
:mod:`lifecycle.requests.holds` in the same two transactions (the archive's outermost: it
commits after the primary one, so the ledger never records a hold that did not commit) and the
access-log line, naming the operator.

Here and not in :mod:`lifecycle.requests.holds`: checking that a member exists needs the engine's
context (the data map's subject table), which sits above the requests layer. The callers parse
their own input and say what was done in their own words; ``extra`` adds to the access-log
details what only the caller knows (the console: the client's address).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from lifecycle.core import db
from lifecycle.engine.context import get_context
from lifecycle.requests import holds
from lifecycle.vault import accesslog
from models.guards import LegalHold


@dataclass(frozen=True)
class Placed:
    hold_id: int
    scope: str


@dataclass(frozen=True)
class Released:
    hold_id: int
    # Open withdrawal requests of the held member: they stopped at the hold and may go on now.
    parked_withdrawals: list[int]


def _details(hold: LegalHold, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"hold_id": hold.id, "scope": hold.scope, **(extra or {})}


def add(
    operator: str,
    *,
    member_id: int | None,
    request_id: int | None,
    category: str | None,
    reason: str,
    until: date,
    extra: Mapping[str, Any] | None = None,
) -> Placed:
    """Put a member, a request or a category on hold until ``until`` (inclusive)."""
    ctx = get_context()
    sub = ctx.datamap.subject

    def member_exists(m: int) -> bool:
        t = ctx.subject_table
        with ctx.primary.connect() as c:
            return c.execute(t.select().where(t.c[sub.key] == m)).first() is not None

    with db.session("archive") as a, db.session("primary") as p:
        hold = holds.add(
            p, a, member_id=member_id, request_id=request_id, category=category,
            reason=reason, until=until, today=ctx.today(), operator=operator,
            known_categories=ctx.datamap.rules, member_exists=member_exists,
        )  # fmt: skip
        accesslog.record(
            a, operator=operator, kind="hold", action="hold add", member_id=hold.member_id,
            request_id=hold.request_id, details=_details(hold, extra),
        )  # fmt: skip
        return Placed(hold_id=hold.id, scope=hold.scope)


def release(operator: str, hold_id: int, *, extra: Mapping[str, Any] | None = None) -> Released:
    """Release a hold. Sending the parked withdrawals on is the caller's: the CLI dispatches
    them, the console leaves them to the relay's re-send of stalled requests."""
    with db.session("archive") as a, db.session("primary") as p:
        hold = holds.release(p, a, hold_id, operator=operator)
        accesslog.record(
            a, operator=operator, kind="hold", action="hold release",
            member_id=hold.member_id, request_id=hold.request_id,
            details=_details(hold, extra),
        )  # fmt: skip
        parked = holds.parked_withdrawals(p, hold.member_id) if hold.member_id else []
        return Released(hold_id=hold.id, parked_withdrawals=parked)
