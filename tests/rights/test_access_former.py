"""A former member found by what they declared (issues 23, 24), on both primaries.

A member who withdrew leaving a kept record (a payment the 전자상거래법 keeps 5 years) is found
by `lifecycle access EMAIL`, by login id and by mobile number, through the keyed hashes kept
with their archived records; two members matching (former or live) are refused in one line
naming neither the value nor the members; the purge that destroys the last record destroys the
hashes with it, and a replay after a primary-DB restore brings them back only while something
is kept.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert

from lifecycle.datamap.paths import SHIPPED_DEMO_MAP
from models.demo_site import members, payments
from tests.helpers import (
    LifecycleEnv,
    add_members,
    apply_env,
    create_demo_schema,
    sql_one,
    sql_rows,
)

CONTACT = "answer@example.test"


def _map(tmp_path: Path) -> Path:
    """The demo map, declaring the member's login id, email and mobile on the member table."""
    demo = SHIPPED_DEMO_MAP.read_text(encoding="utf-8")
    text = demo.replace(
        "  status_column: status\n",
        "  login_column: login_id\n  contact: {email: email, mobile: mobile}\n"
        "  status_column: status\n",
        1,
    )
    # The login id is a relation column now, no longer one of the credentials' items.
    text = text.replace("credentials: [login_id, ", "credentials: [", 1)
    assert text.count("login_id") == 1
    path = tmp_path / "identities.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _pay(eng: Engine, mid: int) -> None:
    with eng.begin() as c:
        c.execute(
            insert(payments).values(
                member_id=mid, amount=1000, method="card", card_last4="4321",
                payer_name="회원", paid_at=datetime.now(UTC),
            )
        )  # fmt: skip


def _withdraw(mid: int, *states: str) -> None:
    from lifecycle.engine.context import clear_context_cache, get_context
    from lifecycle.rights.withdrawal import carry_out, submit_withdrawal

    clear_context_cache()
    ctx = get_context()
    assert carry_out(ctx, submit_withdrawal(ctx, mid))["state"] in (states or ("completed",))


def _access(env: LifecycleEnv, tmp_path: Path, who: str) -> tuple[int, str]:
    out = tmp_path / f"p{len(list(tmp_path.glob('*.zip*')))}.zip"
    r = env.run("access", who, "--out", str(out), "--plain", "--requester-contact", CONTACT)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture
def site(
    primary_env: LifecycleEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[LifecycleEnv, str, str]:
    from lifecycle.engine.context import clear_context_cache

    env = primary_env
    path = _map(tmp_path)
    env.vars["LIFECYCLE_DATA_MAP"] = str(path)
    apply_env(monkeypatch, env)
    clear_context_cache()
    eng = create_demo_schema()
    add_members(eng, 3, start=1)
    # Two members who gave the site one address (the site does not forbid it).
    add_members(eng, 2, start=4, email="Shared@Example.test")
    for mid in (2, 4, 5):
        _pay(eng, mid)
    return (
        env,
        env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"],
        env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"],
    )


def test_a_former_member_is_found_by_email_login_and_mobile(
    site: tuple[LifecycleEnv, str, str], tmp_path: Path
) -> None:
    env, primary, archive = site
    _withdraw(2)
    assert sql_one(primary, "SELECT count(*) FROM members WHERE id = 2") == 0
    # Three identities, hashed: never the values themselves.
    rows = sql_rows(archive, "SELECT digest, member_id, kept_until FROM former_identities")
    assert len(rows) == 3 and {m for _, m, _ in rows} == {2}
    assert all(len(d) == 64 and "member2" not in d for d, _, _ in rows)
    code, out = _access(env, tmp_path, " Member2@EXAMPLE.test ")
    assert code == 0 and "for member 2 submitted" in out, out
    for n, who in enumerate(("user000002", "+82 10-0000-0002")):
        out_file = tmp_path / f"retrieved{n}.json"
        r = env.run("archive", "retrieve", who, "--basis", "분쟁 해결 자료", "--out", str(out_file))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "archived record(s) of member 2 written" in r.stdout, r.stdout
    # Other commands do not look for former members: for them nobody has that address.
    r = env.run("erase", "member2@example.test", "--fields", "hobbies")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown member" in r.stderr
    assert "member2" not in r.stderr
    # A live member is found by an identity too.
    code, out = _access(env, tmp_path, "member3@example.test")
    assert code == 0 and "for member 3 submitted" in out, out


def test_two_members_matching_are_refused(
    site: tuple[LifecycleEnv, str, str], tmp_path: Path
) -> None:
    env, primary, _archive = site
    # The residue check finds the shared address in member 5's row: the withdrawal is done,
    # and asks staff to look (not this test's subject).
    _withdraw(4, "completed", "needs_attention")
    # One former (4) and one live (5) member gave that address.
    code, out = _access(env, tmp_path, "shared@example.test")
    assert code == 2 and out.count("\n") == 1, out
    assert "several members, live or former" in out and "shared" not in out.lower()
    _withdraw(5)
    code, out = _access(env, tmp_path, "shared@example.test")
    assert code == 2 and "several members, live or former" in out, out
    # The login id tells them apart.
    code, out = _access(env, tmp_path, "user000005")
    assert code == 0 and "for member 5 submitted" in out, out
    assert sql_one(primary, "SELECT count(*) FROM lifecycle_requests WHERE kind = 'access'") == 1


def test_the_purge_destroys_the_hashes_and_a_replay_keeps_them_gone(
    site: tuple[LifecycleEnv, str, str], tmp_path: Path
) -> None:
    from lifecycle.engine.context import clear_context_cache, get_context
    from lifecycle.engine.purge import run_purge

    env, primary, archive = site
    member = sql_rows(primary, "SELECT * FROM members WHERE id = 2")[0]
    payment = sql_rows(primary, "SELECT * FROM payments WHERE member_id = 2")[0]
    _withdraw(2)
    since = date.today().isoformat()

    def restore() -> None:
        """What a restore of a backup taken before the withdrawal brings back."""
        eng = create_demo_schema()
        with eng.begin() as c:
            for t, row in ((members, member), (payments, payment)):
                c.execute(insert(t).values(dict(zip(t.c.keys(), row, strict=True))))

    # Restored while the payment is still kept: the replay withdraws again, the entries stay
    # as they were (one per identity).
    restore()
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sql_one(primary, "SELECT count(*) FROM members WHERE id = 2") == 0
    assert sql_one(archive, "SELECT count(*) FROM former_identities WHERE member_id = 2") == 3
    code, out = _access(env, tmp_path, "user000002")
    assert code == 0 and "for member 2 submitted" in out, out

    # Five years on: the purge destroys the payment and, with it, the way to find member 2.
    until = sql_rows(archive, "SELECT max(kept_until) FROM former_identities")[0][0]
    clear_context_cache()
    done = run_purge(get_context(), today=date(until.year + 1, 1, 1))
    assert done.get("rows", 0) >= 1, done
    assert sql_one(archive, "SELECT count(*) FROM former_identities") == 0
    code, out = _access(env, tmp_path, "member2@example.test")
    assert code == 2 and out.count("\n") == 1, out
    assert "unknown member: nobody, live or former" in out and "member2" not in out

    # A restore after the purge: the replay withdraws the member again, but the payment's
    # bucket key is destroyed, so nothing is kept and nothing can find them.
    restore()
    r = env.run("ledger", "replay", "--since", since)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sql_one(primary, "SELECT count(*) FROM members WHERE id = 2") == 0
    assert sql_one(archive, "SELECT count(*) FROM former_identities") == 0
    code, out = _access(env, tmp_path, "user000002")
    assert code == 2 and "unknown member" in out, out
