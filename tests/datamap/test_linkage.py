"""Linkage: rows linked to one member that hold another member's identity are reported by
`datamap check` and never handed out in an access package (열람). Both primaries."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from lifecycle.core.errors import UserError
from lifecycle.datamap.linkage import stored_forms
from lifecycle.datamap.loader import describe, load_datamap
from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from lifecycle.engine.context import clear_context_cache
from tests.helpers import LifecycleEnv, seed_site, site_engine, wait_error_line

CONTACT = "  on_withdrawal: delete\n"


def _map(tmp_path: Path, identities: str = "{email: email, mobile: mobile}",
         contact: bool = True) -> Path:  # fmt: skip
    src = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    # The demo's guardians table stands in for a table whose email is the row's own member's.
    old = "  guardians:\n    subject_column: member_id\n"
    assert old in src
    out = src.replace(old, f"{old}    identities: {identities}\n")
    if contact:
        anchor = "subject:\n"
        assert anchor in out
        out = out.replace(anchor, "subject:\n  contact: {email: email, mobile: mobile}\n", 1)
    path = tmp_path / "site.yaml"
    path.write_text(out, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("identities", "contact", "message"),
    [
        ("{phone: mobile}", True, "unknown identity 'phone'"),
        ("{email: email}", False, "identities.email needs subject.contact.email"),
        ("{email: member_id}", True, "identity column 'member_id' must also be listed"),
    ],
)
def test_bad_identities_are_refused_in_one_line(
    tmp_path: Path, identities: str, contact: bool, message: str
) -> None:
    with pytest.raises(UserError) as err:
        load_datamap(_map(tmp_path, identities, contact))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_forms_a_mobile_number_is_looked_up_in() -> None:
    assert stored_forms("mobile", "01012345678") == [
        "01012345678", "010-1234-5678", "010 1234 5678", "+82-10-1234-5678",
        "+82 10-1234-5678", "+821012345678",
    ]  # fmt: skip
    assert stored_forms("email", "a@b.kr") == ["a@b.kr"]


@pytest.mark.integration
def test_a_row_naming_another_member_is_reported_and_kept_out_of_access(
    primary_env: LifecycleEnv, start_worker, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    env = primary_env
    primary = env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 12)
    custom = _map(tmp_path)
    env.vars["LIFECYCLE_DATA_MAP"] = str(custom)
    clear_context_cache()
    eng = site_engine(primary)
    with eng.begin() as c:
        # No unique identifiers held: the check's exit status then speaks of linkage alone.
        c.execute(text("UPDATE members SET rrn = NULL"))
        a, b = [r[0] for r in c.execute(text(
            "SELECT id FROM members WHERE status = 'active' AND email IS NOT NULL "
            "AND email <> '' ORDER BY id"
        ))][:2]  # fmt: skip
        email_b = c.execute(text("SELECT email FROM members WHERE id = :b"), {"b": b}).scalar()
        # Linked to a, but the address is b's (as the site stored it: upper case, spaces).
        c.execute(
            text("INSERT INTO guardians (member_id, name, relation, email) "
                 "VALUES (:a, 'x', 'parent', :e)"),
            {"a": a, "e": f"  {str(email_b).upper()} "},
        )  # fmt: skip
    eng.dispose()

    check = env.run("datamap", "check")
    assert check.returncode == 0, check.stderr
    line = ("warning: linkage: guardians: 1 row(s) linked to one member hold another member's "
            "email in email: the map's link for guardians is wrong")  # fmt: skip
    assert line in check.stderr, check.stderr
    assert str(email_b).lower() not in (check.stdout + check.stderr).lower()
    strict = env.run("datamap", "check", "--strict")
    assert strict.returncode == 1 and "link rows to the wrong member" in strict.stdout

    start_worker(env, concurrency=1)
    out = tmp_path / "a.zip"
    r = env.run("access", str(a), "--out", str(out), "--wait", timeout=180)
    assert r.returncode != 0, r.stdout
    last = wait_error_line(r)
    assert "guardians: 1 row(s)" in last, last
    assert str(email_b).lower() not in (r.stdout + r.stderr).lower()
    assert not out.exists()
    # b's own package is not held up by a's misfit row.
    own = env.run("access", str(b), "--out", str(tmp_path / "b.zip"), "--wait", timeout=180)
    assert own.returncode == 0, own.stderr


def test_explain_states_the_matching_rules(tmp_path: Path) -> None:
    lines = list(describe(load_datamap(_map(tmp_path))))
    assert (
        "guardians: identity email in email, compared with members.email (spaces trimmed, "
        "lower-cased)"
    ) in lines
    assert any(
        ln.startswith("guardians: identity mobile in mobile") and "+82" in ln for ln in lines
    )
