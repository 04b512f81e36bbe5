"""Legal holds (보존 명령): data an investigation or a dispute needs is not destroyed meanwhile.

`lifecycle hold add (--member ID | --request ID | --category C) --reason TEXT --until DATE`.
While a hold is active (not released, ``until`` not passed in the site's timezone):

- the sweep leaves a held member's rows in the primary DB (withdrawn or dormant members and
  rows past their own age rule alike), and leaves every table holding a held category alone;
- a withdrawal of a held member stops after the restriction (처리정지: the data is not used,
  but neither archived nor destroyed) and resumes when the hold is released;
- the purge re-encrypts held members' archived records of an expiring bucket under the hold's
  own bucket key before destroying the bucket's key (see ``lifecycle.engine.purge``), and
  leaves buckets of a held category alone.

Each hold and release is a ledger entry (``hold``, ``hold_release``) naming the member only by
its keyed pseudonym; the hold's reason must not hold personal data (the ledger refuses shapes
such as phone numbers and e-mail addresses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from models.base import utcnow
from models.guards import LegalHold
from models.requests import OPEN_STATES, LifecycleRequest

HOLD_KEY_PREFIX = "hold:"
MIN_REASON_CHARS = 4
HOLD_BASIS = "개인정보 보호법 제21조① 단서 (다른 법령에 따른 보존), 수사·분쟁 대응 보존 명령"


@dataclass(frozen=True)
class HeldSet:
    """What active holds cover, as the purge needs it (archive side: pseudonyms)."""

    refs: dict[str, LegalHold]  # subject_ref -> the hold that lasts longest
    categories: dict[str, LegalHold]
    released_keys: tuple[str, ...]  # data-key categories of released holds ("hold:<id>")

    @property
    def hold_ids(self) -> list[int]:
        return sorted({h.id for h in (*self.refs.values(), *self.categories.values())})


def hold_key_category(hold_id: int) -> str:
    """The data-key "category" of a hold's own bucket: records kept for hold ``hold_id``."""
    return f"{HOLD_KEY_PREFIX}{hold_id}"


def is_active(today: date) -> ColumnElement[bool]:
    h = LegalHold.__table__
    return and_(h.c.released_at.is_(None), h.c.until >= today)


def member_held(member_key: Any, today: date) -> ColumnElement[bool]:
    """SQL: an active hold covers the member ``member_key`` (a column or a
    correlated scalar subquery for a table reached through its parent).

    ``IN (SELECT ...)`` rather than ``EXISTS``: a member expression that is itself a correlated
    subquery would not correlate through a second level. COALESCE makes a row with no member
    (an anonymous log line) "not held" instead of NULL.
    """
    h = LegalHold.__table__
    held = select(h.c.member_id).where(h.c.member_id.is_not(None), is_active(today))
    return func.coalesce(member_key.in_(held), False)


def categories_held(categories: Iterable[str], today: date) -> ColumnElement[bool]:
    """SQL: an active hold covers one of ``categories`` (uncorrelated: evaluated once)."""
    h = LegalHold.__table__
    cats = sorted(set(categories))
    return exists().where(and_(h.c.category.in_(cats), is_active(today)))


def not_held(categories: Iterable[str], member_key: Any, today: date) -> ColumnElement[bool]:
    """SQL filter for rows a step may take: neither their member nor their table is held."""
    cond = ~categories_held(categories, today)
    if member_key is not None:
        cond = and_(cond, ~member_held(member_key, today))
    return cond


def any_active(conn: Any, today: date) -> bool:
    """Whether any hold is active: lets a step leave the per-row hold filter out of its
    statements when there is none (the usual case). Measured on 100,000 withdrawn members with
    2 workers: the filter costs about 15% more worker CPU and 1.5 s more PostgreSQL CPU."""
    return conn.execute(select(exists().where(is_active(today)))).scalar_one() is True


def active(s: Session, today: date) -> list[LegalHold]:
    return list(s.scalars(select(LegalHold).where(is_active(today)).order_by(LegalHold.id)))


def holds_on_member(s: Session, member_id: int, today: date) -> list[LegalHold]:
    return list(
        s.scalars(
            select(LegalHold)
            .where(LegalHold.member_id == member_id, is_active(today))
            .order_by(LegalHold.id)
        )
    )


def held_set(primary: Session, archive: Session, today: date) -> HeldSet:
    # Here, not at the top: `lifecycle status` imports this module for the active holds and has
    # no use for the keystore (cryptography), the ledger or the archive's models.
    from lifecycle.vault import keystore

    refs: dict[str, LegalHold] = {}
    cats: dict[str, LegalHold] = {}
    for h in active(primary, today):
        if h.member_id is not None:
            ref = keystore.subject_ref(archive, h.member_id)
            if ref not in refs or refs[ref].until < h.until:
                refs[ref] = h
        elif h.category and (h.category not in cats or cats[h.category].until < h.until):
            cats[h.category] = h
    released = tuple(
        hold_key_category(i)
        for (i,) in primary.execute(
            select(LegalHold.id).where(LegalHold.released_at.is_not(None), LegalHold.until >= today)
        )
    )
    return HeldSet(refs, cats, released)


# -- commands ------------------------------------------------------------------------------------


def _check_reason(reason: str) -> str:
    text = " ".join((reason or "").split())
    if len(text) < MIN_REASON_CHARS:
        raise UserError("--reason is required (e.g. '서울중앙지검 수사협조 요청 2026-123')")
    return text


def add(
    primary: Session,
    archive: Session,
    *,
    member_id: int | None,
    request_id: int | None,
    category: str | None,
    reason: str,
    until: date,
    today: date,
    operator: str,
    known_categories: Iterable[str],
    member_exists: Callable[[int], bool],
) -> LegalHold:
    """Create a hold and its ledger entry (in the callers' two transactions; the caller commits
    the archive after the primary, so a hold that did not commit is never in the ledger)."""
    # Here, not at the top: `lifecycle status` imports this module for the active holds and has
    # no use for the keystore (cryptography), the ledger or the archive's models.
    from lifecycle.vault import keystore, ledger
    from models.archive import ArchivedRecord

    given = [x is not None for x in (member_id, request_id, category)]
    if sum(given) != 1:
        raise UserError("give exactly one of --member ID, --request ID, --category C")
    reason = _check_reason(reason)
    if until < today:
        raise UserError(f"--until {until.isoformat()} is in the past (today is {today})")
    if not operator.strip():
        raise UserError("the operator's name is required (--operator)")
    scope = (
        "member" if member_id is not None else "request" if request_id is not None else "category"
    )
    if request_id is not None:
        req = primary.get(LifecycleRequest, request_id)
        if req is None:
            raise UserError(f"unknown request {request_id}")
        member_id = int(req.member_id)
    if category is not None:
        cats = set(known_categories)
        if category not in cats:
            raise UserError(
                f"unknown category {category!r}; the data map has: {', '.join(sorted(cats))}"
            )
    ref = None
    if member_id is not None:
        if member_id <= 0:
            raise UserError("--member must be a positive integer (the member's id)")
        ref = keystore.subject_ref(archive, member_id)
        in_archive = archive.execute(
            select(ArchivedRecord.source_pk).where(ArchivedRecord.subject_ref == ref).limit(1)
        ).first()
        if in_archive is None and not member_exists(member_id):
            raise UserError(f"unknown member {member_id} (not in the primary DB nor the archive)")
    hold = LegalHold(
        scope=scope, member_id=member_id, request_id=request_id, category=category,
        reason=reason, until=until, created_by=operator, created_at=utcnow(),
    )  # fmt: skip
    primary.add(hold)
    primary.flush()
    ledger.append(
        archive,
        action="hold",
        categories=[category] if category else [],
        tables=[],
        subjects=1 if ref else 0,
        rows=0,
        reason=reason,
        legal_basis=HOLD_BASIS,
        method="보존 명령 설정: 파기·분리보관 중지 (legal hold set)",
        actor=f"operator:{operator}",
        request_id=request_id,
        subject_ref=ref,
        details={"hold_id": hold.id, "scope": scope, "until": until.isoformat()},
        dedup_key=f"hold:{hold.id}:add",
    )
    return hold


def release(primary: Session, archive: Session, hold_id: int, *, operator: str) -> LegalHold:
    # Here, not at the top: see add().
    from lifecycle.vault import keystore, ledger

    hold = primary.get(LegalHold, hold_id, with_for_update=True)
    if hold is None:
        raise UserError(f"unknown hold {hold_id}")
    if hold.released_at is not None:
        raise UserError(f"hold {hold_id} was already released")
    if not operator.strip():
        raise UserError("the operator's name is required (--operator)")
    hold.released_at = utcnow()
    hold.released_by = operator
    primary.flush()
    ledger.append(
        archive,
        action="hold_release",
        categories=[hold.category] if hold.category else [],
        tables=[],
        subjects=1 if hold.member_id is not None else 0,
        rows=0,
        reason=hold.reason,
        legal_basis=HOLD_BASIS,
        method="보존 명령 해제: 다음 정기 처리에서 파기 (legal hold released)",
        actor=f"operator:{operator}",
        request_id=hold.request_id,
        subject_ref=keystore.subject_ref(archive, hold.member_id)
        if hold.member_id is not None
        else None,
        details={"hold_id": hold.id, "scope": hold.scope, "until": hold.until.isoformat()},
        dedup_key=f"hold:{hold.id}:release",
    )
    return hold


def parked_withdrawals(primary: Session, member_id: int) -> list[int]:
    """Open withdrawal requests of the member (they stopped at the restriction while held)."""
    return list(
        primary.scalars(
            select(LifecycleRequest.id).where(
                LifecycleRequest.member_id == member_id,
                LifecycleRequest.kind == "withdrawal",
                LifecycleRequest.state.in_([s.value for s in OPEN_STATES]),
            )
        )
    )


def open_requests_held(primary: Session, today: date) -> set[int]:
    """Ids of open requests whose member is under an active hold (exempt from the deadline)."""
    r = LifecycleRequest.__table__
    return set(
        primary.scalars(
            select(r.c.id).where(
                r.c.state.in_([s.value for s in OPEN_STATES]),
                member_held(r.c.member_id, today),
            )
        )
    )
