"""The data map's flag for unique identifiers (고유식별정보): syntax, one-line refusals, and what
`lifecycle identifiers destroy` accepts. No server needed."""

from __future__ import annotations

import pytest

from lifecycle.core.errors import UserError
from lifecycle.datamap.identifiers import destroyable, flagged_columns, locations, refusal
from lifecycle.datamap.loader import parse_datamap
from lifecycle.datamap.model import DataMapError
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP

DEMO = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
FLAG = "unique_identifiers:\n  rrn: {kind: rrn}\n"
LAWFUL = 'unique_identifiers:\n  rrn: {kind: rrn, basis: "의료법 제22조"}\n'


def _with(flags: str) -> str:
    assert FLAG in DEMO
    return DEMO.replace(FLAG, flags)


def _refused(text_: str) -> DataMapError:
    with pytest.raises(DataMapError) as exc:
        parse_datamap(text_, "m.yaml")
    assert "\n" not in str(exc.value)
    return exc.value


def test_the_demo_map_flags_the_rrn_without_a_basis() -> None:
    dm = parse_datamap(DEMO, "demo.yaml")
    flag = dm.identifiers["rrn"]
    assert (flag.kind, flag.basis, flag.lawful, flag.label) == ("rrn", None, False, "주민등록번호")
    assert "제24조의2" in flag.restriction
    assert locations(dm, "rrn") == [("members", ("rrn",))]
    assert flagged_columns(dm, "members") == {"rrn": flag}
    assert flagged_columns(dm, "payments") == {}
    # Expanding against a live schema keeps the flags.
    assert dm.expand(dm.tables).identifiers == dm.identifiers
    line = refusal(flag, "rrn", "corrected")
    assert "held without a statutory basis" in line and "identifiers destroy rrn" in line


def test_a_basis_must_name_a_law_and_its_article() -> None:
    dm = parse_datamap(_with(LAWFUL))
    assert dm.identifiers["rrn"].basis == "의료법 제22조" and dm.identifiers["rrn"].lawful
    err = _refused(_with('unique_identifiers:\n  rrn: {kind: rrn, basis: "내부 방침"}\n'))
    assert "must name a law and its article" in err.message
    assert err.line == DEMO.splitlines().index("  rrn: {kind: rrn}") + 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("unique_identifiers:\n  rrn: {kind: ssn}\n", "kind 'ssn' is not one of rrn, passport"),
        ("unique_identifiers:\n  rrn: rrn\n", "unique_identifiers.rrn must be {kind:"),
        ("unique_identifiers:\n  rrn: {kind: rrn, law: x}\n", "unknown key 'law'"),
        ("unique_identifiers:\n  passport: {kind: passport}\n", "'passport' is held by no table"),
        ("unique_identifiers:\n  marketing: {kind: rrn}\n", "'marketing' is held by no table"),
    ],
)
def test_bad_flags_are_refused_in_one_line(flags: str, message: str) -> None:
    err = _refused(_with(flags))
    assert message in err.message, err.message


def test_destroyable_refuses_unknown_unflagged_and_lawful_categories() -> None:
    dm = parse_datamap(DEMO)
    assert destroyable(dm, "rrn", force=False).category == "rrn"
    for category, message in [
        ("nope", "unknown category 'nope'"),
        ("hobbies", "'hobbies' is not flagged under unique_identifiers"),
        ("RRN; drop", "lower_snake_case"),
    ]:
        with pytest.raises(UserError, match=message):
            destroyable(dm, category, force=False)
    lawful = parse_datamap(_with(LAWFUL))
    with pytest.raises(UserError, match="held under 의료법 제22조; destroying it needs --force"):
        destroyable(lawful, "rrn", force=False)
    assert destroyable(lawful, "rrn", force=True).basis == "의료법 제22조"
    # A flagged category naming files cannot be cleared column-wise (the file would stay).
    files = parse_datamap(_with("unique_identifiers:\n  uploads: {kind: passport}\n"))
    with pytest.raises(UserError, match="names files on uploaded_files"):
        destroyable(files, "uploads", force=False)


def test_offline_check_lists_flags_and_strict_fails_without_a_basis(embedded_env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    r = embedded_env.run("datamap", "check", "--offline")
    assert r.returncode == 0, r.stderr
    assert "unique identifier rrn (주민등록번호, 개인정보 보호법 제24조의2" in r.stdout
    assert "members.rrn: not counted (offline)" in r.stdout
    assert embedded_env.run("datamap", "check", "--offline", "--strict").returncode == 1
    lawful = tmp_path / "lawful.yaml"
    lawful.write_text(_with(LAWFUL), encoding="utf-8")
    r = embedded_env.run("datamap", "check", "--offline", "--strict", "--file", str(lawful))
    assert r.returncode == 0, r.stdout
    assert "basis: 의료법 제22조" in r.stdout
