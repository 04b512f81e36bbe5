"""The rights requests (열람·삭제·처리정지·동의 철회) through `lifecycle …` and the outbox, against
real PostgreSQL, Redis and Celery workers: requester checks, deadlines, written answers, third
parties told, bad input refused with one line and nothing changed, a crash resuming once."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import pyzipper
from sqlalchemy import func, select, text

from tests.helpers import (
    LifecycleEnv,
    SmtpSink,
    add_members,
    create_demo_schema,
    redis_dump_repr,
    seed_site,
    set_env,
    site_engine,
    table_dump,
    wait_error_line,
    wait_until,
)

RRN = "790314-2345678"


def _one_line_error(r) -> str:  # type: ignore[no-untyped-def]
    return wait_error_line(r)


def _site(eng) -> None:  # type: ignore[no-untyped-def]
    """Member 1 adult with an RRN and marketing consent; 2 another adult; 4 a child with a
    recorded guardian; 3 withdrawn."""
    add_members(eng, 1, name="홍길순", rrn=RRN, hobbies="등산", marketing_consent=True,
                mobile="010-4821-7395", email="hong@example.test")  # fmt: skip
    add_members(eng, 2, start=2)
    add_members(eng, 1, start=4, birth_date=date(2017, 5, 1), name="김아이")
    with eng.begin() as conn:
        conn.execute(text("UPDATE members SET status = 'withdrawn' WHERE id = 3"))
        conn.execute(
            text(
                "INSERT INTO guardians (member_id, name, relation, mobile, email) "
                "VALUES (4, '김보호', 'mother', '010-5555-0404', 'mom@example.test')"
            )
        )


def _provided_before_the_flag(member_id: int, recipient: str, fields: list[str]) -> None:
    """A provision the site recorded before the map flagged the RRN (`lifecycle provide`
    refuses it now): the recipient still has to be told when it is destroyed."""
    from lifecycle.core.db import session
    from models.recipients import Provision, Recipient

    with session("primary") as s:
        rid = s.scalar(select(Recipient.id).where(Recipient.name == recipient))
        s.add(Provision(member_id=member_id, recipient_id=rid, fields=fields, basis="consent"))


def _snapshot(eng) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(
        table_dump(eng, p) for p in ("members", "guardians", "lifecycle_requests", "lifecycle_de")
    )


# -- bad input changes nothing -------------------------------------------------------------------


def test_bad_rights_input_is_one_line_and_changes_nothing(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    eng = create_demo_schema()
    _site(eng)
    env = primary_env
    existing = tmp_path / "exists.zip"
    existing.write_bytes(b"x")
    short_pw = tmp_path / "pw"
    short_pw.write_text("short\n")
    out = str(tmp_path / "a.zip")
    before = _snapshot(eng)
    cases = [
        (["access", "999", "--out", out], "member 999 does not exist"),
        # A former member may ask (제35조), but the site holds no address for the answer.
        (["access", "3", "--out", out], "member 3 has withdrawn: give --requester-contact"),
        (["access", "1", "--out", str(existing)], "already exists"),
        (["access", "1", "--out", str(tmp_path / "nodir" / "a.zip")], "not writable"),
        (["access", "1", "--out", out, "--password-file", str(short_pw)], "at least 8"),
        (["access", "abc", "--out", out], "MEMBER_ID"),
        (["access", "1", "--out", out, "--requester", "boss"], "--requester must be"),
        (["access", "4", "--out", out, "--requester", "guardian"], "needs --requester-name"),
        (
            [
                "access",
                "1",
                "--out",
                out,
                "--requester",
                "delegate",
                "--requester-name",
                "이대리",
                "--verified-by",
                "login",
            ],
            "위임장",
        ),
        (["erase", "1", "--fields", "shoe_size"], "unknown field 'shoe_size'"),
        (["erase", "1", "--fields", "status"], "system column"),
        (["erase", "1", "--fields", "marketing_consent"], "system column"),
        (["erase", "1", "--fields", "name"], "required while the account exists"),
        (["erase", "1", "--fields", ","], "at least one field"),
        (["erase", "999", "--fields", "rrn"], "member 999 does not exist"),
        (["restrict", "1", "--reason", "  "], "--reason"),
        (["unrestrict", "1"], "not suspended"),
        (["consent", "withdraw", "1", "--purpose", "telepathy"], "unknown purpose 'telepathy'"),
        (["consent", "withdraw", "2", "--purpose", "marketing"], "has not consented"),
        (["requests", "extend", "12345", "--days", "5", "--reason", "x"], "does not exist"),
        (
            ["withdraw", "4", "--requester", "guardian", "--requester-name", "이웃사람"],
            "법정대리인",
        ),
    ]
    for args, fragment in cases:
        r = env.run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        line = _one_line_error(r)
        assert fragment in line, (args, line)
    assert _snapshot(eng) == before
    assert not Path(out).exists()

    # A second request of the same kind while one is open (no worker: it stays open).
    r = env.run("erase", "1", "--fields", "hobbies")
    assert r.returncode == 0, r.stderr
    before = _snapshot(eng)
    r = env.run("erase", "1", "--fields", "rrn")
    assert r.returncode == 2 and "already has erasure request" in _one_line_error(r)
    # ... and a correction may not run alongside an open erasure.
    r = env.run("suspend", "1", "--reason", "분쟁 중")
    assert r.returncode == 0, r.stderr
    r = env.run("restrict", "1", "--reason", "다시")
    assert r.returncode == 2 and "already has suspension request" in _one_line_error(r)
    # Only an access request may be postponed.
    rid = int(env.run("access", "2", "--out", out).stdout.split()[2])
    erase_id = rid - 2
    r = env.run("requests", "extend", str(erase_id), "--days", "5", "--reason", "바쁨")
    assert r.returncode == 2 and "allows no postponement" in _one_line_error(r)
    r = env.run("requests", "extend", str(rid), "--days", "99", "--reason", "바쁨")
    assert r.returncode == 2 and "--days" in _one_line_error(r)


# -- access --------------------------------------------------------------------------------------


def _zip_texts(path: Path, password: str | None) -> dict[str, str]:
    with pyzipper.AESZipFile(path) as zf:
        if password is not None:
            zf.setpassword(password.encode())
        out = {}
        for name in zf.namelist():
            data = zf.read(name)
            assert data.startswith(b"\xef\xbb\xbf"), name  # UTF-8 with BOM
            out[name] = data.decode("utf-8-sig")
        return out


def test_access_returns_every_value_of_the_member_and_nothing_of_others(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    from lifecycle.datamap.loader import load_datamap
    from lifecycle.rights.access import IDENTIFIER_WITHHELD, WITHHELD, _cell

    env = primary_env
    set_env(env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    seed_site(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"], 30)
    eng = site_engine(env.vars["LIFECYCLE_PRIMARY_DATABASE_URL"])
    dm = load_datamap()
    # The member with rows in the most tables.
    with eng.connect() as c:
        counts: dict[int, int] = {}
        for name in dm.tables:
            col = "id" if name == "members" else "member_id"
            for (mid,) in c.execute(
                text(f"SELECT DISTINCT {col} FROM {name} WHERE {col} IS NOT NULL")
            ):
                counts[mid] = counts.get(mid, 0) + 1
    with eng.begin() as c:
        c.execute(text("UPDATE members SET email = 'me@example.test'"))
    member = max(sorted(counts), key=lambda m: counts[m])
    assert env.run("recipients", "add", "insurer", "--email", "p@insurer.example").returncode == 0
    assert (
        env.run(
            "provide",
            str(member),
            "--to",
            "insurer",
            "--fields",
            "name",
            "--basis",
            "legal_request",
        ).returncode
        == 0
    )

    pw_file = tmp_path / "pw.txt"
    pw_file.write_text("열람암호-0426-secret\n")
    out = tmp_path / "package.zip"
    worker = start_worker(env, queues=["requests", "notify"])
    r = env.run("access", str(member), "--out", str(out), "--password-file", str(pw_file),
                "--wait", "--timeout", "30")  # fmt: skip
    assert r.returncode == 0, r.stderr + worker.output()[-3000:]
    assert "completed" in r.stdout

    with pytest.raises(RuntimeError):  # encrypted: nothing readable without the password
        _zip_texts(out, None)
    files = _zip_texts(out, "열람암호-0426-secret")
    assert "요약.txt" in files and "접수번호" in files["요약.txt"]
    assert "insurer" in files["제3자제공내역.csv"]
    mine: set[str] = set()
    others: set[str] = set()
    with eng.connect() as c:
        for name, tm in dm.tables.items():
            col = "id" if name == "members" else "member_id"
            rows = c.execute(text(f"SELECT * FROM {name} ORDER BY {tm.key}")).mappings().all()
            expected = [r for r in rows if r[col] == member]
            got = list(csv.DictReader(io.StringIO(files[f"{name}.csv"])))
            assert len(got) == len(expected), name
            for exp, row in zip(expected, got, strict=True):
                for k, v in exp.items():
                    if k.endswith("_hash"):
                        assert row[k] == WITHHELD
                    elif k == "rrn":  # a flagged unique identifier: said to be held, not copied
                        assert row[k] == (IDENTIFIER_WITHHELD if v else "")
                    else:
                        assert row[k] == _cell(v), (name, k)
                        if v is not None and len(str(v)) >= 6:
                            mine.add(str(v))
            for r in rows:
                if r[col] != member:
                    for k in ("name", "mobile", "rrn", "payer_name", "notes", "ip"):
                        if k in r and r[k] and len(str(r[k])) >= 6:
                            others.add(str(r[k]))
    blob = "\n".join(files.values())
    leaked = [v for v in others - mine if v in blob]
    assert not leaked, leaked[:5]
    with eng.connect() as c:
        own = c.execute(text("SELECT rrn FROM members WHERE id = :m"), {"m": member}).scalar()
    assert own and own not in blob  # the member's own RRN is not copied out either
    assert "고유식별정보" in files["요약.txt"]
    # Nothing of it in the broker, the results, the worker's log or the request row.
    places = {
        "redis": redis_dump_repr(env.vars["LIFECYCLE_BROKER_URL"]),
        "worker log": worker.output(),
        "requests": table_dump(eng, "lifecycle_requests"),
    }
    personal = {v for v in mine if not v.isdigit() and "T" not in v and len(v) >= 8}
    for where, content in places.items():
        hits = [v for v in personal if v in content]
        assert not hits, (where, hits[:3])
    # The written answer.
    answers = smtp_sink.wait_matching(lambda m: "열람 요구 처리 결과" in m.subject)
    assert len(answers) == 1 and answers[0].rcpt == "me@example.test"
    # Every kind's deadline is in status --json.
    st = json.loads(env.run("status", "--json").stdout)
    dl = st["requests"]["deadlines"]
    assert dl["access"]["deadline_days"] == 10 and dl["withdrawal"]["deadline_days"] == 5
    for kind in ("correction", "erasure", "suspension", "suspension_lift", "consent_withdrawal"):
        assert dl[kind]["deadline_days"] == 10


def test_a_childs_request_by_a_non_guardian_is_refused_with_a_written_answer(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    smtp_sink: SmtpSink,
    start_worker,
    tmp_path: Path,
) -> None:
    from lifecycle.core.db import session
    from models.requests import LifecycleRequest

    env = primary_env
    set_env(env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url)
    eng = create_demo_schema()
    _site(eng)
    start_worker(env, queues=["requests", "notify"])
    out = tmp_path / "child.zip"
    members_before = table_dump(eng, "members")
    r = env.run("access", "4", "--out", str(out), "--requester", "guardian",
                "--requester-name", "이웃사람", "--requester-contact", "stranger@example.test",
                "--wait", "--timeout", "120")  # fmt: skip
    assert r.returncode == 1, r.stdout
    line = _one_line_error(r)
    assert "법정대리인" in line and "failed" in line
    assert not out.exists()
    assert table_dump(eng, "members") == members_before
    with session("primary") as s:
        req = s.scalar(select(LifecycleRequest))
        assert (req.requester_kind, req.requester_name) == ("guardian", "이웃사람")
        assert req.answered_at is not None
    # The refusal goes to the member's recorded address, not to the unverified stranger,
    # with the reason and how to object.
    _wait_mail(smtp_sink, 1)
    (m,) = smtp_sink.messages
    assert m.rcpt == "member4@example.test"
    assert "거절 사유" in m.body and "법정대리인" in m.body and "이의제기" in m.body
    # The recorded guardian is accepted, and answered at her own address.
    out2 = tmp_path / "child2.zip"
    r = env.run("access", "4", "--out", str(out2), "--requester", "guardian",
                "--requester-name", "김보호", "--requester-contact", "mom@example.test",
                "--wait", "--timeout", "120")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert out2.exists()
    _wait_mail(smtp_sink, 2)
    assert smtp_sink.messages[1].rcpt == "mom@example.test"
    assert "법정대리인님" in smtp_sink.messages[1].body

    # A correction for the child by the same stranger: refused, the member row untouched.
    members_before = table_dump(eng, "members")
    r = env.run("correct", "4", "--set", "mobile=010-7777-0000", "--requester", "guardian",
                "--requester-name", "이웃사람", "--wait", "--timeout", "120")  # fmt: skip
    assert r.returncode == 1 and "법정대리인" in _one_line_error(r)
    assert table_dump(eng, "members") == members_before

    # The website's own outbox row (its transaction, no dispatch): the relay sends it.
    from lifecycle.requests.outbox import submit
    from lifecycle.requests.relay import dispatch_pending

    with session("primary") as s:
        rid = submit(s, "erasure", 1, {"fields": ["rrn"]})
    assert dispatch_pending() == 1
    wait_until(lambda: _state(rid) == "completed", what="request completed")
    with eng.connect() as c:
        assert c.execute(text("SELECT status, rrn FROM members WHERE id = 1")).one() == (
            "active",
            None,
        )


def _state(request_id: int) -> str:
    from lifecycle.core.db import session
    from models.requests import LifecycleRequest

    with session("primary") as s:
        return s.get(LifecycleRequest, request_id).state


def _wait_mail(sink: SmtpSink, n: int, timeout: float = 30) -> None:
    sink.wait_count(n, timeout)


# -- erasure -------------------------------------------------------------------------------------


def test_erasing_the_rrn_keeps_the_member_and_tells_who_received_it(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    smtp_sink: SmtpSink,
    start_worker,
) -> None:
    from lifecycle.core.db import session
    from models.recipients import Delivery

    env = primary_env
    set_env(env, monkeypatch, LIFECYCLE_SMTP_URL=smtp_sink.url, LIFECYCLE_RETRY_SCHEDULE="0,1,1")
    eng = create_demo_schema()
    _site(eng)
    a = receivers(default=200)
    b = receivers(default=200)
    for args in (
        ["recipients", "add", "insurer", "--webhook", a.url, "--secret", a.secret],
        ["recipients", "add", "club", "--webhook", b.url, "--secret", b.secret],
        ["provide", "1", "--to", "club", "--fields", "mobile", "--basis", "legal_request"],
    ):
        assert env.run(*args).returncode == 0, args
    _provided_before_the_flag(1, "insurer", ["rrn", "name"])
    worker = start_worker(env, queues=["requests", "notify"])
    r = env.run("erase", "1", "--fields", "rrn,hobbies", "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    with eng.connect() as c:
        status, rrn, hobbies, name = c.execute(
            text("SELECT status, rrn, hobbies, name FROM members WHERE id = 1")
        ).one()
    assert (status, rrn, hobbies, name) == ("active", None, None, "홍길순")
    # The insurer had the RRN: told to delete it (field name only). The club had neither.
    (hit,) = a.unique_accepted().values()
    assert hit.payload["type"] == "member.personal_data.deleted"
    assert hit.payload["data"]["fields"] == {"rrn": None}
    assert b.hits == []
    with session("primary") as s:
        (d,) = s.scalars(select(Delivery)).all()
        assert d.state == "delivered" and d.kind == "deletion"
    with session("archive") as s:
        entries = s.execute(text("SELECT action, details FROM ledger_entries ORDER BY seq")).all()
    assert sorted(e[0] for e in entries) == ["destroy", "notification"]
    destroy = next(e for e in entries if e[0] == "destroy")
    assert destroy[1]["fields"] == ["rrn", "hobbies"]
    assert env.run("ledger", "verify").returncode == 0
    (answer,) = smtp_sink.wait_matching(lambda m: "삭제 요구 처리 결과" in m.subject)
    assert "주민등록번호" in answer.body and answer.rcpt == "hong@example.test"
    for where, content in {
        "redis": redis_dump_repr(env.vars["LIFECYCLE_BROKER_URL"]),
        "worker log": worker.output(),
        "lifecycle tables": table_dump(eng, "lifecycle_"),
        "webhooks": "\n".join(h.body.decode() for h in a.hits),
    }.items():
        assert RRN not in content, where

    # A withdrawal destroys the rest: every recipient of a destroyed field is told.
    r = env.run("withdraw", "1", "--wait", "--timeout", "120")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: len(a.unique_accepted()) == 2 and len(b.unique_accepted()) == 1)
    insurer = [h for h in a.unique_accepted().values() if h.payload["data"]["request_id"] != 1]
    assert insurer[0].payload["data"]["fields"] == {"name": None, "rrn": None}
    (club,) = b.unique_accepted().values()
    assert club.payload["type"] == "member.personal_data.deleted"
    assert club.payload["data"]["fields"] == {"mobile": None}

    def notifications() -> int:
        # The ledger entry follows the recipient's answer: wait for it rather than race it.
        with session("archive") as s:
            return int(
                s.scalar(text("SELECT count(*) FROM ledger_entries WHERE action = 'notification'"))
                or 0
            )

    wait_until(lambda: notifications() >= 3)
    assert notifications() == 3


def test_erasure_crash_between_steps_resumes_once(primary_env: LifecycleEnv) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights import erase
    from lifecycle.rights.common import Requester
    from lifecycle.rights.pipeline import run_one
    from models.notices import Notice
    from models.recipients import Delivery
    from models.requests import LifecycleRequest, Restriction

    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    assert env.run("recipients", "add", "insurer", "--email", "p@i.example").returncode == 0
    _provided_before_the_flag(1, "insurer", ["rrn"])
    rid = erase.submit_erasure(1, "rrn", Requester())
    # A worker died after the erase transaction committed, before the ledger step.
    assert run_one(erase.ERASURE, rid) == "restricted"
    assert run_one(erase.ERASURE, rid) == "erased"
    assert erase.run_erasure(rid)["state"] == "notifying"
    assert erase.run_erasure(rid)["state"] == "notifying"
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 1
        assert s.scalar(select(func.count()).select_from(Notice)) == 1
        assert s.scalar(select(func.count()).select_from(Restriction)) == 0
        req = s.get(LifecycleRequest, rid)
        assert req.answered_at is not None and req.payload["erased"] == ["rrn"]
    with session("archive") as s:
        assert s.scalar(text("SELECT count(*) FROM ledger_entries")) == 1


# -- suspension, consent, deadlines, answers through the outbox ----------------------------------


def test_suspension_lift_consent_and_website_rows(primary_env: LifecycleEnv, receivers) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights import consent, suspension
    from lifecycle.rights.pipeline import run_one
    from models.consents import Consent
    from models.notices import Notice
    from models.recipients import Delivery
    from models.requests import LifecycleRequest, Restriction

    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    a = receivers(default=200)
    for args in (
        ["recipients", "add", "adco", "--webhook", a.url, "--secret", a.secret],
        ["recipients", "add", "insurer", "--email", "p@i.example"],
        ["consent", "give", "1", "--purpose", "provision_partner", "--version", "v1"],
        [
            "provide",
            "1",
            "--to",
            "adco",
            "--fields",
            "name,mobile",
            "--purpose",
            "provision_partner",
        ],
        ["provide", "1", "--to", "insurer", "--fields", "name", "--basis", "legal_request"],
    ):
        assert env.run(*args).returncode == 0, args

    # 처리정지 through the CLI; the job run in-process (twice: a re-run is a no-op).
    r = env.run("restrict", "1", "--reason", "분쟁 중")
    assert r.returncode == 0, r.stderr
    rid = int(r.stdout.split()[2])
    assert suspension.run_suspension(rid)["state"] == "completed"
    assert suspension.run_suspension(rid)["state"] == "completed"
    r = env.run("provide", "1", "--to", "insurer", "--fields", "mobile")
    assert r.returncode == 2 and "restricted" in _one_line_error(r)
    # A correction during the suspension does not lift it.
    from lifecycle.rights.correction import run_correction

    with session("primary") as s:
        cid = submit(s, "correction", 1, {"mobile": "010-1212-3434"})
    # (adco had the mobile: it is owed the corrected value, so the correction is notifying.)
    assert run_correction(cid)["state"] == "notifying"
    with session("primary") as s:
        assert s.get(Restriction, 1).reason == "suspension"
    r = env.run("unrestrict", "1")
    assert r.returncode == 0, r.stderr
    lid = int(r.stdout.split()[3])
    assert suspension.run_lift(lid)["state"] == "completed"
    with session("primary") as s:
        assert s.get(Restriction, 1) is None

    # 동의 철회 written by the website straight into the outbox (its own transaction).
    with session("primary") as s:
        wid = submit(s, "consent_withdrawal", 1, {"purpose": "provision_partner"})
    # A worker died after the consent transaction committed: the re-run finishes it once.
    assert run_one(consent.CONSENT_WITHDRAWAL, wid) == "consent_withdrawn"
    assert consent.run_consent_withdrawal(wid)["state"] == "notifying"
    assert consent.run_consent_withdrawal(wid)["state"] == "notifying"
    with session("primary") as s:
        (h,) = s.scalars(select(Consent).where(Consent.member_id == 1)).all()
        assert h.purpose == "provision_partner" and h.withdrawn_at is not None
        (d,) = s.scalars(select(Delivery).where(Delivery.kind == "deletion")).all()
        # Only the recipient that got data under the provision consent, for those fields.
        assert d.kind == "deletion" and d.fields == ["mobile", "name"]
        req = s.get(LifecycleRequest, wid)
        assert req.due_at is not None and req.answered_at is not None
        kinds = sorted(n.kind for n in s.scalars(select(Notice)))
        # restriction, lift, consent answered; the correction has its own notice.
        assert kinds.count("request_answer") == 3
    with session("archive") as s:
        actions = sorted(s.scalars(text("SELECT action FROM ledger_entries")).all())
    assert actions == ["consent_withdrawal", "correction", "restriction", "restriction"]

    # A website row naming a guardian that is not recorded: refused with a reason.
    with session("primary") as s:
        bad = submit(s, "suspension", 4, {"reason": "x"})
        row = s.get(LifecycleRequest, bad)
        row.requester_kind, row.requester_name = "guardian", "모르는사람"
    assert suspension.run_suspension(bad)["state"] == "failed"
    with session("primary") as s:
        row = s.get(LifecycleRequest, bad)
        assert "법정대리인" in row.error and row.answered_at is not None
        assert s.get(Restriction, 4) is None
    # The same for a correction the website records for the child.
    with session("primary") as s:
        bad_corr = submit(s, "correction", 4, {"mobile": "010-9999-0000"})
        row = s.get(LifecycleRequest, bad_corr)
        row.requester_kind, row.requester_name = "guardian", "모르는사람"
    members_before = table_dump(eng, "members")
    assert run_correction(bad_corr)["state"] == "failed"
    assert table_dump(eng, "members") == members_before

    # Deadlines: an overdue access request shows per kind; an extension is recorded.
    with session("primary") as s:
        late = submit(s, "access", 2, {"out": "/nonexistent/x.zip"})
        s.get(LifecycleRequest, late).due_at = datetime(2020, 1, 1, tzinfo=UTC)
    st = json.loads(env.run("status", "--json").stdout)
    assert st["requests"]["deadlines"]["access"]["overdue_ids"] == [late]
    # The beat task fails (what Flower shows) naming the overdue id under its kind.
    from tasks.deadlines import OverdueRequests, check_deadlines

    with pytest.raises(OverdueRequests, match=rf"access \(deadline 10 days\): {late}\b"):
        check_deadlines()
    r = env.run("requests", "extend", str(late), "--days", "5", "--reason", "자료 취합 중")
    assert r.returncode == 2 and "past its deadline" in _one_line_error(r)


def test_access_crash_after_packaging_resumes_once(
    primary_env: LifecycleEnv, tmp_path: Path
) -> None:
    from lifecycle.core.db import session
    from lifecycle.engine.context import get_context
    from lifecycle.rights import access
    from lifecycle.rights.common import Requester
    from lifecycle.rights.pipeline import run_one
    from models.notices import Notice
    from models.requests import LifecycleRequest

    eng = create_demo_schema()
    _site(eng)
    out = tmp_path / "one.zip"
    rid = access.submit_access(1, str(out), None, Requester())
    pw = Path(access.password_path(str(out)))
    # A worker died right after the package was written and the state committed.
    assert run_one(access.ACCESS, rid, ctx=get_context()) == "packaged"
    assert out.exists() and not Path(f"{out}.part").exists()
    assert access.run_access(rid)["state"] == "completed"
    assert access.run_access(rid)["state"] == "completed"
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(Notice)) == 1
        req = s.get(LifecycleRequest, rid)
        assert req.payload["rows"] == 1 and req.payload["encrypted"] is True
    # Encrypted by default: it opens with the password the worker wrote next to it.
    files = _zip_texts(out, pw.read_text().strip())
    assert "홍길순" in files["members.csv"] and "김보호" not in "".join(files.values())
    # The RRN is said to be held, never copied out (개인정보 보호법 제24조의2).
    assert access.IDENTIFIER_WITHHELD in files["members.csv"] and RRN not in files["members.csv"]


def test_a_failed_correction_gets_its_written_answer_from_beat(primary_env: LifecycleEnv) -> None:
    from datetime import timedelta

    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.answers import answer_pending
    from lifecycle.rights.correction import run_correction
    from models.notices import Notice
    from models.requests import LifecycleRequest

    eng = create_demo_schema()
    _site(eng)
    with session("primary") as s:
        rid = submit(s, "correction", 1, {"birth_date": "2999-01-01"})
    assert run_correction(rid)["state"] == "failed"
    assert answer_pending() == 0  # the job's own grace period first
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        assert req.answered_at is None
        req.updated_at = req.updated_at - timedelta(minutes=5)
    assert answer_pending() == 1
    assert answer_pending() == 0
    with session("primary") as s:
        req = s.get(LifecycleRequest, rid)
        n = s.get(Notice, req.answer_notice_id)
        assert n.kind == "request_answer" and "정정 요구" in n.title
        assert "거절 사유" in n.body and "in the future" in n.body and "이의제기" in n.body
        assert "2999" not in n.body  # the reason names the field, never the value
