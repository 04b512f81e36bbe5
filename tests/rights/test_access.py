"""열람 covers everything (개인정보 보호법 제35조, 시행령 제41조①): live and archived data, for
members and for former members whose data is still kept, with purposes, periods in words,
provisions and consents, in an encrypted package by default; every package is an access-log
entry. On PostgreSQL and MariaDB (``primary_env``)."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pyzipper
from sqlalchemy import create_engine, inspect, text

from lifecycle.core.errors import UserError
from lifecycle.engine.context import clear_context_cache, get_context
from lifecycle.rights import access
from lifecycle.rights.common import Requester
from lifecycle.rights.withdrawal import carry_out, submit_withdrawal
from tests.helpers import LifecycleEnv, seed_site, site_engine, table_dump


def _unzip(path: Path, password: str | None) -> dict[str, str]:
    with pyzipper.AESZipFile(path) as zf:
        if password is not None:
            zf.setpassword(password.encode())
        return {n: zf.read(n).decode("utf-8-sig") for n in zf.namelist()}


def _access_log(env: LifecycleEnv) -> list[dict[str, object]]:
    eng = create_engine(env.vars["LIFECYCLE_ARCHIVE_DATABASE_URL"])
    with eng.connect() as c:
        rows = c.execute(
            text("SELECT operator, kind, action, request_id, details FROM access_log ORDER BY seq")
        ).all()
    eng.dispose()
    out = []
    for op, kind, action, rid, details in rows:
        d = json.loads(details) if isinstance(details, str) else details
        out.append({"operator": op, "kind": kind, "action": action, "request_id": rid, **d})
    return out


@pytest.fixture
def former(primary_env: LifecycleEnv):  # type: ignore[no-untyped-def]
    """A member with payments, withdrawn and carried out (payments archived), who then filed a
    complaint the site keeps live: data in both places, and no member row any more."""
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 30)
    clear_context_cache()
    eng = site_engine(primary)
    with eng.connect() as c:
        mid = c.execute(
            text(
                "SELECT m.id FROM members m WHERE status = 'active' AND EXISTS "
                "(SELECT 1 FROM payments p WHERE p.member_id = m.id) ORDER BY m.id LIMIT 1"
            )
        ).scalar_one()
        paid = c.execute(
            text("SELECT COUNT(*) FROM payments WHERE member_id = :m"), {"m": mid}
        ).scalar_one()
    ctx = get_context()
    rid = submit_withdrawal(ctx, int(mid))
    assert carry_out(ctx, rid)["state"] == "completed"
    # Like most PHP sites' tables, complaints without a foreign key: a dispute filed after the
    # withdrawal names a member whose row is gone.
    (fk,) = [f["name"] for f in inspect(eng).get_foreign_keys("complaints")]
    drop = "DROP CONSTRAINT" if eng.dialect.name == "postgresql" else "DROP FOREIGN KEY"
    with eng.begin() as c:
        assert (
            c.execute(text("SELECT COUNT(*) FROM members WHERE id = :m"), {"m": mid}).scalar() == 0
        )
        c.execute(text(f"ALTER TABLE complaints {drop} {fk}"))
        c.execute(
            text(
                "INSERT INTO complaints (member_id, filed_at, body) "
                "VALUES (:m, :t, '탈퇴 후 환불 분쟁 제기: 결제 취소 요청')"
            ),
            {"m": mid, "t": datetime(2026, 12, 1, tzinfo=UTC).replace(tzinfo=None)},
        )
    eng.dispose()
    yield primary_env, int(mid), int(paid)
    clear_context_cache()


def test_a_former_members_package_holds_live_and_archived_data_encrypted(
    former: tuple[LifecycleEnv, int, int], tmp_path: Path
) -> None:
    env, mid, paid = former
    out = tmp_path / "former.zip"
    # The site holds no address of a former member: the answer's address is required.
    with pytest.raises(UserError, match="--requester-contact"):
        access.submit_access(mid, str(out), None, Requester())
    who = Requester(contact="former@example.test")
    rid = access.submit_access(mid, str(out), None, who)
    assert access.run_access(rid)["state"] == "completed"

    # Encrypted by default, with a random password written next to it (0600).
    pw_file = Path(access.password_path(str(out)))
    assert os.stat(pw_file).st_mode & 0o777 == 0o600 and os.stat(out).st_mode & 0o777 == 0o600
    with pytest.raises(RuntimeError):
        _unzip(out, None)
    files = _unzip(out, pw_file.read_text().strip())

    live = list(csv.DictReader(io.StringIO(files["complaints.csv"])))
    assert [r["body"] for r in live] == ["탈퇴 후 환불 분쟁 제기: 결제 취소 요청"]
    archived = list(csv.DictReader(io.StringIO(files["분리보관_payments.csv"])))
    assert len(archived) == paid
    assert {r["항목 분류"] for r in archived} == {"payment"}
    assert all(r["amount"] and r["paid_at"] and r["파기 예정일"] for r in archived)
    summary = files["요약.txt"]
    assert "(탈퇴 회원)" in summary
    # Periods in words with their basis, purposes, consents (시행령 제41조①).
    assert "해당 기록의 작성일부터 5년 (근거: 전자상거래법 제6조" in summary
    assert "5y" not in summary and "0d" not in summary
    assert "■ 처리 목적" in summary and "대금 결제 및 전자상거래법에 따른 기록 보존" in summary
    # Each purpose the map declares, answered from the lifecycle's history where the row is gone.
    assert "■ 동의 사실" in summary and "마케팅 정보 수신 및 활용 동의 (marketing): " in summary, (
        summary[summary.index("■ 처리 목적") :]
    )
    assert "분리보관_payments.csv" in summary

    # The access log says an encrypted package with the archived records went out.
    [entry] = [e for e in _access_log(env) if e["action"] == "access package"]
    assert entry["kind"] == "export" and entry["request_id"] == rid
    held = sum(
        len(list(csv.DictReader(io.StringIO(body))))
        for name, body in files.items()
        if name.startswith("분리보관_")
    )
    assert held > paid  # contracts, tax invoices, … as well
    assert entry["archived_records"] == held and entry["encrypted"] is True
    assert entry["former_member"] is True and entry["origin"] and entry["os_user"]
    # A re-run after the end writes nothing new.
    assert access.run_access(rid)["state"] == "completed"
    assert len([e for e in _access_log(env) if e["action"] == "access package"]) == 1


def test_a_live_members_package_states_periods_and_consents_and_plain_is_explicit(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    primary = primary_env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"]
    seed_site(primary, 5)
    clear_context_cache()
    eng = site_engine(primary)
    with eng.begin() as c:
        for mid, given in ((1, True), (2, False)):
            c.execute(text("UPDATE members SET marketing_consent = :v WHERE id = :m"),
                      {"v": given, "m": mid})  # fmt: skip
    out = tmp_path / "one.zip"
    pw = tmp_path / "pw.txt"
    pw.write_text("열람암호-0426-secret\n")
    rid = access.submit_access(1, str(out), str(pw), Requester())
    assert access.run_access(rid)["state"] == "completed"
    assert not Path(access.password_path(str(out))).exists()  # the operator's own password
    summary = _unzip(out, "열람암호-0426-secret")["요약.txt"]
    assert "마케팅 정보 수신 및 활용 동의 (marketing): 동의함" in summary, summary
    assert "보유 목적 달성(탈퇴 등) 후 지체 없이(5일 이내) 파기" in summary
    assert "분리 보관 중인 개인정보" in summary and "  - 없음" in summary

    # --plain only when asked, and the package says so in the log.
    plain = tmp_path / "two.zip"
    rid2 = access.submit_access(2, str(plain), None, Requester(), plain=True)
    assert access.run_access(rid2)["state"] == "completed"
    summary = _unzip(plain, None)["요약.txt"]
    assert "(marketing): 동의하지 않음" in summary
    [entry] = [e for e in _access_log(primary_env) if e["request_id"] == rid2]
    assert entry["encrypted"] is False and entry["former_member"] is False

    # Nothing held, and conflicting options: one line, nothing recorded.
    before = table_dump(eng, "lifecycle_requests")
    with pytest.raises(UserError, match="does not exist or has withdrawn"):
        access.submit_access(999, str(tmp_path / "x.zip"), None, Requester(contact="a@b.test"))
    with pytest.raises(UserError, match="exclude each other"):
        access.submit_access(1, str(tmp_path / "y.zip"), str(pw), Requester(), plain=True)
    assert table_dump(eng, "lifecycle_requests") == before
    eng.dispose()
