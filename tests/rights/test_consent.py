"""Consent per purpose (동의, 개인정보 보호법 제15·17·22·22조의2·23·37조) on both primaries:
the map's purposes, the history in lifecycle_consents, a withdrawal destroying what depended
on it through the one request runner (idempotent, a crash resuming once), `provide` refusing a
category whose consent is missing, and `datamap check` counting rows held without consent."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select, text

from models.demo_site import counselling_bookings, counselling_records, members
from tests.helpers import (
    LifecycleEnv,
    add_members,
    create_demo_schema,
    table_dump,
    wait_error_line,
)

GIVEN = datetime(2025, 3, 1, tzinfo=UTC)


def _site(eng: Engine) -> None:
    """Members 1 and 2 gave the counselling (processing) consent and hold records; 3 holds
    records with no consent recorded; 1 also takes marketing."""
    add_members(eng, 1, counselling_consent_at=GIVEN, marketing_consent=True)
    add_members(eng, 1, start=2, counselling_consent_at=GIVEN)
    add_members(eng, 1, start=3)
    with eng.begin() as c:
        for mid in (1, 2, 3):
            bid = c.execute(
                counselling_bookings.insert().values(
                    member_id=mid, counsellor="박상담", scheduled_at=GIVEN, status="done"
                )
            ).inserted_primary_key[0]
            for n in range(2):
                c.execute(
                    counselling_records.insert().values(
                        member_id=mid, booking_id=bid, session_at=GIVEN, counsellor="박상담",
                        notes=f"상담 기록 {mid}-{n}", diagnosis="불안",
                    )
                )  # fmt: skip


def _count(eng: Engine, table: object, member_id: int) -> int:
    with eng.connect() as c:
        return int(
            c.execute(
                select(func.count()).select_from(table).where(table.c.member_id == member_id)  # type: ignore[attr-defined]
            ).scalar_one()
        )


def _ledger(action: str) -> list[dict[str, object]]:
    from lifecycle.core.db import session

    with session("archive") as s:
        rows = s.execute(
            text("SELECT details FROM ledger_entries WHERE action = :a ORDER BY seq"), {"a": action}
        ).all()
    import json

    return [r[0] if isinstance(r[0], dict) else json.loads(r[0]) for r in rows]


def test_withdrawing_the_processing_consent_destroys_the_records(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights import consent
    from lifecycle.rights.pipeline import run_one
    from models.consents import Consent
    from models.requests import LifecycleRequest

    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    # Not "kept by law": the records rest on the consent, and withdrawing it destroys them.
    erase = env.run("erase", "1", "--fields", "counselling")
    assert erase.returncode == 2
    assert "processed under the member's consent 'counselling', not kept by law" in (
        wait_error_line(erase)
    )
    r = env.run("consent", "withdraw", "1", "--purpose", "counselling")
    assert r.returncode == 0, r.stderr
    rid = int(r.stdout.split()[3])
    # A worker died after the destroying transaction committed: the re-run finishes it once.
    assert run_one(consent.CONSENT_WITHDRAWAL, rid) == "consent_withdrawn"
    assert _count(eng, counselling_records, 1) == 0
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert _count(eng, counselling_records, 1) == 0
    assert _count(eng, counselling_bookings, 1) == 0
    # Nobody else's records are touched.
    assert _count(eng, counselling_records, 2) == 2 and _count(eng, counselling_records, 3) == 2
    with eng.connect() as c:
        row = c.execute(select(members).where(members.c.id == 1)).mappings().one()
    assert row["counselling_consent_at"] is None and row["marketing_consent"] is True
    with session("primary") as s:
        (h,) = s.scalars(select(Consent).where(Consent.member_id == 1)).all()
        assert (h.purpose, h.source, h.request_id) == ("counselling", "site", rid)
        assert h.withdrawn_at is not None and h.given_at is not None
        req = s.get(LifecycleRequest, rid)
        assert req.payload["destroyed"] == {"counselling_records": 2, "counselling_bookings": 1}
        assert req.answered_at is not None
    (entry,) = _ledger("consent_withdrawal")
    assert entry["purpose"] == "counselling"
    assert entry["destroyed"] == {"counselling_records": 2, "counselling_bookings": 1}
    # Withdrawn already: refused in one line, nothing created.
    before = table_dump(eng, "lifecycle_")
    again = env.run("consent", "withdraw", "1", "--purpose", "counselling")
    assert again.returncode == 2 and "has not consented" in wait_error_line(again)
    assert table_dump(eng, "lifecycle_") == before


def test_every_purpose_withdraws_and_the_history_keeps_versions(
    primary_env: LifecycleEnv,
) -> None:
    from lifecycle.core.db import session
    from lifecycle.rights import consent
    from models.consents import Consent

    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    # A consent the site has no column for lives in the lifecycle's table.
    r = env.run("consent", "give", "2", "--purpose", "counselling_retention", "--version", "v3")
    assert r.returncode == 0, r.stderr
    dup = env.run("consent", "give", "2", "--purpose", "counselling_retention", "--version", "v3")
    assert dup.returncode == 2 and "already gives" in wait_error_line(dup)
    for args, says in (
        (["consent", "give", "2", "--purpose", "telepathy", "--version", "v1"], "unknown purpose"),
        (["consent", "give", "2", "--purpose", "guardian", "--version", " "], "--version"),
        (["consent", "withdraw", "2", "--purpose", "marketing"], "has not consented"),
    ):
        bad = env.run(*args)
        assert bad.returncode == 2 and says in wait_error_line(bad), (args, bad.stderr)
    # Withdrawing the retention consent destroys nothing now (the member still uses them)...
    r = env.run("consent", "withdraw", "2", "--purpose", "counselling_retention")
    rid = int(r.stdout.split()[3])
    assert consent.run_consent_withdrawal(rid)["state"] == "completed"
    assert _count(eng, counselling_records, 2) == 2
    # ... and marketing clears the site's own column.
    r = env.run("consent", "withdraw", "1", "--purpose", "marketing")
    mid = int(r.stdout.split()[3])
    assert consent.run_consent_withdrawal(mid)["state"] == "completed"
    with eng.connect() as c:
        flag = c.execute(select(members.c.marketing_consent).where(members.c.id == 1)).scalar()
    assert flag is False
    with session("primary") as s:
        rows = s.scalars(select(Consent).order_by(Consent.id)).all()
        got = [(c.member_id, c.purpose, c.text_version, c.source, c.withdrawn_at is not None)
               for c in rows]  # fmt: skip
    assert got == [
        (2, "counselling_retention", "v3", "lifecycle", True),
        (1, "marketing", None, "site", True),
    ]
    hist = env.run("consent", "history", "2")
    assert "counselling_retention  version v3" in hist.stdout


def test_provide_on_consent_needs_a_provision_consent_covering_each_field(
    primary_env: LifecycleEnv,
) -> None:
    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    assert env.run("recipients", "add", "partner", "--email", "p@partner.example").returncode == 0
    before = table_dump(eng, "lifecycle_")
    for args, says in (
        (["--fields", "name"], "--basis consent needs --purpose"),
        (["--fields", "name", "--purpose", "marketing"], "not a provision consent"),
        (["--fields", "name", "--purpose", "provision_partner"], "has not given consent"),
        (["--fields", "counselling_consent_at", "--purpose", "provision_partner"],
         "sensitive data (민감정보"),
        (["--fields", "hobbies", "--purpose", "provision_partner"], "does not cover"),
    ):  # fmt: skip
        r = env.run("provide", "1", "--to", "partner", *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert says in wait_error_line(r), (args, r.stderr)
    assert table_dump(eng, "lifecycle_") == before
    r = env.run("consent", "give", "1", "--purpose", "provision_partner", "--version", "2025-03")
    assert r.returncode == 0, r.stderr
    ok = env.run("provide", "1", "--to", "partner", "--fields", "name,mobile",
                 "--purpose", "provision_partner")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    # A provision a law asks for rests on no consent.
    law = env.run("provide", "3", "--to", "partner", "--fields", "name", "--basis", "legal_request")
    assert law.returncode == 0, law.stderr
    # Withdrawing the provision consent tells the recipient to delete what it received.
    from lifecycle.core.db import session
    from lifecycle.rights import consent
    from models.recipients import Delivery

    r = env.run("consent", "withdraw", "1", "--purpose", "provision_partner")
    rid = int(r.stdout.split()[3])
    assert consent.run_consent_withdrawal(rid)["state"] == "notifying"
    with session("primary") as s:
        (d,) = s.scalars(select(Delivery).where(Delivery.kind == "deletion")).all()
        assert d.fields == ["mobile", "name"] and d.request_id == rid


def test_datamap_check_counts_records_held_without_consent(primary_env: LifecycleEnv) -> None:
    env = primary_env
    eng = create_demo_schema()
    _site(eng)
    r = env.run("datamap", "check")
    want = (
        "consent counselling: counselling_records: 2 row(s) of 1 member(s) hold counselling "
        "with no consent recorded (members.counselling_consent_at)"
    )
    assert want in r.stderr, r.stderr
    assert "consent counselling: counselling_bookings: 1 row(s) of 1 member(s)" in r.stderr
    strict = env.run("datamap", "check", "--strict")
    assert strict.returncode == 1
    assert "strict: 3 row(s) depend on a consent their member has not given" in strict.stdout
    # Recorded: nothing left to report.
    with eng.begin() as c:
        c.execute(members.update().where(members.c.id == 3).values(counselling_consent_at=GIVEN))
    r = env.run("datamap", "check", "--strict")
    assert "consent counselling" not in r.stderr, r.stderr
