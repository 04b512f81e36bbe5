"""Legal deadlines of requests, without a server (SQLite in memory): calendar days counted
from the instant of receipt, the one postponement an access request may get, and which open
requests are overdue (a legal hold exempts them, judged by the day in Asia/Seoul)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.core.settings import reset_settings_cache
from lifecycle.requests import deadlines
from lifecycle.requests.deadlines import (
    MAX_EXTENSION_DAYS,
    OpenRequest,
    by_kind,
    deadline_days,
    due_at_for,
    due_of,
    extend,
    open_requests,
    overdue,
)
from lifecycle.requests.states import KINDS
from models.guards import LegalHold
from models.requests import LifecycleRequest, RequestKind, RequestState

KST = ZoneInfo("Asia/Seoul")
K = RequestKind
S = RequestState


@pytest.fixture(autouse=True)
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for k in list(os.environ):
        if k.startswith("LIFECYCLE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("LIFECYCLE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LIFECYCLE_TIMEZONE", "Asia/Seoul")
    reset_settings_cache()
    yield
    reset_settings_cache()


@pytest.fixture
def session() -> Iterator[Session]:
    eng = create_engine("sqlite://")
    LifecycleRequest.__table__.create(eng)
    LegalHold.__table__.create(eng)
    with Session(eng) as s:
        yield s
    eng.dispose()


def _add(s: Session, kind: str, created: datetime, **kw: object) -> LifecycleRequest:
    kw.setdefault("member_id", 1)
    req = LifecycleRequest(kind=kind, created_at=created, updated_at=created, **kw)
    s.add(req)
    s.flush()
    return req


def _hold(s: Session, member_id: int, until: date, released: datetime | None = None) -> None:
    s.add(
        LegalHold(
            scope="member", member_id=member_id, reason="수사협조 2026-1", until=until,
            created_by="op", created_at=datetime(2026, 1, 1, tzinfo=UTC), released_at=released,
        )
    )  # fmt: skip
    s.flush()


# -- how many days ---------------------------------------------------------------------------


def test_each_kind_has_its_statutory_number_of_days() -> None:
    # 시행령 제41조 (열람), 제43조 (정정·삭제), 제44조 (처리정지): 10 days.
    for kind in (K.ACCESS, K.CORRECTION, K.ERASURE, K.SUSPENSION, K.CONSENT_WITHDRAWAL):
        assert deadline_days(kind.value) == 10, kind
    # A withdrawal's destruction: the settings' deadline (5 days by default, 표준 개인정보
    # 보호지침 제10조①).
    assert deadline_days(K.WITHDRAWAL.value) == 5
    # Only access requests may be postponed.
    assert [k for k, spec in KINDS.items() if spec.extendable] == [K.ACCESS.value]


def test_the_destruction_deadline_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_DESTRUCTION_DEADLINE_DAYS", "3")
    reset_settings_cache()
    assert deadline_days(K.WITHDRAWAL.value) == 3
    # A kind nobody declared gets the shortest deadline rather than none.
    assert deadline_days("telepathy") == 3
    assert deadline_days(K.ACCESS.value) == 10


# -- when: calendar days from the instant of receipt -------------------------------------------


@pytest.mark.parametrize(
    ("created", "due"),
    [
        # Weekends and public holidays count (추석 2026: 9/24-9/26): calendar days, not business.
        (datetime(2026, 9, 22, 1, 0, tzinfo=UTC), datetime(2026, 10, 2, 1, 0, tzinfo=UTC)),
        # Across a month end and a year end.
        (datetime(2026, 1, 25, 9, 0, tzinfo=UTC), datetime(2026, 2, 4, 9, 0, tzinfo=UTC)),
        (datetime(2026, 12, 28, 12, 0, tzinfo=UTC), datetime(2027, 1, 7, 12, 0, tzinfo=UTC)),
        # Across 29 February of a leap year.
        (datetime(2028, 2, 25, 0, 0, tzinfo=UTC), datetime(2028, 3, 6, 0, 0, tzinfo=UTC)),
    ],
)
def test_due_is_ten_calendar_days_after_receipt(created: datetime, due: datetime) -> None:
    assert due_at_for(K.ACCESS.value, created) == due


def test_a_request_received_late_at_night_in_seoul_is_due_at_that_hour_ten_days_on() -> None:
    # 23:30 on 31 December in Seoul is still 14:30 UTC on the 31st.
    created = datetime(2026, 12, 31, 23, 30, tzinfo=KST)
    due = due_at_for(K.CORRECTION.value, created)
    assert due.astimezone(KST) == datetime(2027, 1, 10, 23, 30, tzinfo=KST)
    assert due - created == timedelta(days=10)


def test_a_naive_timestamp_from_the_database_is_utc() -> None:
    due = due_at_for(K.WITHDRAWAL.value, datetime(2026, 2, 26, 20, 0))
    assert due == datetime(2026, 3, 3, 20, 0, tzinfo=UTC)


def test_the_stamped_due_time_wins_over_the_kind() -> None:
    created = datetime(2026, 5, 1, tzinfo=UTC)
    stamped = LifecycleRequest(kind="access", created_at=created, due_at=datetime(2026, 6, 1))
    assert due_of(stamped) == datetime(2026, 6, 1, tzinfo=UTC)
    unstamped = LifecycleRequest(kind="access", created_at=created, due_at=None)
    assert due_of(unstamped) == datetime(2026, 5, 11, tzinfo=UTC)


def test_overdue_from_the_due_instant_on() -> None:
    due = datetime(2026, 3, 1, 15, 0, tzinfo=UTC)
    r = OpenRequest(1, "access", "received", due - timedelta(days=10), due, False)
    assert not r.overdue(due - timedelta(microseconds=1))
    assert r.overdue(due)
    assert r.overdue(due + timedelta(seconds=1))


# -- which requests are open and overdue -------------------------------------------------------


def test_open_requests_are_sorted_by_due_time_and_skip_finished_ones(session: Session) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    late = _add(session, "access", t0)  # due 3/11 (from its kind)
    early = _add(session, "withdrawal", t0)  # due 3/6
    stamped = _add(session, "access", t0, due_at=datetime(2026, 3, 4, tzinfo=UTC))
    _add(session, "access", t0, state=S.COMPLETED.value)
    _add(session, "access", t0, state=S.FAILED.value)
    _add(session, "correction", t0, state=S.NEEDS_ATTENTION.value, extension_reason="x")
    rows = open_requests(session)
    assert [r.id for r in rows][:3] == [stamped.id, early.id, late.id]
    assert len(rows) == 4  # needs_attention is open; completed and failed are not
    assert rows[0].due_at == datetime(2026, 3, 4, tzinfo=UTC)
    assert rows[1].due_at == datetime(2026, 3, 6, tzinfo=UTC)
    assert [r.extended for r in rows] == [False, False, False, True]


def test_overdue_lists_open_requests_past_due(session: Session) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    a = _add(session, "withdrawal", t0)  # due 3/6
    b = _add(session, "access", t0)  # due 3/11
    _add(session, "withdrawal", t0, state=S.COMPLETED.value)
    assert overdue(session, datetime(2026, 3, 5, tzinfo=UTC)) == []
    assert [r.id for r in overdue(session, datetime(2026, 3, 6, tzinfo=UTC))] == [a.id]
    assert [r.id for r in overdue(session, datetime(2026, 3, 12, tzinfo=UTC))] == [a.id, b.id]


def test_a_held_member_s_request_is_not_overdue_until_the_hold_s_last_seoul_day_ends(
    session: Session,
) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    held = _add(session, "withdrawal", t0, member_id=5)  # due 3/6
    free = _add(session, "withdrawal", t0, member_id=6)
    _hold(session, 5, until=date(2026, 3, 10))
    # 3/10 23:59 in Seoul: the hold still covers its last day.
    inside = datetime(2026, 3, 10, 23, 59, tzinfo=KST)
    assert [r.id for r in overdue(session, inside)] == [free.id]
    # 3/11 00:30 in Seoul is still 3/10 in UTC, but the site's day is the 11th: it expired.
    after = datetime(2026, 3, 11, 0, 30, tzinfo=KST)
    assert after.astimezone(UTC).date() == date(2026, 3, 10)
    assert [r.id for r in overdue(session, after)] == [held.id, free.id]


def test_a_released_hold_exempts_nothing(session: Session) -> None:
    r = _add(session, "withdrawal", datetime(2026, 3, 1, tzinfo=UTC), member_id=5)
    _hold(session, 5, until=date(2026, 12, 31), released=datetime(2026, 3, 2, tzinfo=UTC))
    assert [o.id for o in overdue(session, datetime(2026, 3, 20, tzinfo=UTC))] == [r.id]


def test_by_kind_lists_every_kind_with_its_counts(session: Session) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    w = _add(session, "withdrawal", t0)  # due 3/6: overdue
    soon = _add(session, "access", t0)  # due 3/11 00:00: within a day
    _add(session, "access", t0 + timedelta(days=3))  # due 3/14: neither
    _add(session, "telepathy", t0)  # an unknown kind the website wrote: 5 days, overdue
    out = by_kind(session, now)
    assert set(KINDS) <= set(out)
    assert out["withdrawal"] | {"overdue_ids": out["withdrawal"]["overdue_ids"]} == {
        "deadline_days": 5, "extendable": False, "open": 1, "due_within_1_day": 0,
        "overdue": 1, "overdue_ids": [w.id], "next_due_at": "2026-03-06T00:00:00+00:00",
    }  # fmt: skip
    assert out["access"]["open"] == 2 and out["access"]["extendable"] is True
    assert out["access"]["due_within_1_day"] == 1 and out["access"]["overdue"] == 0
    assert out["access"]["next_due_at"] == (t0 + timedelta(days=10)).isoformat()
    assert soon.id not in out["access"]["overdue_ids"]
    assert out["telepathy"]["overdue"] == 1 and out["telepathy"]["deadline_days"] == 5
    assert out["erasure"] == {
        "deadline_days": 10, "extendable": False, "open": 0, "due_within_1_day": 0,
        "overdue": 0, "overdue_ids": [], "next_due_at": None,
    }  # fmt: skip


def test_a_held_request_is_neither_overdue_nor_due_soon(session: Session) -> None:
    """A request waiting lawfully under a hold must not show as due within a day for as long
    as the hold lasts (status would flag it as urgent every day)."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    _add(session, "withdrawal", t0, member_id=5)  # due 3/6
    _hold(session, 5, until=date(2026, 6, 30))
    out = by_kind(session, datetime(2026, 4, 1, tzinfo=UTC))["withdrawal"]
    assert (out["open"], out["overdue"], out["due_within_1_day"]) == (1, 0, 0)


# -- postponing an access request (시행령 제41조④) -----------------------------------------


def _fresh(s: Session, kind: str = "access", **kw: object) -> LifecycleRequest:
    created = datetime.now(UTC) - timedelta(days=2)
    return _add(s, kind, created, due_at=created + timedelta(days=10), **kw)


def test_extend_postpones_an_open_access_request_once(session: Session) -> None:
    req = _fresh(session)
    due = deadlines.due_of(req)
    new_due = extend(session, req, 7, "  자료   보관처  이전   중 ")
    assert new_due == due + timedelta(days=7) == deadlines.due_of(req)
    assert req.extension_reason == "자료 보관처 이전 중"
    with pytest.raises(UserError, match="already postponed once"):
        extend(session, req, 1, "again")
    assert deadlines.due_of(req) == due + timedelta(days=7)


@pytest.mark.parametrize("kind", [k for k, spec in KINDS.items() if not spec.extendable])
def test_no_other_kind_may_be_postponed(session: Session, kind: str) -> None:
    req = _fresh(session, kind)
    before = req.due_at
    with pytest.raises(UserError, match="allows no postponement"):
        extend(session, req, 5, "busy")
    assert req.due_at == before and req.extension_reason is None


@pytest.mark.parametrize("days", [0, -1, MAX_EXTENSION_DAYS + 1])
def test_extend_refuses_days_out_of_range(session: Session, days: int) -> None:
    req = _fresh(session)
    before = req.due_at
    with pytest.raises(UserError, match=f"between 1 and {MAX_EXTENSION_DAYS}"):
        extend(session, req, days, "reason")
    assert req.due_at == before and req.extension_reason is None


def test_extend_accepts_the_bounds(session: Session) -> None:
    for days in (1, MAX_EXTENSION_DAYS):
        req = _fresh(session)
        due = deadlines.due_of(req)
        assert extend(session, req, days, "reason") == due + timedelta(days=days)


@pytest.mark.parametrize("reason", ["", "   \n\t", "x" * 501])
def test_extend_refuses_an_empty_or_overlong_reason(session: Session, reason: str) -> None:
    req = _fresh(session)
    with pytest.raises(UserError, match="1-500 characters"):
        extend(session, req, 5, reason)
    assert req.extension_reason is None


@pytest.mark.parametrize("state", [S.COMPLETED.value, S.FAILED.value])
def test_extend_refuses_a_finished_request(session: Session, state: str) -> None:
    req = _fresh(session, state=state)
    with pytest.raises(UserError, match=f"already {state}"):
        extend(session, req, 5, "reason")


def test_extend_refuses_a_request_already_past_its_deadline(session: Session) -> None:
    created = datetime.now(UTC) - timedelta(days=11)
    req = _add(session, "access", created)  # no stamped due: created + 10 days, yesterday
    with pytest.raises(UserError, match="already past its deadline"):
        extend(session, req, 5, "reason")
    assert req.due_at is None and req.extension_reason is None
