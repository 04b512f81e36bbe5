"""What every right's request shares: who asked, submitting it, refusing it with a reason.

Who asked (시행령 제45조·제46조): the member, the 법정대리인 of a child under 14, or a delegate
with a 위임장; and how their identity was checked (the site's login, or a document a staff
member checked). A guardian must be the one the site recorded for that member; a delegate needs
a checked document. A request that fails these checks is not silently dropped: the worker
refuses it, and the requester gets a written answer with the reason and how to object.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.core import db
from lifecycle.core.errors import UserError
from lifecycle.datamap.member_table import MemberTable, live_member, member_table
from lifecycle.engine.context import get_context
from lifecycle.requests.client import dispatch_now
from lifecycle.requests.outbox import submit

# Re-exported: every right's module takes them from here.
from lifecycle.rights.intake import Requester as Requester
from lifecycle.rights.intake import make_requester as make_requester
from models.requests import (
    OPEN_STATES,
    LifecycleRequest,
    RequesterKind,
    VerifiedBy,
)

log = logging.getLogger(__name__)

# The data map's category of the 법정대리인 table, and the column holding the guardian's name.
GUARDIAN_CATEGORY = "guardian"
GUARDIAN_NAME_COLUMN = "name"


def _normal(name: str | None) -> str:
    return re.sub(r"\s+", "", name or "")


def recorded_guardians(s: Session, member_id: int) -> list[str]:
    """The names of the 법정대리인 the site recorded for this member (data map category)."""
    ctx = get_context()
    dm, md = ctx.datamap, ctx.metadata
    names: list[str] = []
    for tm in dm.tables.values():
        cols = tm.columns.get(GUARDIAN_CATEGORY)
        if not cols or GUARDIAN_NAME_COLUMN not in cols:
            continue
        t = md.tables[tm.table]
        expr = tm.scoped(t, dm.member_expr(tm.name, md) == member_id)
        names.extend(str(n) for n in s.scalars(select(t.c[GUARDIAN_NAME_COLUMN]).where(expr)))
    return names


def requester_refusal(s: Session, req: LifecycleRequest) -> str | None:
    """Why this requester may not make this request, or None. Korean (it goes in the answer)."""
    kind = req.requester_kind or RequesterKind.MEMBER.value
    if kind == RequesterKind.GUARDIAN.value:
        names = {_normal(n) for n in recorded_guardians(s, req.member_id)}
        if not req.requester_name or _normal(req.requester_name) not in names:
            return (
                "요청하신 분이 이 회원의 법정대리인으로 기록되어 있지 않습니다 "
                "(requester is not the recorded guardian)"
            )
    elif kind == RequesterKind.DELEGATE.value:
        if req.verified_by != VerifiedBy.DOCUMENT.value:
            return "대리인의 요구에는 위임장 확인이 필요합니다 (delegate without a checked 위임장)"
    elif kind != RequesterKind.MEMBER.value:
        return f"요청인 구분을 알 수 없습니다 (unknown requester kind {kind!r})"
    return None


def refusal_of(
    s: Session,
    req: LifecycleRequest,
    mt: MemberTable,
    *,
    exclusive: bool = True,
    unknown: str = "회원 정보를 찾을 수 없습니다 ({})",
) -> str | None:
    """Why the worker must refuse this request before anything else, or None: a requester it
    cannot accept, or a member who is unknown or withdrawn (``unknown`` words that, ``{}``
    standing for the one-line reason). Korean: it goes in the answer."""
    refusal = requester_refusal(s, req)
    if refusal is not None:
        return refusal
    try:
        live_member(s, mt, req.member_id, exclusive=exclusive)
    except UserError as exc:
        return unknown.format(exc)
    return None


def open_request_of(s: Session, member_id: int, kinds: tuple[str, ...]) -> tuple[int, str] | None:
    row = s.execute(
        select(LifecycleRequest.id, LifecycleRequest.kind)
        .where(
            LifecycleRequest.member_id == member_id,
            LifecycleRequest.kind.in_(kinds),
            LifecycleRequest.state.in_([st.value for st in OPEN_STATES]),
        )
        .limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def submit_right(
    kind: str,
    member_id: int,
    payload: dict[str, Any] | None,
    requester: Requester,
    *,
    check: Callable[[Session, MemberTable, Any], None] | None = None,
    conflicting: tuple[str, ...] = (),
    dispatch: bool = True,
    former: Callable[[Session, int], bool] | None = None,
    actor: str | None = None,
) -> int:
    """Check, then record the request in one transaction and dispatch it; returns its id.

    Refuses with a one-line UserError and changes nothing: an unknown or withdrawn member, a
    request of the same kind (or a ``conflicting`` one, or a withdrawal) still open, or what
    ``check(session, member table, member row)`` refuses. ``dispatch=False`` leaves the
    sending to the relay (a command that does not wait: it then never imports Celery).
    ``former(session, member_id)``: a right a former member keeps (열람 of what is still held)
    accepts one it says True for; ``check`` then gets ``None`` as the row.
    """
    if member_id <= 0:
        raise UserError("member id must be a positive integer")
    with db.session("primary") as s:
        mt = member_table(s.get_bind())  # type: ignore[arg-type]
        try:
            row = live_member(s, mt, member_id, exclusive=True)
        except UserError:
            if former is None or not former(s, member_id):
                raise
            row = None
        other = open_request_of(s, member_id, (kind, "withdrawal", *conflicting))
        if other is not None:
            raise UserError(
                f"member {member_id} already has {other[1]} request {other[0]} open; wait for it "
                "to finish"
            )
        if check is not None:
            check(s, mt, row)
        request_id = submit(s, kind, member_id, payload, actor=actor)
        req = s.get(LifecycleRequest, request_id)
        assert req is not None
        requester.record(req)
    if dispatch:
        dispatch_now(request_id)
    return request_id


def check_requester_now(member_id: int, requester: Requester) -> None:
    """For a request that cannot be refused after submitting (a withdrawal: the site marks the
    member withdrawn with it): refuse a wrong requester up front, one line, nothing changed."""
    probe = LifecycleRequest(
        member_id=member_id,
        requester_kind=requester.kind,
        requester_name=requester.name,
        verified_by=requester.verified_by,
    )
    with db.session("primary") as s:
        refusal = requester_refusal(s, probe)
    if refusal is not None:
        raise UserError(refusal)


def record_requester(request_id: int, requester: Requester) -> None:
    with db.session("primary") as s:
        req = s.get(LifecycleRequest, request_id)
        if req is not None:
            requester.record(req)
