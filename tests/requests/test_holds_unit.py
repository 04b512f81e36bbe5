"""Legal holds without a server (SQLite in memory): which holds are active on a given day,
what their SQL filters let a step take, and the refusals of `hold add` / `hold release`,
which must change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import BigInteger, Column, Integer, MetaData, Table, create_engine, insert, select
from sqlalchemy.orm import Session

from lifecycle.core.errors import UserError
from lifecycle.requests import holds
from models.guards import LegalHold
from models.requests import LifecycleRequest, RequestState

TODAY = date(2026, 3, 10)
S = RequestState

rows = Table(
    "site_rows",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("member_id", BigInteger),
)


@pytest.fixture
def session() -> Iterator[Session]:
    eng = create_engine("sqlite://")
    LifecycleRequest.__table__.create(eng)
    LegalHold.__table__.create(eng)
    rows.create(eng)
    with Session(eng) as s:
        yield s
    eng.dispose()


def _hold(
    s: Session,
    *,
    member_id: int | None = None,
    category: str | None = None,
    until: date = date(2026, 12, 31),
    released: bool = False,
) -> LegalHold:
    h = LegalHold(
        scope="member" if member_id is not None else "category",
        member_id=member_id, category=category, reason="수사협조 2026-1", until=until,
        created_by="op", created_at=datetime(2026, 1, 1, tzinfo=UTC),
        released_at=datetime(2026, 3, 1, tzinfo=UTC) if released else None,
    )  # fmt: skip
    s.add(h)
    s.flush()
    return h


def _request(
    s: Session, member_id: int, kind: str = "withdrawal", state: str = "restricted"
) -> int:
    req = LifecycleRequest(kind=kind, member_id=member_id, state=state)
    s.add(req)
    s.flush()
    return int(req.id)


# -- active, expired, released -----------------------------------------------------------------


def test_a_hold_is_active_through_its_last_day_and_not_after(session: Session) -> None:
    h = _hold(session, member_id=1, until=TODAY)
    assert holds.active(session, TODAY) == [h]
    assert holds.active(session, date(2026, 1, 1)) == [h]
    assert holds.active(session, date(2026, 3, 11)) == []


def test_a_released_hold_is_not_active(session: Session) -> None:
    live = _hold(session, member_id=1)
    _hold(session, member_id=2, released=True)
    _hold(session, category="payment", released=True)
    assert holds.active(session, TODAY) == [live]
    assert holds.holds_on_member(session, 2, TODAY) == []
    assert holds.any_active(session.connection(), TODAY) is True


def test_any_active_is_false_with_only_expired_or_released_holds(session: Session) -> None:
    _hold(session, member_id=1, until=date(2026, 3, 9))
    _hold(session, category="payment", released=True)
    assert holds.any_active(session.connection(), TODAY) is False
    assert holds.any_active(session.connection(), date(2026, 3, 9)) is True


def test_holds_on_member_lists_only_that_member_s_active_holds(session: Session) -> None:
    a = _hold(session, member_id=1)
    b = _hold(session, member_id=1, until=date(2027, 6, 30))
    _hold(session, member_id=1, until=date(2026, 3, 9))  # expired
    _hold(session, member_id=2)
    _hold(session, category="profile")
    assert holds.holds_on_member(session, 1, TODAY) == [a, b]
    assert holds.holds_on_member(session, 3, TODAY) == []


# -- what a step may take -----------------------------------------------------------------------


def _takeable(s: Session, categories: list[str], today: date = TODAY) -> list[int]:
    cond = holds.not_held(categories, rows.c.member_id, today)
    return list(s.scalars(select(rows.c.id).where(cond).order_by(rows.c.id)))


def test_not_held_leaves_held_members_rows_and_keeps_rows_without_a_member(
    session: Session,
) -> None:
    session.execute(
        insert(rows),
        [{"id": 1, "member_id": 1}, {"id": 2, "member_id": 2}, {"id": 3, "member_id": None}],
    )
    assert _takeable(session, ["profile"]) == [1, 2, 3]
    _hold(session, member_id=2)
    _hold(session, member_id=1, until=date(2026, 3, 9))  # expired yesterday
    _hold(session, member_id=3, released=True)
    # A row with no member (an anonymous log line) is not held: COALESCE, not NULL.
    assert _takeable(session, ["profile"]) == [1, 3]


def test_a_category_hold_leaves_the_whole_table(session: Session) -> None:
    session.execute(insert(rows), [{"id": 1, "member_id": 1}, {"id": 2, "member_id": 2}])
    _hold(session, category="payment")
    assert _takeable(session, ["payment"]) == []
    assert _takeable(session, ["profile", "payment"]) == []
    assert _takeable(session, ["profile"]) == [1, 2]
    # Without a member column only the categories count.
    cond = holds.not_held(["profile"], None, TODAY)
    assert list(session.scalars(select(rows.c.id).where(cond))) == [1, 2]
    # The day after its last day, it no longer holds anything.
    assert _takeable(session, ["payment"], date(2027, 1, 1)) == [1, 2]


def test_open_requests_held_names_open_requests_of_held_members(session: Session) -> None:
    held_open = _request(session, 1)
    _request(session, 1, state=S.COMPLETED.value)
    _request(session, 2)
    _request(session, 3)
    _hold(session, member_id=1)
    _hold(session, member_id=3, released=True)
    _hold(session, category="profile")  # holds tables, not members' requests
    assert holds.open_requests_held(session, TODAY) == {held_open}
    assert holds.open_requests_held(session, date(2027, 1, 1)) == set()


def test_parked_withdrawals_are_the_member_s_open_withdrawals(session: Session) -> None:
    parked = _request(session, 1, "withdrawal", S.RESTRICTED.value)
    _request(session, 1, "withdrawal", S.COMPLETED.value)
    _request(session, 1, "access", S.RECEIVED.value)
    _request(session, 2, "withdrawal", S.RESTRICTED.value)
    assert holds.parked_withdrawals(session, 1) == [parked]


def test_held_set_keeps_the_longest_hold_per_category_and_the_released_keys(
    session: Session,
) -> None:
    _hold(session, category="payment", until=date(2026, 6, 30))
    longest = _hold(session, category="payment", until=date(2027, 1, 31))
    _hold(session, category="payment", until=date(2026, 5, 31))
    profile = _hold(session, category="profile")
    released = _hold(session, category="log", released=True)
    _hold(session, category="log", released=True, until=date(2026, 3, 9))  # its key is gone
    hs = holds.held_set(session, session, TODAY)
    assert hs.refs == {}
    assert hs.categories == {"payment": longest, "profile": profile}
    assert hs.released_keys == (holds.hold_key_category(released.id),)
    assert hs.hold_ids == sorted([longest.id, profile.id])
    assert holds.hold_key_category(12) == "hold:12"


# -- refusals of `hold add` and `hold release` ----------------------------------------------------


def _add(s: Session, **kw: object) -> LegalHold:
    args: dict[str, object] = {
        "member_id": None, "request_id": None, "category": None, "reason": "수사협조 2026-1",
        "until": date(2026, 12, 31), "today": TODAY, "operator": "kim",
        "known_categories": ["profile", "payment"], "member_exists": lambda _m: True,
    }  # fmt: skip
    args.update(kw)
    return holds.add(s, s, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({}, "exactly one of"),
        ({"member_id": 1, "category": "profile"}, "exactly one of"),
        ({"member_id": 1, "request_id": 2}, "exactly one of"),
        ({"category": "profile", "reason": " ab "}, "--reason is required"),
        ({"category": "profile", "until": date(2026, 3, 9)}, "in the past"),
        ({"category": "profile", "operator": "  "}, "operator's name is required"),
        ({"category": "addresses"}, "unknown category 'addresses'"),
        ({"request_id": 999}, "unknown request 999"),
        ({"member_id": 0}, "positive integer"),
        ({"member_id": -4}, "positive integer"),
    ],
)
def test_add_refuses_bad_input_and_changes_nothing(
    session: Session, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _add(session, **kw)
    assert session.scalars(select(LegalHold)).all() == []


def test_a_hold_until_today_is_accepted_as_far_as_the_date_goes(session: Session) -> None:
    # Today is not in the past: the check goes on to the next argument (the category here).
    with pytest.raises(UserError, match="unknown category"):
        _add(session, category="nope", until=TODAY)


def test_release_refuses_an_unknown_or_already_released_hold(session: Session) -> None:
    with pytest.raises(UserError, match="unknown hold 42"):
        holds.release(session, session, 42, operator="kim")
    h = _hold(session, member_id=1, released=True)
    before = h.released_at
    with pytest.raises(UserError, match="already released"):
        holds.release(session, session, h.id, operator="lee")
    assert h.released_at == before and h.released_by is None
    live = _hold(session, member_id=2)
    with pytest.raises(UserError, match="operator's name is required"):
        holds.release(session, session, live.id, operator=" ")
    assert live.released_at is None
