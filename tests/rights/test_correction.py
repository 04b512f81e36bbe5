"""Corrections (정정): validation before anything is created, restriction, one-transaction apply,
third parties told exactly the changed fields they had, and no old value left anywhere."""

from __future__ import annotations

import base64
from datetime import date

import pytest
from sqlalchemy import func, select, text

from tests.helpers import (
    LifecycleEnv,
    SmtpSink,
    add_members,
    create_demo_schema,
    redis_dump_repr,
    set_env,
    table_dump,
)

OLD = {
    "mobile": "010-4821-7395",
    "birth_date": "1979-03-14",
    "email": "oldmail@example.test",
}
NEW = {
    "mobile": "010-6060-1212",
    "birth_date": "1979-04-14",
    "email": "newmail@example.test",
}


def _setup_member_one(eng) -> None:  # type: ignore[no-untyped-def]
    add_members(
        eng,
        1,
        name="홍길순",
        mobile=OLD["mobile"],
        birth_date=date.fromisoformat(OLD["birth_date"]),
        email=OLD["email"],
    )
    add_members(eng, 2, start=2)
    with eng.begin() as conn:
        conn.execute(text("UPDATE members SET status = 'withdrawn' WHERE id = 3"))


def _snapshot(eng) -> str:  # type: ignore[no-untyped-def]
    return table_dump(eng, "members") + "\n" + table_dump(eng, "lifecycle_")


def _one_line_error(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lifecycle: error: ")
    return lines[0]


# -- bad input changes nothing -------------------------------------------------------------------


BAD_CORRECTIONS = [
    (["1", "--set", "nosuch=1"], "unknown field 'nosuch'"),
    (["1", "--set", "birth_date=notadate"], "birth_date: not a date"),
    (["1", "--set", "birth_date=1979-02-30"], "birth_date: not a date"),
    (["1", "--set", "birth_date=2999-01-01"], "in the future"),
    (["1", "--set", "status=withdrawn"], "status is a system column"),
    (["1", "--set", "password_hash=x"], "password_hash is a system column"),
    (["1", "--set", "id=5"], "id is a system column"),
    (["1", "--set", "joined_at=2020-01-01T00:00:00"], "joined_at is a system column"),
    (["1", "--set", "name="], "name: a value is required"),
    (["1", "--set", "email=not-an-email"], "email: not an email address"),
    (["1", "--set", "sex=MALE"], "sex: longer than 1 characters"),
    (["1", "--set", "anniversaries={bad"], "anniversaries: not valid JSON"),
    (["1", "--set", "mobile=010-1111-0000", "--set", "birth_date=13/13/13"], "birth_date"),
    (["999", "--set", "mobile=010-1"], "member 999 does not exist or has withdrawn"),
    (["3", "--set", "mobile=010-1"], "member 3 does not exist or has withdrawn"),
    (["1"], "nothing to correct"),
    (["1", "--set", "mobile"], "--set expects FIELD=VALUE"),
    (["1", "--set", "mobile=1", "--set", "mobile=2"], "field mobile is given twice"),
    (["abc", "--set", "mobile=1"], "MEMBER_ID must be a positive integer"),
]


def test_bad_correction_input_is_refused_and_changes_nothing(
    primary_env: LifecycleEnv,
) -> None:
    eng = create_demo_schema()
    _setup_member_one(eng)
    before = _snapshot(eng)
    for args, fragment in BAD_CORRECTIONS:
        r = primary_env.run("correct", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        line = _one_line_error(r)
        assert fragment in line, (args, line)
        # Errors name the field, never the value that was given.
        for value in ("notadate", "not-an-email", "MALE", "{bad", "13/13/13"):
            assert value not in line
    assert _snapshot(eng) == before


def test_bad_payload_from_the_website_fails_the_request_and_changes_nothing(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from models.requests import LifecycleRequest, Restriction

    eng = create_demo_schema()
    _setup_member_one(eng)
    members_before = table_dump(eng, "members")
    with session("primary") as s:
        bad = submit(s, "correction", 1, {"mobile": "010-9", "birth_date": "yesterday"})
        system = submit(s, "correction", 1, {"status": "active"})
        not_a_dict = submit(s, "correction", 1, None)
        gone = submit(s, "correction", 3, {"mobile": "010-9"})
    for rid, fragment in [
        (bad, "birth_date: not a date"),
        (system, "system column"),
        (not_a_dict, "nothing to correct"),
        (gone, "member 3 does not exist or has withdrawn"),
    ]:
        assert run_correction(rid)["state"] == "failed"
        with session("primary") as s:
            req = s.get(LifecycleRequest, rid)
            assert fragment in (req.error or "")
            assert req.payload is None  # the requested values are not kept
            assert s.scalar(select(func.count()).select_from(Restriction)) == 0
    assert table_dump(eng, "members") == members_before


# -- recipients and provisions -------------------------------------------------------------------


def test_recipient_and_provision_errors_change_nothing(primary_env: LifecycleEnv) -> None:
    from lifecycle.channels.webhooks import generate_secret
    from lifecycle.core.db import session
    from lifecycle.requests.use_block import restrict

    eng = create_demo_schema()
    _setup_member_one(eng)
    secret = generate_secret()
    ok = primary_env.run(
        "recipients",
        "add",
        "partner",
        "--webhook",
        "https://hooks.example.com/x",
        "--secret",
        secret,
    )
    assert ok.returncode == 0, ok.stderr
    assert secret not in primary_env.run("recipients", "list").stdout
    before = _snapshot(eng)
    bad_adds = [
        (["p2", "--webhook", "https://x.example/h", "--email", "a@b.example"], "exactly one"),
        (["p2", "--webhook", "https://x.example/h"], "needs --secret"),
        (["p2", "--webhook", "https://x.example/h", "--secret", "nope"], "whsec_"),
        (["p2", "--webhook", "http://x.example/h", "--secret", secret], "must use https"),
        (["p2", "--email", "not an address"], "not a valid email"),
        (["partner", "--email", "a@b.example"], "already exists"),
        (["p2"], "exactly one"),
    ]
    for args, fragment in bad_adds:
        r = primary_env.run("recipients", "add", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert fragment in _one_line_error(r), args
    bad_provides = [
        (["999", "--to", "partner", "--fields", "mobile"], "member 999 does not exist"),
        (["3", "--to", "partner", "--fields", "mobile"], "has withdrawn"),
        (["1", "--to", "nobody", "--fields", "mobile"], "unknown recipient 'nobody'"),
        (["1", "--to", "partner", "--fields", "mobile,shoe_size"], "unknown field 'shoe_size'"),
        (["1", "--to", "partner", "--fields", ","], "at least one field"),
        (["1", "--to", "partner", "--fields", "mobile", "--basis", "whim"], "--basis"),
    ]
    for args, fragment in bad_provides:
        r = primary_env.run("provide", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert fragment in _one_line_error(r), args
    assert _snapshot(eng) == before
    # While a member is restricted (처리정지), their data may not be provided.
    with session("primary") as s:
        restrict(s, 1, "correction", None)
    before = _snapshot(eng)
    r = primary_env.run("provide", "1", "--to", "partner", "--fields", "mobile")
    assert r.returncode == 2 and "restricted" in _one_line_error(r)
    assert _snapshot(eng) == before
    # Another member is not affected.
    r = primary_env.run(
        "provide", "2", "--to", "partner", "--fields", "mobile,name", "--basis", "legal_request"
    )
    assert r.returncode == 0, r.stderr


# -- the whole path ------------------------------------------------------------------------------


def test_correction_notifies_exactly_the_changed_fields_and_leaves_no_old_value(
    primary_env: LifecycleEnv,
    monkeypatch: pytest.MonkeyPatch,
    receivers,
    smtp_sink: SmtpSink,
    start_worker,
) -> None:
    from lifecycle.core.db import engine, session
    from models.recipients import Delivery
    from models.requests import LifecycleRequest, Restriction

    set_env(
        primary_env,
        monkeypatch,
        LIFECYCLE_SMTP_URL=smtp_sink.url,
        LIFECYCLE_RETRY_SCHEDULE="0,1,1",
    )
    eng = create_demo_schema()
    _setup_member_one(eng)
    a = receivers(default=200)
    b = receivers(default=200)
    env = primary_env
    for args in (
        ["recipients", "add", "insurer", "--webhook", a.url, "--secret", a.secret],
        ["recipients", "add", "club", "--webhook", b.url, "--secret", b.secret],
        ["recipients", "add", "clinic", "--email", "privacy@clinic.example"],
        ["provide", "1", "--to", "insurer", "--fields", "mobile,name", "--basis", "legal_request"],
        ["provide", "1", "--to", "club", "--fields", "hobbies", "--basis", "legal_request"],
        ["provide", "1", "--to", "clinic", "--fields", "birth_date", "--basis", "legal_request"],
        ["provide", "1", "--to", "clinic", "--fields", "email", "--basis", "legal_request"],
        ["provide", "2", "--to", "insurer", "--fields", "mobile", "--basis", "legal_request"],
    ):
        r = env.run(*args)
        assert r.returncode == 0, (args, r.stderr)
    worker = start_worker(env, queues=["requests", "notify"])
    r = env.run(
        "correct", "1",
        "--set", f"mobile={NEW['mobile']}",
        "--set", f"birth_date={NEW['birth_date']}",
        "--set", f"email={NEW['email']}",
        "--set", "name=홍길순",  # unchanged: not a correction, not notified
        "--wait", "--timeout", "120",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout

    with eng.connect() as conn:
        row = conn.execute(text("SELECT mobile, birth_date, email, name FROM members WHERE id=1"))
        assert tuple(map(str, row.one())) == (
            NEW["mobile"], NEW["birth_date"], NEW["email"], "홍길순"
        )  # fmt: skip

    # The insurer had mobile and name: it gets the new mobile only. The club had neither.
    (hit,) = a.unique_accepted().values()
    assert hit.payload["type"] == "member.personal_data.corrected"
    assert hit.payload["data"]["fields"] == {"mobile": NEW["mobile"]}
    assert b.hits == []
    # The clinic (email) had birth_date and email: both new values, by email.
    clinic = smtp_sink.wait_matching(lambda m: m.rcpt == "privacy@clinic.example")
    assert len(clinic) == 1
    assert NEW["birth_date"] in clinic[0].body and NEW["email"] in clinic[0].body
    assert NEW["mobile"] not in clinic[0].body
    # The member is told, at the corrected address, which items were corrected.
    mine = smtp_sink.wait_matching(lambda m: m.rcpt == NEW["email"])
    assert len(mine) == 1 and "개인정보 정정 완료 안내" in mine[0].subject
    assert "생년월일" in mine[0].body and "휴대전화번호" in mine[0].body
    assert not [m for m in smtp_sink.messages if m.rcpt == OLD["email"]]

    with session("primary") as s:
        req = s.scalar(select(LifecycleRequest))
        assert req.state == "completed"
        assert req.payload == {"corrected_fields": ["birth_date", "email", "mobile"]}
        assert s.scalar(select(func.count()).select_from(Restriction)) == 0
        ds = list(s.scalars(select(Delivery)))
        assert sorted(d.state for d in ds) == ["delivered", "delivered"]
        assert all(d.payload is None for d in ds)

    # The ledger: one correction, one entry per notification; field names, no values.
    with session("archive") as s:
        entries = s.execute(
            text("SELECT action, details, subject_ref FROM ledger_entries ORDER BY seq")
        ).all()
    actions = sorted(e[0] for e in entries)
    assert actions == ["correction", "notification", "notification"]
    corr = next(e for e in entries if e[0] == "correction")
    assert sorted(corr[1]["fields"]) == ["birth_date", "email", "mobile"]
    assert corr[2] and corr[2] != "1" and len(corr[2]) == 64
    assert env.run("ledger", "verify").returncode == 0

    # No old value anywhere: lifecycle tables, archive DB, worker log, broker, notifications.
    places = {
        "primary lifecycle tables": table_dump(engine("primary"), "lifecycle_"),
        "archive database": table_dump(engine("archive"), ""),
        "worker log": worker.output(),
        "broker and results": redis_dump_repr(env.vars["LIFECYCLE_BROKER_URL"]),
        "webhooks": "\n".join(h.body.decode() + str(h.headers) for h in a.hits + b.hits),
        "emails": "\n".join(
            m.subject + m.body + m.raw.decode("ascii", "replace") for m in smtp_sink.messages
        ),
    }
    for where, content in places.items():
        for field, old in OLD.items():
            assert old not in content, f"old {field} found in {where}"
    # The ledger and the broker do not hold the new values either.
    for where in ("archive database", "broker and results", "worker log"):
        for field, new in NEW.items():
            assert new not in places[where], f"new {field} found in {where}"
    b64_old = base64.b64encode(OLD["mobile"].encode()).decode()
    assert b64_old not in places["emails"]


def test_rerunning_a_correction_has_the_effect_of_once(
    primary_env: LifecycleEnv, monkeypatch: pytest.MonkeyPatch, receivers
) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from models.notices import Notice
    from models.recipients import Delivery

    eng = create_demo_schema()
    _setup_member_one(eng)
    a = receivers(default=200)
    assert (
        primary_env.run(
            "recipients", "add", "insurer", "--webhook", a.url, "--secret", a.secret
        ).returncode
        == 0
    )
    assert (
        primary_env.run(
            "provide", "1", "--to", "insurer", "--fields", "mobile", "--basis", "legal_request"
        ).returncode
        == 0
    )
    with session("primary") as s:
        rid = submit(s, "correction", 1, {"mobile": NEW["mobile"]})
    enqueued: list[tuple[object, ...]] = []
    first = run_correction(rid, send=lambda *msg: enqueued.append(msg))
    second = run_correction(rid, send=lambda *msg: enqueued.append(msg))
    assert first["state"] == second["state"] == "notifying"
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 1
        assert s.scalar(select(func.count()).select_from(Notice)) == 1
    with session("archive") as s:
        n = s.scalar(text("SELECT count(*) FROM ledger_entries WHERE action = 'correction'"))
        assert n == 1


def test_a_correction_that_changes_nothing_completes_without_notifications(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.requests.outbox import submit
    from lifecycle.rights.correction import run_correction
    from models.recipients import Delivery

    eng = create_demo_schema()
    _setup_member_one(eng)
    with session("primary") as s:
        rid = submit(s, "correction", 1, {"mobile": OLD["mobile"]})
    assert run_correction(rid)["state"] == "completed"
    with session("primary") as s:
        assert s.scalar(select(func.count()).select_from(Delivery)) == 0
    with session("archive") as s:
        rows = s.scalar(text("SELECT rows FROM ledger_entries WHERE action = 'correction'"))
        assert rows == 0
