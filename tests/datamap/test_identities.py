"""The canonical forms a member's identities are compared in (no server)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, literal, select

from lifecycle.datamap.identities import (
    mobile_forms,
    normalise,
    normalise_email,
    normalise_mobile,
    sql_normalised,
)
from tests.helpers import LifecycleEnv


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("010-1234-5678", "01012345678"),
        ("010 1234 5678", "01012345678"),
        ("01012345678", "01012345678"),
        ("+82 10-1234-5678", "01012345678"),
        ("+82-10-1234-5678", "01012345678"),
        ("821012345678", "01012345678"),
        ("(010) 123-4567", "0101234567"),
        ("011-123-4567", "0111234567"),
        ("02-123-4567", None),  # a Seoul landline, not a mobile number
        ("1234", None),
        ("", None),
        (None, None),
        (1012345678, None),  # an int lost its leading zero: not a mobile number
    ],
)
def test_mobile_numbers(raw: object, canonical: str | None) -> None:
    assert normalise_mobile(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        (" Lee.MH7@Example.COM ", "lee.mh7@example.com"),
        ("a@b", "a@b"),
        ("no-at-sign", None),
        ("two@@signs", None),
        ("@example.com", None),
        ("a b@example.com", None),
        (None, None),
    ],
)
def test_email_addresses(raw: object, canonical: str | None) -> None:
    assert normalise_email(raw) == canonical


def test_login_ids_are_case_blind_and_trimmed() -> None:
    assert normalise("login", " Lee_MH7 ") == "lee_mh7"
    assert normalise("login", 42) == "42"
    assert normalise("login", "   ") is None


SAMPLES = [("email", " A@B.kr "), ("login", "Lee_MH7 "), ("mobile", "+82 10-1234 5678")]


def _agrees(eng: Engine) -> None:
    with eng.connect() as c:
        for kind, raw in SAMPLES:
            expr = sql_normalised(kind, literal(raw), eng.dialect.name)  # type: ignore[arg-type]
            got = c.execute(select(expr)).scalar()
            want = normalise(kind, raw)  # type: ignore[arg-type]
            # Stored numbers keep their country code in SQL; the member's side has both forms.
            assert got in (mobile_forms(want) if kind == "mobile" and want else [want]), kind


def test_sqlite_expressions_agree_with_the_python_rules() -> None:
    _agrees(create_engine("sqlite://"))


@pytest.mark.integration
def test_server_expressions_agree_with_the_python_rules(primary_env: LifecycleEnv) -> None:
    eng = create_engine(primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    try:
        _agrees(eng)
    finally:
        eng.dispose()
